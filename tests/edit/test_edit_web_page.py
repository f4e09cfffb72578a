"""The web page with an edit model: the inputs follow the op (a fill box for inpainting, a strength
for the others) and the answer is shown as input and edited image side by side, in real chromium."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from omnivis.serve.runner import load_models
from tests.deploy.serving import live_server
from tests.deploy.test_web_page import _open, browser, page  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def server(edit_bundles, photo_folder, tmp_path_factory):
    from omnivis.tasks.edit import train_edit

    from .conftest import tiny_edit_config

    style = train_edit(tiny_edit_config(photo_folder, op="style", model="omnivis_resnet_micro"),
                       tmp_path_factory.mktemp("page-style") / "style")
    models = load_models([f"sr={edit_bundles['superres']}", f"fill={edit_bundles['inpaint']}", f"style={style}"])
    with live_server(models) as (url, _):
        yield url


def test_an_edit_model_shows_input_and_result_side_by_side(page, server, tmp_path):  # noqa: F811
    from skimage import data

    photo = tmp_path / "cat.png"
    Image.fromarray(np.asarray(data.chelsea())[80:140, 100:180]).save(photo)
    _open(page, server)
    page.select_option("#model", "sr")
    expect(page.locator("#strength")).to_be_visible()
    expect(page.locator("#box")).to_be_hidden()
    page.set_input_files("#file", str(photo))
    page.click("#run")
    images = page.locator(".before-after img")
    expect(images).to_have_count(2)
    page.wait_for_function("[...document.querySelectorAll('.before-after img')].every(i => i.complete)")
    assert images.evaluate_all("els => els.map(i => i.naturalWidth)") == [80, 160]  # x2
    expect(page.locator(".before-after figcaption").nth(1)).to_contain_text("superres: 160 x 120 px")

    page.select_option("#model", "fill")
    expect(page.locator("#box")).to_be_visible()
    page.set_input_files("#file", str(photo))
    page.click("#run")  # no box given: the server's message is shown
    expect(page.locator("#error")).to_contain_text("box")
    page.fill("#box", "10,10,20,15")
    page.click("#run")
    expect(page.locator(".before-after img")).to_have_count(2)
    expect(page.locator("#error")).to_be_hidden()


def test_a_style_model_takes_a_style_image(page, server, photo_folder):  # noqa: F811
    _open(page, server)
    page.select_option("#model", "style")
    expect(page.locator("#style")).to_be_visible()
    expect(page.locator("#box")).to_be_hidden()
    page.set_input_files("#file", str(photo_folder / "astronaut.png"))
    page.click("#run")  # no style image yet: the server's message is shown
    expect(page.locator("#error")).to_contain_text("style image")
    page.set_input_files("#style", str(photo_folder / "coffee.png"))
    page.click("#run")
    images = page.locator(".before-after img")
    expect(images).to_have_count(2)
    page.wait_for_function("[...document.querySelectorAll('.before-after img')].every(i => i.complete)")
    assert images.evaluate_all("els => els.map(i => i.naturalWidth)") == [64, 64]
