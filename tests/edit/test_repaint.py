"""RePaint with a diffusion generator bundle: the same result as diffusers' own ``RePaintPipeline`` for a
seed, known pixels kept exactly, and one-line errors for what cannot work."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from omnivis.engine.trainer import TrainerConfig
from omnivis.errors import ConfigError
from omnivis.inference.repaint import repaint, repaint_scheduler, repaint_tensor
from omnivis.tasks.generate import GenerateConfig, GeneratorPredictor, train_generator

FAST = {"steps": 6, "jump_length": 2, "jump_n_sample": 2}  # 6 reverse steps, 2 jumps of 2 steps: 10 UNet calls


def _tiny_bundle(root, method: str, conditional: bool = False, channels: int = 1):
    config = GenerateConfig(method=method, conditional=conditional, channels=channels, img_size=8, width=16, batch_size=16, latent_dim=8,
                            trainer=TrainerConfig(epochs=1, max_steps=1, progress=False, seed=0, num_workers=0))
    return GeneratorPredictor.from_dir(train_generator(config, root / f"{method}-{conditional}-{channels}"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, GeneratorPredictor]:
    """8 px digits generators trained one step: enough for the loop, the layouts and the errors."""
    root = tmp_path_factory.mktemp("repaint")
    return {"diffusion": _tiny_bundle(root, "diffusion"), "conditional": _tiny_bundle(root, "diffusion", True),
            "rgb": _tiny_bundle(root, "diffusion", channels=3), "ae": _tiny_bundle(root, "ae")}


@pytest.fixture
def image_and_mask():
    image = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 3:7] = True
    return image, mask


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_matches_diffusers_repaint_pipeline(bundles, image_and_mask, eta):
    """The reference: diffusers' pipeline on the same UNet, scheduler config and seed."""
    from diffusers import RePaintPipeline

    gen = bundles["diffusion"]
    image, mask = image_and_mask
    ours = repaint(gen, image, mask, seed=3, eta=eta, **FAST)
    known = torch.from_numpy(image)[None, None].float() / 127.5 - 1.0
    keep = torch.from_numpy(~mask)[None, None].float()  # diffusers: 1 = keep
    pipe = RePaintPipeline(unet=gen.model, scheduler=repaint_scheduler(gen.net["scheduler"]))
    pipe.set_progress_bar_config(disable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pipeline is deprecated and says so
        ref = pipe(image=known, mask_image=keep, num_inference_steps=FAST["steps"], eta=eta,
                   jump_length=FAST["jump_length"], jump_n_sample=FAST["jump_n_sample"],
                   generator=torch.Generator().manual_seed(3), output_type="np").images[0, :, :, 0]
    scheduler = repaint_scheduler(gen.net["scheduler"])
    scheduler.eta = eta
    loop = repaint_tensor(gen.model, scheduler, known, keep, **FAST, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose((loop / 2 + 0.5).clamp(0, 1)[0, 0].numpy(), ref, rtol=0, atol=1e-6)  # same draws, same math
    ref = np.round(ref * 255.0)  # pipeline: (x / 2 + 0.5) in [0, 1]; ours: (x + 1) * 127.5, equal up to float rounding
    assert np.abs(ours[mask].astype(float) - ref[mask]).max() <= 1
    assert np.array_equal(ours[~mask], image[~mask])


def test_keeps_known_pixels_and_is_reproducible(bundles, image_and_mask):
    gen = bundles["diffusion"]
    image, mask = image_and_mask
    a = repaint(gen, image, mask, seed=1, **FAST)
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a[~mask], image[~mask])
    assert np.array_equal(a, repaint(gen, torch.from_numpy(image), torch.from_numpy(mask.astype(np.uint8)), seed=1,
                                     progress=True, **FAST))
    assert not np.array_equal(a[mask], repaint(gen, image, mask, seed=2, **FAST)[mask])


def test_rgb_image_on_a_grey_model_and_classes(bundles, image_and_mask):
    gen = bundles["conditional"]
    grey, mask = image_and_mask
    rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1)
    out = repaint(gen, rgb, mask, class_="3", **FAST)
    assert out.shape == (8, 8, 3) and np.array_equal(out[~mask], rgb[~mask])
    filled = out[mask]
    assert np.array_equal(filled[:, 0], filled[:, 1]) and np.array_equal(filled[:, 1], filled[:, 2])  # grey fill
    null = repaint(gen, rgb, mask, **FAST)  # no class: the null class label dropout taught
    assert not np.array_equal(null[mask], out[mask])
    with pytest.raises(ConfigError, match="not one of the bundle's classes"):
        repaint(gen, rgb, mask, class_="cat", **FAST)


def test_grey_image_on_an_rgb_model_comes_back_grey(bundles, image_and_mask):
    image, mask = image_and_mask
    out = repaint(bundles["rgb"], image[:, :, None], mask, **FAST)
    assert out.shape == (8, 8, 1) and np.array_equal(out[~mask], image[:, :, None][~mask])


def test_errors(bundles, image_and_mask):
    gen = bundles["diffusion"]
    image, mask = image_and_mask
    with pytest.raises(ConfigError, match="RePaint needs a diffusion bundle; this one is 'ae'"):
        repaint(bundles["ae"], image, mask)
    with pytest.raises(ConfigError, match="makes 8x8 images; this image is 40x30: resize it first or use an inpaint"):
        repaint(gen, np.zeros((30, 40), np.uint8), np.ones((30, 40), bool))
    with pytest.raises(ConfigError, match="no pixel missing"):
        repaint(gen, image, np.zeros_like(mask))
    with pytest.raises(ConfigError, match="every pixel missing"):
        repaint(gen, image, np.ones_like(mask))
    with pytest.raises(ConfigError, match="mask is"):
        repaint(gen, image, mask[:4])
    with pytest.raises(ConfigError, match="uint8"):
        repaint(gen, image.astype(np.float32), mask)
    with pytest.raises(ConfigError, match="unconditional"):
        repaint(gen, image, mask, class_="3")
    with pytest.raises(ConfigError, match="steps must be in 1..1000"):
        repaint(gen, image, mask, steps=0)


def test_omnivis_edit_fills_a_box_with_a_diffusion_bundle(bundles, image_and_mask, tmp_path):
    """The command line: a diffusion generator bundle given to ``omnivis edit`` fills --box by RePaint."""
    import json
    import subprocess
    import sys

    from PIL import Image

    image, _ = image_and_mask
    Image.fromarray(image).save(tmp_path / "digit.png")
    bundle = bundles["diffusion"].bundle.path
    run = subprocess.run([sys.executable, "-m", "omnivis.cli", "edit", str(bundle), str(tmp_path / "digit.png"),
                          "--box", "3,2,4,4", "--steps", "6", "--seed", "1", "--out", str(tmp_path / "out"), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    filled = np.asarray(Image.open(tmp_path / "out" / "digit.png"))
    assert filled.shape == (8, 8, 3)
    keep = np.ones((8, 8), bool)
    keep[2:6, 3:7] = False
    assert np.array_equal(filled[keep][:, 0], image[keep])  # known pixels exactly kept
    assert json.loads(run.stdout)["op"] == "inpaint (RePaint)"
    too_big = subprocess.run([sys.executable, "-m", "omnivis.cli", "edit", str(bundle), str(tmp_path / "out" / "digit.png"),
                              "--box", "1,1,2,2", "--style", "x.png", "--out", str(tmp_path / "o2")],
                             capture_output=True, text=True, timeout=300)
    assert too_big.returncode == 2 and "do not apply" in too_big.stderr
