"""(t) Training from litdata shards vs from the image folder they were packed from (issue 18).

    python benchmarks/shards.py                         # 24,000 images, about 12 minutes
    python benchmarks/shards.py --images 6000 --steps 30   # a quicker look

The data: ``--images`` 64 x 64 JPEGs (quality 90) in 8 class folders, each class random crops of one
of scikit-image's photos (astronaut, coffee, rocket, ...), so files, sizes and decoding are those of
real photos. ``omnivis data pack`` turns the folder into shards (64 MB chunks).

Measured, folder and shards alternating, ``--repeats`` times each (the median is reported):

- **loader alone**: images/s of ``train classify``'s own training loader (its default workers,
  decode, augmentation, the decoded-image cache) over ``--loader-batches`` batches, nothing else
  in the process.
- **training end to end**: ``omnivis train classify --data X --cache-mb C --max-steps S`` in its own
  process, the defaults otherwise; images/s = steps x batch size / the run's ``train_time_s``
  (validation on the held-out split, read from the same source, included).
- **peak memory**: the largest sum of proportional set sizes (PSS: resident memory, pages shared
  between processes split among them) over the training process and its loader workers, sampled
  every 0.1 s (plain RSS would count the pages the workers share with their parent twice).

The decoded-image cache (``--cache-mb``, one limit for the training and held-out images together) is
set to a fifth of the decoded training set: the data is 5x the cache, and the images past the limit
are read from the folder or the shards every epoch. A third run, on the shards with the default
cache (2,048 MB: everything decoded into memory), shows what the limit saves, and a fourth, on
shards of twice the images with the same limit, that memory does not grow with the data.

Target (issue 18): shards >= 1.0x the folder's images/s, memory bounded (peak memory reported). The
folder is read from the page cache here (just written; the same holds for the shards): on a cold
disk or a network file system, opening 24,000 small files costs far more than reading 2 chunk
files, so this is the folder's best case. Results are merged into benchmarks/results.json (key shards).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from results_file import merge_results  # benchmarks/results_file.py

PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "stereo_motorcycle", "chelsea")
SIDE = 64


def write_folder(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEGs: random 64-128 px crops of one photo per class, resized to 64 x 64."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        photos.append(image[0] if isinstance(image, tuple) else image)
    for i in range(count):
        label = i % len(PHOTOS)
        photo = photos[label]
        crop = int(rng.integers(64, 129))
        top, left = (int(rng.integers(0, photo.shape[k] - crop)) for k in (0, 1))
        folder = root / PHOTOS[label]
        folder.mkdir(parents=True, exist_ok=True)
        tile = Image.fromarray(np.ascontiguousarray(photo[top:top + crop, left:left + crop, :3]))
        tile.resize((SIDE, SIDE), Image.BILINEAR).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_pss_mb(pid: int) -> float:
    """Memory of ``pid`` and its descendants, in MB: the sum of their proportional set sizes (PSS), so
    pages the loader workers share with the process that forked them count once, not per process."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/smaps_rollup") as rollup:
                total += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:")) * 1024
        except (OSError, StopIteration, IndexError, ValueError):
            pass
    return total / 1e6


def train_run(data: Path, out: Path, cache_mb: float | None, steps: int) -> dict:
    """``omnivis train classify`` in its own process; its images/s and the peak PSS of its process tree."""
    shutil.rmtree(out, ignore_errors=True)  # a run folder left by an earlier call of this script
    command = [sys.executable, "-m", "omnivis.cli", "train", "classify", "--data", str(data), "--out", str(out),
               "--max-steps", str(steps), "--no-progress"]
    if cache_mb is not None:
        command += ["--cache-mb", str(cache_mb)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, tree_pss_mb(process.pid))
        time.sleep(0.1)
    log = process.stdout.read()
    if process.returncode:
        raise SystemExit(f"train classify failed on {data}:\n{log[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    batch = json.loads((out / "run_config.json").read_text())["batch_size"]
    lines = [line for line in log.splitlines() if "cached" in line or "workers" in line or "decoded" in line]
    return {"images_per_s": metrics["train_steps"] * batch / metrics["train_time_s"], "peak_pss_mb": peak,
            "train_time_s": metrics["train_time_s"], "steps": metrics["train_steps"], "batch_size": batch,
            "log": lines}


def loader_alone(data: Path, cache_mb: float, batches: int) -> dict:
    """Images/s of the training loader ``train classify`` builds for ``data`` (its defaults, this cache)."""
    from omnivis.engine.config import TrainerConfig
    from omnivis.tasks.classify import ClassifyConfig, classify_plan

    plan = classify_plan(ClassifyConfig(data=str(data), trainer=TrainerConfig(cache_mb=cache_mb, progress=False)))
    loader = plan.datamodule.train_dataloader()
    iterator = iter(loader)
    next(iterator)  # workers started, first batch
    start, seen = time.perf_counter(), 0
    for _, (images, _) in zip(range(batches), iterator):
        seen += len(images)
    return {"images_per_s": seen / (time.perf_counter() - start), "workers": plan.datamodule.num_workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24000)
    parser.add_argument("--steps", type=int, default=60, help="training steps per run")
    parser.add_argument("--loader-batches", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", help="a folder to keep the data and runs in (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="omnivis-bench-shards-"))
    folder, shards = work / "folder", work / "shards"
    started = time.perf_counter()
    if not folder.exists():
        write_folder(folder, args.images)
    write_s = time.perf_counter() - started
    if not shards.exists():
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "omnivis.cli", "data", "pack", str(folder), "--out", str(shards)],
                       check=True, stdout=subprocess.DEVNULL)
        pack_s = time.perf_counter() - started
    else:
        pack_s = float("nan")
    file_mb = sum(p.stat().st_size for p in folder.rglob("*.jpg")) / 1e6
    shard_mb = sum(p.stat().st_size for p in shards.glob("chunk-*.bin")) / 1e6
    decoded_mb = args.images * SIDE * SIDE * 3 / 1e6
    cache_mb = round(decoded_mb / 5, 1)
    print(f"{args.images} JPEGs, {file_mb:.1f} MB in files (written in {write_s:.0f} s); shards {shard_mb:.1f} MB "
          f"in {len(list(shards.glob('chunk-*.bin')))} chunk(s) (packed in {pack_s:.0f} s); decoded {decoded_mb:.0f} MB, "
          f"cache {cache_mb} MB", flush=True)

    runs: dict[str, list[dict]] = {"folder": [], "shards": []}
    loaders: dict[str, list[dict]] = {"folder": [], "shards": []}
    for repeat in range(args.repeats):
        for name, data in (("folder", folder), ("shards", shards)):
            loaders[name].append(loader_alone(data, cache_mb, args.loader_batches))
            runs[name].append(train_run(data, work / f"run-{name}-{repeat}", cache_mb, args.steps))
            print(f"{name} #{repeat}: loader {loaders[name][-1]['images_per_s']:.0f} images/s, training "
                  f"{runs[name][-1]['images_per_s']:.1f} images/s, peak PSS {runs[name][-1]['peak_pss_mb']:.0f} MB",
                  flush=True)
    whole = train_run(shards, work / "run-shards-whole-cache", None, args.steps)
    # bounded: twice the images through the same cache limit
    double_folder, double = work / "folder-2x", work / "shards-2x"
    if not double.exists():
        write_folder(double_folder, 2 * args.images, seed=1)
        subprocess.run([sys.executable, "-m", "omnivis.cli", "data", "pack", str(double_folder), "--out", str(double)],
                       check=True, stdout=subprocess.DEVNULL)
    twice = train_run(double, work / "run-shards-2x", cache_mb, args.steps)

    def median(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    summary = {name: {"loader_images_per_s": median(loaders[name], "images_per_s"),
                      "train_images_per_s": median(runs[name], "images_per_s"),
                      "peak_pss_mb": max(r["peak_pss_mb"] for r in runs[name]),
                      "workers": loaders[name][0]["workers"], "log": runs[name][0]["log"]} for name in runs}
    loader_ratio = summary["shards"]["loader_images_per_s"] / summary["folder"]["loader_images_per_s"]
    train_ratio = summary["shards"]["train_images_per_s"] / summary["folder"]["train_images_per_s"]
    print(f"\nshards benchmark: {args.images} 64 px JPEGs in 8 classes, {os.cpu_count()} CPUs, {args.steps} training "
          f"steps per run (batch {runs['folder'][0]['batch_size']}), median of {args.repeats}")
    print("| source | loader alone, images/s | training, images/s | peak PSS, MB (cache MB) |")
    print("|---|---|---|---|")
    for name in ("folder", "shards"):
        s = summary[name]
        print(f"| {name} | {s['loader_images_per_s']:.0f} | {s['train_images_per_s']:.1f} | "
              f"{s['peak_pss_mb']:.0f} ({cache_mb}) |")
    print(f"| shards, default cache | - | {whole['images_per_s']:.1f} | {whole['peak_pss_mb']:.0f} (2048) |")
    print(f"| shards, {2 * args.images} images | - | {twice['images_per_s']:.1f} | {twice['peak_pss_mb']:.0f} ({cache_mb}) |")
    print(f"shards / folder: loader {loader_ratio:.2f}x, training {train_ratio:.2f}x (target >= 1.0x: "
          f"{'met' if min(loader_ratio, train_ratio) >= 1.0 else 'NOT met'}); the training set decoded is "
          f"{decoded_mb:.0f} MB, 5x the cache")
    for line in summary["shards"]["log"]:
        print(f"    shards run: {line}")
    merge_results({"shards": {"images": args.images, "steps": args.steps, "cache_mb": cache_mb, "decoded_mb": decoded_mb,
                              "file_mb": file_mb, "shard_mb": shard_mb, "summary": summary, "runs": runs,
                              "loaders": loaders, "default_cache": whole, "twice_the_images": twice,
                              "loader_ratio": loader_ratio, "train_ratio": train_ratio}})


if __name__ == "__main__":
    main()
