"""`omnivis serve --ray` with 2 replicas vs 1 replica on this machine (issue 18, part 3).

Trains the default digits classifier (`omnivis train classify --data builtin:digits`, nothing else
set) unless `--bundle` names one, then runs these servers one after the other on 127.0.0.1, each with
the batching options of benchmarks/serve.py (`--max-batch 32 --max-wait-ms 5 --max-queue 1024`), and
drives each with `--clients` concurrent clients (benchmarks/serve.py's `load`: aiohttp, keep-alive
connections, multipart PNG uploads of held-out digits) for `--seconds` after 5 s of warm-up:

- plain `omnivis serve` (no Ray): what one process does here, with its default PyTorch threads;
- `--ray --replicas 1`: one replica, which reserves 1 Ray CPU and so runs 1 PyTorch thread;
- `--ray --replicas 1 --threads CPUS`: the same replica given every core, so the comparison is honest:
  2 replicas x 1 thread against 1 replica x 1 thread would credit Ray with the second core alone;
- `--ray --replicas 2`: two replicas, 1 Ray CPU and 1 PyTorch thread each.

Reported per server: requests/s, its ratio to the 1-replica, 1-thread Ray server, errors, and the
p50/p99 latency the clients saw. Server-side stats (queue ms, batch size) come from /metrics only
for the servers that are one app process: through Ray, /metrics is answered by whichever replica
the proxy picks, so with 2 replicas a before/after difference mixes two replicas' counters and
means nothing. Between servers the script checks that Ray is really gone (no raylet, gcs_server or
`ray::` process left, the port free) for up to 30 s, then kills, by pid, the Ray processes the server
left behind (only those: not `ray stop --force`, which would also stop a Ray someone else runs here)
and reports them with the server's exit code (Ray 2.60 here: `ray::DashboardAgent` and
`ray::RuntimeEnvAgent` were once seen outliving a server by about a minute). Target (issue 18): the 2-replica /
1-replica requests/s ratio, reported with p50/p99; no threshold.

    python benchmarks/ray_serve.py
    python benchmarks/ray_serve.py --bundle runs/digits --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import merge_results  # benchmarks/results_file.py
from serve import free_port, held_out_pngs, load, scrape, server_side, start  # benchmarks/serve.py

RAY_MARKS = ("raylet", "gcs_server", "ray::", "/site-packages/ray/", "ray/dashboard")


def ray_processes() -> dict[int, str]:
    """Ray's own processes on this machine (pid: command line), found by how Ray names them."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if int(pid) != os.getpid() and any(mark in args for mark in RAY_MARKS):
            found[int(pid)] = args[:120]
    return found


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def stop(process: subprocess.Popen, port: int, before: dict[int, str], wait_s: float = 30.0) -> dict:
    """SIGTERM the server, kill it on timeout, wait for its Ray processes and the port to go, then kill what
    is left; the exit code and what was left."""
    process.send_signal(signal.SIGTERM)
    finding: dict = {"killed": False, "leftovers": []}
    try:
        process.wait(90)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        finding["killed"] = True
    finding["exit_code"] = process.returncode  # negative: the signal that ended it
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        left = {pid: args for pid, args in ray_processes().items() if pid not in before}
        if not left and port_free(port):
            return finding
        time.sleep(0.5)
    finding["leftovers"] = [f"{pid} {args}" for pid, args in left.items()]
    finding["port_busy"] = not port_free(port)
    for pid in left:  # the last resort: what this server started and left behind, by pid
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return finding


def measure(command: list[str], images: list[bytes], clients: int, seconds: float, metrics: bool,
            before: dict[int, str]) -> dict:
    """Start one server, warm it up 5 s, load it ``seconds``, stop it; the load result and the shutdown."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    began = time.monotonic()
    process = start(command + ["--port", str(port)], url)
    startup = time.monotonic() - began
    try:
        asyncio.run(load(url, images, clients, 5.0))  # warm up
        counters = scrape(url) if metrics else None
        run = asyncio.run(load(url, images, clients, seconds))
        if metrics:
            run.update(server_side(counters, scrape(url)))
    finally:
        began = time.monotonic()
        shutdown = stop(process, port, before)
    run.update(startup_s=startup, shutdown_s=time.monotonic() - began, shutdown=shutdown)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="a classifier bundle (default: train the default digits classifier)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    bundle = Path(args.bundle) if args.bundle else None
    if bundle is None:
        from omnivis.engine.config import TrainerConfig
        from omnivis.tasks.classify import ClassifyConfig, train_classifier

        bundle = Path(tempfile.mkdtemp(prefix="omnivis-bench-ray-")) / "digits"
        train_classifier(ClassifyConfig(data="builtin:digits", trainer=TrainerConfig(progress=False, epochs=None)), bundle)
    images = held_out_pngs(bundle)
    cpus = os.cpu_count() or 1
    serve = [sys.executable, "-m", "omnivis.cli", "serve", f"digits={bundle}",
             "--max-batch", "32", "--max-wait-ms", "5", "--max-queue", "1024"]
    plain_threads = max(1, cpus - 1)  # omnivis serve's default --threads
    servers = {  # name: (command, replicas, PyTorch threads per replica, scrape /metrics)
        "omnivis serve (no Ray)": (serve, 1, plain_threads, True),
        "Ray, 1 replica": (serve + ["--ray", "--replicas", "1"], 1, 1, True),
        f"Ray, 1 replica, {cpus} threads": (serve + ["--ray", "--replicas", "1", "--threads", str(cpus)], 1, cpus, True),
        "Ray, 2 replicas": (serve + ["--ray", "--replicas", "2"], 2, 1, False),
    }
    before = ray_processes()  # a Ray someone else runs here is not ours to judge or stop
    results: dict = {}
    for name, (command, replicas, threads, metrics) in servers.items():
        run = measure(command, images, args.clients, args.seconds, metrics, before)
        results[name] = {"replicas": replicas, "threads_per_replica": threads, **run}
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    base = results["Ray, 1 replica"]["requests_per_s"]
    print(f"\nRay Serve benchmark: {bundle}, multipart PNG uploads, {args.clients} clients for {args.seconds:g} s each "
          f"on 127.0.0.1 after 5 s of warm-up, {cpus} CPUs; PyTorch threads per replica in brackets")
    print("| server | replicas | requests/s | ratio to 1 replica | errors | p50 ms | p99 ms | batch |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        batch = f"{r['batch_size_mean']:.1f}" if "batch_size_mean" in r else "-"
        print(f"| {name} | {r['replicas']} ({r['threads_per_replica']}) | {r['requests_per_s']:.1f} | "
              f"{r['requests_per_s'] / base:.2f} | {sum(r['errors'].values())} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {batch} |")
    two = results["Ray, 2 replicas"]["requests_per_s"]
    ratio, fair = two / base, two / results[f"Ray, 1 replica, {cpus} threads"]["requests_per_s"]
    print(f"2 replicas / 1 replica (1 thread each): {ratio:.2f}x; 2 replicas x 1 thread / 1 replica x {cpus} threads "
          f"(the same cores): {fair:.2f}x")
    for name, r in results.items():
        down = r["shutdown"]
        print(f"{name}: exit code {down['exit_code']} after SIGTERM{' (killed after 90 s)' if down['killed'] else ''}; "
              f"left after 30 s and killed: {', '.join(down['leftovers']) or 'nothing'}")
    merge_results({"ray_serve": {"clients": args.clients, "seconds": args.seconds, "cpus": cpus, "servers": results,
                                 "ratio_2_to_1_replica": ratio, "ratio_2_replicas_to_1_replica_all_threads": fair}})


if __name__ == "__main__":
    main()
