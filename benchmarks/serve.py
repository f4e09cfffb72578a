"""The server under load: micro-batching on vs off, and a plain per-request FastAPI endpoint (issue 13).

Trains the default digits classifier (`omnivis train classify --data builtin:digits`, nothing else
set) unless `--bundle` names one, then runs three servers one after the other, each in its own
process on 127.0.0.1, and drives each with `--clients` concurrent clients (one aiohttp process,
keep-alive connections, multipart PNG uploads of held-out digits, each body encoded once as load
tools send a prepared body; aiohttp comes with `omnivis[scale]`) for `--seconds`:

- `omnivis serve` with batching (`--max-batch 32 --max-wait-ms 5`);
- `omnivis serve` with batching off (`--max-batch 1`), the same code otherwise;
- a plain FastAPI endpoint as people write it by hand: a `def` route that decodes the upload and
  calls the same `ClassifyPredictor.predict` per request, in FastAPI's thread pool.

Reported per server: requests/s, errors, p50/p99 latency seen by the clients, and from the server's
own /metrics the mean time in the queue vs in the model and the mean batch size. Target (issue 13):
batching >= 3x the requests/s of batching off with 0 errors.

    python benchmarks/serve.py
    python benchmarks/serve.py --bundle runs/digits --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi import File, Request, UploadFile  # at module level: FastAPI resolves the route's annotations here
from results_file import merge_results  # benchmarks/results_file.py

TARGET_RATIO = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plain_app(bundle: str):
    """The hand-written reference: one model call per request, nothing shared between requests."""
    import io

    from fastapi import FastAPI
    from PIL import Image

    from omnivis.inference.classify import ClassifyPredictor

    predictor = ClassifyPredictor.from_dir(bundle)
    app = FastAPI()

    @app.post("/api/classify/digits")
    def classify(request: Request, image: UploadFile | None = File(None)) -> dict:
        data = image.file.read() if image is not None else request_body(request)
        return predictor.predict([Image.open(io.BytesIO(data))], top_k=5)[0]

    return app


def request_body(request) -> bytes:
    """A sync route's raw body (FastAPI runs it in a worker thread; the body is read on the loop)."""
    import anyio.from_thread

    return anyio.from_thread.run(request.body)


def start(command: list[str], url: str) -> subprocess.Popen:
    import httpx2 as httpx

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the server did not start: {' '.join(command)}")


BOUNDARY = "omnivis-benchmark-boundary"


def multipart_body(image: bytes) -> bytes:
    """The bytes a browser or ``requests`` sends for one ``image`` file field: encoded once per image,
    as load tools (wrk, hey) send a prepared body, so the clients' own CPU goes to HTTP, not to
    building forms (on 2 shared cores the clients are otherwise the limit)."""
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"d.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()


async def load(url: str, images: list[bytes], clients: int, seconds: float, body: str = "multipart") -> dict:
    """``clients`` loops posting images back to back for ``seconds`` over keep-alive connections
    (aiohttp: about 3x less client CPU per request than httpx); latencies of the 200s, errors."""
    import aiohttp

    if body == "multipart":
        bodies = [multipart_body(image) for image in images]
        headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    else:
        bodies, headers = images, {"content-type": "image/png"}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop = time.perf_counter() + seconds
    target = f"{url}/api/classify/digits"

    async def client(index: int, session) -> None:
        i = index
        while time.perf_counter() < stop:
            start = time.perf_counter()
            try:
                async with session.post(target, data=bodies[i % len(bodies)], headers=headers) as response:
                    await response.read()
                    key = None if response.status == 200 else str(response.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                key = type(exc).__name__
            if key is None:
                latencies.append(time.perf_counter() - start)
            else:
                errors[key] = errors.get(key, 0) + 1
            i += clients

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        began = time.perf_counter()
        await asyncio.gather(*(client(i, session) for i in range(clients)))
        elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "requests_per_s": len(latencies) / elapsed, "errors": errors,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None}


METRICS = ("omnivis_queue_seconds_sum", "omnivis_queue_seconds_count", "omnivis_model_seconds_sum",
           "omnivis_batch_size_sum", "omnivis_batch_size_count")


def scrape(url: str) -> dict[str, float]:
    """The server's queue, model and batch-size totals from its /metrics."""
    import httpx2 as httpx

    text = httpx.get(f"{url}/metrics").text
    totals = {}
    for name in METRICS:
        match = re.search(rf'^{name}{{model="digits"}} ([0-9.e+-]+)$', text, re.M)
        totals[name] = float(match.group(1)) if match else float("nan")
    return totals


def server_side(before: dict, after: dict) -> dict:
    """Mean queue ms per request, model ms per call and batch size over the measured run only."""
    d = {k: after[k] - before[k] for k in METRICS}
    calls = d["omnivis_batch_size_count"]
    return {"queue_ms_mean": 1000 * d["omnivis_queue_seconds_sum"] / d["omnivis_queue_seconds_count"],
            "model_ms_per_call": 1000 * d["omnivis_model_seconds_sum"] / calls,
            "batch_size_mean": d["omnivis_batch_size_sum"] / calls, "model_calls": int(calls)}


def held_out_pngs(bundle: Path, count: int = 64) -> list[bytes]:
    import io

    from PIL import Image

    from omnivis.data.builtin import resolve_classification_data
    from omnivis.inference.classify import class_split

    config = json.loads((bundle / "config.json").read_text())
    data = resolve_classification_data(config["data"])
    _, val_idx = class_split(data, config["split"]["val_fraction"], config["split"]["seed"])
    pngs = []
    for i in val_idx[:count]:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(data.samples[int(i)].source)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="a classifier bundle (default: train the default digits classifier)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--body", choices=("multipart", "raw"), default="multipart",
                        help="how clients send the PNG: a multipart file field, or the raw body (image/png)")
    parser.add_argument("--plain-server", help=argparse.SUPPRESS)  # internal: run the reference app
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server:
        import uvicorn

        uvicorn.run(plain_app(args.plain_server), host="127.0.0.1", port=args.port, log_level="warning",
                    access_log=False)
        return
    bundle = Path(args.bundle) if args.bundle else None
    if bundle is None:
        from omnivis.engine.config import TrainerConfig
        from omnivis.tasks.classify import ClassifyConfig, train_classifier

        bundle = Path(tempfile.mkdtemp(prefix="omnivis-bench-serve-")) / "digits"
        train_classifier(ClassifyConfig(data="builtin:digits", trainer=TrainerConfig(progress=False, epochs=None)), bundle)
    images = held_out_pngs(bundle)
    serve = [sys.executable, "-m", "omnivis.cli", "serve", f"digits={bundle}", "--max-queue", "1024"]
    servers = {
        "batching": serve + ["--max-batch", "32", "--max-wait-ms", "5"],
        "no batching": serve + ["--max-batch", "1", "--max-wait-ms", "0"],
        "plain FastAPI": [sys.executable, __file__, "--plain-server", str(bundle)],
    }
    results: dict = {}
    for name, command in servers.items():
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start(command + ["--port", str(port)], url)
        try:
            asyncio.run(load(url, images, args.clients, min(5.0, args.seconds), args.body))  # warm up
            ours = name != "plain FastAPI"
            before = scrape(url) if ours else None
            run = asyncio.run(load(url, images, args.clients, args.seconds, args.body))
            if ours:
                run.update(server_side(before, scrape(url)))
            results[name] = run
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        print(f"{name}: {json.dumps(run)}", flush=True)
    base = results["no batching"]["requests_per_s"]
    print(f"\nserve benchmark: {bundle}, {args.body} PNG uploads, {args.clients} clients for {args.seconds:g} s each on 127.0.0.1, "
          f"{os.cpu_count()} CPUs; after 5 s of warm-up each")
    print("| server | requests/s | ratio to no batching | errors | p50 ms | p99 ms | queue ms | model ms/call | batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        side = (f"{r['queue_ms_mean']:.2f} | {r['model_ms_per_call']:.2f} | {r['batch_size_mean']:.1f}"
                if "queue_ms_mean" in r else "- | - | -")
        print(f"| {name} | {r['requests_per_s']:.1f} | {r['requests_per_s'] / base:.2f} | {sum(r['errors'].values())} | "
              f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {side} |")
    ratio = results["batching"]["requests_per_s"] / base
    met = ratio >= TARGET_RATIO and not results["batching"]["errors"]
    print(f"batching / no batching: {ratio:.2f}x (target >= {TARGET_RATIO}x with 0 errors: {'met' if met else 'NOT met'})")
    merge_results({f"serve_{args.body}": {"clients": args.clients, "seconds": args.seconds, "servers": results,
                                          "ratio": ratio, "target_met": met}})


if __name__ == "__main__":
    main()
