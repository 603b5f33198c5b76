"""A Dagster run's MLflow run ends with the step's outcome: FAILED when the step fails (the
failure hook), FINISHED when the tracking resource is released after it succeeded."""

from pathlib import Path

import pytest
from dagster import OpExecutionContext, job, op
from mlflow.tracking import MlflowClient

from streamflow.adapters.registry import EXPERIMENT
from streamflow_assets.resources.mlflow import MlflowTracking, end_mlflow_run_on_failure


@pytest.mark.parametrize(("fails", "status"), [(True, "FAILED"), (False, "FINISHED")])
def test_the_mlflow_run_ends_as_the_step_did(tmp_path: Path, fails: bool, status: str) -> None:
    @op(required_resource_keys={"mlflow"})
    def train(context: OpExecutionContext) -> None:
        context.resources.mlflow.log_metric("auc", 0.8)
        if fails:
            raise RuntimeError("the fit failed")

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = MlflowTracking(tracking_uri=tracking_uri, artifact_location=str(tmp_path / "art"))

    @job(resource_defs={"mlflow": tracking}, hooks={end_mlflow_run_on_failure})
    def training() -> None:
        train()

    result = training.execute_in_process(raise_on_error=False)
    assert result.success is not fails
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (run,) = client.search_runs([experiment], f"tags.dagster_run_id = '{result.run_id}'")
    assert run.info.status == status
    assert run.data.metrics == {"auc": 0.8}
