"""The Dagster code location: every asset, check, job, sensor and resource of StreamFlow."""

from dagster import Definitions, JobDefinition

from streamflow.settings import Settings, get_settings
from streamflow_assets.executors import build_executor
from streamflow_assets.features.assets import (
    feature_registry,
    online_features,
    training_dataset,
)
from streamflow_assets.freshness.checks import (
    build_freshness_schedule,
    freshness_checks,
    freshness_checks_job,
    freshness_sensors,
)
from streamflow_assets.freshness.policy import held_monthly
from streamflow_assets.ingestion.assets import (
    monthly_snapshots,
    new_seed_month_sensor,
    seed_months_sensor,
)
from streamflow_assets.jobs import MONTHLY_PIPELINE, build_monthly_pipeline, retraining
from streamflow_assets.model_monitoring.assets import monitoring_assets, retraining_sensor
from streamflow_assets.promotion.assets import production_model
from streamflow_assets.resources import build_resources
from streamflow_assets.training.assets import candidate_scores_online_features, churn_model


def build_definitions(settings: Settings) -> Definitions:
    return Definitions(
        assets=[
            monthly_snapshots,
            feature_registry,
            held_monthly(online_features, settings),
            training_dataset,
            churn_model,
            held_monthly(production_model, settings),
            *monitoring_assets,
        ],
        asset_checks=[
            candidate_scores_online_features,
            *freshness_checks,
        ],
        jobs=[build_monthly_pipeline(settings.retrain), retraining, freshness_checks_job],
        schedules=[build_freshness_schedule(settings)],
        sensors=[seed_months_sensor, new_seed_month_sensor, *freshness_sensors, retraining_sensor],
        resources=build_resources(settings),
        executor=build_executor(settings),
    )


defs = build_definitions(get_settings())


def monthly_pipeline_job() -> JobDefinition:
    """The monthly job as another process (a celery worker) rebuilds it: from its settings."""
    return build_definitions(get_settings()).resolve_job_def(MONTHLY_PIPELINE)
