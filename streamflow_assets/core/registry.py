"""The MLflow model registry as StreamFlow uses it: lineage tags, Production stage and alias."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

MODEL_NAME = "streamflow_churn"
EXPERIMENT = "streamflow"
PRODUCTION_STAGE = "Production"
PRODUCTION_ALIAS = "production"
# The promotion_decision of a version whose Dagster run died before promotion decided on it.
ABANDONED = "abandoned"


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment's id, creating it with our artifact location (not ./mlruns) if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        # Another run created it between the lookup and the create.
        return client.get_experiment_by_name(name).experiment_id


@dataclass(frozen=True)
class Registry:
    """One registered model in one MLflow registry."""

    client: MlflowClient
    name: str = MODEL_NAME

    def production(self) -> ModelVersion | None:
        versions = self.client.get_latest_versions(self.name, stages=[PRODUCTION_STAGE])
        return versions[0] if versions else None

    def version(self, version: str) -> ModelVersion:
        return self.client.get_model_version(self.name, version)

    def latest_for_partition(self, partition: str) -> ModelVersion | None:
        """The newest version registered for a month, unless abandoned: that month's candidate."""
        versions = self.client.search_model_versions(
            f"name = '{self.name}' and tags.partition = '{partition}'"
        )
        live = [v for v in versions if v.tags.get("promotion_decision") != ABANDONED]
        return max(live, key=lambda v: int(v.version), default=None)

    def abandon_dagster_run(self, dagster_run_id: str) -> list[str]:
        """What a Dagster run whose process died left in MLflow, closed: its runs still RUNNING
        end as KILLED, and versions it registered but never promoted are tagged abandoned, so
        no promotion takes them for their month's candidate. Returns what was done."""
        done = []
        for experiment in self.client.search_experiments():
            for run in self.client.search_runs(
                [experiment.experiment_id],
                f"tags.dagster_run_id = '{dagster_run_id}' and attributes.status = 'RUNNING'",
            ):
                self.client.set_terminated(run.info.run_id, status="KILLED")
                done.append(f"MLflow run {run.info.run_id[:8]} ended as KILLED")
        registered = self.client.search_model_versions(
            f"name = '{self.name}' and tags.dagster_run_id = '{dagster_run_id}'"
        )
        serving = self.production()
        for version in registered:
            undecided = "promotion_decision" not in version.tags
            if undecided and (serving is None or version.version != serving.version):
                self.tag(version.version, {"promotion_decision": ABANDONED})
                done.append(f"{self.name} v{version.version} tagged {ABANDONED}")
        return done

    def tag(self, version: str, tags: dict[str, object]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, str(value))

    def promote(self, version: str) -> None:
        """Stage Production (archiving the previous one) and alias `production`."""
        self.client.transition_model_version_stage(
            self.name, version, PRODUCTION_STAGE, archive_existing_versions=True
        )
        self.client.set_registered_model_alias(self.name, PRODUCTION_ALIAS, version)

    def download(self, version: str, directory: Path) -> Path:
        """The version's model directory (MLmodel, the Pipeline, the ONNX file)."""
        from mlflow.artifacts import download_artifacts

        uri = f"models:/{self.name}/{version}"
        return Path(download_artifacts(artifact_uri=uri, dst_path=str(directory)))


def as_of_of(version: ModelVersion) -> date:
    return date.fromisoformat(version.tags["as_of"])
