"""Running the app under uvicorn, with a drain on SIGTERM/SIGINT: ``/v2/health/ready`` turns false at
once (so a load balancer stops sending), uvicorn stops accepting connections, requests in flight get
their answers, then the batchers stop."""

from __future__ import annotations

from pathlib import Path

from omnivis.errors import ConfigError
from omnivis.serve.app import ServeConfig, create_app
from omnivis.serve.models import ServedModel


def load_models(specs: list[str], backend: str = "torch", face_indexes: list[str] | None = None,
                face_detector: str | None = None) -> dict[str, ServedModel]:
    """``BUNDLE`` or ``NAME=BUNDLE`` per spec -> name -> loaded model (names from the folder by default);
    ``face_indexes`` (``NAME=INDEX``) give face models their gallery, ``face_detector`` finds the faces
    that identify names (``classical`` or a detect bundle; None: each photo is one face)."""
    galleries: dict[str, str] = {}
    for spec in face_indexes or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--face-index takes NAME=INDEX (a served face model's name), got '{spec}'")
        galleries[name] = path
    detector = None
    if face_detector is not None:
        from omnivis.inference.face_detect import load_face_detector

        detector = load_face_detector(face_detector)
    models: dict[str, ServedModel] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        name = name or Path(path).resolve().name
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"model name '{name}' may only hold letters, digits, '-', '_' and '.'; use NAME=BUNDLE")
        if name in models:
            raise ConfigError(f"two bundles are named '{name}'; name them apart with NAME=BUNDLE")
        models[name] = ServedModel(name, path, backend=backend, face_index=galleries.pop(name, None),
                                   face_detector=detector)
    if not models:
        raise ConfigError("give at least one bundle to serve")
    if galleries:
        raise ConfigError(f"--face-index names '{next(iter(galleries))}', which is not a served model "
                          f"({', '.join(models)})")
    return models


def build_server(models: dict[str, ServedModel], config: ServeConfig, host: str = "127.0.0.1", port: int = 8000,
                 log_level: str = "info", drain_s: float = 30.0):
    """A uvicorn server for ``models`` whose exit signal first marks the app as draining."""
    import uvicorn

    app = create_app(models, config)

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.draining = True
            super().handle_exit(sig, frame)

    return DrainingServer(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                         timeout_graceful_shutdown=drain_s, access_log=False))


def serve(models: dict[str, ServedModel], config: ServeConfig, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info", drain_s: float = 30.0) -> None:
    build_server(models, config, host, port, log_level, drain_s).run()
