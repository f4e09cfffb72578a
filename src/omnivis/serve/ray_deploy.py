"""``omnivis serve --ray``: the same FastAPI app (``create_app``) as a Ray Serve deployment.

Each replica is one Ray actor that loads the bundles with ``load_models`` and builds omnivis' own
app with ``create_app``; Ray Serve's HTTP proxy sends every request to a replica's app, so the
endpoints (omnivis JSON, OpenAI Images, KServe v2, the page, ``/metrics``) and their clients are
unchanged. The app is built inside the replica (``serve.ingress()`` with a late-bound
``__serve_build_asgi_app__``), not pickled from the driver: the models, their batchers and the
app's lifespan all belong to the replica's own event loop.

Batching: every replica keeps the app's own micro-batcher (``--max-batch``, ``--max-wait-ms``,
``--max-queue``), which already groups concurrent requests into one model call per model.
``serve.batch`` is not used: it would be a second batcher in front of the first, and it batches
calls of one Python method, not HTTP requests routed by the app. ``max_ongoing_requests`` is how
many requests Ray lets into one replica at once, so it bounds what that replica's batcher can group.

Ray is an optional extra (``pip install 'omnivis[scale]'``); this module imports it only when used.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from omnivis.errors import ConfigError
from omnivis.serve.app import ServeConfig

NEEDS_RAY = "serve --ray needs Ray Serve: pip install 'omnivis[scale]'"
APP_NAME = "omnivis"


def require_ray():
    """``ray.serve``, or a one-line ``ConfigError`` naming the extra to install."""
    try:
        import ray  # noqa: F401
        from ray import serve
    except ImportError:
        raise ConfigError(NEEDS_RAY) from None
    return serve


@dataclass
class Scaling:
    """How many replicas Ray keeps and how many requests each takes at once."""

    replicas: int = 1
    max_replicas: int | None = None  # above ``replicas``: autoscale between the two
    max_ongoing_requests: int | None = None  # None: the app's max_batch + max_queue
    replica_cpus: float = 1.0
    drain_s: float = 30.0

    def options(self, config: ServeConfig) -> dict:
        """Keyword arguments for ``serve.deployment``."""
        if self.replicas < 1:
            raise ConfigError(f"--replicas must be at least 1, got {self.replicas}")
        ongoing = self.max_ongoing_requests or (config.max_batch + config.max_queue)
        if ongoing < 1:
            raise ConfigError(f"--max-ongoing-requests must be at least 1, got {ongoing}")
        options = {"name": APP_NAME, "max_ongoing_requests": ongoing,
                   "ray_actor_options": {"num_cpus": self.replica_cpus},
                   "graceful_shutdown_timeout_s": self.drain_s}
        if self.max_replicas is not None and self.max_replicas != self.replicas:
            if self.max_replicas < self.replicas:
                raise ConfigError(f"--max-replicas ({self.max_replicas}) is below --replicas ({self.replicas})")
            options["autoscaling_config"] = {"min_replicas": self.replicas, "initial_replicas": self.replicas,
                                             "max_replicas": self.max_replicas,
                                             "target_ongoing_requests": max(1, ongoing // 2)}
        else:
            options["num_replicas"] = self.replicas
        return options


class OmnivisReplica:
    """One replica: the bundles loaded once, then omnivis' app over them (built by Ray Serve at init)."""

    def __init__(self, specs: list[str], backend: str = "torch", face_indexes: list[str] | None = None,
                 face_detector: str | None = None, config: ServeConfig | None = None, threads: int = 0) -> None:
        import ray
        import torch

        from omnivis.serve.runner import load_models

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        torch.set_num_threads(threads or max(1, int(cpus)))
        self._omnivis_models = load_models(specs, backend, face_indexes, face_detector)
        self._omnivis_config = config or ServeConfig()

    def __serve_build_asgi_app__(self):
        from omnivis.serve.app import create_app

        return create_app(self._omnivis_models, self._omnivis_config)


def build_application(specs: list[str], config: ServeConfig | None = None, scaling: Scaling | None = None,
                      backend: str = "torch", face_indexes: list[str] | None = None,
                      face_detector: str | None = None, threads: int = 0):
    """A bound Ray Serve application serving ``specs`` (``BUNDLE`` or ``NAME=BUNDLE``) with omnivis' app."""
    serve = require_ray()
    config = config or ServeConfig()
    scaling = scaling or Scaling()
    deployment = serve.deployment(**scaling.options(config))(serve.ingress()(OmnivisReplica))
    return deployment.bind(list(specs), backend, list(face_indexes or []), face_detector, config, threads)


def start_ray(num_cpus: int | None = None) -> bool:
    """Connect to ``$RAY_ADDRESS`` when set, else start a local Ray; True when this call started it."""
    require_ray()
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False)
    return True


def deploy(specs: list[str], config: ServeConfig | None = None, scaling: Scaling | None = None,
           host: str = "127.0.0.1", port: int = 8000, backend: str = "torch",
           face_indexes: list[str] | None = None, face_detector: str | None = None, threads: int = 0) -> str:
    """Start Serve's HTTP proxy on ``host:port`` and deploy the bundles at ``/``; returns the base URL.
    Ray must already be running (``start_ray``); the call returns once every replica is up."""
    serve = require_ray()
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_application(specs, config, scaling, backend, face_indexes, face_detector, threads),
              name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{host}:{port}"


def shutdown(stop_ray: bool = True) -> None:
    """Remove the deployment and Serve's proxy, then stop Ray when this process started it."""
    serve = require_ray()
    import ray

    if ray.is_initialized():
        serve.shutdown()
        if stop_ray:
            ray.shutdown()


def serve_forever(specs: list[str], config: ServeConfig, scaling: Scaling, host: str, port: int,
                  backend: str = "torch", face_indexes: list[str] | None = None, face_detector: str | None = None,
                  threads: int = 0, announce=print) -> None:
    """``omnivis serve --ray``: deploy, print the URL, block until Ctrl-C (or SIGTERM), then shut Serve down
    (replicas get ``drain_s`` to answer what they hold) and stop the Ray this call started."""
    import signal

    require_ray()

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    started = start_ray()
    # after ray.init: its core worker installs a SIGTERM handler that aborts the process (exit by SIGABRT,
    # Serve left running); ours makes SIGTERM and SIGINT (ignored when started in the background) a clean stop
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        url = deploy(specs, config, scaling, host, port, backend, face_indexes, face_detector, threads)
        announce(f"web page: {url}/   API: {url}/docs   (Ray Serve; Ctrl-C stops)")
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        shutdown(stop_ray=started)
