"""Prometheus metrics of the API: requests, predictions, served probabilities, the model."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from serving.model import LoadAttempt, LoadedModel, ReloadStatus

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Sub-millisecond buckets: a prediction takes well under a millisecond, a batch tens of them.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Tenths: what the batch_scores histogram of the monitoring assets uses, so the two compare.
PROBABILITY_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
# Requests that match no route are counted under one label, so probing URLs cannot grow series.
UNMATCHED = "unmatched"


class ServingMetrics:
    """One registry per app, so that several apps (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Labels are route templates (`/features/{user_id}`), never a user id.
        self.requests = Counter(
            "streamflow_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "streamflow_http_request_duration_seconds",
            "Time from request to the end of the response, by route template and status.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "streamflow_predictions",
            "Predictions served, by predicted class (1 = churns).",
            ["prediction"],
            registry=self.registry,
        )
        self.probability = Histogram(
            "streamflow_prediction_probability",
            "Churn probabilities served (the served model's score distribution).",
            buckets=PROBABILITY_BUCKETS,
            registry=self.registry,
        )
        self.stale = Counter(
            "streamflow_stale_features",
            "Users whose features were older than the maximum age: flagged or refused (strict).",
            ["action"],
            registry=self.registry,
        )
        self.unknown_users = Counter(
            "streamflow_unknown_users",
            "Requested users the online store holds no features for.",
            registry=self.registry,
        )
        self.model_version = Gauge(
            "streamflow_model_version",
            "Version of the model being served (0 before one is loaded).",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "streamflow_model_info",
            "1 for the served model version, labelled with its version and training month.",
            ["version", "training_month"],
            registry=self.registry,
        )
        self.model_loaded_at = Gauge(
            "streamflow_model_loaded_timestamp_seconds",
            "When the served model was loaded (Unix time).",
            registry=self.registry,
        )
        self.reloads = Counter(
            "streamflow_model_reloads",
            "Attempts to load a version the model URI pointed at, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.reload_seconds = Histogram(
            "streamflow_model_reload_duration_seconds",
            "Time to download, compile and check a model version.",
            registry=self.registry,
        )
        self.reload_failing = Gauge(
            "streamflow_model_reload_failing",
            "1 while the version the model URI points at failed to load and an older one serves.",
            registry=self.registry,
        )
        self.registry_up = Gauge(
            "streamflow_model_registry_up",
            "1 when the last poll reached the model registry, 0 when it did not.",
            registry=self.registry,
        )
        self.reload_errors = Counter(
            "streamflow_model_reload_errors",
            "Polls of the registry that failed: registry unreachable, or the new version failed "
            "to load (the loaded model keeps serving).",
            ["reason"],
            registry=self.registry,
        )
        self.log_queue_depth = Gauge(
            "streamflow_prediction_log_queue_depth",
            "Answers waiting in memory for the prediction log's writer.",
            registry=self.registry,
        )
        self.log_written = Counter(
            "streamflow_prediction_log_written",
            "Answers written to the prediction log.",
            registry=self.registry,
        )
        self.log_dropped = Counter(
            "streamflow_prediction_log_dropped",
            "Answers never written to the prediction log: queue full, or store down at shutdown.",
            registry=self.registry,
        )
        self.log_write_errors = Counter(
            "streamflow_prediction_log_write_errors",
            "Failed writes of a batch to the prediction log (a batch held through an outage "
            "counts once per attempt).",
            registry=self.registry,
        )
        self.log_store_up = Gauge(
            "streamflow_prediction_log_store_up",
            "1 when the last write to the prediction log store succeeded, 0 when it failed.",
            registry=self.registry,
        )
        self.shadow_latency = Histogram(
            "streamflow_shadow_duration_seconds",
            "Time the shadow challenger took to score one batch of sampled answers (off the "
            "request path).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shadow_scored = Counter(
            "streamflow_shadow_predictions",
            "Answers the shadow challenger also scored.",
            registry=self.registry,
        )
        self.shadow_errors = Counter(
            "streamflow_shadow_errors",
            "Batches the shadow challenger failed to score (logged without its answer).",
            registry=self.registry,
        )
        for reason in ("registry_unreachable", "load_failed"):
            self.reload_errors.labels(reason)
        for outcome in ("loaded", "failed"):
            self.reloads.labels(outcome)
        for action in ("flagged", "refused"):
            self.stale.labels(action)
        # Label lookups take a lock and hash the labels: resolve the hot ones once.
        self.predicted = {
            prediction: self.predictions.labels(str(prediction)) for prediction in (0, 1)
        }
        self._by_request: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def request_done(self, route: str, method: str, status: str, seconds: float) -> None:
        key = (route, method, status)
        series = self._by_request.get(key)
        if series is None:
            series = (self.requests.labels(*key), self.latency.labels(*key))
            self._by_request[key] = series
        series[0].inc()
        series[1].observe(seconds)

    def model_polled(self, current: LoadedModel | None, status: ReloadStatus) -> None:
        if current is not None:
            self.model_version.set(int(current.version))
            self.model_info.clear()
            self.model_info.labels(current.version, current.tags.get("partition", "unknown")).set(1)
            self.model_loaded_at.set(current.loaded_at.timestamp())
        self.reload_failing.set(1 if status.failed_version is not None else 0)
        if status.registry_reachable is not None:
            self.registry_up.set(1 if status.registry_reachable else 0)
        if status.registry_reachable is False:
            self.reload_errors.labels("registry_unreachable").inc()

    def model_load_attempted(self, attempt: LoadAttempt) -> None:
        self.reloads.labels("loaded" if attempt.loaded else "failed").inc()
        if not attempt.loaded:
            self.reload_errors.labels("load_failed").inc()
        self.reload_seconds.observe(attempt.seconds)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (a plain ASGI middleware:
    Starlette's BaseHTTPMiddleware would cost more than a prediction)."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            # The router leaves the matched route in the scope: its path is the template.
            route = scope.get("route")
            self.metrics.request_done(
                getattr(route, "path", UNMATCHED),
                scope["method"],
                str(status),
                time.perf_counter() - started,
            )
