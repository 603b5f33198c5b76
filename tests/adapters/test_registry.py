"""The registry adapter's links to the MLflow UI."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from streamflow.adapters.registry import Registry


def test_an_artifact_links_to_its_page_in_the_mlflow_ui_when_there_is_one(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("links", (tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id

    with_ui = Registry(client, ui_url="http://127.0.0.1:5000/")
    assert with_ui.artifact_page(run_id, "drift_report.html") == (
        f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run_id}/artifacts/drift_report.html"
    )
    assert Registry(client).artifact_page(run_id, "drift_report.html") is None
    assert Registry(client).artifact_uri(run_id, "drift_report.html").startswith("file://")
