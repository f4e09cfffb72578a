"""A real uvicorn server on 127.0.0.1 in a background thread, for tests that need real sockets."""

from __future__ import annotations

import io
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
from PIL import Image

from omnivis.serve.app import ServeConfig
from omnivis.serve.runner import build_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(models: dict, config: ServeConfig | None = None):
    """Yields ``(base_url, server)``; the server answers until the block ends."""
    port = free_port()
    server = build_server(models, config or ServeConfig(), port=port, log_level="warning", drain_s=10)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def png_bytes(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def digit_png(index: int = -1) -> tuple[bytes, np.ndarray]:
    """A real scikit-learn digit as PNG bytes (8x8, 0..255) and its pixels."""
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[index] * 255 / 16).astype(np.uint8)
    return png_bytes(pixels), pixels


def wait_until_ready(process, url: str, timeout_s: float = 120.0, poll_s: float = 0.2) -> None:
    """Poll ``url``'s ``/v2/health/ready`` until it answers 200, failing if ``process`` (a server started
    with ``subprocess.Popen``) exits first or ``timeout_s`` passes."""
    import httpx2 as httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
        time.sleep(poll_s)

