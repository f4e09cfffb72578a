"""Prometheus metrics of one server: requests by endpoint and code, latency, queue vs model time,
batch sizes, dropped requests. Each app has its own registry, so several apps (tests) never clash."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("omnivis_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "code"], registry=r)
        self.latency = Histogram("omnivis_request_seconds", "Time from request to response, by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Histogram("omnivis_queue_seconds", "Time a request waited for its model batch", ["model"],
                               buckets=LATENCY_BUCKETS, registry=r)
        self.model = Histogram("omnivis_model_seconds", "Time of one model batch call", ["model"],
                               buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("omnivis_batch_size", "Requests per model call", ["model"], buckets=BATCH_BUCKETS,
                               registry=r)
        self.dropped = Counter("omnivis_dropped", "Requests dropped before the model: queue_full, cancelled "
                               "(timed out or client gone before their batch)", ["model", "reason"], registry=r)
        self.waiting = Gauge("omnivis_queue_depth", "Requests waiting for their model", ["model"], registry=r)

    def observer(self, model: str):
        def observe(batch_size: int, queue_s: list[float], model_s: float) -> None:
            self.batch.labels(model).observe(batch_size)
            self.model.labels(model).observe(model_s)
            for q in queue_s:
                self.queue.labels(model).observe(q)
        return observe

    def dropper(self, model: str):
        return lambda reason: self.dropped.labels(model, reason).inc()
