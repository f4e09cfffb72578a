"""The web page's heat map: after a prediction it asks ``/api/explain`` (real uvicorn, a tiny trained
bundle) and shows the overlay beside the result, in headless chromium (Playwright)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from omnivis.inference.explain_methods import METHODS
from omnivis.serve.routes_omnivis import png_base64
from omnivis.serve.runner import load_models
from tests.deploy.serving import live_server
from tests.deploy.test_web_page import _open, browser, page  # noqa: F401  (fixtures)

expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def server(digits_bundle):
    with live_server(load_models([f"digits={digits_bundle}"])) as (url, _):
        yield url


def _digit_png(path) -> str:
    from sklearn.datasets import load_digits

    Image.fromarray((load_digits().images[-1] * 255 / 16).astype(np.uint8)).save(path)
    return str(path)


def test_heat_map_after_a_prediction_shows_the_overlay(page, server, tmp_path):
    png = _digit_png(tmp_path / "digit.png")
    _open(page, server)
    page.select_option("#model", "digits")
    expect(page.locator("#explain-inputs")).to_be_visible()
    expect(page.locator("#explain-method option")).to_have_count(len(METHODS))  # one per method
    page.set_input_files("#file", png)
    page.click("#run")
    expect(page.locator(".bar")).to_have_count(5)
    expect(page.locator("img.heatmap")).to_have_count(0)  # unticked: no explanation asked for
    label = page.locator(".bar .label").first.inner_text()
    page.check("#explain")  # ticked after the prediction: the shown image is explained
    overlay = page.locator("img.heatmap")
    expect(overlay).to_have_count(1)
    page.wait_for_function("document.querySelector('img.heatmap').complete")
    assert overlay.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [8, 8]
    expect(page.locator(".heatmap-figure figcaption")).to_contain_text(label)
    expect(page.locator("#heatmaps h3")).to_contain_text("gradcam")
    page.select_option("#explain-method", "eigencam")  # another method redraws the map
    expect(page.locator("#heatmaps h3")).to_contain_text("eigencam")
    expect(page.locator("img.heatmap")).to_have_count(1)
    page.click("#run")  # ticked before Run: the prediction, then its map
    expect(page.locator(".bar")).to_have_count(5)
    expect(page.locator("img.heatmap")).to_have_count(1)
    expect(page.locator("#error")).to_be_hidden()
    page.screenshot(path="/tmp/webpage_explain.png", full_page=True)
    page.select_option("#explain-method", "rollout")  # a CNN: the server's message, the prediction stays
    expect(page.locator("#error")).to_contain_text("rollout applies to ViT backbones")
    expect(page.locator(".bar")).to_have_count(5)


def test_server_strings_go_in_as_text(page, server, tmp_path):
    """A target name from the server is shown as text, never parsed as HTML."""
    png = _digit_png(tmp_path / "digit.png")
    evil = "<img src=x onerror=window.hacked=1>"
    overlay = png_base64(np.zeros((8, 8, 3), np.uint8))
    answer = {"method": "gradcam", "layer": "<b>layer2</b>", "maps": [
        {"target": evil, "kind": "class", "score": 0.5, "peak": [1, 1], "top10_mass": 0.2,
         "overlay_png": overlay, "overlay_size": [8, 8]}]}
    page.route("**/api/explain/digits", lambda route: route.fulfill(status=200, content_type="application/json",
                                                                      body=json.dumps(answer)))
    _open(page, server)
    page.select_option("#model", "digits")
    page.check("#explain")
    page.set_input_files("#file", png)
    page.click("#run")
    expect(page.locator(".heatmap-figure figcaption")).to_contain_text(evil)
    expect(page.locator("#heatmaps h3")).to_contain_text("<b>layer2</b>")
    assert page.locator("#result img:not(.heatmap)").count() == 0
    assert page.evaluate("window.hacked") is None
