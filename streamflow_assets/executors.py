"""The executor a profile runs its steps with: in-process, or on dagster-celery workers."""

from __future__ import annotations

from dagster import ExecutorDefinition, executor, in_process_executor
from dagster import multiple_process_executor_requirements as out_of_process
from dagster_celery import celery_executor
from dagster_celery.executor import CELERY_CONFIG

from streamflow.settings import Settings
from streamflow_assets.cluster import check_broker, executor_config

CELERY = "celery"


@executor(name=CELERY, config_schema=CELERY_CONFIG, requirements=out_of_process())
def checked_celery_executor(init_context):
    """dagster-celery's executor, after one connection to the broker: a broker that is down
    fails the run at once, naming it, instead of after kombu's retries with a bare errno."""
    celery = celery_executor.executor_creation_fn(init_context)
    check_broker(celery.broker)
    return celery


def build_executor(settings: Settings) -> ExecutorDefinition:
    if settings.profile == "cluster":
        return checked_celery_executor.configured(executor_config(settings))
    # One process per run rather than per step: every step process would re-import Feast,
    # MLflow and scikit-learn (about 10 s each), which made a two-month backfill launched
    # from the UI take 12-17 minutes instead of 3.5 on two cores. Scale out per run instead
    # (a run launcher), or across hosts with the cluster profile's celery workers.
    return in_process_executor
