"""Prometheus metrics of one service, in a registry of its own (`GET /metrics`).

- `oddspot_requests_total{route,status}`: answered requests (route is the route template, never
  the raw path, so unknown paths cannot grow the label set);
- `oddspot_request_seconds{route}`: latency from the first byte received to the response;
- `oddspot_batch_size{model}` and `oddspot_batch_seconds{model}`: images per model call and its time;
- `oddspot_images_total{model}`: images scored;
- `oddspot_queue_depth{model}`: images waiting for a batch.
"""

from __future__ import annotations

from collections.abc import Iterable


class ServiceMetrics:
    """The service's counters, histograms and gauges (prometheus-client, imported here: `oddspot[serve]`)."""

    def __init__(self, models: Iterable[str]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("oddspot_requests", "HTTP requests answered, by route and status.",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("oddspot_request_seconds", "Request latency in seconds, by route.", ["route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
                                 registry=self.registry)
        self.batch_size = Histogram("oddspot_batch_size", "Images per model call, by model.", ["model"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.batch_seconds = Histogram("oddspot_batch_seconds", "Seconds per model call, by model.", ["model"],
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
                                       registry=self.registry)
        self.images = Counter("oddspot_images", "Images scored, by model.", ["model"], registry=self.registry)
        self.queue_depth = Gauge("oddspot_queue_depth", "Images waiting for a batch, by model.", ["model"],
                                 registry=self.registry)
        for name in models:  # every model's series exist from the start, at zero
            self.queue_depth.labels(name).set(0)
            self.images.labels(name)

    def batch(self, model: str, size: int, seconds: float) -> None:
        """One model call of `size` images that took `seconds`."""
        self.batch_size.labels(model).observe(size)
        self.batch_seconds.labels(model).observe(seconds)
        self.images.labels(model).inc(size)

    def depth(self, model: str, depth: int) -> None:
        self.queue_depth.labels(model).set(depth)

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of the Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
