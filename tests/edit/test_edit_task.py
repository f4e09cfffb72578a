"""The edit task end to end: train, write a bundle, reload it, edit images, score them; and every
bad input a user can hand it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from omnivis.bundle import load_bundle
from omnivis.cli import app
from omnivis.data.degrade import Degraded, bicubic_upscale
from omnivis.errors import BundleError, ConfigError, ImageError
from omnivis.inference.edit import EditPredictor, degraded_test_photo, score_photos, to_uint8_array
from omnivis.inference.edit_baselines import run_baseline
from omnivis.metrics.edit import psnr, quality
from omnivis.tasks.edit import EditConfig, EditModule

from .conftest import tiny_edit_config


def _photo(h: int = 70, w: int = 90, grey: bool = False) -> np.ndarray:
    from skimage import data

    image = np.asarray(data.astronaut())[100 : 100 + h, 150 : 150 + w]
    return image.mean(axis=2).astype(np.uint8) if grey else image


def test_bundles_record_what_evaluation_and_editing_need(edit_bundles):
    header = load_bundle(edit_bundles["superres"]).config
    assert (header["task"], header["op"], header["scale"], header["arch"]) == ("edit", "superres", 2, "residual")
    assert header["degradation"]["scale"] == 2 and header["tile"] == 192
    metrics = json.loads((edit_bundles["superres"] / "metrics.json").read_text())
    assert {"ours_psnr_y", "bicubic_psnr_y", "ours_ssim_rgb", "gain_psnr_y_db"} <= set(metrics)
    assert (edit_bundles["superres"] / "edit_report.html").exists()
    assert json.loads((edit_bundles["inpaint"] / "metrics.json").read_text())["images"] == 4


def test_superres_doubles_the_size_and_strength_zero_is_bicubic(edit_bundles):
    predictor = EditPredictor.from_dir(edit_bundles["superres"])
    photo = _photo()
    out = predictor.edit(photo)
    assert out.shape == (140, 180, 3) and out.dtype == np.uint8
    bicubic = bicubic_upscale(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255, 2)[0]
    assert np.array_equal(predictor.edit(photo, strength=0.0), to_uint8_array(bicubic))


def test_inpainting_changes_only_the_hole(edit_bundles):
    predictor = EditPredictor.from_dir(edit_bundles["inpaint"])
    photo = _photo()
    out = predictor.edit(photo, box=(20, 10, 30, 25))
    outside = np.ones(photo.shape[:2], bool)
    outside[10:35, 20:50] = False
    assert np.array_equal(out[outside], photo[outside])  # known pixels are copied through exactly
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[10:35, 20:50] = 255
    assert np.array_equal(predictor.edit(photo, mask=mask), out)  # a mask and the same box agree


@pytest.mark.parametrize("op", ["superres", "denoise", "enhance", "inpaint"])
def test_tiles_equal_one_pass_on_an_image_that_fits(edit_bundles, op):
    """Several tiles (the context read around each covers the network's receptive radius, and tiles start
    on the network's sampling grid) give what one pass over the whole image gives."""
    from skimage import data

    predictor = EditPredictor.from_dir(edit_bundles[op])
    clean = torch.from_numpy(np.asarray(data.astronaut())[:240, :256].copy()).permute(2, 0, 1).float() / 255
    degraded = degraded_test_photo(clean, predictor.degradation, 0)
    whole = predictor.restore(degraded, tile=0)
    tiled = predictor.restore(Degraded(degraded.image, degraded.mask, degraded.condition), tile=48)
    assert tiled.shape == whole.shape
    assert psnr(tiled.permute(1, 2, 0).numpy(), whole.permute(1, 2, 0).numpy()) >= 50


def test_the_reported_baseline_is_the_benchmarks_function(edit_bundles, photo_folder):
    predictor = EditPredictor.from_dir(edit_bundles["denoise"])
    photo = photo_folder / "coffee.png"
    scored = score_photos(predictor, [photo], ["coffee"], progress=False)["rows"][0]
    clean = torch.from_numpy(np.array(Image.open(photo))).permute(2, 0, 1).float() / 255
    degraded = degraded_test_photo(clean, predictor.degradation, 0)
    nlm = run_baseline("nlm", to_uint8_array(degraded.image), sigma=25.0)
    assert scored["nlm_psnr_y"] == pytest.approx(quality(nlm, to_uint8_array(clean))["psnr_y"], abs=1e-9)
    assert scored["input_psnr_y"] < scored["nlm_psnr_y"]


def test_grey_images_are_converted_to_rgb(edit_bundles):
    out = EditPredictor.from_dir(edit_bundles["denoise"]).edit(_photo(grey=True))
    assert out.shape == (70, 90, 3)


@pytest.mark.parametrize("call, error, message", [
    (lambda p, photo: p["inpaint"].edit(photo, mask=np.ones((10, 10))), ConfigError, "mask is 10x10 px but the image is 90x70"),
    (lambda p, photo: p["inpaint"].edit(photo, mask=np.zeros(photo.shape[:2])), ConfigError, "mask is empty"),
    (lambda p, photo: p["inpaint"].edit(photo, mask=np.ones(photo.shape[:2])), ConfigError, "covers the whole image"),
    (lambda p, photo: p["inpaint"].edit(photo), ConfigError, "needs exactly one of a mask"),
    (lambda p, photo: p["inpaint"].edit(photo, box=(200, 0, 5, 5)), ConfigError, "starts outside"),
    (lambda p, photo: p["inpaint"].edit(photo, box=(1, 1, 5, 5), strength=0.5), ConfigError, "no input to blend"),
    (lambda p, photo: p["denoise"].edit(photo, box=(1, 1, 5, 5)), ConfigError, "takes no mask or box"),
    (lambda p, photo: p["superres"].edit(photo, scale=4), ConfigError, "x2, not x4"),
    (lambda p, photo: p["superres"].edit(photo, max_pixels=1000), ImageError, "pixels"),
    (lambda p, photo: p["denoise"].edit(photo, strength=-1), ConfigError, "strength must be >= 0"),
])
def test_bad_input_gets_one_clear_error(edit_bundles, call, error, message):
    predictors = {op: EditPredictor.from_dir(path) for op, path in edit_bundles.items()}
    with pytest.raises(error, match=message):
        call(predictors, _photo())


def test_a_file_over_the_pixel_limit_is_refused_before_decoding(edit_bundles, tmp_path):
    Image.fromarray(_photo()).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="big.png"):
        EditPredictor.from_dir(edit_bundles["denoise"]).edit(tmp_path / "big.png", max_pixels=1000)


def test_a_bundle_of_another_task_is_refused(tmp_path, tiny_config):
    from omnivis.tasks.classify import train_classifier

    bundle = train_classifier(tiny_config(trainer={"max_steps": 2}), tmp_path / "clf")
    with pytest.raises(BundleError, match="is a .classify. bundle, but a .edit. bundle is needed"):
        EditPredictor.from_dir(bundle)


# Bounds with wide margins only: superres and inpaint start from strong classical guesses (bicubic,
# Telea's fill) that a few steps barely improve (0.95 and 0.998 here), too close to 1 to hold on every
# machine; that they start exactly there is tested in tests/models/test_restoration.py, and their
# end-to-end gains are benchmarks/edit.py's
@pytest.mark.parametrize("op, settings, steps, bound", [
    ("denoise", {}, 60, 0.70),  # observed 0.46
    ("enhance", {}, 60, 0.60),  # observed 0.36
    ("style", {"model": "omnivis_resnet_micro"}, 60, 0.80),  # observed 0.61
])
def test_training_lowers_the_loss_below_the_untrained_networks(photo_folder, op, settings, steps, bound):
    """Every network starts as its op's classical guess (the input itself; style: a random decoder). After ``steps`` steps on fresh crops, its loss over the last 10 batches must be
    below ``bound`` times the untrained network's loss on those same batches."""
    import copy

    from omnivis.data.edit_crops import EditCropDataset
    from omnivis.data.readers import read_class_folder

    config = tiny_edit_config(photo_folder, op=op, width=16, blocks=2, **settings)
    dataset = EditCropDataset(read_class_folder(photo_folder, classes=[]), config.degradation(), 32, 16)
    torch.manual_seed(0)
    module = EditModule(config)
    untrained = copy.deepcopy(module)
    optimizer = torch.optim.Adam(module.model.decoder.parameters() if op == "style" else module.model.parameters(),
                                 lr=2e-3)
    trained_losses, untrained_losses = [], []
    for step in range(steps):
        batch = [torch.stack(parts) for parts in zip(*(dataset[(step, (step * 8 + i) % len(dataset))] for i in range(8)))]
        loss = module.training_step(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= steps - 10:
            trained_losses.append(float(loss))
            with torch.no_grad():
                untrained_losses.append(float(untrained.training_step(batch, step)))
    assert np.mean(trained_losses) < bound * np.mean(untrained_losses)


def test_an_untrained_denoiser_returns_its_input(photo_folder):
    """The known answer behind the bound above: the untrained denoiser's loss is the noise's own L1,
    about 0.8 * 25 / 255 = 0.078 for sigma 25 (less where clipping at black and white trims it)."""
    from omnivis.data.edit_crops import EditCropDataset
    from omnivis.data.readers import read_class_folder

    config = tiny_edit_config(photo_folder, op="denoise")
    dataset = EditCropDataset(read_class_folder(photo_folder, classes=[]), config.degradation(), 32, 16)
    batch = [torch.stack(parts) for parts in zip(*(dataset[(0, i)] for i in range(32)))]
    with torch.no_grad():
        loss = float(EditModule(config).training_step(batch, 0))
    assert loss == pytest.approx(float((batch[0] - batch[1]).abs().mean()), rel=1e-6)
    assert 0.05 < loss < 0.08


def test_edit_command_writes_pngs_and_a_report(edit_bundles, tmp_path):
    Image.fromarray(_photo()).save(tmp_path / "a.png")
    result = CliRunner().invoke(app, ["edit", str(edit_bundles["inpaint"]), str(tmp_path / "a.png"), "--box", "5,5,20,20",
                                      "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "edits.json").read_text())
    assert report["op"] == "inpaint" and report["images"][0]["size"] == [90, 70]
    assert Image.open(tmp_path / "out" / "a.png").size == (90, 70)


@pytest.mark.parametrize("args, message", [
    (["--box", "5,5"], "must be x,y,w,h"),
    (["--mask", "missing.png"], "missing.png"),
])
def test_edit_command_errors_are_one_line(edit_bundles, tmp_path, args, message):
    """As a user runs it: a subprocess, the real entry point and exit code."""
    Image.fromarray(_photo()).save(tmp_path / "a.png")
    result = subprocess.run([sys.executable, "-m", "omnivis.cli", "edit", str(edit_bundles["inpaint"]),
                             str(tmp_path / "a.png"), *args, "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_edit_config_checks_its_fields():
    with pytest.raises(ConfigError, match="arch 'subpixel' does not do denoise"):
        EditConfig(op="denoise", arch="subpixel")
    with pytest.raises(ConfigError, match="superres scale must be 2 or 4"):
        EditConfig(op="superres", scale=3)
    with pytest.raises(ConfigError, match="crop_size must be >= 16 and a multiple of 16"):
        EditConfig(op="superres", scale=4, crop_size=40)


def test_classical_fill_near_holes_equals_the_whole_image_fill():
    """The fill computed on crops around each group of holes gives the whole-image fill's pixels exactly."""
    from omnivis.data.degrade import classical_fill
    from omnivis.inference.edit import fill_near_holes, hole_box

    rng = np.random.default_rng(0)
    image = torch.from_numpy(np.asarray(_photo(150, 200))).permute(2, 0, 1).contiguous()
    mask = torch.zeros(1, 150, 200, dtype=torch.bool)
    for _ in range(8):
        y, x = int(rng.integers(0, 140)), int(rng.integers(0, 190))
        mask[:, y : y + int(rng.integers(2, 30)), x : x + int(rng.integers(2, 40))] = True
    mask[:, :4, :30] = True  # at the image's edges
    mask[:, -3:, -20:] = True
    for fill in ("telea", "telea+ns"):
        assert torch.equal(fill_near_holes(image.clone(), mask, fill), classical_fill(image, mask, fill))
    box = torch.zeros(1, 150, 200, dtype=torch.bool)
    box[:, 50:60, 70:91] = True
    assert hole_box(box, 10, align=4) == (40, 72, 60, 104)
    assert hole_box(box, 100, align=4) == (0, 150, 0, 192)


def test_edit_picks_its_default_tile_from_the_images_memory_budget(edit_bundles):
    from omnivis.inference.edit import EDIT_MEMORY, MIN_EDIT_MEMORY
    from omnivis.inference.tiling import tiled_memory

    predictor = EditPredictor.from_dir(edit_bundles["denoise"])
    tile = predictor.default_tile(3000, 4000)
    budget = max(MIN_EDIT_MEMORY, EDIT_MEMORY * 3 * 3000 * 4000 * 2)
    assert 32 <= tile < predictor.tile and tile % 16 == 0
    plan = {"bytes_per_pixel": predictor.bytes_per_pixel, "context": predictor.context, "blend": 8}
    assert tiled_memory(3000, 4000, tile, **plan) <= budget < tiled_memory(3000, 4000, tile + 16, **plan)
    photo = _photo()
    assert np.array_equal(predictor.edit(photo), predictor.edit(photo, tile=predictor.default_tile(*photo.shape[:2])))
