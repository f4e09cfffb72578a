"""The web page that ``omnivis serve`` shows at ``/``, driven in a real headless chromium (Playwright).

A real uvicorn server answers from tiny trained bundles, so the page's requests (multipart upload,
JSON generation, the API key header) meet the real endpoints, not a stand-in. Only the drawing of
detections and masks uses answers the test writes itself (``page.route``): a bundle trained in
seconds finds no objects and paints no mask, which would leave that code unchecked.
"""

from __future__ import annotations

import base64
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from omnivis.serve.app import ServeConfig
from omnivis.serve.routes_omnivis import png_base64
from omnivis.serve.runner import load_models
from tests.deploy.serving import live_server

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
API_KEY = "page-test-key"
expect.set_options(timeout=20_000)  # a machine four times slower than ours still answers well within this


@pytest.fixture(scope="module")
def browser():
    # checked before anything trains: without chromium the module skips at once, and says why
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); the web page test needs it")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def bundles(digits_bundle, generator_bundle):
    return digits_bundle, generator_bundle


@pytest.fixture(scope="module")
def models(bundles):
    clf, gen = bundles
    return load_models([f"digits={clf}", f"gen={gen}"])


@pytest.fixture(scope="module")
def server(models):
    with live_server(models) as (url, _):
        yield url


@pytest.fixture(scope="module")
def bare_server():
    """The page with no models behind it, for the tests that answer the API calls themselves."""
    with live_server({}) as (url, _):
        yield url


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    yield page
    context.close()
    assert not problems, f"the page's JavaScript failed: {problems}"


def _open(page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#model option").first).to_have_attribute("value", re.compile(".+"))


def _digit_png(path) -> str:
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[-1] * 255 / 16).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def test_classify_draws_top_k_bars_with_the_predictors_label(page, server, bundles, tmp_path):
    from omnivis.inference.classify import ClassifyPredictor

    png = _digit_png(tmp_path / "digit.png")
    expected = ClassifyPredictor.from_dir(bundles[0]).predict([png])[0]["label"]
    _open(page, server)
    expect(page.locator("#model option")).to_have_text(["digits (classify)", "gen (generate)"])
    page.select_option("#model", "digits")
    page.set_input_files("#file", png)
    page.click("#run")
    expect(page.locator(".bar")).to_have_count(5)
    assert page.locator(".bar .label").first.inner_text() == expected
    assert re.search(r"\d+(\.\d+)? ms total", page.locator("#latency").inner_text())
    assert page.locator("#canvas").is_visible()
    assert page.locator("#error").is_hidden()
    page.screenshot(path="/tmp/webpage_classify.png", full_page=True)


def test_generate_shows_a_grid_of_loaded_images(page, server):
    _open(page, server)
    page.select_option("#model", "gen")
    expect(page.locator("#run")).to_have_text("Generate")
    expect(page.locator("#class option")).to_have_count(11)  # every class in turn, then "0".."9"
    page.fill("#n", "4")
    page.fill("#steps", "3")
    page.click("#run")
    images = page.locator("img.generated")
    expect(images).to_have_count(4)
    page.wait_for_function("[...document.querySelectorAll('img.generated')].every(i => i.complete)")
    assert images.evaluate_all("els => els.map(i => i.naturalWidth)") == [8] * 4
    assert re.search(r"\d", page.locator("#latency").inner_text())
    page.screenshot(path="/tmp/webpage_generate.png", full_page=True)


def test_a_file_that_is_not_an_image_shows_the_servers_message(page, server, tmp_path):
    fake = tmp_path / "paper.png"
    fake.write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    _open(page, server)
    page.select_option("#model", "digits")
    page.set_input_files("#file", str(fake))
    page.click("#run")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("not an image")
    assert page.locator("#error").evaluate("e => getComputedStyle(e).color") == "rgb(180, 35, 24)"
    expect(page.locator(".bar")).to_have_count(0)
    expect(page.locator("#run")).to_be_enabled()


def test_a_server_with_a_key_asks_for_it_and_sends_it(page, models, tmp_path):
    with live_server(models, ServeConfig(api_key=API_KEY)) as (url, _):
        page.goto(url)
        expect(page.locator("#api-key")).to_be_visible()
        expect(page.locator("#error")).to_contain_text("API key")
        page.fill("#api-key", API_KEY)
        page.press("#api-key", "Enter")
        expect(page.locator("#model option")).to_have_count(2)
        expect(page.locator("#error")).to_be_hidden()
        page.select_option("#model", "digits")
        page.set_input_files("#file", _digit_png(tmp_path / "digit.png"))
        page.click("#run")  # the upload needs the key too
        expect(page.locator(".bar")).to_have_count(5)


def _answering(page, models: list[dict], answers: dict[str, dict]) -> None:
    """Answer the page's API calls with ``models`` and, per endpoint path, a fixed JSON answer."""
    page.route("**/api/models", lambda route: route.fulfill(json={"models": models}))
    for path, answer in answers.items():
        page.route(f"**{path}", _fulfil(answer))


def _fulfil(answer: dict):
    return lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))


def _drop(page, path) -> None:
    """Drop the file on the drop zone the way a browser does: a ``drop`` event carrying it."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    page.evaluate("""([name, data]) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: "image/png" }));
        document.getElementById("drop").dispatchEvent(
            new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }""", [path.name, data])


def _pixel(page, x: int, y: int) -> list[int]:
    return page.evaluate("([x, y]) => [...document.getElementById('canvas').getContext('2d')"
                         ".getImageData(x, y, 1, 1).data]", [x, y])


def test_detections_and_masks_are_drawn_over_the_image(page, bare_server, tmp_path):
    mask = np.zeros((40, 60), np.uint8)
    mask[:, 30:] = 2  # right half: class 2 ("square"); left half background, left clear
    latency = {"queue": 0.5, "model": 3.0, "total": 3.5}
    multitask = {"name": "multi", "task": "multitask", "backend": "torch", "img_size": 32, "channels": 3,
                 "classes": ["cat", "dog"], "tasks": ["classify", "segment", "detect"],
                 "seg_classes": ["background", "circle", "square"], "det_classes": ["circle", "square"]}
    answer = {"model": "multi", "task": "multitask", "image": "grey.png", "summary": "dog; square 50%",
              "label": "dog", "score": 0.9, "classification": {"top_k": [{"label": "dog", "score": 0.9},
                                                                         {"label": "cat", "score": 0.1}]},
              "class_fractions": {"background": 0.5, "circle": 0.0, "square": 0.5},
              "mask_png": png_base64(mask), "size": [60, 40],
              "detections": [{"label": "circle", "score": 0.87, "box": [2, 2, 20, 20]}], "latency_ms": latency}
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(grey)
    _answering(page, [multitask], {"/api/multitask/multi": answer})
    _open(page, bare_server)
    _drop(page, grey)
    expect(page.locator("#drop-text")).to_contain_text("grey.png")
    page.click("#run")
    expect(page.locator(".bar")).to_have_count(2)
    expect(page.locator(".legend-row")).to_have_count(3)  # background, square (circle has 0%), one detection
    expect(page.locator(".legend").first).to_contain_text("square")
    expect(page.locator("#latency")).to_contain_text("3.5 ms total")
    width = page.locator("#canvas").evaluate("c => c.width")
    assert width == 480  # the image's 60 px drawn 8x
    assert _pixel(page, 200, 300)[:3] == [128, 128, 128]  # background: the image shows through
    right = _pixel(page, 400, 300)[:3]
    assert right != [128, 128, 128] and right[0] != right[2]  # class 2 tinted
    # the box 2..20 px -> 16..160 on the canvas: its edge is drawn, its inside is the image
    assert _pixel(page, 16, 100)[:3] != [128, 128, 128]
    assert _pixel(page, 80, 100)[:3] == [128, 128, 128]
    page.screenshot(path="/tmp/webpage_multitask.png", full_page=True)


def test_face_model_identifies_the_uploaded_photo(page, tmp_path):
    from omnivis.inference.face import FacePredictor
    from omnivis.inference.face_index import enroll, identify
    from tests.face.conftest import (
        person_photos,
        save_untrained_face_bundle,
        write_people,
    )

    bundle = save_untrained_face_bundle(tmp_path / "face", threshold=-1.0)  # every face is someone
    gallery = write_people(tmp_path / "gallery", range(3), photos=2)
    enroll(FacePredictor.from_dir(bundle), gallery).save(tmp_path / "index")
    photo = tmp_path / "query.png"
    Image.fromarray(person_photos(1, 1, seed=9)[0]).save(photo)
    predictor = FacePredictor.from_dir(bundle)
    expected = identify(predictor, enroll(predictor, gallery), [str(photo)], top_k=5)[0]["faces"][0]
    with live_server(load_models([f"face={bundle}", f"plain={bundle}"],
                                 face_indexes=[f"face={tmp_path / 'index'}"])) as (url, _):
        _open(page, url)
        page.select_option("#model", "plain")
        expect(page.locator("#error")).to_contain_text("no gallery")
        page.select_option("#model", "face")
        expect(page.locator("#model-info")).to_contain_text("3 people enrolled")
        expect(page.locator("#error")).to_be_hidden()
        page.set_input_files("#file", str(photo))
        page.click("#run")
        expect(page.locator(".bar")).to_have_count(3)  # three people enrolled: the top-3
        assert page.locator(".bar .label").first.inner_text() == expected["top_k"][0]["identity"]
        expect(page.locator(".summary")).to_contain_text(f"{expected['identity']} · threshold -1.000 (FAR 0.01)")
        expect(page.locator(".legend")).to_have_count(0)  # the whole photo is the face: no boxes to list
        page.screenshot(path="/tmp/webpage_face.png", full_page=True)
