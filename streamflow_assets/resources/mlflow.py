"""MLflow resources: dagster-mlflow's tracking run, and the model registry.

MLflow (and dagster-mlflow, which imports it) is imported when a resource is set up for a step,
never when the code location loads: the code server and the runs' processes serve definitions
without it, and MLflow alone is about 150 MB of every process that imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import ConfigurableResource, HookContext, InitResourceContext, failure_hook

from streamflow.adapters.registry import EXPERIMENT, MODEL_NAME, Registry, ensure_experiment

if TYPE_CHECKING:
    from dagster_mlflow.resources import MlFlow


def _prepare(tracking_uri: str) -> None:
    import mlflow

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)


class MlflowTracking(ConfigurableResource):
    """dagster-mlflow's `mlflow_tracking`, with typed config and an experiment of our own.

    dagster-mlflow ships a legacy function resource. Its behaviour is kept whole (one MLflow run
    per Dagster run, found again by the `dagster_run_id` tag from every step), but it would
    create the experiment on first use with MLflow's default artifact root, `./mlruns` of
    whatever directory the process runs in. This wrapper creates the experiment first, with the
    data dir's artifact location, and ends the run (FINISHED) as the resource is released; a
    failed step ends it FAILED (`end_mlflow_run_on_failure`).
    """

    tracking_uri: str
    experiment_name: str = EXPERIMENT
    artifact_location: str | None = None

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator[MlFlow]:
        import mlflow
        from dagster_mlflow import mlflow_tracking
        from mlflow.tracking import MlflowClient

        # What this yields is what steps get as `context.resources.mlflow`: the legacy object.
        _prepare(self.tracking_uri)
        ensure_experiment(
            MlflowClient(self.tracking_uri), self.experiment_name, self.artifact_location
        )
        config = {"experiment_name": self.experiment_name, "mlflow_tracking_uri": self.tracking_uri}
        legacy = contextmanager(mlflow_tracking.resource_fn)
        with legacy(context.replace_config(config)) as tracking:
            yield tracking
        if mlflow.active_run() is not None:
            mlflow.end_run()


@failure_hook(required_resource_keys={"mlflow"})
def end_mlflow_run_on_failure(context: HookContext) -> None:
    """A failed step ends the Dagster run's MLflow run as FAILED, as dagster-mlflow's
    `end_mlflow_on_run_finished` hook does; that hook cannot be attached to an asset without
    importing MLflow wherever the definitions load. Success needs no hook: `MlflowTracking`
    ends the run when it is released."""
    context.resources.mlflow.end_run(status="FAILED")


class ModelRegistryResource(ConfigurableResource):
    """The MLflow model registry holding `streamflow_churn`."""

    tracking_uri: str
    model_name: str = MODEL_NAME
    # Where the monitoring runs' experiment keeps artifacts, if it has to be created (as above).
    artifact_location: str | None = None
    # The MLflow UI that artifact links open in (`Settings.mlflow_ui`); None: links are files.
    ui_url: str | None = None

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # `models:/` URIs (pyfunc loading) resolve against the global tracking URI.
        _prepare(self.tracking_uri)

    def registry(self) -> Registry:
        from mlflow.tracking import MlflowClient

        return Registry(
            MlflowClient(self.tracking_uri), self.model_name, self.artifact_location, self.ui_url
        )
