"""The monitoring loop on the real seeds plus two months built from them (issue 15, Done means).

2024-01 and 2024-02 are the real months, run under `STREAMFLOW_RETRAIN=monthly` (v1 and v2 are
promoted); 2024-03 is 2024-02 copied unchanged and 2024-04 is 2024-02 with two columns shifted,
both run under `on_trigger` (ingestion, features and monitoring, no training). The incumbent of
both is v2, trained on 2024-02: the reference.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, SensorResult, build_sensor_context, instance_for_test
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from streamflow.adapters.alerts import read_jsonl
from streamflow.adapters.registry import CHAMPION_ALIAS, MODEL_NAME
from streamflow.domain import months
from streamflow.ops.cli import main
from streamflow.ops.monitor import monitor_report
from streamflow.settings import Settings, get_settings
from streamflow_assets.jobs import RETRAIN_REASON_TAG
from streamflow_assets.resources import build_resources
from tests.profiles import profile

pytestmark = pytest.mark.slow

SHIFTED = {"avg_session_mins_7d": ("usage_agg_30d.csv", 15.0, 1.0),
           "ticket_avg_resolution_hrs_90d": ("support_agg_90d.csv", 0.0, 3.0)}  # fmt: skip
COPIED_MONTH, SHIFTED_MONTH = "2024-03", "2024-04"
SENSOR_NEEDS = ("alerts", "freshness", "policy")


def _write_month(source: Path, target: Path, shift: bool) -> None:
    target.mkdir(parents=True)
    for csv in sorted(source.glob("*.csv")):
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        for column, (file, plus, times) in SHIFTED.items():
            if shift and csv.name == file:
                frame[column] = [repr(float(v) * times + plus) for v in frame[column]]
        frame.to_csv(target / csv.name, index=False)


@dataclass
class Loop:
    settings: Settings
    instance: DagsterInstance
    data_dir: Path
    monkeypatch: pytest.MonkeyPatch

    def policy(self, **env: object) -> Settings:
        for name, value in env.items():
            self.monkeypatch.setenv(f"STREAMFLOW_{name.upper()}", str(value))
        get_settings.cache_clear()
        return get_settings()

    def defs(self):
        from streamflow_assets.definitions import build_definitions

        return build_definitions(get_settings())

    def run(self, partition: str, assets: list[str] | None = None):
        from streamflow.ops.pipeline import run_months

        (outcome,) = run_months([partition], self.defs(), self.instance, assets)
        assert outcome.success, outcome.error
        return outcome

    def tick(self, cursor: str | None) -> SensorResult:
        from streamflow_assets.model_monitoring.assets import retraining_sensor

        # What the sensor takes (the mlflow resource opens a run, which a sensor has none of).
        resources = {k: v for k, v in build_resources(get_settings()).items() if k in SENSOR_NEEDS}
        with build_sensor_context(
            instance=self.instance, cursor=cursor, resources=resources
        ) as context:
            return retraining_sensor(context)


@pytest.fixture(scope="module")
def loop(real_seeds: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    root = tmp_path_factory.mktemp("loop")
    seeds = root / "seeds"
    for folder in ("month_000", "month_001"):
        _write_month(real_seeds / folder, seeds / folder, shift=False)
    _write_month(real_seeds / "month_001", seeds / "month_002", shift=False)
    _write_month(real_seeds / "month_001", seeds / "month_003", shift=True)
    (root / "dagster_home").mkdir()
    with (
        # Steps that stream the month do it in chunks of 1,000 users: 8 of them here.
        profile("local", root / "var", seeds, {"STREAMFLOW_CHUNK_ROWS": "1000"}) as settings,
        instance_for_test(temp_dir=str(root / "dagster_home")) as instance,
        pytest.MonkeyPatch.context() as env,
    ):
        loop = Loop(settings, instance, root / "var", env)
        for partition in ("2024-01", "2024-02"):
            loop.run(partition)
        loop.policy(retrain="on_trigger")
        for partition in (COPIED_MONTH, SHIFTED_MONTH):
            loop.run(partition)
        loop.policy(retrain="monthly")
        yield loop


def report(loop: Loop, partition: str) -> tuple[int, dict]:
    return monitor_report(loop.instance, partition)


def test_on_trigger_months_ran_monitoring_but_trained_nothing(loop: Loop) -> None:
    client = MlflowClient(loop.settings.tracking_uri)
    trained = {v.tags["partition"] for v in client.search_model_versions(f"name='{MODEL_NAME}'")}
    assert trained == {"2024-01", "2024-02"}
    for partition in (COPIED_MONTH, SHIFTED_MONTH):
        assert report(loop, partition)[1]["reference_partition"] == "2024-02"


def test_the_shifted_month_flags_exactly_the_shifted_columns(loop: Loop, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", loop.instance.root_directory)
    code = main(["monitor", "--partition", SHIFTED_MONTH, "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 1
    assert printed["partition"] == SHIFTED_MONTH and printed["reference_partition"] == "2024-02"
    features = {n: c for n, c in printed["columns"].items() if n != "incumbent_score"}
    assert len(features) == 14
    assert {n for n, c in features.items() if c["drifted"]} == set(SHIFTED)
    for column in features.values():
        assert set(column) == {"statistic", "score", "threshold", "drifted"}
    assert printed["drift_share"] >= 2 / 15
    # The shifted columns barely matter to the model: it is drift, not decay, that fires.
    assert printed["performance"]["model_version"] == "2"
    assert printed["performance"]["decay"] <= 0.05


def test_the_copied_month_exits_0(loop: Loop) -> None:
    code, copied = report(loop, COPIED_MONTH)
    assert code == 0, copied
    assert not any(c["drifted"] for c in copied["columns"].values())
    assert copied["drift_share"] == 0.0 and copied["dataset_drift"] is False


def test_the_january_model_decays_on_february_labels(loop: Loop) -> None:
    code, february = report(loop, "2024-02")
    performance = february["performance"]
    assert performance["model_version"] == "1"
    assert performance["auc"] < 0.55
    assert performance["decay"] > 0.25
    assert code == 1
    client = MlflowClient(loop.settings.tracking_uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("streamflow").experiment_id],
        "tags.`streamflow.monitoring` = 'model_performance' and tags.partition = '2024-02'",
    )
    assert run.data.tags["model_version"] == "1"
    assert run.data.metrics["auc"] == pytest.approx(performance["auc"], abs=1e-6)


def test_the_first_month_has_no_incumbent(loop: Loop) -> None:
    code, first = report(loop, "2024-01")
    assert code == 2
    assert "no_incumbent" in first["error"]


def _requests(result: SensorResult) -> dict[str, str]:
    return {r.partition_key: r.tags[RETRAIN_REASON_TAG] for r in result.run_requests}


def test_the_sensor_requests_retraining_once_per_month_and_reason(loop: Loop) -> None:
    loop.policy(retrain="on_trigger", drift_share=0.1)
    try:
        first = loop.tick(None)
        assert _requests(first) == {
            "2024-01": "no_champion",
            "2024-02": "decay",
            "2024-04": "drift",
        }
        # A daemon restart evaluates again from the stored cursor: nothing new to ask for.
        again = loop.tick(first.cursor)
        assert again.run_requests == []
        fired = [a for a in read_jsonl(get_settings().alerts_path) if a["state"] == "fired"]
        assert {a["partition"] for a in fired} == {"2024-01", "2024-02", "2024-04"}

        # The retraining the sensor asked for runs; the next tick says what was decided.
        (request,) = [r for r in first.run_requests if r.partition_key == SHIFTED_MONTH]
        job = loop.defs().resolve_job_def("retraining")
        result = job.execute_in_process(
            partition_key=SHIFTED_MONTH, instance=loop.instance, tags=request.tags
        )
        assert result.success
        decided = loop.tick(again.cursor)
        assert decided.run_requests == []
        (decision,) = [a for a in read_jsonl(get_settings().alerts_path) if a["state"] == "decided"]
        assert decision["partition"] == SHIFTED_MONTH and "candidate v3" in decision["summary"]
    finally:
        loop.policy(retrain="monthly", drift_share=0.5)


def test_with_the_default_share_drift_alone_requests_nothing(loop: Loop) -> None:
    loop.policy(retrain="on_trigger")
    try:
        requested = _requests(loop.tick(None))
    finally:
        loop.policy(retrain="monthly")
    assert SHIFTED_MONTH not in requested and COPIED_MONTH not in requested
    assert requested == {"2024-01": "no_champion", "2024-02": "decay"}


def test_the_verdict_holds_whether_or_not_the_month_promoted(loop: Loop) -> None:
    """Measured again after 2024-04's own retraining and decision (the sensor test above ran
    it), drift is still judged against the incumbent: the same columns, exit 1."""
    loop.run(SHIFTED_MONTH, ["feature_drift"])
    code, shifted = report(loop, SHIFTED_MONTH)
    assert code == 1
    assert {n for n, c in shifted["columns"].items() if c["drifted"]} >= set(SHIFTED)
    assert shifted["reference_partition"] == "2024-02"


def test_batch_scores_match_predict_for_200_users(loop: Loop) -> None:
    from serving.app import create_app
    from streamflow.settings import ServingSettings

    loop.run(SHIFTED_MONTH, ["batch_scores"])
    store = build_resources(get_settings())["snapshots"].store()
    scores = store.read("batch_scores", months.as_of(SHIFTED_MONTH))
    assert list(scores.columns) == [
        "user_id",
        "as_of",
        "probability",
        "prediction",
        "model_version",
    ]
    assert len(scores) == 7043
    champion = MlflowClient(loop.settings.tracking_uri).get_model_version_by_alias(
        MODEL_NAME, CHAMPION_ALIAS
    )
    assert set(scores["model_version"]) == {str(champion.version)}
    sample = scores.sample(n=200, random_state=7)
    with TestClient(create_app(ServingSettings(reload_interval_seconds=0))) as client:
        served = client.post("/predict/batch", json={"user_ids": sample["user_id"].tolist()})
    assert served.status_code == 200
    body = served.json()
    assert body["model"]["version"] == str(champion.version)
    by_user = {r["user_id"]: r for r in body["results"]}
    difference = np.abs(
        sample["probability"].to_numpy() - [by_user[u]["probability"] for u in sample["user_id"]]
    )
    assert difference.max() == 0.0
    assert (
        sample["prediction"].to_numpy() == [by_user[u]["prediction"] for u in sample["user_id"]]
    ).all()


def test_missing_labels_and_reference_are_named_results(loop: Loop) -> None:
    snapshots = loop.data_dir / "snapshots"
    labels = snapshots / "labels_snapshots" / f"{months.as_of_date(COPIED_MONTH)}.parquet"
    reference = snapshots / "usage_agg_30d_snapshots" / f"{months.as_of_date('2024-02')}.parquet"
    before = report(loop, COPIED_MONTH)
    aside = loop.data_dir / "aside"
    aside.mkdir(exist_ok=True)
    shutil.move(labels, aside / "labels.parquet")
    shutil.move(reference, aside / "usage.parquet")
    try:
        loop.run(COPIED_MONTH, ["model_performance", "feature_drift"])
        code, missing = report(loop, COPIED_MONTH)
        assert code == 2
        assert missing["error"].startswith("reference_missing: month 2024-02 has no feature")
        from dagster import AssetKey, AssetRecordsFilter

        (record,) = loop.instance.fetch_materializations(
            AssetRecordsFilter(
                asset_key=AssetKey("model_performance"), asset_partitions=[COPIED_MONTH]
            ),
            limit=1,
        ).records
        facts = record.asset_materialization.metadata
        assert facts["status"].value == "no_labels"
        assert facts["reason"].value == f"month {COPIED_MONTH} has no labels yet"
    finally:
        shutil.move(aside / "labels.parquet", labels)
        shutil.move(aside / "usage.parquet", reference)
    loop.run(COPIED_MONTH, ["model_performance", "feature_drift"])
    assert report(loop, COPIED_MONTH) == before
