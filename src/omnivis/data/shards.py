"""Datasets packed into litdata shards: written once by ``omnivis data pack``, streamed by any ``--data``.

A shard directory holds litdata's chunk files (``chunk-0-N.bin``) and ``index.json``, plus
``omnivis_shards.json``: what the records are (``kind``: classification, detection or segmentation),
the classes, the count, where they came from, what packing skipped, and for classification every
record's label and name (so a split, class counts and reports need no pass over the images).

Records keep each image's file bytes as they were on disk (no re-encoding; in-memory images from
built-ins are PNG-encoded), so a record decodes to exactly the pixels its file would. A sample's
``source`` is a :class:`ShardRecord` (directory or URL, index); ``omnivis.data.decode.decode_tensor``
reads it through litdata's ``StreamingDataset`` (random access by index), so the tasks' transforms,
the epoch sampler's (seed, epoch) order and the mid-epoch resume work unchanged.

Where the shards live:

- a local directory: read in place. Opening it checks every chunk file against the index (a missing
  or truncated chunk is named, and its records skipped, or with ``strict`` an error) and every
  record's image header, as the folder readers check files.
- an object-store URL (``s3://bucket/prefix``, or ``gs://``, ``azure://``): litdata's own client
  fetches each record by byte range (random access downloads no whole chunk), the index and the header
  into a local cache folder (:func:`cache_dir_for`). Unreachable storage fails with one line within
  :data:`REMOTE_TIMEOUT_S` seconds and a few retries. Records are not pre-checked (that would download
  the whole set); they were checked when packed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from omnivis.data.images import NamedBytes, array_to_image, check_image
from omnivis.data.readers import ClassificationData, ImageSample
from omnivis.data.skipped import Skipped, warn_skipped
from omnivis.errors import DataError, ImageError
from omnivis.fileio import atomic_write_bytes

HEADER_NAME = "omnivis_shards.json"
"""The file beside litdata's ``index.json`` that says what the records are."""

INDEX_NAME = "index.json"
FORMAT_VERSION = 1
KINDS = ("classification", "detection", "segmentation")
DEFAULT_SHARD_MB = 64.0
REMOTE_SCHEMES = ("s3://", "gs://", "azure://")
REMOTE_TIMEOUT_S = 10
"""Connect and read timeout, in seconds, of each request to object storage (litdata's own default
retries 1,000 times, which reads as a hang when the storage is unreachable)."""
REMOTE_ATTEMPTS = 3
DEFAULT_CACHE = "25GB"
"""litdata's local disk-cache limit for remote shards. Random access reads each record by byte range, so
in practice only ``index.json`` and the header land there; whole chunks would only be cached by litdata's
own iteration. (25 GB: litdata warns below that.)"""


# ------------------------------------------------------------------------------------------------
# Where shards are
# ------------------------------------------------------------------------------------------------

def is_remote(spec: str | Path) -> bool:
    """Whether ``spec`` is an object-store URL litdata reads (``s3://``, ``gs://``, ``azure://``)."""
    return str(spec).startswith(REMOTE_SCHEMES)


def is_shard_dir(spec: str | Path) -> bool:
    """Whether a data argument names shards: an object-store URL, or a folder with ``omnivis_shards.json``."""
    if is_remote(spec):
        return True
    path = Path(str(spec)).expanduser()
    return path.is_dir() and (path / HEADER_NAME).is_file()


def cache_dir_for(url: str) -> Path:
    """The local cache folder for remote shards: ``$OMNIVIS_CACHE`` (default ``~/.cache/omnivis``)
    ``/shards/<hash of the URL>``."""
    base = Path(os.environ.get("OMNIVIS_CACHE", Path.home() / ".cache" / "omnivis")).expanduser()
    return base / "shards" / hashlib.sha1(url.rstrip("/").encode()).hexdigest()[:16]


def _storage_options(url: str) -> dict:
    """Bounded timeouts and retries for S3 (litdata passes these to boto3; the obstore reader is built
    from the same client); other stores keep litdata's defaults."""
    if not url.startswith("s3://"):
        return {}
    import botocore.config

    return {"config": botocore.config.Config(connect_timeout=REMOTE_TIMEOUT_S, read_timeout=REMOTE_TIMEOUT_S,
                                             retries={"max_attempts": REMOTE_ATTEMPTS, "mode": "standard"})}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _fetch_remote(url: str, name: str) -> Path:
    """Download ``url/name`` into the URL's cache folder (fresh every call) with bounded timeouts."""
    from litdata.streaming.downloader import get_downloader

    cache = cache_dir_for(url)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / name
    target.unlink(missing_ok=True)  # the remote copy may have been re-packed
    remote = f"{url.rstrip('/')}/{name}"
    try:
        if url.startswith("s3://"):
            # boto3 (litdata's own client, as it fetches index.json): litdata's obstore path would start tokio in
            # this process, and DataLoader workers forked after that hang
            from urllib.parse import urlparse

            from litdata.streaming.client import S3Client

            where = urlparse(remote)
            body = S3Client(storage_options=_storage_options(url)).client.get_object(
                Bucket=where.netloc, Key=where.path.lstrip("/"))["Body"].read()
            atomic_write_bytes(target, body)
        else:
            get_downloader(url, str(cache), [], _storage_options(url)).download_file(remote, str(target))
    except Exception as exc:  # noqa: BLE001 - boto3, obstore and fsspec raise many types; one line says which
        raise DataError(f"{url}: cannot read {name} ({type(exc).__name__}: {_one_line(exc)})") from None
    if not target.is_file():
        raise DataError(f"{url}: cannot read {name} (nothing was downloaded)")
    return target


def read_shard_header(spec: str | Path) -> dict:
    """``omnivis_shards.json`` of a shard folder or URL, checked.

    Raises:
        DataError: no header (not packed by ``omnivis data pack``, or the pack did not finish), an
            unreadable one, an unknown kind or format, or unreachable storage.
    """
    spec = str(spec)
    if is_remote(spec):
        path = _fetch_remote(spec, HEADER_NAME)
    else:
        path = Path(spec).expanduser() / HEADER_NAME
        if not path.is_file():
            raise DataError(f"{spec}: no {HEADER_NAME}; not a shard folder written by `omnivis data pack`")
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{spec}: cannot read {HEADER_NAME} ({_one_line(exc)})") from None
    if not isinstance(header, dict) or header.get("kind") not in KINDS:
        raise DataError(f"{spec}: {HEADER_NAME} names no known kind (expected one of {', '.join(KINDS)})")
    if header.get("format", 0) > FORMAT_VERSION:
        raise DataError(f"{spec}: shards of format {header['format']} need a newer omnivis (this one reads "
                        f"format {FORMAT_VERSION})")
    return header


# ------------------------------------------------------------------------------------------------
# Reading records
# ------------------------------------------------------------------------------------------------

_OPEN: dict[tuple[int, str], object] = {}


def _streaming(root: str):
    """This process's litdata ``StreamingDataset`` over ``root`` (DataLoader workers open their own).

    ``batch_decode=1``: litdata otherwise deserializes a window of 256 records around each one read,
    which serves its own sequential iteration but makes random access 16x slower (1,800 vs 29,000
    records/s from a local folder of 8 MB shards).
    """
    key = (os.getpid(), root)
    dataset = _OPEN.get(key)
    if dataset is None:
        from litdata import StreamingDataset

        try:
            if is_remote(root):
                dataset = StreamingDataset(root, cache_dir=str(cache_dir_for(root)), max_cache_size=DEFAULT_CACHE,
                                           storage_options=_storage_options(root), batch_decode=1)
            else:
                dataset = StreamingDataset(str(Path(root).expanduser()), batch_decode=1)
        except Exception as exc:  # noqa: BLE001 - litdata, boto3 and obstore raise many types
            raise DataError(f"{root}: cannot open the shards ({type(exc).__name__}: {_one_line(exc)})") from None
        _OPEN[key] = dataset
    return dataset


def read_record(root: str, index: int) -> dict:
    """Record ``index`` of the shards at ``root`` as a dict of Python values (bytes copied out of the chunk)."""
    item = _streaming(root)[int(index)]
    return {key: bytes(value) if isinstance(value, memoryview) else value for key, value in item.items()}


@dataclass(frozen=True)
class ShardRecord:
    """A record's image inside shards: what ``ImageSample.source`` holds for packed data.

    ``decode_tensor`` decodes :meth:`read_bytes` exactly as it decodes a file; errors name
    ``str(record)``: the shards, the index and the record's own name.
    """

    root: str
    index: int
    name: str = ""

    def read_bytes(self, key: str = "image") -> bytes:
        """The stored bytes of field ``key`` (the encoded image by default).

        Raises:
            ImageError: the record cannot be read (a chunk gone or cut short since the shards were opened,
                storage unreachable).
        """
        try:
            return read_record(self.root, self.index)[key]
        except DataError as exc:
            raise ImageError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - litdata's ChunkWaitTimeoutError, boto3, obstore ...
            raise ImageError(f"{self}: cannot read the record ({type(exc).__name__}: {_one_line(exc)})") from None

    def __str__(self) -> str:
        return f"{self.root}[{self.index}]" + (f" ({self.name})" if self.name else "")


def _chunks(root: str) -> list[dict]:
    """litdata's chunk table of a local shard folder."""
    path = Path(root).expanduser() / INDEX_NAME
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["chunks"])
    except FileNotFoundError:
        raise DataError(f"{path}: missing; the shard folder is incomplete (pack it again)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: cannot read litdata's index ({_one_line(exc)})") from None


def check_chunks(root: str, strict: bool = False) -> tuple[set[int], Skipped]:
    """Compare every chunk file of a local shard folder with litdata's index.

    Returns:
        The record indices inside missing or truncated chunks, and one skipped entry per such chunk
        (``("chunk-0-3.bin records 69-91", "truncated: 10135 of 20248 bytes")``).

    Raises:
        DataError: with ``strict``, naming the first bad chunk.
    """
    bad: set[int] = set()
    skipped: Skipped = []
    start = 0
    for chunk in _chunks(root):
        count, expected, name = int(chunk["chunk_size"]), int(chunk["chunk_bytes"]), str(chunk["filename"])
        path = Path(root).expanduser() / name
        reason = None
        if not path.is_file():
            reason = "chunk file missing"
        elif path.stat().st_size != expected and not chunk.get("compression"):
            reason = f"truncated: {path.stat().st_size} of {expected} bytes"
        if reason is not None:
            if strict:
                raise DataError(f"{path}: {reason} (records {start}-{start + count - 1})")
            skipped.append((f"{name} records {start}-{start + count - 1}", reason))
            bad.update(range(start, start + count))
        start += count
    return bad, skipped


def _readable(root: str, indices: Iterable[int], names: Sequence[str], strict: bool, progress: bool,
              skipped: Skipped) -> list[int]:
    """The indices whose image bytes pass ``check_image`` (header and checksums, as for folder files)."""
    indices = list(indices)
    if progress:
        from rich.progress import track

        indices = track(indices, description="checking shards", transient=True)
    good = []
    for i in indices:
        record = ShardRecord(root, i, names[i])
        try:
            reason = check_image(NamedBytes(record.read_bytes(), str(record)))
        except ImageError as exc:
            reason = str(exc)
        if reason is None:
            good.append(i)
        elif strict:
            raise DataError(f"{record}: {reason}")
        else:
            skipped.append((names[i], reason))
    return good


def _open_local(spec: str, strict: bool) -> tuple[str, set[int], Skipped]:
    root = str(Path(spec).expanduser().resolve())
    bad, skipped = check_chunks(root, strict)
    return root, bad, skipped


def read_classification_shards(spec: str | Path, strict: bool = False, classes: list[str] | None = None,
                               check: bool = True, progress: bool = False) -> ClassificationData:
    """Classification shards as ``ClassificationData`` whose sources are :class:`ShardRecord`.

    Args:
        spec: a shard folder or an object-store URL.
        strict: a missing or truncated chunk, or an unreadable record, is an error instead of being
            skipped with a warning.
        classes: a fixed class list (a trained model's); labels are mapped into it, and a class it lacks
            is an error.
        check: check every record's image header (local folders only; remote records were checked when
            packed).
        progress: show a progress bar while checking.

    Returns:
        The records in packed order; ``skipped`` lists what packing skipped, then what is unreadable now.
    """
    spec = str(spec)
    header = read_shard_header(spec)
    if header["kind"] != "classification":
        raise DataError(f"{spec}: holds {header['kind']} shards; this command needs classification shards")
    labels = [int(v) for v in header["records"]["labels"]]
    names = [str(v) for v in header["records"]["names"]]
    if len(labels) != header["count"] or len(names) != header["count"]:
        raise DataError(f"{spec}: {HEADER_NAME} lists {len(labels)} labels for {header['count']} records")
    found_classes = [str(c) for c in header["classes"]]
    skipped: Skipped = [(str(n), str(r)) for n, r in header.get("skipped", [])]
    packed_skips = len(skipped)
    if is_remote(spec):
        root, keep = spec.rstrip("/"), list(range(len(labels)))
    else:
        root, bad, chunk_skips = _open_local(spec, strict)
        skipped += chunk_skips
        keep = [i for i in range(len(labels)) if i not in bad]
        if check:
            keep = _readable(root, keep, names, strict, progress, skipped)
    if len(skipped) > packed_skips:
        warn_skipped(skipped[packed_skips:], "bad shard record", spec)
    if not keep:
        raise DataError(f"{spec}: none of the {len(labels)} records can be read")
    mapping = list(range(len(found_classes)))
    if classes is not None:
        unknown = [c for c in found_classes if c not in classes]
        if unknown:
            raise DataError(f"{spec}: unknown class {unknown[0]!r}; the known classes are: {', '.join(classes)}")
        mapping = [list(classes).index(c) for c in found_classes]
        found_classes = list(classes)
    samples = [ImageSample(ShardRecord(root, i, names[i]), mapping[labels[i]] if labels[i] >= 0 else -1, names[i])
               for i in keep]
    return ClassificationData(samples, found_classes, spec, skipped)


def _records(spec: str, strict: bool) -> tuple[str, list[int], Skipped]:
    """Root, readable indices and skips of detection or segmentation shards (annotations are read whole)."""
    if is_remote(spec):
        root = spec.rstrip("/")
        return root, list(range(len(_streaming(root)))), []
    root, bad, skipped = _open_local(spec, strict)
    return root, [i for i in range(len(_streaming(root))) if i not in bad], skipped


def read_detection_shards(spec: str | Path, strict: bool = False):
    """Detection shards as ``DetectionData``: boxes, labels and masks in memory, images as :class:`ShardRecord`."""
    from omnivis.data.detection_records import DetectionData, DetectionRecord

    spec = str(spec)
    header = read_shard_header(spec)
    if header["kind"] != "detection":
        raise DataError(f"{spec}: holds {header['kind']} shards, not detection shards")
    root, indices, skipped = _records(spec, strict)
    records = []
    for i in indices:
        item = read_record(root, i)
        count = len(item["labels"]) // 8
        boxes = np.frombuffer(item["boxes"], dtype="<f4").reshape(count, 4).astype(np.float32)
        labels = np.frombuffer(item["labels"], dtype="<i8").astype(np.int64)
        masks = None
        if item["mask_height"] >= 0:
            masks = np.zeros((0, item["mask_height"], item["mask_width"]), dtype=bool)
            if item["masks"]:
                with Image.open(io.BytesIO(item["masks"])) as png:
                    masks = (np.asarray(png.convert("L")) > 0).reshape(count, item["mask_height"], item["mask_width"])
        records.append(DetectionRecord(source=ShardRecord(root, i, item["name"]), boxes=boxes, labels=labels,
                                       masks=masks, name=item["name"], image_id=int(item["image_id"])))
    warn_skipped(skipped, "bad shard record", spec)
    skipped = [(str(n), str(r)) for n, r in header.get("skipped", [])] + skipped
    return DetectionData(records, [str(c) for c in header["classes"]], spec,
                         [int(c) for c in header.get("category_ids", [])], skipped)


def read_segmentation_shards(spec: str | Path, strict: bool = False):
    """Segmentation shards as ``SegmentationData``: masks decoded into memory, images as :class:`ShardRecord`."""
    from omnivis.data.masks import MaskSample, SegmentationData, read_mask

    spec = str(spec)
    header = read_shard_header(spec)
    if header["kind"] != "segmentation":
        raise DataError(f"{spec}: holds {header['kind']} shards, not segmentation shards")
    root, indices, skipped = _records(spec, strict)
    samples = []
    for i in indices:
        item = read_record(root, i)
        record = ShardRecord(root, i, item["name"])
        samples.append(MaskSample(record, read_mask(NamedBytes(item["mask"], f"{record} mask")), item["name"]))
    warn_skipped(skipped, "bad shard record", spec)
    skipped = [(str(n), str(r)) for n, r in header.get("skipped", [])] + skipped
    return SegmentationData(samples, [str(c) for c in header["classes"]], spec, skipped)


# ------------------------------------------------------------------------------------------------
# Packing
# ------------------------------------------------------------------------------------------------

def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encoded_image(source) -> bytes:
    """A sample's image as encoded bytes: a file's bytes as stored, an in-memory array PNG-encoded
    (grey arrays as ``L``, everything else as ``RGB``, normalized as ``array_to_image`` does)."""
    if isinstance(source, np.ndarray):
        grey = source.ndim == 2 or (source.ndim == 3 and source.shape[2] == 1)
        return _png(array_to_image(source, "L" if grey else "RGB"))
    if isinstance(source, ShardRecord):
        return source.read_bytes()
    path = Path(source)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: {_one_line(exc)}") from None


def _mask_png(mask) -> bytes:
    """A class mask: a file's bytes as stored, an (H, W) uint8 array as an 8-bit grey PNG."""
    if isinstance(mask, np.ndarray):
        return _png(Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8)), mode="L"))
    return Path(mask).read_bytes()


class _Packer:
    """litdata's ``BinaryWriter`` into a temporary sibling of ``out``, moved into place when complete."""

    def __init__(self, out: str | Path, shard_size_mb: float) -> None:
        from litdata.streaming.writer import BinaryWriter

        if shard_size_mb <= 0:
            raise DataError(f"--shard-size must be > 0 MB, got {shard_size_mb:g}")
        self.out = Path(out).expanduser()
        if is_remote(str(out)):
            raise DataError(f"{out}: pack into a local folder, then copy it to object storage (aws s3 sync ...)")
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise DataError(f"{self.out}: exists and is not empty; choose a new --out")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial", dir=self.out.parent))
        self.writer = BinaryWriter(str(self.tmp), chunk_bytes=int(shard_size_mb * 1_000_000))
        self.count = 0

    def add(self, record: dict) -> None:
        with warnings.catch_warnings():  # "an item was larger than the target chunk size": a chunk may overshoot
            warnings.filterwarnings("ignore", message="An item was larger", category=UserWarning)
            self.writer.add_item(self.count, record)
        self.count += 1

    def finish(self, header: dict) -> Path:
        if not self.count:
            self.abort()
            raise DataError(f"{header['source']}: no records to pack")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="An item was larger", category=UserWarning)
            self.writer.done()
        self.writer.merge()
        header = {"format": FORMAT_VERSION, **header, "count": self.count}
        (self.tmp / HEADER_NAME).write_text(json.dumps(header), encoding="utf-8")
        if self.out.exists():
            self.out.rmdir()  # empty, checked above
        os.replace(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _pack(items: Sequence, out, shard_size_mb: float, progress: bool, make_record, header_for,
          strict: bool, skipped: Skipped) -> Path:
    """Write ``make_record(item)`` (a dict with the encoded ``image``) for every item; one whose image
    is unreadable is skipped (or, strict, an error). ``header_for(written items)`` is the header."""
    packer = _Packer(out, shard_size_mb)
    written, already = [], len(skipped)
    try:
        chosen: Iterable = items
        if progress:
            from rich.progress import track

            chosen = track(items, total=len(items), description="packing", transient=True)
        for item in chosen:
            name = str(getattr(item, "name", "") or item)
            try:
                record = make_record(item)
                reason = check_image(NamedBytes(record["image"], name))
            except (ImageError, DataError, OSError) as exc:
                reason = str(exc)
            if reason is not None:
                if strict:
                    raise DataError(f"{name}: {reason}")
                skipped.append((name, reason))
                continue
            packer.add(record)
            written.append(item)
        warn_skipped(skipped[already:], "unreadable image", out)
        return packer.finish({**header_for(written), "skipped": [list(s) for s in skipped]})
    except BaseException:
        packer.abort()
        raise


def pack_classification(data: ClassificationData, out: str | Path, shard_size_mb: float = DEFAULT_SHARD_MB,
                        strict: bool = False, progress: bool = False) -> Path:
    """Write classification data as litdata shards of ``{image: bytes, label: int, name: str}``.

    Returns:
        ``out``, holding the chunks, litdata's ``index.json`` and ``omnivis_shards.json`` (with every
        record's label and name).

    Raises:
        DataError: ``out`` exists and is not empty, nothing could be packed, or (strict) a bad image.
    """
    def record(sample: ImageSample) -> dict:
        return {"image": encoded_image(sample.source), "label": int(sample.label), "name": sample.name}

    def header(written: list[ImageSample]) -> dict:
        return {"kind": "classification", "classes": list(data.classes), "source": data.source,
                "records": {"labels": [int(s.label) for s in written], "names": [s.name for s in written]}}

    return _pack(data.samples, out, shard_size_mb, progress, record, header, strict, list(data.skipped))


def _stacked_masks_png(masks: np.ndarray) -> bytes:
    """(N, H, W) bool instance masks -> one 1-bit PNG of the masks stacked vertically, (N * H, W)."""
    stacked = np.ascontiguousarray(masks.astype(bool).reshape(-1, masks.shape[-1]))
    return _png(Image.fromarray(stacked.astype(np.uint8) * 255, mode="L").convert("1"))


def pack_detection(data, out: str | Path, shard_size_mb: float = DEFAULT_SHARD_MB, strict: bool = False,
                   progress: bool = False) -> Path:
    """Write ``DetectionData`` (COCO or built-in) as shards of ``{image, name, image_id, boxes, labels,
    mask_height, mask_width, masks}``: boxes (N, 4) little-endian float32 bytes, labels (N,) int64
    bytes, masks one 1-bit PNG of the (N, H, W) instance masks stacked vertically (mask size -1 when
    the record has none; crowd regions are not packed)."""
    def record(r) -> dict:
        boxes = np.asarray(r.boxes, dtype="<f4").reshape(-1, 4)
        labels = np.asarray(r.labels, dtype="<i8").reshape(-1)
        masks = None if r.masks is None else np.asarray(r.masks, dtype=bool)
        height, width = (-1, -1) if masks is None else masks.shape[1:]
        png = _stacked_masks_png(masks) if masks is not None and len(masks) else b""
        return {"image": encoded_image(r.source), "name": r.name, "image_id": int(r.image_id),
                "boxes": boxes.tobytes(), "labels": labels.tobytes(), "mask_height": int(height),
                "mask_width": int(width), "masks": png}

    def header(written: list) -> dict:
        return {"kind": "detection", "classes": list(data.classes), "category_ids": list(data.category_ids),
                "source": data.source, "has_masks": bool(written) and all(r.masks is not None for r in written)}

    return _pack(data.records, out, shard_size_mb, progress, record, header, strict, list(data.skipped))


def pack_segmentation(data, out: str | Path, shard_size_mb: float = DEFAULT_SHARD_MB, strict: bool = False,
                      progress: bool = False) -> Path:
    """Write ``SegmentationData`` (image + mask folders, built-in shapes) as shards of ``{image, mask,
    name}``; the mask is its PNG file's bytes as stored, an in-memory mask an 8-bit grey PNG."""
    def record(sample) -> dict:
        return {"image": encoded_image(sample.image), "mask": _mask_png(sample.mask), "name": sample.name}

    def header(written: list) -> dict:
        return {"kind": "segmentation", "classes": list(data.classes), "source": data.source}

    return _pack(data.samples, out, shard_size_mb, progress, record, header, strict, list(data.skipped))
