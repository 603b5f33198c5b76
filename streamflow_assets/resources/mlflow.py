"""MLflow resources: dagster-mlflow's tracking run, and the model registry."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from dagster import ConfigurableResource, InitResourceContext
from dagster_mlflow import mlflow_tracking
from dagster_mlflow.resources import MlFlow
from mlflow.tracking import MlflowClient

from streamflow_assets.core.registry import EXPERIMENT, MODEL_NAME, Registry, ensure_experiment


def _prepare(tracking_uri: str) -> None:
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)


class MlflowTracking(ConfigurableResource):
    """dagster-mlflow's `mlflow_tracking`, with typed config and an experiment of our own.

    dagster-mlflow ships a legacy function resource. Its behaviour is kept whole (one MLflow run
    per Dagster run, found again by the `dagster_run_id` tag from every step; the
    `end_mlflow_on_run_finished` hook closes it), but it would create the experiment on first
    use with MLflow's default artifact root, `./mlruns` of whatever directory the process runs
    in. This wrapper creates the experiment first, with the data dir's artifact location, and
    closes a run that the hook left open.
    """

    tracking_uri: str
    experiment_name: str = EXPERIMENT
    artifact_location: str | None = None

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator[MlFlow]:
        # What this yields is what steps get as `context.resources.mlflow`: the legacy object.
        _prepare(self.tracking_uri)
        ensure_experiment(
            MlflowClient(self.tracking_uri), self.experiment_name, self.artifact_location
        )
        config = {"experiment_name": self.experiment_name, "mlflow_tracking_uri": self.tracking_uri}
        legacy = contextmanager(mlflow_tracking.resource_fn)
        with legacy(context.replace_config(config)) as tracking:
            yield tracking
        # The end_mlflow_on_run_finished hook closes the run only after the job's last step;
        # when churn_model is not last, the run is closed as its step's resources are released.
        if mlflow.active_run() is not None:
            mlflow.end_run()


class ModelRegistryResource(ConfigurableResource):
    """The MLflow model registry holding `streamflow_churn`."""

    tracking_uri: str
    model_name: str = MODEL_NAME
    # Where the monitoring runs' experiment keeps artifacts, if it has to be created (as above).
    artifact_location: str | None = None

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # `models:/` URIs (pyfunc loading) resolve against the global tracking URI.
        _prepare(self.tracking_uri)

    def registry(self) -> Registry:
        return Registry(MlflowClient(self.tracking_uri), self.model_name, self.artifact_location)
