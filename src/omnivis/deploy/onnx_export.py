"""``omnivis export``: a bundle's deployable graph as one ONNX file, checked against PyTorch.

The file takes uint8 NCHW images at the bundle's size (``images``, dynamic batch) and does the rest
inside: normalization, the model, and the task's post-processing (``omnivis.deploy.graphs``). Every
export runs a parity check (the same images through PyTorch and onnxruntime at batch 1, 3 and 7) and
writes it to ``BUNDLE/export.json``. ``int8=True`` quantizes with onnxruntime's static QDQ
quantization (per-channel weights, activations calibrated on images of the bundle's own training
data or ``calibration``); while int8 changes more answers than the budget allows, the most sensitive
nodes (the first and last weighted layers, then the head's side of the network) are kept in float,
and as a last resort weights alone are quantized (dynamic quantization). The report lists each try.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from omnivis.deploy.quiet import quiet_exporter
from omnivis.deploy.runtime import OnnxGraph
from omnivis.bundle import load_bundle
from omnivis.errors import BundleError, ConfigError, DataError
from omnivis.inference.base import Predictor

EXPORTABLE = ("classify", "segment", "detect", "multitask", "generate", "face", "edit")
PARITY_BATCHES = (1, 3, 7)
INT8_AGREEMENT = 0.98  # share of answers (top-1 classes, pixel classes) int8 must keep from float
REFERENCE_IMAGES = 64  # half calibrate int8, half check it
OPSET = 18


def default_onnx_path(bundle_dir: str | Path, int8: bool = False) -> Path:
    return Path(bundle_dir) / ("model.int8.onnx" if int8 else "model.onnx")


def reference_images(predictor: Predictor, calibration: str | None, n: int = REFERENCE_IMAGES) -> tuple[list, str]:
    """Up to ``n`` images spread evenly over ``calibration`` (a folder of images, or any data spec the
    bundle's task reads) or, by default, over the bundle's own training data; with their description."""
    from omnivis.data.images import expand_image_paths

    spec = calibration or predictor.config.get("data")
    if not spec:
        raise DataError(f"{predictor.bundle.path}: the bundle does not say what it was trained on; pass --calibration DIR")
    if calibration and Path(calibration).is_dir() and not (Path(calibration) / "masks").is_dir():
        sources: Sequence = expand_image_paths([Path(calibration)])
    elif predictor.task == "detect":
        from omnivis.data.detection import resolve_detection_data

        cfg = predictor.config
        images = None if calibration else cfg.get("images")
        data = resolve_detection_data(spec, images, img_size=predictor.img_size, num_train=n)
        sources = [r.source for r in data.records]
    elif predictor.task == "multitask":
        from omnivis.data.builtin import is_builtin_shapes
        from omnivis.data.multitask import load_coco_multitask, load_shapes_multitask

        cfg = predictor.config
        data = (load_shapes_multitask(n, predictor.img_size, seed=0) if is_builtin_shapes(spec)
                else load_coco_multitask(spec, None if calibration else cfg.get("images")))
        sources = list(data.images)
    elif predictor.task in ("classify", "face"):
        from omnivis.data.builtin import resolve_classification_data

        sources = [s.source for s in resolve_classification_data(spec).samples]
    else:
        from omnivis.data.builtin import is_builtin_shapes
        from omnivis.data.masks import (
            load_shapes_segmentation,
            resolve_segmentation_data,
        )

        data = (load_shapes_segmentation(n, predictor.img_size, seed=0) if is_builtin_shapes(spec)
                else resolve_segmentation_data(spec))
        sources = [s.image for s in data.samples]
    if not len(sources):
        raise DataError(f"{spec}: no images to check the export with")
    picks = np.unique(np.linspace(0, len(sources) - 1, min(n, len(sources))).round().astype(int))
    return [sources[int(i)] for i in picks], f"{len(picks)} images of {spec}"


@contextlib.contextmanager
def _empty_safe_box_clipping():
    """torchvision's ``clip_boxes_to_image`` ends in ``reshape(boxes.shape)``, which the exporter writes
    as a Reshape to (N, -1): onnxruntime cannot reshape 0 boxes to that, so a detector whose score floor
    leaves one feature level without candidates fails on that image (seen on an int8 FCOS). While
    exporting, the same clipping is written without the reshape (x1, y1, x2, y2 stacked in place)."""
    from torchvision.ops import boxes as box_ops

    original = box_ops.clip_boxes_to_image

    def clip(boxes: torch.Tensor, size) -> torch.Tensor:
        height, width = size
        zero = torch.tensor(0, dtype=boxes.dtype, device=boxes.device)
        x = torch.min(torch.max(boxes[..., 0::2], zero), torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device))
        y = torch.min(torch.max(boxes[..., 1::2], zero), torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device))
        return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)

    box_ops.clip_boxes_to_image = clip
    try:
        yield
    finally:
        box_ops.clip_boxes_to_image = original


def write_onnx(graph: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Export ``graph`` with a dynamic batch dimension (torch.export-based exporter)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = example[:2] if len(example) >= 2 else example.repeat(2, 1, 1, 1)  # batch 1 would be specialized
    names = dict(input_names=["images"], output_names=list(graph.output_names), opset_version=OPSET, verbose=False)
    with quiet_exporter():
        if graph.batched:
            torch.onnx.export(graph, (example,), str(path), dynamo=True, external_data=False,
                              dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}}, **names)
        else:  # torchvision detectors: the TorchScript-based exporter, whose NMS and box decoding torchvision tests
            with _empty_safe_box_clipping():  # a multitask graph's other heads keep their batch of 1
                torch.onnx.export(graph, (example[:1],), str(path), dynamo=False, **names,
                                  dynamic_axes={name: {0: "detections"} for name in graph.per_detection})


def _batch(images: torch.Tensor, n: int) -> torch.Tensor:
    repeats = -(-n // len(images))
    return images.repeat(repeats, 1, 1, 1)[:n]


def parity_check(predictor: Predictor, session: OnnxGraph, images: torch.Tensor) -> list[dict]:
    """PyTorch vs onnxruntime on the same uint8 images at each of ``PARITY_BATCHES``."""
    if not predictor.graph.batched:
        return [detection_parity(predictor.graph, session, images[: max(PARITY_BATCHES)])]
    rows = []
    for n in PARITY_BATCHES:
        batch = _batch(images, n)
        with torch.inference_mode():
            expected = predictor.graph(batch)
        got = session(batch)
        floats = [(e.float() - g.float()).abs().max().item() for e, g in zip(expected, got) if e.is_floating_point()]
        same = (predictor.graph.decisions(expected) == predictor.graph.decisions(got)).float().mean().item()
        rows.append({"batch": n, "max_abs_difference": max(floats), "same_answers": same})
    return rows


def detection_parity(graph: torch.nn.Module, session, images: torch.Tensor) -> dict:
    """One image at a time (a detector's graph has batch 1): the share of images with as many
    detections of each class, and the largest difference of a score (sorted) or of a box from the
    nearest box of its class. Order-free on purpose: detections with tied scores may come out in
    another order from another runtime, which changes no answer."""
    same_count, worst = 0, 0.0
    for image in images:
        with torch.inference_mode():
            expected = graph(image[None])
        got = session(image[None])
        if torch.equal(expected[2].sort().values, got[2].sort().values):
            same_count += 1
            if len(expected[0]):
                scores = (expected[1].sort().values - got[1].sort().values).abs().max().item()
                same_class = expected[2][:, None] == got[2][None, :]
                gaps = (expected[0][:, None, :] - got[0][None, :, :]).abs().amax(dim=2).masked_fill(~same_class, float("inf"))
                worst = max(worst, scores, gaps.amin(dim=1).max().item())
        for e, g in zip(expected[3:], got[3:]):  # Mask R-CNN's masks; a multitask graph's other heads
            if e.is_floating_point() and e.shape == g.shape and len(e):  # summed over dim 0: order-free masks
                worst = max(worst, (e.sum(0) - g.sum(0)).abs().max().item())
    return {"images": len(images), "batch": 1, "max_abs_difference": worst, "same_answers": same_count / len(images)}


def _latency_ms(session: OnnxGraph, image: torch.Tensor, runs: int = 20) -> float:
    """Median onnxruntime time of one image (batch 1), after one warm-up run."""
    session(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session(image)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def agreement(graph_decisions, reference: tuple[torch.Tensor, ...], int8_path: Path,
              images: torch.Tensor) -> tuple[float, float]:
    """(share of answers int8 keeps, max |difference| of the first output) on ``images``, against
    ``reference``, the float file's outputs on them."""
    quantized = OnnxGraph(int8_path, channels=images.shape[1], size=images.shape[-1])(images)
    same = (graph_decisions(reference) == graph_decisions(quantized)).float().mean().item()
    return same, (reference[0].float() - quantized[0].float()).abs().max().item()


DETECTION_MATCH_IOU = 0.5


def detection_agreement(reference: list[tuple[torch.Tensor, ...]], outputs: list[tuple[torch.Tensor, ...]],
                        score_threshold: float = 0.0) -> tuple[float, float]:
    """A detector's int8 file's detections (``outputs``, one per image) against the float file's
    (``reference``), both taken at ``score_threshold`` (the bundle's: the detections ``predict``
    reports): the share of detections both keep (2 x matched / (float's + int8's), matched = same
    class, IoU >= 0.5, one to one, pooled over the images; 1 when neither finds anything) and the
    largest score difference of a matched pair."""
    from torchvision.ops import box_iou

    matched = total = 0
    worst = 0.0
    for found, got in zip(reference, outputs):
        boxes, scores, classes = (t[found[1] >= score_threshold] for t in found[:3])
        got_boxes, got_scores, got_classes = (t[got[1] >= score_threshold] for t in got[:3])
        total += len(boxes) + len(got_boxes)
        if not len(boxes) or not len(got_boxes):
            continue
        iou = box_iou(boxes.float(), got_boxes.float())
        iou[classes[:, None] != got_classes[None, :]] = 0.0
        taken: set[int] = set()
        for i in scores.argsort(descending=True).tolist():  # most confident first, greedy as COCO matches
            candidates = [(iou[i, j].item(), j) for j in range(len(got_boxes)) if j not in taken]
            best, j = max(candidates, default=(0.0, -1))
            if best >= DETECTION_MATCH_IOU:
                taken.add(j)
                matched += 1
                worst = max(worst, abs(scores[i].item() - got_scores[j].item()))
    return (2 * matched / total if total else 1.0), worst


def _weighted_nodes(path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(path))
    return [node.name for node in model.graph.node if node.op_type in ("Conv", "Gemm", "MatMul")]


def quantize_int8(float_path: Path, out: Path, calibrate: torch.Tensor, check: torch.Tensor, graph,
                  work: Path, score_threshold: float = 0.0) -> dict:
    """Static QDQ int8 of ``float_path`` into ``out``, keeping sensitive nodes in float until int8 keeps
    ``INT8_AGREEMENT`` of the answers on ``check`` (or falling back to dynamic quantization); ``work``
    is a scratch folder. Answers are ``graph.decisions`` (classes, pixel classes), or for a detector's
    graph (one image per call) its detections at ``score_threshold``, matched by :func:`detection_agreement`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"images": calibrate[i : i + 1].numpy()} for i in range(len(calibrate))])

        def get_next(self):
            return next(self.items, None)

    prepared = work / "prepared.onnx"
    try:
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
    except Exception:  # pre-processing only helps; quantize the file as exported when it fails
        prepared = float_path
    weighted = _weighted_nodes(prepared)
    head_side = weighted[len(weighted) * 3 // 4 :]
    plans = [[], [weighted[0], weighted[-1]], sorted({weighted[0], *head_side})] if weighted else [[]]

    # A detector's graph goes on past its convolutions into box decoding, top-k and NMS: quantizing the
    # tensors of those ops (Gather, Concat, Where ...) made onnxruntime 1.2x crash (segfault) on a trained
    # FCOS, and they gain nothing from int8, so only the weighted layers are quantized there.
    ops = {} if graph.batched else {"op_types_to_quantize": ["Conv", "Gemm", "MatMul"]}

    def static(excluded: list[str]) -> None:
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                        **ops)

    def dynamic(excluded: list[str]) -> None:
        quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8, **ops)

    float_session = OnnxGraph(float_path, channels=check.shape[1], size=check.shape[-1])
    if graph.batched:
        reference = float_session(check)

        def compare(path: Path) -> tuple[float, float]:
            return agreement(graph.decisions, reference, path, check)
    else:
        detections = [float_session(image[None]) for image in check]
        heads = [name for name in graph.output_names if name not in graph.per_detection]

        def compare(path: Path) -> tuple[float, float]:
            """Detections as a detector's; a multitask graph's class and mask heads as a segmenter's."""
            session = OnnxGraph(path, channels=check.shape[1], size=check.shape[-1])
            outputs = [session(image[None]) for image in check]
            same, worst = detection_agreement(detections, outputs, score_threshold)
            if heads:
                kept = [(graph.decisions(reference) == graph.decisions(got)).float().mean().item()
                        for reference, got in zip(detections, outputs)]
                same = min(same, float(np.mean(kept)))
            return same, worst
    tries, writers = [], []
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a warning per tensor it leaves alone
    try:
        for method, write, excluded in [*(("static QDQ, per-channel", static, e) for e in plans),
                                        ("dynamic (weights only)", dynamic, [])]:
            write(excluded)
            same, max_abs = compare(out)
            tries.append({"method": method, "kept_in_float": excluded, "same_answers": same,
                          "max_abs_difference": max_abs})
            writers.append(write)
            if same >= INT8_AGREEMENT:
                break
        # the loop stops at the first try within the budget, so the best try is the last one then
        chosen = max(range(len(tries)), key=lambda i: tries[i]["same_answers"])
        best = tries[chosen]
        if chosen != len(tries) - 1:
            writers[chosen](best["kept_in_float"])  # ``out`` holds the last try: write the best again
    finally:
        root.setLevel(level)
    return {"method": best["method"], "kept_in_float": best["kept_in_float"], "same_answers": best["same_answers"],
            "within_budget": best["same_answers"] >= INT8_AGREEMENT, "budget": INT8_AGREEMENT, "tries": tries}


def export_bundle(bundle_dir: str | Path, out: str | Path | None = None, int8: bool = False,
                  calibration: str | None = None) -> dict:
    """Write the bundle's graph as ONNX (float, or int8 with ``int8``) and return the export report,
    which is also merged into ``BUNDLE/export.json`` under the file's name."""
    from omnivis.tasks.registry import get_task

    bundle = load_bundle(bundle_dir)
    if bundle.task not in EXPORTABLE:
        raise BundleError(f"{bundle_dir}: '{bundle.task}' bundles cannot be exported yet; "
                          f"ONNX export covers {', '.join(EXPORTABLE)}")
    out = Path(out) if out else default_onnx_path(bundle_dir, int8)
    if bundle.task == "generate":  # the decoder or denoiser, not the sampling loop (generator_export.py)
        from omnivis.deploy.generator_export import export_generator

        if int8:
            raise ConfigError(f"{bundle_dir}: --int8 covers classify, segment and detect bundles; export generators in fp32")
        return _record(bundle_dir, out, export_generator(bundle_dir, out, OPSET))
    predictor = get_task(bundle.task).predictor(bundle_dir)
    if bundle.task == "edit":  # the restoration network on an image or a tile; tiling stays outside (edit_export.py)
        from omnivis.deploy.edit_export import export_edit

        if int8:
            raise ConfigError(f"{bundle_dir}: --int8 covers classify, segment and detect bundles; export edit "
                              "networks in fp32")
        return _record(bundle_dir, out, export_edit(predictor, out, OPSET))
    if int8 and bundle.task == "face":
        raise ConfigError(f"{bundle_dir}: --int8 covers classify, segment and detect bundles; export face models in fp32 "
                          "(an int8 embedding would need its own threshold)")
    out.parent.mkdir(parents=True, exist_ok=True)
    images, described = reference_images(predictor, calibration)
    batch = predictor.prepare(images)
    with tempfile.TemporaryDirectory(prefix="omnivis-export-") as scratch:
        work = Path(scratch)
        float_path = work / "model.onnx" if int8 else out
        write_onnx(predictor.graph, batch, float_path)
        session = OnnxGraph(float_path, channels=int(batch.shape[1]), size=predictor.img_size)
        report = {
            "file": str(out), "task": bundle.task, "format": "onnx", "opset": OPSET,
            "input": {"name": "images", "dtype": "uint8", "layout": "NCHW",
                      "shape": ["batch" if predictor.graph.batched else 1, int(batch.shape[1]), predictor.img_size,
                                predictor.img_size]},
            "outputs": list(predictor.graph.output_names),
            "reference_images": described,
            "parity": parity_check(predictor, session, batch),
            "latency_ms_batch1": {"float": _latency_ms(session, batch[:1])},
            "bytes": {"float": float_path.stat().st_size},
        }
        if int8:
            half = max(1, len(batch) // 2)
            calibrate, check = batch[:half], batch[half:] if len(batch) > half else batch
            report["int8"] = quantize_int8(float_path, out, calibrate, check, predictor.graph, work,
                                           float(getattr(predictor, "score_threshold", 0.0)))
            report["int8"]["calibration"] = f"{len(calibrate)} of the {described}; checked on the other {len(check)}"
            report["latency_ms_batch1"]["int8"] = _latency_ms(OnnxGraph(out, int(batch.shape[1]), predictor.img_size),
                                                              batch[:1])
            report["bytes"]["int8"] = out.stat().st_size
    return _record(bundle_dir, out, report)


def _record(bundle_dir: str | Path, out: Path, report: dict) -> dict:
    """Merge ``report`` into ``BUNDLE/export.json`` under the file's name."""
    record = Path(bundle_dir) / "export.json"
    exports = json.loads(record.read_text()) if record.is_file() else {}
    exports[out.name] = report
    record.write_text(json.dumps(exports, indent=2) + "\n")
    return report
