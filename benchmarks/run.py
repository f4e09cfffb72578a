"""omnivis benchmarks, each against a named reference measured in the same run.

    python benchmarks/run.py            # everything (about 30 minutes on 2 CPU cores)
    python benchmarks/run.py digits     # (a) digits accuracy and time vs scikit-learn's SVC
    python benchmarks/run.py engine     # (b) engine training throughput vs a plain PyTorch loop
    python benchmarks/run.py distill    # (c) distilled student vs its teacher (accuracy, size, latency)
    python benchmarks/run.py ssl        # (d) SSL (simclr, 80 epochs) vs random init vs raw pixels, 10-shot; fine-tune vs scratch
    python benchmarks/run.py detect     # (e) detection mAP on shapes vs the issue's target (benchmarks/detect.py)
    python benchmarks/run.py segment    # (f) semantic mIoU on shapes vs all-background (benchmarks/segment.py)
    python benchmarks/run.py generate   # (g) diffusion vs GAN vs VAE on digits: FID, class accuracy (benchmarks/generate.py)
    python benchmarks/run.py multitask  # (h) three heads on one backbone vs detection alone (benchmarks/multitask.py)
    python benchmarks/run.py folder     # (i) defaults on a PNG folder vs SVC and a hand-written CNN (benchmarks/folder.py)
    python benchmarks/run.py scenes     # (k) detect + segment defaults on 128 px scenes unlike the builtin ones (benchmarks/scenes.py)
    python benchmarks/run.py export     # (l) ONNX fp32 / int8 vs eager PyTorch (benchmarks/export.py)
    python benchmarks/run.py serve      # (m) the server with batching vs without vs plain FastAPI (benchmarks/serve.py)
    python benchmarks/run.py face_detect  # (n) a face detector trained on generated scenes vs OpenCV's Haar cascade
    python benchmarks/run.py face       # (o) ArcFace on unseen ORL people vs pixels, eigenfaces, LBP and softmax
    python benchmarks/run.py edit       # (p) image editing vs bicubic, non-local means, OpenCV inpainting, CLAHE/gamma
    python benchmarks/run.py privacy    # (q) DP-SGD on digits at epsilon 1, 3, 8 vs non-private; membership-attack AUC
    python benchmarks/run.py explain    # (r) saliency peaks on the object (CNN, ViT) vs centre/random; sanity check
    python benchmarks/run.py multimodal # (s) zero-shot on unseen colour-shape pairs, retrieval, text-to-image
    python benchmarks/run.py shards     # (t) training from litdata shards vs the image folder: images/s, peak memory
    python benchmarks/run.py ray_serve  # (u) omnivis serve --ray: 2 replicas vs 1 vs the plain server

Results are printed with ratios and merged into benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent


def digits_benchmark(epochs: int) -> dict:
    """(a) Held-out accuracy on the 70/30 stratified digits split (random_state=0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    from omnivis.bundle import load_bundle
    from omnivis.demo import DEMO_CONFIG
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.classify import ClassifyConfig, train_classifier

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.3, stratify=digits.target, random_state=0
    )
    start = time.perf_counter()
    svc = SVC(gamma=0.001, C=10).fit(x_train, y_train)
    svc_seconds = time.perf_counter() - start
    svc_accuracy = float((svc.predict(x_test) == y_test).mean())

    config = ClassifyConfig(**DEMO_CONFIG, trainer=TrainerConfig(epochs=epochs, seed=0, progress=False))
    out = Path(tempfile.mkdtemp(prefix="omnivis-bench-")) / "digits"
    start = time.perf_counter()
    train_classifier(config, out)  # trains on the 70%, evaluates on the held-out 30%
    seconds = time.perf_counter() - start
    bundle = load_bundle(out)
    assert bundle.metrics["num_samples"] == len(y_test), "the held-out split must be the SVC's test split"
    result = {
        "omnivis_accuracy": bundle.metrics["accuracy"],
        "omnivis_seconds": seconds,
        "omnivis_recipe": f"{config.model}, {config.img_size} px, {config.channels} channel, {epochs} epochs",
        "svc_accuracy": svc_accuracy,
        "svc_seconds": svc_seconds,
        "test_images": len(y_test),
    }
    shutil.rmtree(out.parent, ignore_errors=True)
    return result


def engine_benchmark(epochs: int, batch_size: int = 64, img_size: int = 32, pairs: int = 10) -> dict:
    """(b) Steps per second of the omnivis engine and of a plain loop, same model/batch/data.

    Throughput is steady-state: each side's clock runs from its first step (first batch in hand) to
    the end of its last step, so the plain loop's model/optimizer/loader set-up and the engine's
    Trainer set-up and final checkpoint are outside both; epoch transitions, per-step callbacks,
    logging and any epoch-end checkpoints are inside. The wall time of the whole engine run (Trainer
    built, fit, final checkpoint) is reported next to it.

    This machine's speed drifts by several percent within seconds (a shared VM), so a ratio of two
    runs far apart in time, or of two "best" runs, moves by +-5%. Both sides get one warm-up run,
    then ``pairs`` back-to-back pairs, alternately plain-first and engine-first (cancelling drift
    within a pair); the headline is the median of the per-pair ratios, with their quartiles.
    """
    import lightning.pytorch as pl
    import torch.nn.functional as F

    from omnivis.data.builtin import load_builtin
    from omnivis.data.datamodule import SeededDataModule, TensorPairDataset
    from omnivis.data.transforms import AugmentConfig
    from omnivis.engine.trainer import TrainerConfig, build_trainer, seed_everything
    from omnivis.tasks.classify import ClassifyConfig, ClassifyModule
    from omnivis.tasks.common import adamw_with_warmup_cosine

    digits = load_builtin("digits")
    images = torch.tensor(np.stack([s.source for s in digits.samples]), dtype=torch.float32)[:, None] / 255.0
    images = F.interpolate(images, size=(img_size, img_size), mode="bilinear", align_corners=False)
    images = (images - 0.5) / 0.5
    labels = torch.tensor(digits.labels())
    n = (len(labels) // batch_size) * batch_size
    images, labels = images[:n].contiguous(), labels[:n].contiguous()
    steps = epochs * (n // batch_size)
    config = ClassifyConfig(
        model="omnivis_resnet_tiny", img_size=img_size, channels=1, batch_size=batch_size,
        augment=AugmentConfig(preset="none", hflip=False),
        trainer=TrainerConfig(epochs=epochs, seed=0, progress=False, accelerator="cpu"),
    )
    classes = [str(i) for i in range(10)]

    def plain_loop() -> float:
        """The same module's network, optimizer and schedule, a DataLoader over the tensors."""
        seed_everything(0)
        model = ClassifyModule(config, classes).model.train()
        opt = adamw_with_warmup_cosine(model, config.lr, config.weight_decay, steps, n // batch_size)
        optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(images, labels), batch_size=batch_size, shuffle=True, drop_last=True
        )
        start = None
        for _ in range(epochs):
            for x, y in loader:
                start = start or time.perf_counter()
                loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
        return time.perf_counter() - start

    class StepClock(pl.Callback):
        """First step's start to last step's end."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.first = getattr(self, "first", None) or time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.last = time.perf_counter()

    def engine() -> tuple[float, float]:
        """The ClassifyModule on the Lightning Trainer we build for every task -> (steady, wall) seconds."""
        seed_everything(0)
        module = ClassifyModule(config, classes)
        datamodule = SeededDataModule(TensorPairDataset(images, labels), batch_size=batch_size, seed=0)
        run_dir = Path(tempfile.mkdtemp(prefix="omnivis-engine-"))
        clock = StepClock()
        start = time.perf_counter()
        trainer = build_trainer(config.trainer, run_dir, extra_callbacks=[clock])
        trainer.fit(module, datamodule=datamodule)
        wall = time.perf_counter() - start
        shutil.rmtree(run_dir, ignore_errors=True)
        return clock.last - clock.first, wall

    plain_loop()  # warm-up: one-time kernel and allocator set-up is not either side's cost
    engine()
    plain_times, engine_times, engine_walls = [], [], []
    for pair in range(pairs):
        if pair % 2:
            (steady, wall), plain = engine(), plain_loop()
        else:
            plain, (steady, wall) = plain_loop(), engine()
        plain_times.append(plain)
        engine_times.append(steady)
        engine_walls.append(wall)
    ratios = [p / e for p, e in zip(plain_times, engine_times)]
    return {
        "steps": steps,
        "batch_size": batch_size,
        "img_size": img_size,
        "plain_steps_per_second": steps / float(np.median(plain_times)),
        "engine_steps_per_second": steps / float(np.median(engine_times)),
        "engine_over_plain": float(np.median(ratios)),
        "pair_ratio_quartiles": [float(q) for q in np.percentile(ratios, [25, 75])],
        "best_over_best": min(plain_times) / min(engine_times),
        "wall_over_plain": float(np.median([p / w for p, w in zip(plain_times, engine_walls)])),
        "pair_ratios": ratios,
        "plain_seconds": plain_times,
        "engine_seconds": engine_times,
        "engine_wall_seconds": engine_walls,
    }


def distill_benchmark(teacher_epochs: int, student_epochs: int) -> dict:
    """(c) A student with <= 1/4 of the teacher's parameters, distilled on digits; same held-out split."""
    from omnivis.demo import DEMO_CONFIG
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.classify import ClassifyConfig, train_classifier
    from omnivis.tasks.distill import DistillConfig, distill

    root = Path(tempfile.mkdtemp(prefix="omnivis-distill-"))
    teacher_config = ClassifyConfig(**DEMO_CONFIG, trainer=TrainerConfig(epochs=teacher_epochs, seed=0, progress=False))
    start = time.perf_counter()
    teacher = train_classifier(teacher_config, root / "teacher")
    teacher_seconds = time.perf_counter() - start
    student_config = DistillConfig(
        teacher=str(teacher), model="omnivis_resnet_micro", val_fraction=0.3, lr=DEMO_CONFIG["lr"],
        augment=DEMO_CONFIG["augment"], trainer=TrainerConfig(epochs=student_epochs, seed=0, progress=False),
    )
    start = time.perf_counter()
    student = distill(student_config, root / "student")
    student_seconds = time.perf_counter() - start
    report = json.loads((student / "distill_report.json").read_text())
    shutil.rmtree(root, ignore_errors=True)
    return {**report, "teacher_seconds": teacher_seconds, "student_seconds": student_seconds,
            "teacher_epochs": teacher_epochs, "student_epochs": student_epochs}


def ssl_benchmark(method: str, epochs: int, shots: int = 10, draws: int = 5) -> dict:
    """(d) Linear-probe K-shot accuracy on digits of a backbone pretrained (labels unused) on the
    70% training images, vs the same backbone randomly initialized and raw-pixel logistic regression."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from omnivis.data.builtin import load_builtin
    from omnivis.data.splits import split_indices
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.pretrain import PretrainConfig, pretrain
    from omnivis.tasks.probe import probe, raw_pixel_baseline

    digits = load_builtin("digits")
    train_idx, _ = split_indices(digits.labels(), 0.3, seed=0)
    y = load_digits().target
    _, test_ref = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=0)
    assert len(train_idx) == len(y) - len(test_ref)
    # pretraining sees only the training images, without labels: written as an unlabeled folder
    root = Path(tempfile.mkdtemp(prefix="omnivis-ssl-"))
    images = root / "unlabeled"
    images.mkdir()
    for i in train_idx:
        Image.fromarray(digits.samples[int(i)].source).save(images / f"{int(i):04d}.png")
    config = PretrainConfig(data=str(images), method=method, channels=1, img_size=32, hflip=False, crop_scale=0.6,
                            trainer=TrainerConfig(epochs=epochs, seed=0, progress=False))
    start = time.perf_counter()
    bundle = pretrain(config, root / method)
    seconds = time.perf_counter() - start
    kw = dict(shots=shots, draws=draws, val_fraction=0.3, seed=0)
    pretrained = probe(str(bundle), "builtin:digits", **kw)
    backbone = json.loads((Path(bundle) / "config.json").read_text())["backbone"]  # the method's default net
    random_init = probe(backbone, "builtin:digits", channels=1, img_size=32, **kw)
    pixels = raw_pixel_baseline("builtin:digits", **kw)
    finetune = finetune_comparison(bundle, root, shots=shots, draws=3)
    shutil.rmtree(root, ignore_errors=True)
    pick = ("knn_accuracy", "linear_accuracy", "kshot_accuracy_mean", "kshot_accuracy_std")
    return {"method": method, "epochs": epochs, "pretrain_seconds": seconds, "shots": shots, "draws": draws,
            "pretrained": {k: pretrained[k] for k in pick}, "random_init": {k: random_init[k] for k in pick},
            "raw_pixels": {k: pixels[k] for k in pick}, "finetune": finetune}


SCRIPTS = ("detect", "segment", "generate", "multitask", "folder", "scenes", "export", "serve", "face", "face_detect",
           "edit", "privacy", "explain", "multimodal", "shards", "ray_serve")
ALL = ("digits", "engine", "distill", "ssl", *SCRIPTS)


def finetune_comparison(bundle: Path, root: Path, shots: int = 10, draws: int = 3, epochs: int = 30) -> dict:
    """Fine-tune a classifier from the pretrained ``bundle`` and from scratch on the same ``shots``
    labelled digits per class (the probe's k-shot draws), scored on the 540 held-out images."""
    from PIL import Image

    from omnivis.data.builtin import load_builtin
    from omnivis.data.splits import split_indices
    from omnivis.data.transforms import AugmentConfig
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.inference.classify import evaluate_classifier
    from omnivis.tasks.classify import ClassifyConfig, train_classifier
    from omnivis.tasks.probe import kshot_indices

    backbone = json.loads((Path(bundle) / "config.json").read_text())["backbone"]  # the same net, both ways
    digits = load_builtin("digits")
    train_idx, test_idx = split_indices(digits.labels(), 0.3, seed=0)
    test = digits.subset(test_idx)
    scores: dict[str, list[float]] = {"pretrained": [], "scratch": []}
    for draw in range(draws):
        chosen = train_idx[kshot_indices(digits.labels()[train_idx], shots, draw, seed=0)]
        folder = root / f"shots{draw}"
        for i in chosen:
            sample = digits.samples[int(i)]
            (folder / digits.classes[sample.label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(sample.source).save(folder / digits.classes[sample.label] / f"{int(i):04d}.png")
        for name, init in (("pretrained", str(bundle)), ("scratch", None)):
            config = ClassifyConfig(
                data=str(folder), val_fraction=0.0, model=backbone, channels=1, img_size=32, init_from=init, batch_size=32,
                augment=AugmentConfig(preset="light", hflip=False, rotation=10.0),
                trainer=TrainerConfig(epochs=epochs, seed=draw, progress=False),
            )
            out = train_classifier(config, root / f"ft-{name}-{draw}")
            scores[name].append(evaluate_classifier(out, data=test, out_dir=None, progress=False)["accuracy"])
    return {"shots": shots, "draws": draws, "epochs": epochs,
            **{f"{k}_mean": float(np.mean(v)) for k, v in scores.items()},
            **{f"{k}_std": float(np.std(v)) for k, v in scores.items()}, "runs": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", help=f"{', '.join(ALL)} (default: all)")
    parser.add_argument("--digits-epochs", type=int, default=24)
    parser.add_argument("--engine-epochs", type=int, default=6)
    parser.add_argument("--distill-epochs", type=int, default=15, help="teacher and student epochs")
    parser.add_argument("--ssl-method", default="simclr")
    parser.add_argument("--ssl-epochs", type=int, default=80)
    args = parser.parse_args()
    args.which = args.which or list(ALL)
    unknown = set(args.which) - set(ALL)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    for name in SCRIPTS:  # each task family's benchmark is its own script with its own options and table
        if name in args.which:
            print(f"== benchmarks/{name}.py ==", flush=True)
            subprocess.run([sys.executable, str(ROOT / f"{name}.py")], check=True)
    if not set(args.which) - set(SCRIPTS):
        return
    import warnings

    import lightning.pytorch  # noqa: F401

    warnings.filterwarnings("ignore")

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    previous = json.loads((ROOT / "results.json").read_text()) if (ROOT / "results.json").exists() else {}
    results: dict = {
        **previous,  # a partial run keeps the other benchmarks' last figures
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
    }
    if "digits" in args.which:
        d = digits_benchmark(args.digits_epochs)
        results["digits"] = d
        print("(a) digits, 540 held-out images (70/30 stratified, random_state=0)")
        print(f"    omnivis  {d['omnivis_recipe']}: accuracy {d['omnivis_accuracy']:.4f}, {d['omnivis_seconds']:.1f} s")
        print(f"    SVC(gamma=0.001, C=10):  accuracy {d['svc_accuracy']:.4f}, {d['svc_seconds']:.2f} s")
        print(f"    accuracy ratio omnivis/SVC: {d['omnivis_accuracy'] / d['svc_accuracy']:.4f}")
    if "engine" in args.which:
        # the 32 px step (~21 ms here) is the demo's; 64 px (~55 ms) shows how the fixed per-step cost shrinks
        for key, img_size, epochs in (("engine", 32, args.engine_epochs), ("engine_64px", 64, max(1, args.engine_epochs // 2))):
            e = engine_benchmark(epochs, img_size=img_size)
            results[key] = e
            low, high = e["pair_ratio_quartiles"]
            print(f"(b) training throughput, omnivis_resnet_tiny {img_size} px, batch {e['batch_size']}, {e['steps']} steps, "
                  f"in-memory data, {len(e['pair_ratios'])} alternating pairs")
            print(f"    plain PyTorch loop: {e['plain_steps_per_second']:.2f} steps/s (median run)")
            print(f"    omnivis engine:     {e['engine_steps_per_second']:.2f} steps/s (median run)")
            print(f"    engine / plain:     {e['engine_over_plain']:.3f}x (median of the pair ratios; quartiles "
                  f"{low:.3f}-{high:.3f}; best run over best run {e['best_over_best']:.3f}x)")
            print(f"    with the engine's Trainer set-up and final checkpoint counted: {e['wall_over_plain']:.3f}x")
    if "distill" in args.which:
        r = distill_benchmark(args.distill_epochs, args.distill_epochs)
        results["distill"] = r
        print(f"(c) distillation on digits, {r['teacher_epochs']} epochs each, same 540 held-out images")
        print(f"    teacher {r['teacher_backbone']}: {r['teacher_params']:,} params, accuracy {r['teacher_accuracy']:.4f}, "
              f"{r['teacher_latency_ms']:.2f} ms/image on CPU")
        print(f"    student {r['student_backbone']}: {r['student_params']:,} params ({r['param_ratio']:.3f}x), accuracy "
              f"{r['student_accuracy']:.4f}, {r['student_latency_ms']:.2f} ms/image on CPU")
        print(f"    accuracy gap {100 * (r['teacher_accuracy'] - r['student_accuracy']):.2f} points, "
              f"latency ratio student/teacher {r['student_latency_ms'] / r['teacher_latency_ms']:.2f}")
    if "ssl" in args.which:
        r = ssl_benchmark(args.ssl_method, args.ssl_epochs)
        results[f"ssl_{r['method']}"] = r
        print(f"(d) {r['method']} pretraining on the digits training images ({r['epochs']} epochs, "
              f"{r['pretrain_seconds']:.0f} s), {r['shots']} labels per class, {r['draws']} draws")
        for name in ("pretrained", "random_init", "raw_pixels"):
            v = r[name]
            print(f"    {name:12s} kNN {v['knn_accuracy']:.4f}  linear {v['linear_accuracy']:.4f}  "
                  f"{r['shots']}-shot {v['kshot_accuracy_mean']:.4f} +- {v['kshot_accuracy_std']:.4f}")
        f = r["finetune"]
        print(f"    fine-tuning on {f['shots']} labels per class ({f['draws']} draws, {f['epochs']} epochs): from the "
              f"pretrained bundle {f['pretrained_mean']:.4f} +- {f['pretrained_std']:.4f}, from scratch "
              f"{f['scratch_mean']:.4f} +- {f['scratch_std']:.4f}, ratio {f['pretrained_mean'] / f['scratch_mean']:.3f}")
    (ROOT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {ROOT / 'results.json'}")


if __name__ == "__main__":
    sys.exit(main())
