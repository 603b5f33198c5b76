"""The MLflow model registry as StreamFlow uses it: lineage tags and the `champion` alias."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from streamflow.adapters.onnx_model import ONNX_FILE, CompiledModel
from streamflow.domain import months
from streamflow.domain.promotion import (
    CHALLENGER_ALIAS,
    CHALLENGER_URI,
    CHAMPION_ALIAS,
    CHAMPION_URI,
    MODEL_NAME,
)

__all__ = [
    "CHALLENGER_ALIAS",
    "CHALLENGER_URI",
    "CHAMPION_ALIAS",
    "CHAMPION_URI",
    "MODEL_NAME",
    "Registry",
]

# MLflow is imported by the calls that reach the registry: the code location imports this
# module for its names, and importing MLflow there would hold it in every idle Dagster process.
if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

EXPERIMENT = "streamflow"
# The promotion_decision of a version whose Dagster run died before promotion decided on it.
ABANDONED = "abandoned"


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment's id, creating it with our artifact location (not ./mlruns) if needed."""
    from mlflow.exceptions import MlflowException

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
    artifact_location: str | None = None
    ui_url: str | None = None

    def champion(self) -> ModelVersion | None:
        """The version the `champion` alias points at: what serves."""
        return self._aliased(CHAMPION_ALIAS)

    def challenger(self) -> ModelVersion | None:
        """The version the `challenger` alias points at: the latest rival kept out."""
        return self._aliased(CHALLENGER_ALIAS)

    def _aliased(self, alias: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def champion_at(self, partition: str, *, before_decision: bool) -> ModelVersion | None:
        """Which version served for a month: before its own promotion decision (the incumbent,
        which never saw the month's labels), or once it was made.

        Promotions only ever move forward in as_of (a backfill never demotes a newer champion),
        so that is the newest promoted version trained before the month (or up to it); the
        answer stays the same when the month is re-run after newer months were promoted.
        """
        promoted = self.client.search_model_versions(
            f"name = '{self.name}' and tags.promotion_decision = 'promoted'"
        )
        limit = months.as_of_date(partition)
        eligible = [
            v
            for v in promoted
            if (as_of_of(v) < limit if before_decision else as_of_of(v) <= limit)
        ]
        return max(eligible, key=lambda v: (as_of_of(v), int(v.version)), default=None)

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
        serving = self.champion()
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
        """Move the `champion` alias (no stage transition: nothing reads stages any more)."""
        self.client.set_registered_model_alias(self.name, CHAMPION_ALIAS, version)

    def set_challenger(self, version: str | None) -> None:
        """Point the `challenger` alias at a version, or remove it (None)."""
        if version is not None:
            self.client.set_registered_model_alias(self.name, CHALLENGER_ALIAS, version)
        elif self.challenger() is not None:
            self.client.delete_registered_model_alias(self.name, CHALLENGER_ALIAS)

    def compiled_model(self, version: str) -> CompiledModel:
        """The version's ONNX twin, ready to score (the Pipeline itself is not downloaded)."""
        from mlflow.artifacts import download_artifacts

        model_dir = self.client.get_model_version_download_uri(self.name, version)
        with tempfile.TemporaryDirectory(prefix="streamflow-model-") as scratch:
            path = download_artifacts(
                artifact_uri=f"{model_dir.rstrip('/')}/extra_files/{ONNX_FILE}",
                dst_path=scratch,
                tracking_uri=self.client.tracking_uri,
            )
            return CompiledModel(Path(path).read_bytes())

    def log_monitoring(
        self,
        kind: str,
        partition: str,
        version: ModelVersion,
        metrics: dict[str, float],
        artifacts: dict[str, str] | None = None,
    ) -> str:
        """One MLflow run per monitoring result (`kind` of `partition`), tagged with the model
        version it judged; its metrics are also linked to that version's logged model, so the
        model's page in MLflow lists how it did month after month. Returns the run id."""
        experiment = ensure_experiment(self.client, EXPERIMENT, self.artifact_location)
        run = self.client.create_run(
            experiment,
            run_name=f"{kind} {partition}",
            tags={
                "streamflow.monitoring": kind,
                "partition": partition,
                "model_name": self.name,
                "model_version": str(version.version),
            },
        )
        run_id = run.info.run_id
        for key, value in metrics.items():
            if value is not None and not math.isnan(value):
                self.client.log_metric(run_id, key, value, model_id=version.model_id)
        with tempfile.TemporaryDirectory() as scratch:
            for name, text in (artifacts or {}).items():
                path = Path(scratch) / name
                path.write_text(text, encoding="utf-8")
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id)
        return run_id

    def artifact_uri(self, run_id: str, name: str) -> str:
        return f"{self.client.get_run(run_id).info.artifact_uri.rstrip('/')}/{name}"

    def artifact_page(self, run_id: str, name: str) -> str | None:
        """The MLflow UI's page showing the run's artifact `name` (an HTML report renders
        there), or None without a UI to link to."""
        if self.ui_url is None:
            return None
        experiment = self.client.get_run(run_id).info.experiment_id
        # The UI's own route for a run's artifact (MLflow 3.17, hash routing).
        route = f"#/experiments/{experiment}/runs/{run_id}/artifacts/{name}"
        return f"{self.ui_url.rstrip('/')}/{route}"

    def download(self, version: str, directory: Path) -> Path:
        """The version's model directory (MLmodel, the Pipeline, the ONNX file)."""
        from mlflow.artifacts import download_artifacts

        uri = f"models:/{self.name}/{version}"
        return Path(download_artifacts(artifact_uri=uri, dst_path=str(directory)))


def as_of_of(version: ModelVersion) -> date:
    return date.fromisoformat(version.tags["as_of"])
