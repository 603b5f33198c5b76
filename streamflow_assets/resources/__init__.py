"""Dagster resources; `build_resources` is the one place a profile picks its implementations."""

from collections.abc import Mapping
from typing import Any

from dagster import ConfigurableResource, EnvVar

from streamflow.adapters.prediction_log import sqlite_log_path
from streamflow.settings import Settings
from streamflow_assets.freshness.resource import FreshnessResource
from streamflow_assets.model_monitoring.resource import DriftResource
from streamflow_assets.resources.alerts import (
    AlertSinkResource,
    JsonlAlertSink,
    LogAlertSink,
    WebhookAlertSink,
)
from streamflow_assets.resources.feature_store import FeatureStoreResource
from streamflow_assets.resources.limits import LimitsResource
from streamflow_assets.resources.mlflow import MlflowTracking, ModelRegistryResource
from streamflow_assets.resources.policy import PolicyResource
from streamflow_assets.resources.prediction_log import (
    PostgresPredictionLogs,
    PredictionLogResource,
    SqlitePredictionLogs,
)
from streamflow_assets.resources.seeds import SeedsResource
from streamflow_assets.resources.storage import (
    ParquetSnapshots,
    PostgresSnapshots,
    SnapshotsResource,
)

__all__ = [
    "AlertSinkResource",
    "DriftResource",
    "FeatureStoreResource",
    "FreshnessResource",
    "LimitsResource",
    "MlflowTracking",
    "ModelRegistryResource",
    "PolicyResource",
    "PredictionLogResource",
    "SeedsResource",
    "SnapshotsResource",
    "build_resources",
    "run_config_for",
]

# Resources whose configuration belongs to the run, not to the environment of the process that
# runs a step: a run launched with them in its run config uses them on every celery worker.
RUN_RESOURCES = ("seeds", "limits")


def build_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    """The profile is chosen here and only here: which snapshot store; the feature store and
    MLflow follow from the settings (the profile's feature_store yaml, the tracking URI)."""
    postgres = {
        "host": settings.postgres_host,
        "port": settings.postgres_port,
        "user": settings.postgres_user,
        "password": (
            EnvVar("STREAMFLOW_POSTGRES_PASSWORD")
            if settings.postgres_password.get_secret_value()
            else ""
        ),
        "database": settings.postgres_db,
    }
    snapshots: SnapshotsResource = (
        PostgresSnapshots(**postgres)
        if settings.uses_postgres
        else ParquetSnapshots(root=str(settings.snapshots_dir))
    )
    prediction_log: PredictionLogResource = (
        PostgresPredictionLogs(**postgres)
        if settings.uses_postgres
        else SqlitePredictionLogs(path=str(sqlite_log_path(settings)))
    )
    return {
        "seeds": SeedsResource(seeds_dir=str(settings.seeds_dir)),
        "snapshots": snapshots,
        "prediction_log": prediction_log,
        "feature_store": FeatureStoreResource.of(settings),
        "mlflow": MlflowTracking(
            tracking_uri=settings.tracking_uri,
            artifact_location=settings.mlflow_artifact_location,
        ),
        "model_registry": ModelRegistryResource(
            tracking_uri=settings.tracking_uri,
            artifact_location=settings.mlflow_artifact_location,
            ui_url=settings.mlflow_ui,
        ),
        "freshness": FreshnessResource(
            sample_size=settings.freshness_sample_size,
            stale_fraction_warn=settings.freshness_stale_fraction_warn,
            max_age_days=settings.freshness_max_age_days,
            dagster_ui_url=settings.dagster_ui_url,
        ),
        # Runs execute their steps in one process, except on the cluster profile's workers.
        "drift": DriftResource(in_worker=settings.profile != "cluster"),
        "alerts": _alert_sink(settings),
        "limits": LimitsResource(
            train_max_rows=settings.train_max_rows, chunk_rows=settings.chunk_rows
        ),
        "policy": PolicyResource(
            promotion_margin=settings.promotion_margin,
            promotion_auc_floor=settings.promotion_auc_floor,
            drift_share=settings.drift_share,
            decay_max_auc_drop=settings.decay_max_auc_drop,
            retrain_max_age_months=settings.retrain_max_age_months,
            retrain=settings.retrain,
        ),
    }


def run_config_for(resources: Mapping[str, ConfigurableResource]) -> dict[str, Any]:
    """The run config that carries these resources' settings (those of RUN_RESOURCES) to every
    step of the run, wherever it runs."""
    return {
        "resources": {
            key: {"config": resource.model_dump()}
            for key, resource in resources.items()
            if key in RUN_RESOURCES
        }
    }


def _alert_sink(settings: Settings) -> AlertSinkResource:
    destination = settings.alert_destination
    if destination == "log":
        return LogAlertSink()
    if destination == "jsonl":
        return JsonlAlertSink(path=str(settings.alerts_path))
    if not settings.alert_webhook_url:
        raise ValueError("STREAMFLOW_ALERT_SINK=webhook needs STREAMFLOW_ALERT_WEBHOOK_URL")
    return WebhookAlertSink(
        # Read from the environment when the sensor runs, so the UI shows the variable's name
        # rather than the URL (a Slack webhook URL carries its token).
        url=EnvVar("STREAMFLOW_ALERT_WEBHOOK_URL"),
        failure_log=str(settings.alerts_path),
        timeout_seconds=settings.alert_webhook_timeout_seconds,
        retries=settings.alert_webhook_retries,
        backoff_seconds=settings.alert_webhook_backoff_seconds,
    )
