"""Prometheus metrics of one ``edge-serve`` process (prometheus-client, own registry).

Endpoint labels come from a fixed list, so a client probing random paths cannot grow the
label set without bound.
"""

from __future__ import annotations

ENDPOINTS = ("/", "/v1/predict", "/v1/model", "/healthz", "/readyz", "/metrics")
ERROR_KINDS = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               408: "client_too_slow",
               413: "too_large", 415: "wrong_type", 422: "missing_field", 500: "internal",
               503: "unavailable", 504: "timeout"}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Counters and histograms in a registry of their own (one per app)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # the *_created series only double the output
        self.registry = r = CollectorRegistry()
        self.requests = Counter("edge_serve_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("edge_serve_errors", "Failed requests by kind of error", ["kind"], registry=r)
        self.latency = Histogram("edge_serve_request_seconds", "Time from request to response",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("edge_serve_batch_images", "Images per onnxruntime call",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.images = Counter("edge_serve_images", "Images scored", registry=r)
        self.inflight = Gauge("edge_serve_inflight_requests", "Prediction requests being scored now", registry=r)
        self.uploading = Gauge("edge_serve_uploading_requests", "Prediction requests still receiving their body",
                               registry=r)

    @staticmethod
    def endpoint(path: str) -> str:
        """The endpoint label of a request path ('other' for anything unknown)."""
        return path if path in ENDPOINTS else "other"

    def observe(self, path: str, status: int, seconds: float) -> None:
        endpoint = self.endpoint(path)
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(ERROR_KINDS.get(status, f"http_{status}")).inc()

    def render(self) -> tuple:
        """(body bytes, content type) in the Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
