"""FID and KID (torchmetrics) in the feature space of a classifier omnivis trained on the same data,
and the standard Inception-v3 FID when the user has the Inception weights file.

Inception features need weights nobody may download here and are made for 299 px photos; on small
data sets (digits at 16 px) the penultimate layer of a classifier trained on that data is the
meaningful feature space (the reference is named in every report). ``ClassifierFeatures`` maps
generator output (float in [0, 1], any channel count and size) into the classifier's own
preprocessing. ``InceptionFeatures`` is torch-fidelity's TF-compatible Inception-v3 (the network of
the FID paper, as torchmetrics uses it) loaded from a safetensors file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from omnivis.errors import ConfigError


class ClassifierFeatures(nn.Module):
    """(B, C, H, W) float images in [0, 1] -> (B, F) pooled backbone features of a classifier.

    Attributes:
        num_features: F (torchmetrics reads it instead of probing with a 299 px dummy image).
    """

    def __init__(self, classifier: nn.Module, img_size: int, in_chans: int, mean, std) -> None:
        super().__init__()
        self.classifier = classifier.eval()
        self.img_size, self.in_chans = img_size, in_chans
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.num_features = int(classifier.backbone.num_features)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[1] != self.in_chans:
            if self.in_chans == 1:
                x = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]) if x.shape[1] == 3 else x[:, :1]
            else:
                x = x[:, :1].expand(-1, self.in_chans, -1, -1)
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.backbone.forward_pooled(self.preprocess(x))

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.preprocess(x))


CONVERT_HINT = (
    "convert it once, on a machine you trust: python -c \"import torch, safetensors.torch as st; "
    "st.save_file(torch.load('IN.pth', weights_only=True), 'OUT.safetensors')\""
)


def load_inception_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The Inception-v3 FID weights from a ``.safetensors`` file (omnivis never unpickles a user's file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: Inception weights file not found")
    if path.suffix != ".safetensors":
        raise ConfigError(f"{path}: Inception weights must be a .safetensors file; {CONVERT_HINT}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable safetensors file ({err})") from None


class InceptionFeatures(nn.Module):
    """(B, C, H, W) float images in [0, 1] -> (B, 2048) pool features of the FID Inception-v3.

    Grayscale is repeated to RGB; images are quantized to uint8 and resized to 299 px inside the
    network, as torchmetrics' ``FrechetInceptionDistance(feature=2048)`` does.

    Attributes:
        num_features: 2048.
    """

    num_features = 2048

    def __init__(self, weights_path: str | Path) -> None:
        super().__init__()
        import tempfile

        from torchmetrics.image.fid import NoTrainInceptionV3

        state = load_inception_weights(weights_path)
        # torch-fidelity reads weights only from a path, with torch.load: hand it a file WE wrote from
        # the tensors safetensors returned, never the user's file.
        with tempfile.TemporaryDirectory() as tmp:
            own = Path(tmp) / "inception.pth"
            torch.save({k: v.contiguous() for k, v in state.items()}, own)
            try:
                self.inception = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                                     feature_extractor_weights_path=str(own))
            except RuntimeError as err:
                first = str(err).strip().splitlines()[0][:160]
                raise ConfigError(f"{weights_path}: not Inception-v3 FID weights ({first})") from None

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ValueError(f"Inception features need 1 or 3 channels, got {x.shape[1]}")
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.inception(x).reshape(len(x), -1)


def _batches(x: torch.Tensor, size: int = 256):
    for start in range(0, len(x), size):
        yield x[start: start + size]


class _Given(nn.Module):
    """Features computed once, handed to both torchmetrics metrics as their "images"."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@torch.no_grad()
def _features(images: torch.Tensor, feature: nn.Module, progress: str | None = None) -> torch.Tensor:
    batches = list(_batches(images, 64 if progress else 256))
    if progress:
        from rich.progress import track

        batches = track(batches, description=progress, transient=True)
    return torch.cat([feature(batch) for batch in batches]).double()


def fid_kid(real: torch.Tensor, fake: torch.Tensor, feature: nn.Module, kid_subset: int = 100,
            progress: str | None = None) -> dict:
    """FID and KID between two image sets (N, C, H, W) float in [0, 1], in ``feature``'s space.

    Each image goes through ``feature`` once (FID and KID share the features: Inception on a CPU is
    the slow part). KID uses subsets of ``min(kid_subset, N_real, N_fake)`` images (its mean and std
    over subsets). ``progress``: a label for a progress bar over the feature batches (None: no bar).
    """
    if len(real) < 2 or len(fake) < 2:
        raise ValueError("FID needs at least 2 real and 2 generated images")
    real_f = _features(real, feature, progress and f"{progress} (real)")
    fake_f = _features(fake, feature, progress and f"{progress} (generated)")
    given = _Given(real_f.shape[1])
    fid = FrechetInceptionDistance(feature=given, normalize=True)
    subset = min(kid_subset, len(real), len(fake))
    with warnings.catch_warnings():  # "KID will save all extracted features": that is the point here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=given, normalize=True, subset_size=subset, subsets=50)
    for metric in (fid, kid):
        metric.update(real_f, real=True)
        metric.update(fake_f, real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}
