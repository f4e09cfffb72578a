"""The server on a real socket: the official ``openai`` client and ``tritonclient.http`` work with their
defaults, a full queue answers 503 at once, a request whose client left never reaches the model,
a slow model answers 504, and SIGTERM lets the request in flight finish."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import threading
import time

import httpx2 as httpx
import numpy as np
import pytest
import torch
from PIL import Image

from omnivis.serve.app import ServeConfig
from omnivis.serve.runner import load_models
from tests.deploy.serving import digit_png, free_port, live_server, wait_until_ready


@pytest.fixture(scope="module")
def models(digits_bundle, generator_bundle):
    return load_models([f"digits={digits_bundle}", f"gen={generator_bundle}"])


def test_openai_client_generates_and_reads_errors(models):
    import openai

    with live_server(models) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        result = client.images.generate(model="gen", prompt="a handwritten 3", n=2, size="8x8",
                                        response_format="b64_json", extra_body={"steps": 2, "seed": 1})
        assert len(result.data) == 2
        image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
        expected = models["gen"].predictor.generate(2, "3", steps=2, seed=1)
        assert np.array_equal(np.asarray(image), expected[0, ..., 0])
        with pytest.raises(openai.BadRequestError) as bad_size:
            client.images.generate(model="gen", prompt="3", size="1024x1024")
        assert bad_size.value.body["param"] == "size" and "8x8" in bad_size.value.body["message"]
        with pytest.raises(openai.BadRequestError) as no_class:
            client.images.generate(model="gen", prompt="a cat")
        assert no_class.value.body["param"] == "prompt"
        assert {m.id for m in client.models.list()} == {"digits", "gen"}


def test_tritonclient_binary_infer_matches_the_graph(models):
    import tritonclient.http as triton

    images = np.random.default_rng(0).integers(0, 256, (3, 1, 16, 16), dtype=np.uint8)
    with live_server(models) as (url, _):
        client = triton.InferenceServerClient(url=url.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
        meta = client.get_model_metadata("digits")
        assert meta["inputs"][0]["shape"] == [-1, 1, 16, 16]
        request = triton.InferInput("images", list(images.shape), "UINT8")
        request.set_data_from_numpy(images, binary_data=True)
        outputs = [triton.InferRequestedOutput("probabilities", binary_data=True),
                   triton.InferRequestedOutput("top_k_indices", binary_data=False)]
        result = client.infer("digits", [request], outputs=outputs)
        expected = models["digits"].predictor.run_graph(torch.from_numpy(images))
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected[0].numpy(), rtol=0, atol=1e-6)
        assert np.array_equal(result.as_numpy("top_k_indices"), expected[2].numpy())
        everything = client.infer("digits", [request])  # no outputs named: all of them, binary
        assert everything.as_numpy("top_k_scores").shape == (3, 5)
        wrong = triton.InferInput("images", [1, 3, 16, 16], "UINT8")
        wrong.set_data_from_numpy(np.zeros((1, 3, 16, 16), np.uint8))
        with pytest.raises(Exception, match=r"must have shape \[-1, 1, 16, 16\]"):
            client.infer("digits", [wrong])


class Gate:
    """A model call that waits until the test opens it, and counts what reached the model."""

    def __init__(self, model) -> None:
        self.open, self.entered, self.seen, self.inner = threading.Event(), threading.Event(), [], model.run_batch

    def __call__(self, items):
        self.seen.extend(items)
        self.entered.set()
        assert self.open.wait(30)
        return self.inner(items)


def wait_for_metric(url: str, line: str, seconds: float = 30.0) -> None:
    """Poll /metrics until it shows ``line``: what the server has noticed, not a guess at how long it takes."""
    deadline = time.monotonic() + seconds
    while line not in httpx.get(f"{url}/metrics").text:
        assert time.monotonic() < deadline, f"/metrics never showed {line}"
        time.sleep(0.02)


def _post_digit(url: str, results: list, timeout: float = 30.0) -> None:
    data, _ = digit_png()
    try:
        results.append(httpx.post(f"{url}/api/classify/digits", files={"image": ("d.png", data, "image/png")},
                                  timeout=timeout))
    except httpx.HTTPError as exc:
        results.append(exc)


def test_backpressure_one_running_one_queued_rest_503(digits_bundle):
    models = load_models([f"digits={digits_bundle}"])
    gate = Gate(models["digits"])
    models["digits"].run_batch = gate
    with live_server(models, ServeConfig(max_batch=1, max_wait_ms=0, max_queue=1)) as (url, server):
        results: list = []
        first = threading.Thread(target=_post_digit, args=(url, results))
        first.start()
        assert gate.entered.wait(30)  # one request is in the model
        second = threading.Thread(target=_post_digit, args=(url, results))
        second.start()
        batcher = server.config.app.state.batchers["digits"]
        deadline = time.monotonic() + 30
        while len(batcher.waiting) < 1 and time.monotonic() < deadline:  # one is queued
            time.sleep(0.01)
        rest: list = []
        for _ in range(4):
            _post_digit(url, rest)
        assert [r.status_code for r in rest] == [503] * 4
        assert all(r.headers["retry-after"] == "1" and "busy" in r.json()["error"]["message"] for r in rest)
        gate.open.set()
        first.join(30)
        second.join(30)
        assert sorted(r.status_code for r in results) == [200, 200]
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200


def test_a_request_whose_client_left_never_reaches_the_model(digits_bundle):
    models = load_models([f"digits={digits_bundle}"])
    gate = Gate(models["digits"])
    models["digits"].run_batch = gate
    with live_server(models, ServeConfig(max_batch=1, max_wait_ms=0)) as (url, server):
        held: list = []
        first = threading.Thread(target=_post_digit, args=(url, held))
        first.start()
        assert gate.entered.wait(30)
        gone: list = []
        _post_digit(url, gone, timeout=0.5)  # waits in the queue, then its client gives up
        assert isinstance(gone[0], httpx.TimeoutException)
        wait_for_metric(url, 'omnivis_dropped_total{model="digits",reason="client_gone"} 1.0')
        gate.open.set()
        first.join(30)
        assert held[0].status_code == 200 and len(gate.seen) == 1
        metrics = httpx.get(f"{url}/metrics").text
        assert 'omnivis_dropped_total{model="digits",reason="client_gone"} 1.0' in metrics


def test_a_slow_model_answers_504(digits_bundle):
    models = load_models([f"digits={digits_bundle}"])
    gate = Gate(models["digits"])
    models["digits"].run_batch = gate
    with live_server(models, ServeConfig(request_timeout_s=0.3)) as (url, _):
        results: list = []
        _post_digit(url, results)
        gate.open.set()
        assert results[0].status_code == 504 and "did not answer within 0.3 s" in results[0].json()["error"]["message"]


def test_sigterm_lets_the_request_in_flight_finish(digits_bundle):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # the batch waits 2 s for company, so the request is still in flight when SIGTERM arrives
    process = subprocess.Popen([sys.executable, "-m", "omnivis.cli", "serve", f"digits={digits_bundle}", "--port",
                                str(port), "--max-wait-ms", "2000"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url)
        results: list = []
        request = threading.Thread(target=_post_digit, args=(url, results))
        request.start()
        wait_for_metric(url, 'omnivis_queue_depth{model="digits"} 1.0')  # in flight: waiting for its batch
        process.send_signal(signal.SIGTERM)
        request.join(30)
        assert results[0].status_code == 200 and results[0].json()["task"] == "classify"
        # uvicorn finishes its shutdown, then re-raises the signal: the exit status a supervisor expects
        assert process.wait(30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0]
    assert "Finished server process" in output, output


def test_a_timed_out_request_frees_its_place_in_the_queue(digits_bundle):
    models = load_models([f"digits={digits_bundle}"])
    gate = Gate(models["digits"])
    models["digits"].run_batch = gate
    config = ServeConfig(max_batch=1, max_wait_ms=0, max_queue=1, request_timeout_s=0.4)
    with live_server(models, config) as (url, _):
        held: list = []
        first = threading.Thread(target=_post_digit, args=(url, held))
        first.start()
        assert gate.entered.wait(30)  # the model is busy with the first request
        later: list = []
        for _ in range(3):  # each waits in the one queue place, times out, and gives the place back
            _post_digit(url, later)
        assert [r.status_code for r in later] == [504, 504, 504]
        metrics = httpx.get(f"{url}/metrics").text
        assert 'omnivis_queue_depth{model="digits"} 0.0' in metrics
        assert 'omnivis_dropped_total{model="digits",reason="timeout"} 3.0' in metrics
        gate.open.set()
        first.join(30)
        assert len(gate.seen) == 1  # none of the timed-out requests reached the model
