"""Monitoring resources: the freshness probe, where Evidently runs, where alerts are delivered."""

from __future__ import annotations

import pickle
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import ConfigurableResource, InitResourceContext, get_dagster_logger
from pydantic import PrivateAttr

from streamflow_assets.core.alerts import (
    Alert,
    Delivery,
    MonitoringAlert,
    append_jsonl,
    post_json,
    slack_payload,
)
from streamflow_assets.core.freshness import FreshnessResult, Thresholds
from streamflow_assets.core.monitoring import DriftResult, measure_drift

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

    from streamflow_assets.core.snapshots import SnapshotStore


class FreshnessResource(ConfigurableResource):
    """How the online store's freshness is judged, and where the Dagster UI is for alert links."""

    sample_size: int = 500
    stale_fraction_warn: float = 0.01
    max_age_days: float | None = None
    dagster_ui_url: str = "http://127.0.0.1:3000"

    def thresholds(self) -> Thresholds:
        max_age = timedelta(days=self.max_age_days) if self.max_age_days is not None else None
        return Thresholds(stale_fraction_warn=self.stale_fraction_warn, max_age=max_age)

    def evaluate(self, store: FeatureStore, snapshots: SnapshotStore) -> FreshnessResult:
        # Imported by the check that probes: the sensors that use this resource for alert links
        # run in the code server, which must not import Feast to serve its definitions.
        from streamflow_assets.core.freshness_probe import check_online_store

        return check_online_store(store, snapshots, self.thresholds(), self.sample_size)

    def asset_url(self, asset: str) -> str:
        return f"{self.dagster_ui_url.rstrip('/')}/assets/{asset}"


class DriftResource(ConfigurableResource):
    """Where Evidently measures a month's drift: in a worker process started with the run, or in
    the step's own process.

    Importing Evidently takes seconds of CPU, about half of `feature_drift` at 100,000 users. When
    a run executes all its steps in one process (the local and postgres profiles), the worker
    (`core.drift_worker`) is started as the run's resources are set up and imports Evidently on
    another core while the month is ingested and trained; Evidently's memory leaves with it. A
    plain subprocess rather than multiprocessing's spawn, which would re-run an unguarded
    `__main__` script (and any materialization in it) in the child. Where every step is a
    process of its own (the cluster profile's celery tasks) there is nothing to overlap with.
    """

    in_worker: bool = True
    _worker: subprocess.Popen | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        if self.in_worker:
            self._worker = subprocess.Popen(
                [sys.executable, "-m", "streamflow_assets.core.drift_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        # A run that ended before measuring (a failed step, a month without an incumbent).
        if self._worker is not None:
            self._worker.kill()
            self._worker.communicate()

    def measure(
        self,
        reference: pd.DataFrame,
        current: pd.DataFrame,
        share_threshold: float,
        rows: tuple[int, int],
    ) -> tuple[DriftResult, str]:
        """`core.monitoring.measure_drift`, in the worker when there is one (it serves once)."""
        worker, self._worker = self._worker, None
        if worker is None:
            return measure_drift(reference, current, share_threshold, rows=rows)
        request = pickle.dumps((reference, current, share_threshold, rows))
        output, errors = worker.communicate(request)
        if worker.returncode != 0:
            raise RuntimeError(
                f"the drift worker exited with {worker.returncode}: "
                f"{errors.decode(errors='replace')[-2000:]}"
            )
        outcome = pickle.loads(output)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


class AlertSinkResource(ConfigurableResource):
    """Delivers alerts; `build_resources` binds one implementation per deployment."""

    def send(self, alert: Alert | MonitoringAlert) -> Delivery:
        raise NotImplementedError


class JsonlAlertSink(AlertSinkResource):
    """Appends each alert as a JSON line: the local default, and easy to tail or ship."""

    path: str

    def send(self, alert: Alert | MonitoringAlert) -> Delivery:
        append_jsonl(Path(self.path), alert.record())
        return Delivery(True, 1, self.path)


class LogAlertSink(AlertSinkResource):
    """Writes each alert to the Dagster log (the sensor's log in the UI)."""

    def send(self, alert: Alert | MonitoringAlert) -> Delivery:
        log = get_dagster_logger()
        (log.error if alert.state in ("failing", "fired") else log.info)(alert.text)
        return Delivery(True, 1, "log")


class WebhookAlertSink(AlertSinkResource):
    """POSTs a Slack-compatible message; an alert it cannot deliver is recorded in `failure_log`."""

    url: str
    failure_log: str
    timeout_seconds: float = 5.0
    retries: int = 3
    backoff_seconds: float = 1.0

    def send(self, alert: Alert | MonitoringAlert) -> Delivery:
        delivery = post_json(
            self.url,
            slack_payload(alert),
            timeout=self.timeout_seconds,
            retries=self.retries,
            backoff=self.backoff_seconds,
        )
        # The URL is a secret (Slack's carries its token): name the webhook, never its URL.
        error = delivery.error.replace(self.url, "<webhook>") if delivery.error else None
        if not delivery.delivered:
            failure = {
                "event": "delivery_failed",
                "destination": "webhook",
                "attempts": delivery.attempts,
                "error": error,
                "alert": alert.record(),
            }
            append_jsonl(Path(self.failure_log), failure)
            get_dagster_logger().error(
                f"alert not delivered to the webhook after {delivery.attempts} attempts "
                f"({error}); recorded in {self.failure_log}"
            )
        return Delivery(delivery.delivered, delivery.attempts, "webhook", error)
