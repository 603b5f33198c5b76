"""What was served, on the real seeds: traffic for February's users through a real server with
the challenger in shadow, then `served_predictions` for 2024-02 and `streamflow monitor --json`."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from dagster import AssetKey, DagsterInstance
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from serving.model import load_version
from streamflow.adapters.registry import CHALLENGER_URI, MODEL_NAME
from streamflow.domain.features import FEATURE_NAMES, model_inputs
from streamflow.domain.promotion import CHALLENGER_ALIAS
from tests.serving.conftest import (
    LATEST_MONTH,
    STREAMFLOW,
    clean_env,
    serve,
    serving_settings,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_served_predictions_report_each_version_and_the_challenger(
    pipeline_data_dir: Path, latest_user_ids: list[str], real_seeds: Path, tmp_path: Path
) -> None:
    from streamflow_assets.definitions import build_definitions

    data_dir = tmp_path / "data"
    shutil.copytree(pipeline_data_dir, data_dir, ignore=shutil.ignore_patterns("serving"))
    settings = serving_settings(data_dir)
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    # January's model as the challenger (promotion gives the alias to a rival it keeps out).
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER_ALIAS, "1")

    api, url = serve(
        data_dir,
        tmp_path / "api.log",
        shadow_model_uri=CHALLENGER_URI,
        shadow_fraction=1.0,
        prediction_log_flush_seconds=0.2,
    )
    try:
        api.wait_for(f"{url}/ready", 200)
        users = latest_user_ids[:1500]
        answers = {}
        for start in range(0, len(users), 500):
            answer = httpx.post(
                f"{url}/predict/batch", json={"user_ids": users[start : start + 500]}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            answers |= {r["user_id"]: r for r in answer.json()["results"]}
        for user_id in users[:100]:
            assert httpx.post(f"{url}/predict", json={"user_id": user_id}).status_code == 200
    finally:
        api.stop()
    with open(real_seeds / LATEST_MONTH / "labels.csv", newline="") as source:
        label = {r["user_id"]: int(r["churn_label"] == "True") for r in csv.DictReader(source)}
    truth = [label[u] for u in users]
    served_auc = roc_auc_score(truth, [answers[u]["probability"] for u in users])
    # What the challenger (v1) says on the features the answers were made from.
    v1 = load_version(client, client.get_model_version(MODEL_NAME, "1"))
    features = [answers[u]["features_used"] for u in users]
    shadow = v1.compiled.predict_proba(
        model_inputs({name: [f[name] for f in features] for name in FEATURE_NAMES})
    )
    shadow_auc = roc_auc_score(truth, shadow)
    # Over every answer: the first hundred users were asked twice.
    same = [int(p >= 0.5) == answers[u]["prediction"] for u, p in zip(users, shadow, strict=True)]
    agreement = (sum(same) + sum(same[:100])) / (len(same) + 100)

    with DagsterInstance.from_config(str(data_dir / "dagster")) as instance:
        job = build_definitions(settings).resolve_job_def("monthly_pipeline")
        result = job.execute_in_process(
            partition_key="2024-02",
            instance=instance,
            asset_selection=[AssetKey("served_predictions")],
        )
        assert result.success
        (materialization,) = result.asset_materializations_for_node("served_predictions")
    facts = {k: v.value for k, v in materialization.metadata.items()}
    assert (facts["status"], facts["count"], facts["requests"]) == ("measured", 1600, 103)
    # The AUC of the answers the client got, on the seeds' labels.
    assert facts["served_version"] == "2"
    assert facts["served_auc"] == pytest.approx(served_auc, abs=1e-6)
    # January's model beside it on every answer, judged on the same users (on the real seeds
    # February's labels no longer follow January's pattern: v1 ranks them about at random).
    assert facts["shadow_versions"] == "1" and facts["shadow_count"] == 1600
    assert facts["shadow_auc"] == pytest.approx(shadow_auc, abs=1e-6)
    assert facts["shadow_agreement"] == pytest.approx(agreement, abs=1e-6)
    # The API and batch_scores serve the same champion on the same features: they agree.
    assert facts["batch_agreement"] == 1.0

    printed = subprocess.run(
        [str(STREAMFLOW), "monitor", "--json", "--partition", "2024-02"],
        env=clean_env(data_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    served = json.loads(printed.stdout)["served"]
    assert served["count"] == 1600
    assert set(served["auc"]) == {"2"}
    assert served["auc"]["2"] == pytest.approx(facts["served_auc"], abs=1e-6)
    assert served["shadow_agreement"] == pytest.approx(facts["shadow_agreement"], abs=1e-6)
    assert served["shadow_auc"] == pytest.approx(facts["shadow_auc"], abs=1e-6)
