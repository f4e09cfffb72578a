"""``omnivis serve --ray``: the same app as a Ray Serve deployment on a local Ray (2 CPUs, 1 replica)
gives the same answers as the plain app, over real HTTP with the same endpoints; Ray is stopped after."""

from __future__ import annotations

import subprocess
import sys

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from omnivis.serve.app import ServeConfig, create_app
from omnivis.serve.ray_deploy import NEEDS_RAY, Scaling
from omnivis.serve.runner import load_models
from tests.deploy.serving import digit_png, free_port, wait_until_ready


def _without_timings(answer: dict) -> dict:
    return {key: value for key, value in answer.items() if key != "latency_ms"}


def test_scaling_options_fixed_or_autoscaled():
    config = ServeConfig(max_batch=8, max_queue=24)
    fixed = Scaling(replicas=2).options(config)
    assert fixed["num_replicas"] == 2 and fixed["max_ongoing_requests"] == 32 and "autoscaling_config" not in fixed
    auto = Scaling(replicas=1, max_replicas=4, max_ongoing_requests=10).options(config)
    assert "num_replicas" not in auto and auto["max_ongoing_requests"] == 10
    assert auto["autoscaling_config"] == {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 4,
                                          "target_ongoing_requests": 5}


def test_serve_ray_without_ray_names_the_extra(tmp_path):
    script = ("import sys; sys.modules['ray'] = None; sys.modules['ray.serve'] = None; "
              "sys.argv = ['omnivis', 'serve', sys.argv[1], '--ray']; from omnivis.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert NEEDS_RAY in " ".join(done.stderr.split()) and "Traceback" not in done.stderr


def test_ray_deployment_answers_like_the_plain_app(digits_bundle):
    pytest.importorskip("ray.serve", reason="needs the scale extra: pip install 'omnivis[scale]'")
    import ray
    from ray import serve

    from omnivis.serve.ray_deploy import deploy, shutdown, start_ray

    config = ServeConfig(max_batch=4, max_wait_ms=2.0)
    image, _ = digit_png()
    files = {"image": ("digit.png", image, "image/png")}
    with TestClient(create_app(load_models([f"digits={digits_bundle}"]), config)) as plain:
        expected = plain.post("/api/classify/digits", files=files, params={"top_k": 3})
        expected_models = plain.get("/api/models").json()
    assert expected.status_code == 200, expected.text

    assert start_ray(num_cpus=2)
    try:
        url = deploy([f"digits={digits_bundle}"], config, Scaling(replicas=1, drain_s=5), port=free_port())
        assert serve.status().applications["omnivis"].status == "RUNNING"
        with httpx.Client(base_url=url, timeout=60) as client:
            answer = client.post("/api/classify/digits", files=files, params={"top_k": 3})
            assert answer.status_code == 200, answer.text
            assert _without_timings(answer.json()) == _without_timings(expected.json())
            assert len(answer.json()["top_k"]) == 3 and "score" in answer.json()["top_k"][0], answer.json()
            assert client.get("/api/models").json() == expected_models
            assert client.get("/v2/health/ready").status_code == 200
            missing = client.post("/api/classify/nope", files=files)
            assert missing.status_code == 404 and "digits" in missing.text
    finally:
        shutdown()
    assert not ray.is_initialized()


def test_serve_ray_stops_cleanly_on_sigterm(digits_bundle):
    """A supervisor's SIGTERM (Kubernetes, systemd) stops `omnivis serve --ray` with exit status 0 and
    Serve shut down, not by SIGABRT from Ray's own handler."""
    pytest.importorskip("ray.serve", reason="needs the scale extra: pip install 'omnivis[scale]'")
    import os
    import signal

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "omnivis.cli", "serve", f"digits={digits_bundle}", "--ray",
                                "--port", str(port)], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_ready(process, f"http://127.0.0.1:{port}", timeout_s=180, poll_s=0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0]
    assert "SIGTERM received" not in output, output[-2000:]
