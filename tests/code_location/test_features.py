"""Features on the real seeds: the Feast registry, the guarded online store, training datasets."""

from __future__ import annotations

import csv
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance

from streamflow.adapters.feature_store import open_store, read_online
from streamflow.domain import months
from streamflow.domain.features import (
    FEATURE_NAMES,
    FEATURES,
    JOIN_KEY,
    UsersFingerprint,
    model_inputs,
)
from streamflow.domain.seeds import TABLES
from streamflow.settings import Settings, get_settings
from streamflow_assets.resources import build_resources
from tests.conftest import child_env
from tests.profiles import PROFILES, built_pipeline

REPO = Path(__file__).resolve().parents[2]
USER = "7590-VHVEG"
FEATURE_ASSETS = [
    *(table.snapshot for table in TABLES),
    "feature_registry",
    "online_features",
    "training_dataset",
]
SOURCE_FILES = {
    "subscriptions_profile_snapshots": "subscriptions.csv",
    "usage_agg_30d_snapshots": "usage_agg_30d.csv",
    "payments_agg_90d_snapshots": "payments_agg_90d.csv",
    "support_agg_90d_snapshots": "support_agg_90d.csv",
}


@dataclass(frozen=True)
class Built:
    settings: Settings
    instance: DagsterInstance
    seeds: Path


@pytest.fixture(scope="module", params=PROFILES)
def built(
    request: pytest.FixtureRequest, real_seeds: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    """Both real months through snapshots, registry, online store and training datasets, once
    per profile: the same assertions hold for the local and the postgres stores. Chunks of
    1,000 rows: the month's 7,043 users reach the online store in eight."""
    data_dir = tmp_path_factory.mktemp(f"features-{request.param}")
    chunked = {"STREAMFLOW_CHUNK_ROWS": "1000"}
    with built_pipeline(request.param, data_dir, real_seeds, FEATURE_ASSETS, chunked) as (
        settings,
        dagster,
    ):
        yield Built(settings, dagster, real_seeds)


def csv_features(seeds: Path, folder: str, user_id: str) -> dict[str, object]:
    """A user's 14 features as the CSV text denotes them, typed by hand (not by the loader)."""
    values: dict[str, object] = {}
    for source in SOURCE_FILES.values():
        with open(seeds / folder / source, newline="") as handle:
            row = next(r for r in csv.DictReader(handle) if r["user_id"] == user_id)
        values.update(row)
    typed: dict[str, object] = {}
    for feature in FEATURES:
        text = values[feature.name]
        typed[feature.name] = {
            "Int64": lambda t: int(t),
            "Float32": lambda t: np.float32(float(t)),
            "Bool": lambda t: {"True": True, "False": False, "": None}[t],
            "String": lambda t: t,
        }[feature.dtype](text)
    return typed


def assert_features_equal(actual: dict[str, object], expected: dict[str, object]) -> None:
    for feature in FEATURES:
        got, want = actual[feature.name], expected[feature.name]
        if feature.dtype == "Float32":
            # Declared Float32: equal once both sides are float32.
            assert np.float32(got) == want, (feature.name, got, want)
        else:
            assert got == want, (feature.name, got, want)


def online_row(user_id: str) -> dict[str, object]:
    frame = read_online(open_store(get_settings()), [user_id])
    return {name: frame[name].iloc[0] for name in FEATURE_NAMES}


def training(settings: Settings, key: str) -> pd.DataFrame:
    store = build_resources(settings)["snapshots"].store()
    return store.read("training_dataset", months.as_of(key))


def test_online_features_are_the_latest_months_csv_values(built: Built) -> None:
    assert_features_equal(online_row(USER), csv_features(built.seeds, "month_001", USER))


def test_a_training_row_is_its_months_csv_values(built: Built) -> None:
    dataset = training(built.settings, "2024-01")
    row = dataset[dataset[JOIN_KEY] == USER].iloc[0]
    expected = csv_features(built.seeds, "month_000", USER)
    assert_features_equal({n: row[n] for n in FEATURE_NAMES}, expected)
    assert len(dataset) == 7043
    assert dataset["plan_stream_tv"].isna().sum() == 1526


def test_an_unknown_user_gets_nothing_online(built: Built) -> None:
    assert all(value is None for value in online_row("0000-NOONE").values())


def test_online_features_match_the_training_rows_of_the_latest_month(built: Built) -> None:
    """Train/serve consistency: what is served is what the model was trained on, for users of
    every chunk the month was written in, and the asset counts every chunk's users."""
    metadata = latest_metadata(built.instance, "online_features", "2024-02")
    assert metadata["rows_written"] == 7043
    dataset = training(built.settings, "2024-02").sample(n=200, random_state=7)
    online = read_online(open_store(get_settings()), dataset[JOIN_KEY].tolist())
    served = model_inputs(online)
    trained = model_inputs(dataset.reset_index(drop=True))
    for name in FEATURE_NAMES:
        np.testing.assert_array_equal(served[name], trained[name], err_msg=name)


def latest_metadata(instance: DagsterInstance, asset: str, partition: str) -> dict[str, object]:
    event = instance.get_latest_materialization_event(AssetKey(asset))
    materialization = event.asset_materialization
    assert materialization.partition == partition
    return {key: value.value for key, value in materialization.metadata.items()}


def test_rematerializing_an_older_month_never_rolls_the_online_store_back(built: Built) -> None:
    from streamflow.ops.pipeline import run_months
    from streamflow_assets.definitions import build_definitions

    before = online_row(USER)
    (outcome,) = run_months(
        ["2024-01"],
        defs=build_definitions(built.settings),
        instance=built.instance,
        assets=["online_features"],
    )
    assert outcome.success, outcome.error
    assert online_row(USER) == before
    metadata = latest_metadata(built.instance, "online_features", "2024-01")
    assert metadata["rows_written"] == 0
    assert metadata["rows_skipped_as_older"] == 7043
    assert metadata["newest_event_time"].startswith("2024-02-29")


def test_the_registry_records_each_materialized_month(built: Built) -> None:
    store = open_store(get_settings())
    for view in store.list_feature_views():
        starts = {start.date().isoformat() for start, _ in view.materialization_intervals}
        assert starts == {"2024-01-31", "2024-02-29"}, view.name


def online_rows(path: Path) -> dict[str, set[tuple]]:
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            table: set(db.execute(f"SELECT entity_key, feature_name, value, event_ts FROM {table}"))
            for table in tables
        }


@pytest.mark.slow
def test_feast_cli_works_and_writes_what_the_asset_writes(built: Built, tmp_path: Path) -> None:
    """`feast apply` / `feature-views list` / `materialize` in feature_repo, on a copy of the data:
    Feast's own materialization (through our guarded store) writes the same bytes as the asset."""
    if built.settings.profile != "local":
        pytest.skip("the feast CLI is exercised on the local profile, whose stores are files")
    other = tmp_path / "cli"
    snapshots = built.settings.snapshots_dir
    for table in SOURCE_FILES:
        (other / "snapshots" / table).mkdir(parents=True)
        for file in (snapshots / table).glob("*.parquet"):
            (other / "snapshots" / table / file.name).write_bytes(file.read_bytes())
    (other / "feast").mkdir()
    env = child_env(STREAMFLOW_DATA_DIR=str(other))
    feast = [str(REPO / ".venv" / "bin" / "feast")]

    def run(*args: str) -> str:
        done = subprocess.run(
            feast + list(args), cwd=REPO / "feature_repo", env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    run("apply")
    listed = run("feature-views", "list")
    for view in ("subs_profile", "usage_agg_30d", "payments_agg_90d", "support_agg_90d"):
        assert view in listed
    run("materialize", "2024-02-29T00:00:00", "2024-02-29T00:00:01")
    ours = online_rows(built.settings.data_dir / "feast" / "online.db")
    theirs = online_rows(other / "feast" / "online.db")
    assert set(theirs) == set(ours)
    for table in ours:
        assert theirs[table] == ours[table], table


TRAINING_CHECKS = (
    "training_rows_match_labels",
    "training_features_point_in_time",
    "training_features_not_all_null",
)


def test_the_training_checks_are_declared_on_the_asset_and_block() -> None:
    from streamflow_assets.features.assets import training_dataset

    specs = {spec.name: spec for spec in training_dataset.check_specs}
    assert set(specs) == set(TRAINING_CHECKS)
    for spec in specs.values():
        assert spec.asset_key == AssetKey("training_dataset")
        assert spec.blocking and spec.partitions_def is not None


def test_the_training_checks_pass_in_the_step_that_builds_the_dataset(built: Built) -> None:
    found = {}
    for run in built.instance.get_runs():
        for entry in built.instance.all_logs(
            run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
        ):
            evaluation = entry.dagster_event.event_specific_data
            if evaluation.asset_key == AssetKey("training_dataset"):
                found[(evaluation.partition, evaluation.check_name)] = (entry.step_key, evaluation)
    assert set(found) == {(p, name) for p in ("2024-01", "2024-02") for name in TRAINING_CHECKS}
    for (partition, name), (step, evaluation) in found.items():
        assert step == "training_dataset", (partition, name)
        assert evaluation.passed, (partition, name, evaluation.metadata)
    rows = found[("2024-02", "training_rows_match_labels")][1].metadata
    assert rows["rows"].value == rows["labels"].value == 7043


def test_the_training_checks_fail_on_a_broken_dataset(built: Built) -> None:
    """What each check computes from the asset's own rows catches what it is named for."""
    from streamflow_assets.features.assets import (
        _not_all_null,
        _point_in_time,
        _rows_match_labels,
    )

    store = build_resources(built.settings)["snapshots"].store()
    as_of = months.as_of("2024-02")
    dataset = training(built.settings, "2024-02").drop(columns="as_of")
    labelled = UsersFingerprint().add(store.read("labels_snapshots", as_of)[JOIN_KEY])
    assert _rows_match_labels(UsersFingerprint().add(dataset[JOIN_KEY]), labelled).passed
    assert not _rows_match_labels(UsersFingerprint().add(dataset[JOIN_KEY][1:]), labelled).passed
    other_user = dataset[JOIN_KEY].where(dataset.index != 0, "0000-NOONE")
    assert not _rows_match_labels(UsersFingerprint().add(other_user), labelled).passed
    assert _point_in_time(store, as_of).passed
    # A later month's value for one user (leakage) and for one other feature, stored in place
    # of the month's training set for the check to count, then put back.
    leaked = dataset.copy()
    leaked.loc[3, "monthly_fee"] += 1.0
    leaked.loc[5, "watch_hours_30d"] += 0.5
    store.write_month(as_of, {"training_dataset": leaked})
    try:
        result = _point_in_time(store, as_of)
    finally:
        store.write_month(as_of, {"training_dataset": dataset})
    assert not result.passed
    assert result.metadata["mismatched_values"].value == {"monthly_fee": 1, "watch_hours_30d": 1}
    nulls = dataset[FEATURE_NAMES].isna().sum()
    assert _not_all_null(nulls, len(dataset)).passed
    nulls["skips_7d"] = len(dataset)
    empty = _not_all_null(nulls, len(dataset))
    assert not empty.passed and empty.metadata["entirely_null"].value == "skips_7d"
