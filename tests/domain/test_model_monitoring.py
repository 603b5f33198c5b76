"""Monitoring statistics on the real seeds: drift (Evidently, also in a worker), decay, retrain."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import build_init_resource_context

from streamflow.adapters.onnx_model import CompiledModel
from streamflow.adapters.snapshots import ParquetSnapshotStore, PostgresSnapshotStore
from streamflow.domain import months, seeds
from streamflow.domain.features import FEATURE_COLUMNS, LABEL, model_inputs
from streamflow.domain.model_monitoring import (
    DRIFT_COLUMNS,
    SCORE_COLUMN,
    DriftResult,
    RetrainReason,
    drift_frame,
    drift_sample,
    measure_drift,
    month_features,
    months_between,
    performance,
    retrain_reasons,
    sample_chunks,
    score_summary,
    served_performance,
    typed_chunks,
)
from streamflow.domain.training import ModelParams, train
from streamflow_assets.resources import DriftResource
from tests.profiles import PROFILES, throwaway_databases

JANUARY = months.as_of("2024-01")


@pytest.fixture(scope="module")
def january(real_seeds: Path) -> pd.DataFrame:
    month = seeds.read_month(real_seeds / "month_000")
    features = month_features(month)
    # A stand-in score: the drift test does not care which model produced it.
    return drift_frame(features, np.linspace(0.0, 1.0, len(features)))


def test_month_features_has_every_user_and_feature(january: pd.DataFrame) -> None:
    assert len(january) == 7043
    assert list(january.columns) == DRIFT_COLUMNS


def test_the_same_month_does_not_drift(january: pd.DataFrame) -> None:
    result, html = measure_drift(january, january.copy(), 0.5)
    assert result.drifted == []
    assert result.drift_share == 0.0 and not result.dataset_drift
    assert "<html" in html.lower()


def test_evidently_picks_its_default_test_per_column_type_and_size(january: pd.DataFrame) -> None:
    result, _ = measure_drift(january, january.copy(), 0.5)
    by_name = {c.name: c for c in result.columns}
    # Above 1,000 rows: Wasserstein for numbers, Jensen-Shannon for categories (and for numbers
    # with at most 5 distinct values), both at threshold 0.1.
    assert by_name["monthly_fee"].statistic == "Wasserstein distance (normed)"
    assert by_name["net_service"].statistic == "Jensen-Shannon distance"
    assert {c.threshold for c in result.columns} == {0.1}
    small, _ = measure_drift(january.head(500), january.iloc[500:1000], 0.5)
    small_by_name = {c.name: c for c in small.columns}
    assert small_by_name["monthly_fee"].statistic == "K-S p_value"
    assert small_by_name["monthly_fee"].threshold == 0.05


def test_shifted_columns_drift_and_only_they(january: pd.DataFrame) -> None:
    current = january.copy()
    current["watch_hours_30d"] += 10
    current["net_service"] = "Fiber optic"
    result, _ = measure_drift(january, current, 0.1)
    assert set(result.drifted) == {"watch_hours_30d", "net_service"}
    assert result.drift_share == pytest.approx(2 / 15)
    assert result.dataset_drift
    assert not measure_drift(january, current, 0.5)[0].dataset_drift


def test_an_all_null_column_is_named_and_counted_drifted(january: pd.DataFrame) -> None:
    current = january.copy()
    current["monthly_fee"] = np.nan
    result, _ = measure_drift(january, current, 0.5)
    (fee,) = [c for c in result.columns if c.name == "monthly_fee"]
    assert fee.drifted and fee.statistic == "all values missing in current" and fee.score is None
    assert result.drifted == ["monthly_fee"]


def test_a_result_round_trips_through_its_dict(january: pd.DataFrame) -> None:
    result, _ = measure_drift(january, january.copy(), 0.5)
    assert DriftResult.from_dict(result.as_dict()) == result
    assert set(result.as_dict()["columns"][SCORE_COLUMN]) == {
        "statistic",
        "score",
        "threshold",
        "drifted",
    }


def test_performance_and_decay() -> None:
    labels = np.array([0, 0, 1, 1])
    scores = performance(labels, np.array([0.1, 0.6, 0.4, 0.9]), training_auc=0.9)
    assert scores["auc"] == 0.75
    assert scores["decay"] == pytest.approx(0.15)
    assert scores["precision"] == 0.5 and scores["recall"] == 0.5 and scores["f1"] == 0.5
    assert scores["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)
    assert math.isnan(performance(np.array([1, 1]), np.array([0.2, 0.3]), 0.8)["auc"])


def test_score_summary() -> None:
    summary = score_summary(np.array([0.05, 0.55, 0.95, 0.5]))
    assert summary["rows"] == 4
    assert summary["predicted_churn_share"] == 0.75
    assert sum(n for _, n in summary["histogram"]) == 4


BASE = dict(
    partition="2024-04",
    champion_partition="2024-02",
    drift_share=0.0,
    drift_share_threshold=0.5,
    decay=0.0,
    max_auc_drop=0.05,
    max_age_months=3,
)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, [], id="nothing"),
        pytest.param({"champion_partition": None}, [RetrainReason.NO_CHAMPION], id="no-champion"),
        pytest.param({"drift_share": 0.5}, [RetrainReason.DRIFT], id="share-reaches-threshold"),
        pytest.param({"drift_share": 0.49}, [], id="share-below-threshold"),
        pytest.param({"decay": 0.051}, [RetrainReason.DECAY], id="decay-over"),
        pytest.param({"decay": 0.05}, [], id="decay-at-threshold"),
        pytest.param({"decay": math.nan, "drift_share": None}, [], id="not-measured"),
        pytest.param({"partition": "2024-06"}, [RetrainReason.CHAMPION_AGE], id="four-months-old"),
        pytest.param({"partition": "2024-05"}, [], id="three-months-old"),
        pytest.param(
            {"drift_share": 0.9, "decay": 0.3},
            [RetrainReason.DRIFT, RetrainReason.DECAY],
            id="drift-and-decay",
        ),
    ],
)
def test_retrain_reasons(changes: dict, expected: list[RetrainReason]) -> None:
    assert retrain_reasons(**(BASE | changes)) == expected


def test_months_between() -> None:
    assert months_between("2024-11", "2025-02") == 3


def test_large_sides_are_sampled_and_keep_their_verdicts(january: pd.DataFrame) -> None:
    current = january.copy()
    current["watch_hours_30d"] += 10
    full, _ = measure_drift(january, current, 0.1)
    sampled, _ = measure_drift(january, current, 0.1, sample_rows=2000)
    assert sampled.drifted == full.drifted == ["watch_hours_30d"]
    assert (sampled.reference_rows, sampled.current_rows) == (7043, 7043)


def test_sides_sampled_before_scoring_get_the_same_result(january: pd.DataFrame) -> None:
    """feature_drift scores only the sample: the same rows as sampling the scored month."""
    current = january.copy()
    current["watch_hours_30d"] += 10
    inside, _ = measure_drift(january, current, 0.1, sample_rows=2000)
    before, _ = measure_drift(
        drift_sample(january, 2000),
        drift_sample(current, 2000),
        0.1,
        sample_rows=2000,
        rows=(len(january), len(current)),
    )
    assert before == inside
    assert (before.reference_rows, before.current_rows) == (7043, 7043)


def test_a_user_missing_from_one_table_keeps_the_other_views(real_seeds: Path) -> None:
    """An outer join on user_id, in user_id order, whatever order each table is in."""
    month = seeds.read_month(real_seeds / "month_000")
    user = month["usage_agg_30d_snapshots"]["user_id"].iloc[0]
    month["usage_agg_30d_snapshots"] = month["usage_agg_30d_snapshots"].iloc[1:]
    month["payments_agg_90d_snapshots"] = month["payments_agg_90d_snapshots"].iloc[::-1]
    features = month_features(month)
    assert len(features) == 7043 and features["user_id"].is_monotonic_increasing
    row = features.set_index("user_id").loc[user]
    assert row[["watch_hours_30d", "skips_7d"]].isna().all()
    assert row[["monthly_fee", "failed_payments_90d"]].notna().all()


def _worker() -> DriftResource:
    drift = DriftResource(in_worker=True)
    drift.setup_for_execution(build_init_resource_context())
    return drift


def test_the_drift_worker_gives_the_result_of_the_step_process(january: pd.DataFrame) -> None:
    current = january.copy()
    current["watch_hours_30d"] += 10
    drift = _worker()
    result, html = drift.measure(january, current, 0.1, rows=(7043, 7043))
    assert result == measure_drift(january, current, 0.1)[0]
    assert result.drifted == ["watch_hours_30d"] and "<html" in html.lower()
    # It serves once; a second month in the same run is measured in the step's own process.
    assert drift.measure(january, january, 0.1, rows=(7043, 7043))[0].drifted == []


def test_an_error_in_the_drift_worker_is_raised_in_the_step(january: pd.DataFrame) -> None:
    with pytest.raises(KeyError, match="incumbent_score"):
        _worker().measure(january, january.drop(columns=[SCORE_COLUMN]), 0.5, rows=(1, 1))


def test_a_drift_worker_that_died_is_named(january: pd.DataFrame) -> None:
    drift = _worker()
    drift._worker.kill()
    with pytest.raises(RuntimeError, match="drift worker exited with -9"):
        drift.measure(january, january, 0.5, rows=(7043, 7043))


def test_a_run_that_never_measured_stops_its_worker() -> None:
    drift = _worker()
    worker = drift._worker
    drift.teardown_after_execution(build_init_resource_context())
    assert worker.returncode is not None


@pytest.fixture(scope="module", params=PROFILES)
def stored_month(
    request: pytest.FixtureRequest, real_seeds: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[object, dict[str, pd.DataFrame]]]:
    """January of the real seeds in a profile's snapshot store, each table in an order of its
    own (not user_id's) and one user missing from the usage table."""
    month = seeds.read_month(real_seeds / "month_000")
    month = {
        table: frame.sample(frac=1, random_state=i).reset_index(drop=True)
        for i, (table, frame) in enumerate(month.items())
    }
    month["usage_agg_30d_snapshots"] = month["usage_agg_30d_snapshots"].iloc[1:]
    if request.param == "local":
        store = ParquetSnapshotStore(tmp_path_factory.mktemp("snapshots"))
        store.write_month(JANUARY, month)
        yield store, month
        return
    with throwaway_databases("") as (database,):
        store = PostgresSnapshotStore(f"host=127.0.0.1 user=postgres dbname={database}")
        store.write_month(JANUARY, month)
        yield store, month


def test_a_month_read_in_chunks_is_the_month_read_whole(stored_month) -> None:
    """What batch scoring, drift and decay read chunk by chunk: the whole month's features, in
    user_id order and dtypes, and so the same scores."""
    store, month = stored_month
    whole = month_features({table: store.read(table, JANUARY) for table in FEATURE_COLUMNS})
    parts = list(typed_chunks(store.join_batches(FEATURE_COLUMNS, JANUARY, 1_000)))
    assert len(parts) == 8 and max(len(part) for part in parts) == 1_000
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole)

    dataset = whole.merge(month["labels_snapshots"], on="user_id")
    model = train(
        lambda: [dataset],
        dataset[LABEL].to_numpy(),
        ModelParams(max_iter=20),
        load_compiled=CompiledModel,
    )
    compiled = CompiledModel(model.onnx)
    chunked = np.concatenate([compiled.predict_proba(model_inputs(part)) for part in parts])
    np.testing.assert_array_equal(chunked, compiled.predict_proba(model_inputs(whole)))


def test_labelled_chunks_are_the_labelled_users_with_their_features(stored_month) -> None:
    store, month = stored_month
    labels = month["labels_snapshots"].iloc[:5_000]
    store.write_month(months.as_of("2024-02"), {**month, "labels_snapshots": labels})
    tables = {"labels_snapshots": [LABEL]} | FEATURE_COLUMNS
    joined = pd.concat(
        store.join_batches(tables, months.as_of("2024-02"), 999, require="labels_snapshots"),
        ignore_index=True,
    )
    expected = labels.merge(month_features(month), on="user_id").sort_values("user_id")
    assert joined["user_id"].tolist() == expected["user_id"].tolist()
    assert joined[LABEL].astype(bool).tolist() == expected[LABEL].tolist()


def test_a_chunked_drift_sample_does_not_depend_on_the_chunks(january: pd.DataFrame) -> None:
    whole, rows = sample_chunks([january], 2_000)
    chunked, chunked_rows = sample_chunks(
        (january.iloc[i : i + 700] for i in range(0, len(january), 700)), 2_000
    )
    assert rows == chunked_rows == 7_043 and len(whole) == 2_000
    pd.testing.assert_frame_equal(chunked, whole)
    # Every row, in order, when there are no more than the sample's size.
    everything, _ = sample_chunks(january.iloc[i : i + 700] for i in range(0, 7_043, 700))
    pd.testing.assert_frame_equal(everything, january.reset_index(drop=True))


def _served(rows: list[tuple]) -> pd.DataFrame:
    columns = [
        "request_id",
        "user_id",
        "model_version",
        "probability",
        "prediction",
        "stale",
        "shadow_version",
        "shadow_probability",
    ]
    return pd.DataFrame(rows, columns=columns)


def test_served_performance_without_traffic_says_so() -> None:
    assert served_performance(_served([]), None, None) == {"status": "no_traffic", "count": 0}


def test_served_performance_per_version_shadow_and_batch_agreement() -> None:
    served = _served(
        [
            # v2 ranks the churners (a, b) above the others: AUC 1; asked twice about a.
            ("r1", "a", "2", 0.9, 1, False, "3", 0.2),
            ("r2", "a", "2", 0.9, 1, False, None, None),
            ("r3", "b", "2", 0.6, 1, True, "3", 0.7),
            ("r4", "c", "2", 0.1, 0, False, "3", 0.4),
            # v1 ranks them backwards: AUC 0. `z` has no label.
            ("r5", "c", "1", 0.8, 1, False, None, None),
            ("r5", "d", "1", 0.7, 1, False, None, None),
            ("r5", "a", "1", 0.3, 0, False, None, None),
            ("r6", "z", "1", 0.3, 0, False, None, None),
        ]
    )
    labels = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "churn_label": [1, 1, 0, 0]})
    batch = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "prediction": [1, 0, 0, 1]})
    summary = served_performance(served, labels, batch)
    assert (summary["count"], summary["requests"], summary["users"]) == (8, 6, 5)
    assert summary["stale_share"] == 1 / 8
    v1, v2 = summary["versions"]["1"], summary["versions"]["2"]
    assert (v2["count"], v2["labelled_users"], v2["auc"]) == (4, 3, 1.0)
    assert (v1["count"], v1["labelled_users"], v1["auc"]) == (4, 3, 0.0)
    assert v2["f1"] == 1.0 and v1["f1"] == 0.0
    assert v2["brier"] == pytest.approx(((1 - 0.9) ** 2 + (1 - 0.6) ** 2 + 0.1**2) / 3)
    # Served vs batch predictions, over the 7 answers for users batch_scores holds.
    assert summary["batch_agreement"] == pytest.approx(4 / 7)
    shadow = summary["shadow"]
    assert (shadow["versions"], shadow["served_versions"], shadow["count"]) == (["3"], ["2"], 3)
    # Shadow predictions 0, 1, 0 against served 1, 1, 0.
    assert shadow["agreement"] == pytest.approx(2 / 3)
    # On the same users a, b, c: the shadow ranks b > c > a (AUC 0.5), served a > b > c (1).
    assert shadow["shadow"]["auc"] == 0.5 and shadow["served"]["auc"] == 1.0
