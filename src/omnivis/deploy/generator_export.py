"""Generators as ONNX: the network that makes the pixels, not the sampling loop around it.

A GAN's generator and a VAE's or autoencoder's decoder are exported whole: latents (and class
labels) in, uint8 images out. A diffusion bundle exports its denoiser, the UNet that predicts the
noise in ``sample`` at ``timestep``; the sampling loop (DDIM, DPM-Solver or DDPM steps, and
classifier-free guidance) stays outside, in the caller, as diffusers' pipelines keep it outside
their models. The parity check feeds the same seeded inputs to PyTorch and onnxruntime at batch 1,
3 and 7. A VQ-VAE (and a vqvae-ar bundle) exports its decoder from a code grid; the prior that
samples codes token by token stays in PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from omnivis.deploy.quiet import quiet_exporter
from omnivis.errors import BundleError

DECODERS = ("gan", "vae", "ae")
CODE_DECODERS = ("vqvae", "vqvae-ar")  # the decoder from a code grid
PARITY_BATCHES = (1, 3, 7)


class DecoderGraph(nn.Module):
    """latents (N, D) float32 [, labels (N,) int64] -> images (N, C, S, S) uint8."""

    output_names = ("images",)

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(self, latents: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        images = self.model(latents, labels) if self.method == "gan" else self.model.decode(latents, labels)
        return ((images.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


class CodeDecoderGraph(nn.Module):
    """codes (N, G * G) int64, a VQ-VAE's code grid row by row -> images (N, C, S, S) uint8: the
    codebook lookup and the decoder (``decode_indices`` without the no-grad wrapper, for the exporter)."""

    output_names = ("images",)

    def __init__(self, vq: nn.Module, grid: int) -> None:
        super().__init__()
        self.vq, self.grid = vq, grid
        self.dim = vq.config.vq_embed_dim or vq.config.latent_channels

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        z = self.vq.quantize.get_codebook_entry(codes.reshape(-1), (codes.shape[0], self.grid, self.grid, self.dim))
        images = self.vq.decode(z, force_not_quantize=True).sample
        return ((images.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


class DenoiserGraph(nn.Module):
    """sample (N, C, S, S) float32, timestep (N,) int64 [, class_labels (N,) int64] -> noise (N, C, S, S)."""

    output_names = ("noise",)

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor | None = None):
        return self.unet(sample, timestep, class_labels=class_labels).sample


class TextDenoiserGraph(nn.Module):
    """sample (N, C, S, S) float32, timestep (N,) int64, text (N, D) float32 -> noise (N, C, S, S)."""

    output_names = ("noise",)

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor):
        return self.model(sample, timestep, text)


def graph_and_inputs(predictor, n: int, seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor], str]:
    """The graph to export, seeded example inputs for batch ``n`` by name, and what stays outside."""
    generator = torch.Generator().manual_seed(seed)
    net, method = predictor.net, predictor.method
    conditional = predictor.conditional
    labels = torch.randint(0, max(1, len(predictor.classes)), (n,), generator=generator)
    if method in DECODERS:
        width = net.get("z_dim", net.get("latent_dim"))
        inputs = {"latents": torch.randn((n, int(width)), generator=generator)}
        if conditional:
            inputs["labels"] = labels
        outside = (f"draw latents ~ N(0, 1) of shape (N, {width}) (the generator's prior)"
                   + (", labels are class indices" if conditional else ""))
        return DecoderGraph(predictor.model, method).eval(), inputs, outside
    if method == "diffusion":
        size, channels = predictor.img_size, predictor.channels
        steps = int(net.get("scheduler", {}).get("num_train_timesteps", 1000))
        inputs = {"sample": torch.randn((n, channels, size, size), generator=generator),
                  "timestep": torch.randint(0, steps, (n,), generator=generator)}
        if net.get("text_dim"):
            text = torch.nn.functional.normalize(torch.randn((n, int(net["text_dim"])), generator=generator), dim=1)
            outside = ("the sampling loop (a diffusers scheduler built from the bundle's config.json net.scheduler) "
                       "and the text encoder (config.json text_encoder: unit-length sentence embeddings); "
                       "NAME_null_text.npy beside the file is the unconditional input classifier-free guidance "
                       "mixes with the prompt's")
            return TextDenoiserGraph(predictor.model).eval(), {**inputs, "text": text}, outside
        if conditional:
            inputs["class_labels"] = labels
        outside = ("the sampling loop: a diffusers scheduler built from the bundle's config.json "
                   "(net.scheduler) steps from noise; class_labels = len(classes) is the unconditional "
                   "input that classifier-free guidance mixes with the class's")
        return DenoiserGraph(predictor.model).eval(), inputs, outside
    if method in CODE_DECODERS:
        from omnivis.models.generative.vq import DOWNSAMPLE

        vq = predictor.model if method == "vqvae" else predictor.model.vq
        grid = int(vq.config.sample_size) // DOWNSAMPLE
        size = int(vq.config.num_vq_embeddings)
        inputs = {"codes": torch.randint(0, size, (n, grid * grid), generator=generator)}
        outside = (f"making the codes: {grid} x {grid} = {grid * grid} indices in [0, {size}) per image, row by "
                   "row; " + ("the prior samples them token by token (PyTorch only: the autoregressive loop and its "
                              "network are not in the file)" if method == "vqvae-ar"
                              else "the encoder gives a photo's codes (reconstruction; train a vqvae-ar prior to "
                                   "sample new ones)"))
        return CodeDecoderGraph(vq, grid).eval(), inputs, outside
    raise BundleError(f"{predictor.bundle.path}: '{method}' bundles cannot be exported yet; generator export "
                      f"covers {', '.join(DECODERS + CODE_DECODERS)} (their decoder) and diffusion (its denoiser)")


def export_generator(bundle_dir: str | Path, out: Path, opset: int) -> dict:
    """Write a generator bundle's decoder or denoiser to ``out``; return the export report."""
    import onnxruntime as ort

    from omnivis.tasks.generate.sample import GeneratorPredictor

    predictor = GeneratorPredictor.from_dir(bundle_dir)
    graph, example, outside = graph_and_inputs(predictor, 2)
    batch = torch.export.Dim("batch", min=1, max=4096)
    out.parent.mkdir(parents=True, exist_ok=True)
    with quiet_exporter():
        torch.onnx.export(graph, tuple(example.values()), str(out), dynamo=True, external_data=False,
                          input_names=list(example), output_names=list(graph.output_names), opset_version=opset,
                          dynamic_shapes={name: {0: batch} for name in example}, verbose=False)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    parity = []
    for n in PARITY_BATCHES:
        _, inputs, _ = graph_and_inputs(predictor, n, seed=n)
        with torch.inference_mode():
            expected = graph(*inputs.values()).numpy()
        got = session.run(None, {name: value.numpy() for name, value in inputs.items()})[0]
        difference = np.abs(expected.astype(np.float64) - got.astype(np.float64))
        parity.append({"batch": n, "max_abs_difference": float(difference.max()),
                       "same_answers": float((difference <= (1 if expected.dtype == np.uint8 else 1e-3)).mean())})
    extra = {}
    if predictor.net.get("text_dim"):  # guidance needs the learned "no text" input, which is a weight, not an input
        null = out.with_name(f"{out.stem}_null_text.npy")
        np.save(null, predictor.model.null.detach().float().cpu().numpy())
        extra["null_text"] = str(null)
    return {"file": str(out), "task": "generate", "method": predictor.method, "format": "onnx", "opset": opset, **extra,
            "inputs": {name: {"dtype": str(value.dtype).removeprefix("torch."), "shape": ["batch", *value.shape[1:]]}
                       for name, value in example.items()},
            "outputs": list(graph.output_names), "outside_the_graph": outside, "parity": parity,
            "bytes": {"float": out.stat().st_size}}
