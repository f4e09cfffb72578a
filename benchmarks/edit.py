"""Image editing: each op trained with the defaults on mvtb-data's photos, scored on scikit-image's
photos against its classical baseline (computed by the same code in the same run); tiled vs whole-image
output; peak memory and megapixels per second on a 4000 x 3000 photo.

    python benchmarks/edit.py            # everything (about 35 minutes on 2 CPU cores)
    python benchmarks/edit.py --quick    # 30 training steps and 3 test photos: checks the script only
    python benchmarks/edit.py --ops denoise,inpaint

Targets (issue 15): superres x2 PSNR (Y, crop_border 2) >= bicubic + 1.5 dB; denoise sigma 25 >=
non-local means + 1 dB; inpaint PSNR in the hole >= OpenCV Telea and Navier-Stokes; enhance >= the
better of CLAHE and gamma; tiled vs untiled >= 50 dB. Results are merged into benchmarks/results.json
under ``edit``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from results_file import merge_results, read_results  # benchmarks/results_file.py

ROOT = Path(__file__).resolve().parent
RUNS = {
    "superres_x2": {"op": "superres", "scale": 2},
    "superres_x4": {"op": "superres", "scale": 4},
    "denoise_sigma25": {"op": "denoise", "noise": "gaussian", "sigma": 25.0},
    "inpaint": {"op": "inpaint"},
    "enhance": {"op": "enhance"},
    "style": {"op": "style"},
}
TARGET_KEY = {"superres": "psnr_y", "denoise": "psnr_y", "enhance": "psnr_y", "inpaint": "psnr_hole"}

_MEMORY_CHILD = r"""
import json, sys, time
from omnivis.inference.edit import EditPredictor
from omnivis.data.decode import decode_tensor
bundle, image, box, style = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
predictor = EditPredictor.from_dir(bundle)
def status_mb(field):  # VmHWM, not ru_maxrss: that one keeps the forking parent's peak across exec
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
before = status_mb("VmRSS")
started = time.perf_counter()
out = predictor.edit(image, box=tuple(int(v) for v in box.split(",")) if box != "-" else None,
                     style=style if style != "-" else None)
seconds = time.perf_counter() - started
peak = status_mb("VmHWM")
h, w = decode_tensor(image).shape[-2:]
tile = ("crop around the holes" if predictor.op == "inpaint" else predictor.default_tile(h, w)
        if hasattr(predictor, "default_tile") else predictor.tile)  # (before the memory budget: the bundle's)
print(json.dumps({"rss_before_mb": before, "peak_rss_mb": peak, "seconds": seconds, "default_tile": tile,
                  "input_mb": 3 * h * w / 2**20, "output_mb": out.nbytes / 2**20,
                  "output_megapixels": out.shape[0] * out.shape[1] / 1e6}))
"""


def train(name: str, settings: dict, out: Path, quick: bool, test_data: str) -> dict:
    from omnivis.engine.config import TrainerConfig
    from omnivis.tasks.edit import EditConfig, train_edit

    trainer = TrainerConfig(epochs=None, progress=False, **({"max_steps": 30} if quick else {}))
    started = time.perf_counter()
    train_edit(EditConfig(**settings, test_data=test_data, trainer=trainer), out)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.update(json.loads((out / "edit_report.json").read_text())["metrics"])  # with the text fields
    metrics["wall_s"] = round(time.perf_counter() - started, 1)
    return metrics


def tiled_vs_whole(bundle: Path, photo: np.ndarray, style: np.ndarray) -> dict:
    """The bundle on one photo that fits, tiled (tile 96) and in one pass: PSNR between the two."""
    import torch

    from omnivis.data.degrade import Degraded
    from omnivis.inference.edit import EditPredictor, degraded_test_photo
    from omnivis.metrics.edit import psnr

    predictor = EditPredictor.from_dir(bundle)
    if predictor.op == "style":
        whole, tiled = (predictor.edit(photo, style=style, tile=tile) for tile in (0, 96))
        return {"tiled_vs_whole_psnr_db": psnr(tiled, whole), "tiles_of": 96, "image": list(photo.shape[:2])}
    clean = torch.from_numpy(photo).permute(2, 0, 1).float() / 255.0
    clean = clean[:, : clean.shape[1] // 16 * 16, : clean.shape[2] // 16 * 16]
    degraded = degraded_test_photo(clean, predictor.degradation, 0)
    whole = predictor.restore(degraded, tile=0)
    tiled = predictor.restore(Degraded(degraded.image, degraded.mask, degraded.condition), tile=96)
    value = psnr(tiled.permute(1, 2, 0).numpy(), whole.permute(1, 2, 0).numpy())
    return {"tiled_vs_whole_psnr_db": value, "tiles_of": 96, "image": list(clean.shape[1:])}


def big_photo(folder: Path, width: int, height: int) -> Path:
    """A real photo (mvtb-data's 8-Mpx parks.png) resized to width x height, saved as PNG."""
    from omnivis.data.photos import mvtb_images_root

    path = folder / f"photo_{width}x{height}.png"
    if not path.exists():
        Image.open(mvtb_images_root() / "parks.png").convert("RGB").resize((width, height), Image.Resampling.LANCZOS).save(path)
    return path


def memory_and_speed(bundle: Path, image: Path, box: str = "-", style: str = "-") -> dict:
    """``EditPredictor.edit`` on ``image`` in a fresh process: peak RSS over the RSS before the edit,
    against the input + output uint8 buffers, and megapixels (of output) per second."""
    result = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(bundle), str(image), box, style],
                            capture_output=True, text=True, check=True)
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["extra_rss_mb"] = row["peak_rss_mb"] - row["rss_before_mb"]
    row["extra_over_buffers"] = row["extra_rss_mb"] / (row["input_mb"] + row["output_mb"])
    row["megapixels_per_s"] = row["output_megapixels"] / row["seconds"]
    return row


def memory_rows(names: list[str], tmp: Path, large: Path, half: Path, photos) -> dict:
    """``--memory-only``: each run's network (the defaults' shape, 30 training steps) on the large photo."""
    rows, test = {}, tmp / "memory-test"
    test.mkdir(exist_ok=True)
    for sample in photos.samples[:3]:  # scored after training; these runs are for their shape only
        Image.fromarray(np.asarray(sample.source)[:128, :128]).save(test / f"{Path(sample.name).name}.png")
    for name in names:
        settings = RUNS[name]
        if settings["op"] == "superres" and settings["scale"] == 4:
            continue  # x4 of 4000x3000 would be 192 Mpx out
        print(f"== {name}: 30 training steps, then the large photo", flush=True)
        train(name, settings, tmp / name, True, str(test))
        source = half if settings["op"] == "superres" else large
        width, height = Image.open(source).size
        box = f"{width // 3},{height // 3},{width // 8},{height // 8}" if settings["op"] == "inpaint" else "-"
        style = "-"
        if settings["op"] == "style":
            style = str(tmp / "style.png")
            Image.fromarray(np.asarray(photos.samples[4].source)).save(style)
        rows[name] = {"large_image": {"input": f"{width}x{height}", **memory_and_speed(tmp / name, source, box, style)}}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 training steps, 3 test photos: checks the script")
    parser.add_argument("--ops", default=",".join(RUNS), help=f"which runs, of {', '.join(RUNS)}")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the 4000 x 3000 memory and speed rows, on bundles trained 30 steps (memory and "
                             "speed depend on the network's shape, not on its weights)")
    args = parser.parse_args()
    from omnivis.commands._shared import quiet_libraries
    from omnivis.data.builtin import load_photos

    quiet_libraries()

    photos = load_photos()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        test_data = "builtin:photos"
        if args.quick:
            (tmp / "test").mkdir()
            for sample in photos.samples[:3]:
                Image.fromarray(np.asarray(sample.source)[:128, :128]).save(tmp / "test" / f"{Path(sample.name).name}.png")
            test_data = str(tmp / "test")
        large = big_photo(tmp, 4000, 3000) if not args.quick else big_photo(tmp, 400, 300)
        half = big_photo(tmp, 2000, 1500) if not args.quick else big_photo(tmp, 200, 150)
        if args.memory_only:
            results = memory_rows(args.ops.split(","), tmp, large, half, photos)
            args.ops = ""
        for name in filter(None, args.ops.split(",")):
            settings = RUNS[name]
            print(f"== {name}: training with the defaults", flush=True)
            metrics = train(name, settings, tmp / name, args.quick, test_data)
            op = settings["op"]
            if op == "style":
                row = {k: metrics[k] for k in ("train_steps", "train_time_s", "ours_content_ssim_y",
                                               "histogram_match_content_ssim_y", "ours_gram_own", "histogram_match_gram_own",
                                               "input_gram_own", "ours_gram_referee", "histogram_match_gram_referee",
                                               "input_gram_referee")}
                row.update(tiled_vs_whole(tmp / name, np.asarray(photos.samples[0].source),
                                          np.asarray(photos.samples[4].source)))  # astronaut after chelsea
                Image.fromarray(np.asarray(photos.samples[4].source)).save(tmp / "style.png")
                width, height = Image.open(large).size
                row["large_image"] = {"input": f"{width}x{height}",
                                      **memory_and_speed(tmp / name, large, style=str(tmp / "style.png"))}
                results[name] = row
                print(json.dumps(row, indent=2), flush=True)
                continue
            key = TARGET_KEY[op]
            best = metrics["best_baseline"]
            row = {"train_steps": metrics["train_steps"], "train_time_s": metrics["train_time_s"],
                   f"ours_{key}": metrics[f"ours_{key}"], f"{best}_{key}": metrics[f"{best}_{key}"],
                   f"gain_over_{best}_db": metrics[f"ours_{key}"] - metrics[f"{best}_{key}"],
                   "ours_ssim_y": metrics["ours_ssim_y"], f"{best}_ssim_y": metrics[f"{best}_ssim_y"],
                   "eval_megapixels_per_s": metrics["megapixels_per_s"]}
            if op == "inpaint":
                for other in ("telea", "navier_stokes"):
                    row[f"{other}_{key}"] = metrics[f"{other}_{key}"]
            if op == "denoise":
                row["noisy_input_psnr_y"] = metrics["input_psnr_y"]
            row.update(tiled_vs_whole(tmp / name, np.asarray(photos.samples[0].source), None))  # astronaut, 512 x 512
            source = half if op == "superres" and settings["scale"] == 2 else large
            if not (op == "superres" and settings["scale"] == 4):  # x4 of 4000x3000 would be 192 Mpx out
                width, height = Image.open(source).size
                box = f"{width // 3},{height // 3},{width // 8},{height // 8}" if op == "inpaint" else "-"
                row["large_image"] = {"input": f"{width}x{height}", **memory_and_speed(tmp / name, source, box)}
            results[name] = row
            print(json.dumps(row, indent=2), flush=True)
    if args.memory_only:
        for name, row in results.items():
            big = row["large_image"]
            print(f"{name:16s} {big['input']:>9s}  tile {str(big['default_tile']):>21s}  {big['megapixels_per_s']:.2f} Mpx/s"
                  f"  extra RSS {big['extra_rss_mb']:.0f} MB = {big['extra_over_buffers']:.2f}x the buffers")
        if not args.quick:
            edit = read_results().get("edit", {})
            for name, row in results.items():
                edit.setdefault(name, {})["large_image"] = row["large_image"]
            merge_results({"edit": edit})
        return
    print("\n== summary (ours vs the best classical baseline; PSNR dB by the op's protocol)")
    for name, row in results.items():
        if name == "style":
            print(f"{name:16s} content SSIM {row['ours_content_ssim_y']:.3f} (histogram matching "
                  f"{row['histogram_match_content_ssim_y']:.3f}), referee Gram distance {row['ours_gram_referee']:.3g} "
                  f"({row['histogram_match_gram_referee']:.3g}; unstyled {row['input_gram_referee']:.3g})")
            continue
        gain = next(v for k, v in row.items() if k.startswith("gain_over_"))
        print(f"{name:16s} gain {gain:+.2f} dB   tiled vs whole {row['tiled_vs_whole_psnr_db']:.1f} dB" +
              (f"   {row['large_image']['megapixels_per_s']:.2f} Mpx/s, extra RSS "
               f"{row['large_image']['extra_over_buffers']:.2f}x buffers" if "large_image" in row else ""))
    if not args.quick:
        merge_results({"edit": {**read_results().get("edit", {}), **results}})


if __name__ == "__main__":
    main()
