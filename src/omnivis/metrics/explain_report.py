"""The explanation report: the most and least confident images with their maps, and the sanity check.

People judge a saliency method by looking at it; the least confident images are where a map most
often shows what went wrong (the model looked at the background, or at the other object).
"""

from __future__ import annotations

from pathlib import Path

from omnivis.metrics.report import ReportSection, write_html_report

SHOWN = 8  # images per gallery


def ranked_explanations(report: dict) -> list[dict]:
    """Every explanation with an overlay, its image's name attached, by score, best first."""
    rows = [dict(e, image=r["image"]) for r in report["results"] for e in r["explanations"] if e.get("overlay")]
    return sorted(rows, key=lambda e: e["score"], reverse=True)


def write_explain_report(report: dict, path: str | Path, title: str) -> Path:
    """Write ``report`` (``explain_images``' result, with overlays) as one self-contained HTML page."""
    ranked = ranked_explanations(report)
    settings = {"method": report["method"], "layer": report["layer"], "images": len(report["results"]),
                "maps": sum(len(r["explanations"]) for r in report["results"])}
    sanity = report.get("sanity")
    if sanity:
        settings.update({"sanity: mean Spearman (trained vs randomized top)": sanity["mean_spearman"],
                         "sanity: passed (< 0.5)": sanity["passed"]})
    sections = [ReportSection("Settings", table=settings,
                              text="Maps are scaled to [0, 1] per image; the peak is given in the image's own pixels.")]
    def caption(e: dict) -> str:
        return f"{e['image']}: {e['target']} {e['score']:.3f}"

    most = ranked[:SHOWN]
    least = list(reversed(ranked[-SHOWN:])) if len(ranked) > SHOWN else []
    sections.append(ReportSection("Most confident", images=[(caption(e), e["overlay"]) for e in most]))
    if least:
        sections.append(ReportSection("Least confident", images=[(caption(e), e["overlay"]) for e in least]))
    table = [{"image": e["image"], "target": e["target"], "score": e["score"], "peak x": e["peak"][0],
              "peak y": e["peak"][1], "top-10% mass": e["top10_mass"], "sanity Spearman": e.get("sanity_spearman")}
             for e in ranked]
    sections.append(ReportSection("Every map", rows=table))
    return write_html_report(path, title, sections)
