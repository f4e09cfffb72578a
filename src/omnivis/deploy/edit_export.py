"""Edit bundles as ONNX: the restoration network on one image or one tile, uint8 in and out.

What the file computes is ``run_restoration`` on 8-bit pixels: super-resolution (x2, x4), denoising,
low-light enhancement and inpainting, for any height and width (the batch too). What stays outside,
in the caller, as with the sampling loop of a generator: cutting a large image into overlapping
tiles and blending them back (``inference.tiling.tiled_apply``), inpainting's classical fill of the
holes before the network (``data.degrade.classical_fill``, the mean of OpenCV's Telea and
Navier-Stokes fills) and, for ``enhance``, the whole image's channel statistics
(``data.degrade.context_statistics``), which the network takes as a second input. Style transfer
(AdaIN between two images' features) is not exported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from omnivis.deploy.quiet import quiet_exporter
from omnivis.errors import BundleError
from omnivis.models.restoration import run_restoration

PARITY_SIZES = ((1, 32, 32), (2, 48, 40), (3, 64, 96))  # (batch, height, width): every size goes through


class RestorationGraph(nn.Module):
    """uint8 images (N, 3, H, W) [, holes (N, 1, H, W) uint8, nonzero = missing, for inpaint; the
    whole image's statistics (N, 6) float32 for enhance] -> ``restored``, uint8 (N, 3, H * s, W * s)."""

    output_names = ("restored",)

    def __init__(self, model: nn.Module, op: str) -> None:
        super().__init__()
        self.model, self.op = model, op

    def forward(self, images: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        x = images.float() / 255.0
        mask = (extra > 0).float() if self.op == "inpaint" else None
        condition = extra if self.op == "enhance" else None
        out = run_restoration(self.model, self.op, x, mask, condition)
        return (out.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def _inputs(op: str, n: int, height: int, width: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = {"images": torch.randint(0, 256, (n, 3, height, width), generator=generator, dtype=torch.uint8)}
    if op == "inpaint":
        inputs["holes"] = (torch.rand((n, 1, height, width), generator=generator) < 0.2).to(torch.uint8)
    elif op == "enhance":
        inputs["statistics"] = torch.rand((n, 6), generator=generator) * 0.5
    return inputs


def export_edit(predictor, out: Path, opset: int) -> dict:
    """Write an edit bundle's restoration network to ``out`` and check it against PyTorch at several
    batch sizes and image sizes; return the export report."""
    import onnxruntime as ort

    op = predictor.op
    if op == "style":
        raise BundleError(f"{predictor.bundle.path}: style bundles cannot be exported yet (AdaIN mixes two images' "
                          "features); edit export covers superres, denoise, enhance and inpaint")
    graph = RestorationGraph(predictor.model, op).eval()
    example = _inputs(op, 2, 32, 32, seed=0)
    names = list(example)
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "holes": {0: "batch", 2: "height", 3: "width"},
            "statistics": {0: "batch"}, "output": {0: "batch", 2: "out_height", 3: "out_width"}}
    out.parent.mkdir(parents=True, exist_ok=True)
    with quiet_exporter():
        torch.onnx.export(graph, tuple(example.values()), str(out), dynamo=False, input_names=names,
                          output_names=list(graph.output_names), opset_version=opset,
                          dynamic_axes={**{name: axes[name] for name in names}, graph.output_names[0]: axes["output"]})
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    parity = []
    for n, height, width in PARITY_SIZES:
        inputs = _inputs(op, n, height, width, seed=n)
        with torch.inference_mode():
            expected = graph(*inputs.values()).numpy()
        got = session.run(None, {name: value.numpy() for name, value in inputs.items()})[0]
        difference = np.abs(expected.astype(np.int16) - got.astype(np.int16))
        parity.append({"batch": n, "size": [height, width], "max_abs_difference": float(difference.max()),
                       "same_answers": float((difference <= 1).mean())})
    scale = predictor.scale
    return {"file": str(out), "task": "edit", "op": op, "format": "onnx", "opset": opset,
            "inputs": {name: {"dtype": str(value.dtype).removeprefix("torch."),
                              "shape": ["batch", int(value.shape[1]), *(["height", "width"] if value.dim() == 4 else [])]}
                       for name, value in example.items()},
            "outputs": list(graph.output_names), "output_shape": ["batch", 3, f"height * {scale}", f"width * {scale}"],
            "outside_the_graph": ("tiling a large image (overlapping tiles, blended back)"
                                  + (", the classical fill of the holes before the network (the mean of OpenCV's "
                                     "Telea and Navier-Stokes fills)" if op == "inpaint" else "")
                                  + (", the whole image's channel means and stds (the statistics input)"
                                     if op == "enhance" else "")),
            "parity": parity, "bytes": {"float": out.stat().st_size}}
