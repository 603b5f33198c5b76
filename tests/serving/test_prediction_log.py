"""The prediction log over real HTTP: every answer logged, the shadow challenger beside it, and
the faults: a full queue, the log store down and back, SIGTERM, kill -9."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from serving.model import load_version
from streamflow.adapters.prediction_log import SqlitePredictionLog, sqlite_log_path
from streamflow.adapters.registry import MODEL_NAME
from streamflow.domain.features import FEATURE_NAMES, model_inputs
from tests.serving.conftest import Child, serve, serving_settings

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

FEBRUARY = (date(2024, 2, 1), date(2024, 2, 29))
# Long enough that nothing is written before the test stops the server.
NEVER = 3600


@dataclass
class Api:
    child: Child
    url: str
    data_dir: Path

    def log(self) -> SqlitePredictionLog:
        return SqlitePredictionLog(sqlite_log_path(serving_settings(self.data_dir)))

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert found, f"{name} not in /metrics"
        return float(found.group(1))


@pytest.fixture(scope="module")
def apis(
    pipeline_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Api]]:
    """Three servers over copies of the pipeline's stores, started side by side:
    `sigterm` (log written at shutdown only, features kept, v1 as shadow on half the requests),
    `small` (a queue of 5, never flushed), and `down` (the log file unopenable at start)."""
    scratch = tmp_path_factory.mktemp("prediction_log")
    configs = {
        "sigterm": {
            "prediction_log_flush_seconds": NEVER,
            "prediction_log_features": True,
            "shadow_model_uri": f"models:/{MODEL_NAME}/1",
            "shadow_fraction": 0.5,
        },
        "small": {"prediction_log_flush_seconds": NEVER, "prediction_log_queue_size": 5},
        "down": {"prediction_log_flush_seconds": 0.2, "prediction_log_queue_size": 10},
    }
    started: dict[str, Api] = {}
    try:
        for name, settings in configs.items():
            data_dir = scratch / name
            shutil.copytree(
                pipeline_data_dir,
                data_dir,
                ignore=shutil.ignore_patterns("dagster", "snapshots", "serving"),
            )
            if name == "down":
                # A directory where the SQLite file should be: the store cannot be opened.
                sqlite_log_path(serving_settings(data_dir)).mkdir(parents=True)
            child, url = serve(data_dir, scratch / f"{name}.log", **settings)
            started[name] = Api(child, url, data_dir)
        for api in started.values():
            api.child.wait_for(f"{api.url}/ready", 200)
        yield started
    finally:
        for api in started.values():
            api.child.stop()


def predict(url: str, user_id: str) -> dict:
    answer = httpx.post(f"{url}/predict", json={"user_id": user_id}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_sigterm_writes_every_answer_with_the_shadows(
    apis: dict[str, Api], latest_user_ids: list[str], pipeline_data_dir: Path
) -> None:
    api = apis["sigterm"]
    singles = [predict(api.url, user_id) for user_id in latest_user_ids[:40]]
    batch = httpx.post(
        f"{api.url}/predict/batch", json={"user_ids": latest_user_ids[40:60]}, timeout=10
    ).json()["results"]
    assert api.metric("streamflow_prediction_log_queue_depth") == 60
    shadow = httpx.get(f"{api.url}/model", timeout=10).json()["shadow"]
    assert (shadow["version"], shadow["fraction"]) == ("1", 0.5)
    api.child.stop()  # SIGTERM

    logged = api.log().read(*FEBRUARY)
    answers = singles + batch
    assert len(logged) == len(answers) == 60
    assert sorted(logged["user_id"]) == sorted(a["user_id"] for a in answers)
    by_user = logged.set_index("user_id")
    for answer in answers:
        row = by_user.loc[answer["user_id"]]
        assert row["probability"] == answer["probability"]
        assert row["prediction"] == answer["prediction"]
        assert row["model_version"] == answer["model"]["version"]
        assert json.loads(row["features"]) == answer["features_used"]
    # One id per request: 40 singles and one batch of 20.
    assert logged["request_id"].nunique() == 41
    assert logged.groupby("request_id")["shadow_version"].nunique(dropna=False).max() == 1

    # The shadow (v1) scored about half of the requests, exactly as v1 scores their features.
    shadowed = logged[logged["shadow_probability"].notna()]
    assert 5 <= shadowed["request_id"].nunique() <= 36
    assert set(shadowed["shadow_version"]) == {"1"}
    uri = serving_settings(pipeline_data_dir).tracking_uri
    client = MlflowClient(uri, uri)
    v1 = load_version(client, client.get_model_version(MODEL_NAME, "1"))
    features = [json.loads(f) for f in shadowed["features"]]
    expected = v1.compiled.predict_proba(
        model_inputs({name: [f[name] for f in features] for name in FEATURE_NAMES})
    )
    assert list(shadowed["shadow_probability"]) == pytest.approx(list(expected), abs=1e-6)
    assert list(shadowed["shadow_probability"]) != pytest.approx(list(shadowed["probability"]))


def test_a_full_queue_drops_and_counts_and_kill_9_loses_at_most_the_queue(
    apis: dict[str, Api], latest_user_ids: list[str]
) -> None:
    api = apis["small"]
    for user_id in latest_user_ids[:8]:
        predict(api.url, user_id)  # every request is answered, logged or not
    assert api.metric("streamflow_prediction_log_dropped_total") == 3
    assert api.metric("streamflow_prediction_log_queue_depth") == 5
    os.killpg(api.child.process.pid, signal.SIGKILL)
    api.child.process.wait()
    # What was lost is what waited in memory: the queue's bound, documented.
    assert len(api.log().read(*FEBRUARY)) == 0


def test_the_log_store_down_then_back_resumes_without_a_restart(
    apis: dict[str, Api], latest_user_ids: list[str]
) -> None:
    api = apis["down"]
    for user_id in latest_user_ids[:25]:
        predict(api.url, user_id)
    dropped = api.metric("streamflow_prediction_log_dropped_total")
    # Held: one batch the writer tried to write, and a full queue behind it; the rest dropped.
    assert dropped >= 25 - 10 - 10
    assert api.metric("streamflow_prediction_log_write_errors_total") >= 1
    assert api.metric("streamflow_prediction_log_store_up") == 0

    shutil.rmtree(api.log().path)  # the store comes back
    deadline = time.monotonic() + 20
    while api.metric("streamflow_prediction_log_queue_depth") > 0 or (
        api.metric("streamflow_prediction_log_store_up") != 1
    ):
        assert time.monotonic() < deadline, "the log did not resume"
        time.sleep(0.2)
    predict(api.url, latest_user_ids[25])
    deadline = time.monotonic() + 20
    while api.metric("streamflow_prediction_log_written_total") < 25 - dropped + 1:
        assert time.monotonic() < deadline, "the answer after the outage was not written"
        time.sleep(0.2)
    logged = api.log().read(*FEBRUARY)
    assert len(logged) == 25 - dropped + 1
    assert latest_user_ids[25] in set(logged["user_id"])
