"""Private training on digits: accuracy at epsilon 1, 3 and 8 next to the same model trained without
privacy (the reference), and what a membership-inference attack learns from each.

    python benchmarks/privacy.py            # everything (about 10 minutes on 2 CPU cores)
    python benchmarks/privacy.py --quick    # a short run that checks the script end to end

Every run is ``omnivis train classify --data builtin:digits --epochs 10`` with the other defaults
(omnivis_resnet_tiny, batch 64, the bundle's held-out 20%); the private ones add ``--dp-epsilon E
--dp-delta 1e-5`` (batch-norm becomes group-norm, Poisson-sampled batches, per-image clipping at 1).
10 epochs rather than the data-sized 400 steps keep the three private runs (~0.7 s a step: per-image
gradients) within the time. Accuracy is on the held-out split; the audit is ``omnivis audit
membership`` (loss threshold, members vs held-out, balanced). Results are printed and merged into
benchmarks/results.json under ``privacy``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from results_file import merge_results  # benchmarks/results_file.py

ROOT = Path(__file__).resolve().parent
EPSILONS = (1.0, 3.0, 8.0)
DELTA = 1e-5
AUDITED = (None, 3.0)  # the attack on the non-private model and on epsilon 3


def train(epsilon: float | None, out: Path, epochs: int, quick: bool) -> tuple[Path, float]:
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.classify import ClassifyConfig, train_classifier

    trainer = TrainerConfig(epochs=epochs, progress=False, **({"max_steps": 5} if quick else {}))
    private = {"dp_epsilon": epsilon, "dp_delta": DELTA} if epsilon is not None else {}
    start = time.perf_counter()
    bundle = train_classifier(ClassifyConfig(data="builtin:digits", trainer=trainer, **private),
                              out / (f"eps{epsilon:g}" if epsilon is not None else "public"))
    return bundle, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 steps a run: checks the script, not the numbers")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    from omnivis.inference.membership import audit_membership

    rows: dict = {}
    with tempfile.TemporaryDirectory(prefix="omnivis-privacy-") as tmp:
        for epsilon in (None, *EPSILONS):
            bundle, seconds = train(epsilon, Path(tmp), args.epochs, args.quick)
            metrics = json.loads((bundle / "metrics.json").read_text())
            dp = json.loads((bundle / "config.json").read_text()).get("dp", {})
            row = {"accuracy": metrics["accuracy"], "train_steps": metrics["train_steps"],
                   "epsilon_spent": dp.get("epsilon"), "noise_multiplier": dp.get("noise_multiplier"),
                   "command_s": round(seconds, 1)}
            if epsilon in AUDITED:
                audit = audit_membership(bundle, out_dir=Path(tmp) / "audit", progress=False)
                row.update(membership_auc=audit["auc"], membership_advantage=audit["advantage"],
                           membership_pairs=audit["members"])
            rows["non-private" if epsilon is None else f"epsilon {epsilon:g}"] = row
    reference = rows["non-private"]["accuracy"]
    print(f"builtin:digits, {args.epochs} epochs, omnivis_resnet_tiny, delta {DELTA:g} (reference: the same run "
          "without privacy)")
    print(f"{'run':14s} {'eps spent':>9s} {'noise':>7s} {'steps':>6s} {'accuracy':>9s} {'vs ref':>7s} "
          f"{'MIA AUC':>8s} {'MIA adv':>8s} {'time s':>7s}")
    for name, row in rows.items():
        eps = f"{row['epsilon_spent']:.3f}" if row["epsilon_spent"] is not None else "inf"
        noise = f"{row['noise_multiplier']:.3f}" if row["noise_multiplier"] is not None else "0"
        auc = f"{row['membership_auc']:.3f}" if "membership_auc" in row else "-"
        adv = f"{row['membership_advantage']:.3f}" if "membership_advantage" in row else "-"
        print(f"{name:14s} {eps:>9s} {noise:>7s} {row['train_steps']:6d} {row['accuracy']:9.4f} "
              f"{row['accuracy'] - reference:+7.4f} {auc:>8s} {adv:>8s} {row['command_s']:7.1f}")
    if not args.quick:
        merge_results({"privacy": {"epochs": args.epochs, "delta": DELTA, "runs": rows}})


if __name__ == "__main__":
    main()
