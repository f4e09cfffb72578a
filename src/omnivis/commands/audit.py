"""``omnivis audit``: what a trained bundle gives away; ``audit membership`` for now."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from omnivis.commands._shared import console, print_json


def audit_membership(
    bundle: Path = typer.Argument(..., help="A classify bundle folder."),
    data: Optional[str] = typer.Option(None, help="Its training data, if it moved (default: the data the bundle "
                                       "records); members and non-members come from the bundle's recorded split."),
    out: Optional[Path] = typer.Option(None, help="Folder for membership.json and membership_roc.png "
                                       "(default: the bundle)."),
    seed: int = typer.Option(0, help="Which images the larger side keeps when the two sets are balanced."),
    strict: bool = typer.Option(False, "--strict"),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON."),
) -> None:
    """Membership inference: can a loss threshold tell the bundle's training images from its held-out ones?

    AUC 0.5 is chance (nothing given away); the advantage is the best threshold's TPR - FPR.
    """
    from omnivis.inference.membership import audit_membership as audit

    metrics = audit(bundle, data=data, out_dir=out, strict=strict, seed=seed, progress=not as_json)
    if as_json:
        print_json({k: v for k, v in metrics.items() if k != "roc"})
        return
    eps = metrics.get("dp_epsilon")
    privacy = f"epsilon {eps:g}" if eps is not None else "not private"
    console.print(f"membership inference on {metrics['members']} training vs {metrics['nonmembers']} held-out "
                  f"images of {metrics['data']} ({privacy})")
    console.print(f"  AUC {metrics['auc']:.3f}  (0.5: chance)   advantage {metrics['advantage']:.3f}   "
                  f"TPR at 1% FPR {metrics['tpr_at_1pct_fpr']:.3f}")
    console.print(f"  mean loss: training {metrics['member_mean_loss']:.4f}, "
                  f"held-out {metrics['nonmember_mean_loss']:.4f}")
    console.print(f"wrote {Path(metrics['roc_png']).parent / 'membership.json'} and {metrics['roc_png']}")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    audit_app = typer.Typer(help="Audit what a trained bundle gives away about its training data.",
                            no_args_is_help=True)
    audit_app.command("membership")(audit_membership)
    app.add_typer(audit_app, name="audit")
