"""Custom Ray Serve metrics of the ingress (exported with Serve's built-in ones)."""

from __future__ import annotations

import logging

logger = logging.getLogger("ray.serve")

#: Latency histogram buckets in seconds.
LATENCY_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300]


class ServiceMetrics:
    """rvc_requests_total{route,status} and rvc_request_seconds{route}."""

    def __init__(self) -> None:
        try:
            from ray.serve import metrics

            self.requests = metrics.Counter(
                "rvc_requests_total", description="Requests by route and HTTP status.", tag_keys=("route", "status")
            )
            self.latency = metrics.Histogram(
                "rvc_request_seconds", description="Request latency by route.",
                boundaries=LATENCY_BUCKETS_S, tag_keys=("route",),
            )
        except Exception as e:  # metrics are optional: never fail a replica for them
            logger.warning("custom metrics disabled: %s", e)
            self.requests = self.latency = None

    def record(self, route: str, status: int, seconds: float) -> None:
        if self.requests is None:
            return
        self.requests.inc(tags={"route": route, "status": str(status)})
        self.latency.observe(seconds, tags={"route": route})
