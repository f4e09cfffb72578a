"""Generation benchmark on builtin:digits (16 px, grayscale), 2 CPU cores.

Trains a reference classifier (the FID/KID feature space and the class-accuracy judge), then a
class-conditional diffusion model, a conditional GAN and a conditional VAE; reports each one's FID,
KID and training time, the reference's accuracy on diffusion samples of each requested class, the
seconds to sample 64 images with DDIM at 50 and at 10 steps and DPM-Solver++ at 20 (with the FID of
each), and the guidance trade-off: FID and class accuracy of the diffusion model at guidance 1 to 2
(``guidance.png``).

Targets (the issue): diffusion class accuracy >= 0.95; FID diffusion < GAN < VAE.

    python benchmarks/generate.py           # the full run
    python benchmarks/generate.py --quick   # a tiny run that checks the script end to end
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

TARGET_CLASS_ACCURACY = 0.95


def _train(method: str, out: Path, reference: Path, epochs: int, max_steps: int, **extra) -> tuple[Path, float]:
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.generate import GenerateConfig, train_generator

    config = GenerateConfig(method=method, data="builtin:digits", img_size=16, channels=1, conditional=True,
                            reference=None, **extra,
                            trainer=TrainerConfig(epochs=epochs, max_steps=max_steps, progress=False, seed=0))
    start = time.perf_counter()
    train_generator(config, out / method)
    return out / method, time.perf_counter() - start


def _load() -> str:
    """The 1/5/15-minute load averages, printed with the figures (the machine may be shared)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def guidance_sweep(gen, features, scales, n_fid: int, per_class: int, png: Path, steps: int) -> list[dict]:
    """FID (``n_fid`` samples vs the held-out images) and class accuracy at each guidance scale.

    Classifier-free guidance trades diversity (FID) for class fidelity (accuracy); this picks the default.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from omnivis.metrics.generation import fid_kid
    from omnivis.tasks.generate.evaluate import _real_images, class_accuracy

    real, _ = _real_images(gen, None, "auto", False, n_fid)
    rows = []
    for g in scales:
        fake = (gen.generate_tensor(len(real), guidance=g, steps=steps, seed=0) + 1) / 2
        per = class_accuracy(gen, features, per_class, seed=0, guidance=g, steps=steps)
        rows.append({"guidance": g, "fid": fid_kid(real, fake, features)["fid"],
                     "class_accuracy": sum(per.values()) / len(per)})
        print(f"[generate bench] guidance {rows[-1]}", file=sys.stderr, flush=True)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot([r["class_accuracy"] for r in rows], [r["fid"] for r in rows], "o-")
    for r in rows:
        ax.annotate(f"g={r['guidance']}", (r["class_accuracy"], r["fid"]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("class accuracy of the reference")
    ax.set_ylabel("FID (reference features)")
    ax.set_title("classifier-free guidance trade-off")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return rows


def run(quick: bool = False, workdir: str | None = None, threads: int = 2) -> dict:
    """Train everything and measure; returns the figures as a dict.

    ``threads``: torch intra-op threads; on a machine shared with other jobs use 1, since spinning
    OpenMP threads that wait for a busy core make each step several times slower.
    """
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.metrics.generation import fid_kid
    from omnivis.tasks.classify import ClassifyConfig, train_classifier
    from omnivis.tasks.generate import GeneratorPredictor, evaluate_generator
    from omnivis.tasks.generate.evaluate import load_reference

    torch.set_num_threads(threads)
    out = Path(workdir or tempfile.mkdtemp(prefix="omnivis-gen-bench-"))
    epochs, steps = (1, 5) if quick else (30, -1)
    ref = out / "reference"
    train_classifier(ClassifyConfig(data="builtin:digits", img_size=16, channels=1, model="omnivis_resnet_tiny",
                                    trainer=TrainerConfig(epochs=epochs if quick else 15, max_steps=steps, progress=False)),
                     ref)
    results: dict = {"workdir": str(out), "reference": str(ref), "methods": {}, "threads": threads,
                     "load_start": _load()}
    plans = {
        "diffusion": dict(epochs=epochs if quick else 60, width=32, sample_steps=5 if quick else 50, guidance=1.25),
        "gan": dict(epochs=epochs if quick else 60, width=32),
        "vae": dict(epochs=epochs if quick else 60, width=32, latent_dim=16),
    }
    n_eval, per_class = (64, 4) if quick else (500, 50)
    for method, plan in plans.items():
        ep = plan.pop("epochs")
        bundle, seconds = _train(method, out, ref, ep, steps, **plan)
        m = evaluate_generator(bundle, reference=ref, out_dir=bundle, num_samples=n_eval, per_class=per_class,
                               progress=False)
        results["methods"][method] = {"fid": m["fid"], "kid_mean": m["kid_mean"], "class_accuracy": m["class_accuracy"],
                                      "train_seconds": round(seconds, 1)}
        print(f"[generate bench] {method}: {results['methods'][method]} (load {_load()})", file=sys.stderr, flush=True)
    # sampling speed: 64 images with DDIM at 50 and 10 steps, FID of each against held-out digits
    gen = GeneratorPredictor.from_dir(out / "diffusion")
    features, _ = load_reference(ref)
    from omnivis.tasks.generate.evaluate import _real_images

    real, _ = _real_images(gen, None, "auto", False, 64)
    speed = {}
    gen.generate_tensor(8, steps=2, sampler="ddim", seed=0)  # warm-up: first-call allocations are not sampling time
    for sampler, s in (("ddim", 50), ("ddim", 10), ("dpm", 20)):
        start = time.perf_counter()
        x = gen.generate_tensor(64, steps=s, sampler=sampler, seed=0)
        seconds = time.perf_counter() - start
        speed[f"{sampler}{s}"] = {"seconds_64": round(seconds, 2), "fid_64": fid_kid(real, (x + 1) / 2, features)["fid"]}
    results["sampling"] = speed
    results["guidance"] = guidance_sweep(gen, features, (1.0, 1.25, 1.5, 2.0), n_eval, per_class if quick else 20,
                                         out / "guidance.png", steps=5 if quick else 50)
    results["load_end"] = _load()
    fids = {k: v["fid"] for k, v in results["methods"].items()}
    results["targets"] = {
        "diffusion_class_accuracy>=0.95": results["methods"]["diffusion"]["class_accuracy"] >= TARGET_CLASS_ACCURACY,
        "fid diffusion<gan<vae": fids["diffusion"] < fids["gan"] < fids["vae"],
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 on a shared machine)")
    args = parser.parse_args()
    start = time.perf_counter()
    r = run(quick=args.quick, workdir=args.workdir, threads=args.threads)
    print(f"total {time.perf_counter() - start:.0f} s, {r['threads']} torch thread(s), load average "
          f"{r['load_start']} at start, {r['load_end']} at end (1/5/15 min; 2 cores)")
    print(f"{'method':<10} {'FID':>9} {'KID':>9} {'class acc':>9} {'train s':>8}")
    for name, m in r["methods"].items():
        print(f"{name:<10} {m['fid']:>9.3f} {m['kid_mean']:>9.4f} {m['class_accuracy']:>9.3f} {m['train_seconds']:>8.1f}")
    for name, s in r["sampling"].items():
        print(f"{name}: 64 images in {s['seconds_64']:.2f} s, FID {s['fid_64']:.3f}")
    ratio = r["sampling"]["ddim50"]["seconds_64"] / max(r["sampling"]["ddim10"]["seconds_64"], 1e-9)
    print(f"DDIM 50 / 10 steps time ratio: {ratio:.2f}")
    print(f"guidance trade-off ({r['workdir']}/guidance.png):")
    for row in r["guidance"]:
        print(f"  guidance {row['guidance']:<5} FID {row['fid']:.3f}  class accuracy {row['class_accuracy']:.3f}")
    acc = r["methods"]["diffusion"]["class_accuracy"]
    print(f"diffusion class accuracy {acc:.3f} vs target {TARGET_CLASS_ACCURACY} (ratio {acc / TARGET_CLASS_ACCURACY:.3f})")
    for target, ok in r["targets"].items():
        print(f"target {target}: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
