"""The model on the real seeds: training quality, lineage, the promotion gate, backfills."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from streamflow.adapters.onnx_model import ONNX_FILE, CompiledModel
from streamflow.adapters.registry import CHALLENGER_ALIAS, CHAMPION_ALIAS, CHAMPION_URI, MODEL_NAME
from streamflow.domain import months
from streamflow.domain.features import LABEL, to_model_frame
from streamflow.settings import Settings
from streamflow_assets.resources import build_resources
from tests.profiles import PROFILES, built_pipeline

LINEAGE_TAGS = {"partition", "as_of", "dataset_hash", "feature_service", "dagster_run_id"}


@dataclass(frozen=True)
class Built:
    settings: Settings
    instance: DagsterInstance
    cwd: Path
    client: MlflowClient


@pytest.fixture(scope="module", params=PROFILES)
def built(
    request: pytest.FixtureRequest, real_seeds: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    """The whole pipeline for 2024-01 then 2024-02, once per profile, run from an unrelated
    working directory (MLflow must not drop a ./mlruns there)."""
    data_dir = tmp_path_factory.mktemp(f"model-{request.param}")
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as env:
        env.chdir(cwd)
        with built_pipeline(request.param, data_dir, real_seeds) as (settings, dagster):
            client = MlflowClient(settings.tracking_uri)
            yield Built(settings, dagster, cwd, client)


def versions(client: MlflowClient) -> list:
    found = client.search_model_versions(f"name = '{MODEL_NAME}'")
    return sorted(found, key=lambda v: int(v.version))


def production_state(client: MlflowClient) -> tuple[list[str], str]:
    """Versions holding the champion alias, and the one it names; no version is staged."""
    # Searches leave aliases out of the versions they return: ask for each version.
    holders = [
        v.version
        for v in versions(client)
        if CHAMPION_ALIAS in client.get_model_version(MODEL_NAME, v.version).aliases
    ]
    assert all(v.current_stage == "None" for v in versions(client))
    alias = client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version
    return holders, alias


def metadata(instance: DagsterInstance, asset: str, partition: str) -> dict[str, object]:
    from dagster import AssetRecordsFilter

    (record,) = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def test_january_reaches_the_original_stacks_quality(built: Built) -> None:
    january = metadata(built.instance, "churn_model", "2024-01")
    assert january["val_auc"] >= 0.82
    for name in ("val_f1", "val_acc", "val_precision", "val_recall", "train_time_s"):
        assert name in january
    assert str(january["model_uri"]).startswith(f"models:/{MODEL_NAME}/")
    # Shown inline by the Dagster UI, which hides markdown of 1,000 characters or more.
    roc, confusion = str(january["roc_curve"]), str(january["confusion_matrix"])
    assert roc.startswith("![ROC](data:image/svg+xml,") and len(roc) < 1000
    assert f"AUC%20{january['val_auc']:.3f}" in roc
    counts = [int(cell) for cell in re.findall(r"\| (\d+) ", confusion)]
    assert len(confusion) < 1000 and sum(counts) == january["val_rows"]


def test_every_version_carries_its_lineage(built: Built) -> None:
    found = versions(built.client)
    assert [v.tags["partition"] for v in found] == ["2024-01", "2024-02"]
    for version in found:
        assert set(version.tags) >= LINEAGE_TAGS, version.tags
        assert version.tags["feature_service"] == "churn_model_v1"
        assert version.tags["as_of"] == months.as_of_date(version.tags["partition"]).isoformat()
        assert version.tags["promotion_decision"] in {"promoted", "kept_out"}
        assert version.tags["promotion_reason"]
        run = built.client.get_run(version.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["dagster_run_id"] == version.tags["dagster_run_id"]
        artifacts = {a.path for a in built.client.list_artifacts(version.run_id)}
        assert {"feature_schema.json", "plots"} <= artifacts


def test_artifacts_live_in_the_profiles_store_not_the_working_dir(built: Built) -> None:
    assert not (built.cwd / "mlruns").exists()
    # Local: files under the data dir; postgres: served by the tracking server.
    where = {
        "local": (built.settings.data_dir / "mlflow").as_uri(),
        "postgres": "mlflow-artifacts:",
    }[built.settings.profile]
    for version in versions(built.client):
        uri = built.client.get_run(version.run_id).info.artifact_uri
        assert uri.startswith(where), uri


def test_exactly_one_version_is_champion_and_none_is_staged(built: Built) -> None:
    staged, alias = production_state(built.client)
    assert len(staged) == 1
    assert staged == [alias]


def test_the_production_model_loads_and_predicts(built: Built) -> None:
    mlflow.set_tracking_uri(built.settings.tracking_uri)
    model = mlflow.pyfunc.load_model(CHAMPION_URI)
    store = build_resources(built.settings)["snapshots"].store()
    dataset = store.read("training_dataset", months.as_of("2024-02")).head(50)
    probability = np.asarray(model.predict(to_model_frame(dataset)))
    assert probability.shape == (50, 2)
    np.testing.assert_allclose(probability.sum(axis=1), 1.0)


def test_the_served_onnx_twin_predicts_like_the_pipeline(built: Built, tmp_path: Path) -> None:
    mlflow.set_tracking_uri(built.settings.tracking_uri)
    uri = CHAMPION_URI
    directory = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp_path))
    compiled = CompiledModel((directory / "extra_files" / ONNX_FILE).read_bytes())
    store = build_resources(built.settings)["snapshots"].store()
    frame = to_model_frame(store.read("training_dataset", months.as_of("2024-02")))
    expected = np.asarray(mlflow.pyfunc.load_model(uri).predict(frame))[:, 1]
    np.testing.assert_allclose(compiled.predict_proba(frame), expected, atol=1e-5)


def test_a_backfill_of_an_older_month_changes_nothing_in_production(built: Built) -> None:
    from streamflow.ops.pipeline import run_months
    from streamflow_assets.definitions import build_definitions

    before = production_state(built.client)
    (outcome,) = run_months(
        ["2024-01"], defs=build_definitions(built.settings), instance=built.instance
    )
    assert outcome.success, outcome.error
    assert production_state(built.client) == before
    newest = versions(built.client)[-1]
    assert newest.tags["partition"] == "2024-01"
    assert newest.tags["promotion_decision"] == "kept_out"
    assert "older" in newest.tags["promotion_reason"]
    decision = metadata(built.instance, "production_model", "2024-01")
    assert decision["decision"] == "kept out"
    assert decision["champion_after"] == before[1]


def test_the_monitoring_assets_ran_with_the_month(built: Built) -> None:
    """On this profile's stores: scores stored per month by the champion after it; February
    judged against January's model."""
    store = build_resources(built.settings)["snapshots"].store()
    scores = store.read("batch_scores", months.as_of("2024-02"))
    champion = str(production_state(built.client)[1])
    assert len(scores) == 7043 and set(scores["model_version"]) == {champion}
    assert scores["probability"].between(0, 1).all()
    assert set(scores["prediction"]) <= {0, 1}
    drift = metadata(built.instance, "feature_drift", "2024-02")
    assert drift["status"] == "measured" and drift["reference_partition"] == "2024-01"
    decay = metadata(built.instance, "model_performance", "2024-02")
    assert decay["incumbent_version"] == "1" and decay["decay"] > 0.25
    assert metadata(built.instance, "feature_drift", "2024-01")["status"] == "no_incumbent"


def test_hyperparameters_are_overridable_at_launch(built: Built) -> None:
    from streamflow_assets.definitions import build_definitions

    job = build_definitions(built.settings).resolve_job_def("monthly_pipeline")
    result = job.execute_in_process(
        partition_key="2024-02",
        instance=built.instance,
        asset_selection=[AssetKey("churn_model")],
        run_config={"ops": {"churn_model": {"config": {"max_iter": 25}}}},
    )
    assert result.success
    newest = versions(built.client)[-1]
    assert built.client.get_run(newest.run_id).data.params["max_iter"] == "25"


def test_a_rival_kept_out_becomes_the_challenger(built: Built) -> None:
    """February's newest candidate (above) judged with a margin nobody beats: kept out, it
    takes the challenger alias, and the champion stays."""
    from streamflow_assets.definitions import build_definitions

    before = production_state(built.client)
    newest = versions(built.client)[-1]
    job = build_definitions(built.settings).resolve_job_def("monthly_pipeline")
    result = job.execute_in_process(
        partition_key="2024-02",
        instance=built.instance,
        asset_selection=[AssetKey("production_model")],
        run_config={"ops": {"production_model": {"config": {"margin": 1.0}}}},
    )
    assert result.success
    assert production_state(built.client) == before
    challenger = built.client.get_model_version_by_alias(MODEL_NAME, CHALLENGER_ALIAS)
    assert challenger.version == newest.version
    decision = metadata(built.instance, "production_model", "2024-02")
    assert (decision["decision"], decision["challenger_after"]) == ("kept out", newest.version)


def test_the_month_labels_are_what_the_model_was_scored_on(built: Built) -> None:
    store = build_resources(built.settings)["snapshots"].store()
    dataset = store.read("training_dataset", months.as_of("2024-01"))
    labels = store.read("labels_snapshots", months.as_of("2024-01"))
    merged = dataset[["user_id", LABEL]].merge(labels[["user_id", LABEL]], on="user_id")
    assert len(merged) == 7043
    assert (merged[f"{LABEL}_x"] == merged[f"{LABEL}_y"]).all()


def test_promotions_of_concurrent_runs_take_turns(built: Built) -> None:
    """While another run holds the promotion pool's one slot, production_model waits for it."""
    from streamflow_assets.definitions import build_definitions
    from streamflow_assets.promotion.assets import PROMOTION_POOL

    storage = built.instance.event_log_storage
    storage.set_concurrency_slots(PROMOTION_POOL, 1)  # what the instance's pools default_limit sets
    other_run = "a-concurrent-backfill-run"
    assert storage.claim_concurrency_slot(PROMOTION_POOL, other_run, "production_model").is_claimed
    hold = 3.0
    release = threading.Timer(hold, storage.free_concurrency_slots_for_run, [other_run])
    job = build_definitions(built.settings).resolve_job_def("monthly_pipeline")
    started = time.monotonic()
    release.start()
    try:
        result = job.execute_in_process(
            partition_key="2024-02",
            instance=built.instance,
            asset_selection=[AssetKey("production_model")],
        )
    finally:
        release.cancel()
    assert result.success
    assert time.monotonic() - started >= hold
    messages = [event.message or "" for event in result.all_events]
    assert f"Step blocked by limit for pool {PROMOTION_POOL}" in messages


def test_the_fit_records_its_sample(built: Built) -> None:
    """The sample cap is the setting's; the real months (5,282 training rows) fit whole."""
    january = metadata(built.instance, "churn_model", "2024-01")
    cap = built.settings.train_max_rows
    assert january["train_max_rows"] == cap
    assert january["train_sample_rows"] == january["train_rows"] == 5282
    assert january["val_rows"] == 7043 - 5282 and january["rows"] == 7043
    (first, *_) = versions(built.client)
    params = built.client.get_run(first.run_id).data.params
    assert params["train_sample_rows"] == "5282" and params["train_max_rows"] == str(cap)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("STREAMFLOW_TRAIN_MAX_ROWS", "10"), ("STREAMFLOW_CHUNK_ROWS", "0"),
     ("STREAMFLOW_CHUNK_ROWS", "many")],
)  # fmt: skip
def test_a_bad_bound_is_refused_naming_it(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("STREAMFLOW_").lower()):
        Settings()
