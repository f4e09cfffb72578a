"""``omnivis serve``: bundles behind one HTTP server (omnivis JSON, OpenAI Images, KServe v2, a web page)."""

from __future__ import annotations

from typing import List, Optional

import typer

from omnivis.commands._shared import console


def serve_command(
    bundles: List[str] = typer.Argument(..., help="Bundle folders to serve, each as BUNDLE or NAME=BUNDLE "
                                        "(the name defaults to the folder's name)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, help="Port to listen on."),
    backend: str = typer.Option("torch", help="torch, or onnx: run BUNDLE/model.onnx (from omnivis export) with "
                                "onnxruntime; bundles without an ONNX graph stay on torch."),
    max_batch: int = typer.Option(16, min=1, max=1024, help="Most requests one model call takes (1: no batching)."),
    max_wait_ms: float = typer.Option(5.0, min=0.0, max=10000.0, help="How long the first request of a batch "
                                      "waits for others."),
    max_queue: int = typer.Option(64, min=0, help="Requests that may wait per model; more get 503 + Retry-After."),
    max_upload_mb: float = typer.Option(20.0, min=0.001, help="Largest request body in MiB (413 above)."),
    max_pixels: int = typer.Option(40_000_000, min=1, help="Largest image in pixels (413 above)."),
    timeout: float = typer.Option(60.0, min=0.01, help="Seconds a request may take before it is answered 504."),
    api_key: Optional[str] = typer.Option(None, envvar="OMNIVIS_API_KEY", help="Require this key (Authorization: "
                                          "Bearer KEY or X-API-Key) on every endpoint but the page, health and "
                                          "metrics; also read from $OMNIVIS_API_KEY."),
    threads: int = typer.Option(0, min=0, help="PyTorch threads per model call (0: one less than the CPUs, at "
                                "least 1, leaving a core to the HTTP event loop)."),
    drain: float = typer.Option(30.0, min=0.0, help="Seconds in-flight requests get to finish after SIGTERM."),
    face_index: List[str] = typer.Option([], "--face-index", help="NAME=INDEX: the gallery (omnivis face enroll) "
                                         "that /api/face/identify/NAME searches; repeat per face model."),
    face_detector: Optional[str] = typer.Option(None, help="Find faces before identifying them: 'classical' or a "
                                                "detect bundle (default: each photo is one face)."),
    ray: bool = typer.Option(False, "--ray", help="Serve as a Ray Serve deployment (the same endpoints) on a local "
                             "Ray, or the cluster at $RAY_ADDRESS; needs pip install 'omnivis\\[scale]'."),
    replicas: int = typer.Option(1, min=1, help="With --ray: replicas of the app, each loading every bundle."),
    max_replicas: Optional[int] = typer.Option(None, min=1, help="With --ray: autoscale between --replicas and "
                                               "this many replicas on load (default: a fixed --replicas)."),
    max_ongoing_requests: Optional[int] = typer.Option(None, min=1, help="With --ray: requests Ray lets into one "
                                                       "replica at once (default: --max-batch + --max-queue)."),
) -> None:
    """Serve bundles over HTTP: a web page at /, JSON endpoints per task at /api/TASK/NAME, the OpenAI
    Images API at /v1/images/generations, KServe v2 at /v2, Prometheus at /metrics, OpenAPI at /docs."""
    import os

    import torch

    from omnivis.errors import ConfigError
    from omnivis.serve.app import ServeConfig
    from omnivis.serve.runner import load_models, serve

    if not ray and (max_replicas is not None or max_ongoing_requests is not None or replicas != 1):
        raise ConfigError("--replicas, --max-replicas and --max-ongoing-requests only apply with --ray")
    if ray:
        from omnivis.serve.ray_deploy import require_ray

        require_ray()  # before loading anything: one line naming the extra when Ray is missing
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) - 1))
    models = load_models(bundles, backend, face_index, face_detector)
    for model in models.values():
        console.print(f"[bold]{model.name}[/]: {model.task} on {model.backend} from {model.bundle_dir}"
                      + (f" ({model.note})" if model.note else ""))
    config = ServeConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                         max_upload_mb=max_upload_mb, max_pixels=max_pixels, request_timeout_s=timeout, api_key=api_key)
    if ray:  # the bundles were loaded above only to check them; every replica loads its own copy
        from omnivis.serve.ray_deploy import Scaling, serve_forever

        del models
        scaling = Scaling(replicas=replicas, max_replicas=max_replicas, max_ongoing_requests=max_ongoing_requests,
                          drain_s=drain)
        scaling.options(config)  # bad bounds: one line before Ray starts
        serve_forever(bundles, config, scaling, host, port, backend, face_index, face_detector, threads,
                      announce=console.print)
        return
    console.print(f"web page: http://{host}:{port}/   API: http://{host}:{port}/docs   "
                  f"(PyTorch threads: {torch.get_num_threads()})")
    serve(models, config, host=host, port=port, drain_s=drain)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    app.command("serve")(serve_command)
