"""Ingestion through real Dagster runs: the real months land whole, checked, idempotent."""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    RunRequest,
    SensorResult,
    SkipReason,
    asset,
    build_sensor_context,
    define_asset_job,
)

from streamflow.adapters.snapshots import ParquetSnapshotStore
from streamflow.domain import months
from streamflow.domain.seeds import TABLES
from streamflow.ops.pipeline import run_months
from streamflow.settings import Settings
from streamflow_assets.definitions import build_definitions
from streamflow_assets.ingestion.assets import new_seed_month_sensor, seed_months_sensor
from streamflow_assets.jobs import MONTHLY_PIPELINE
from streamflow_assets.partitions import monthly_partitions
from streamflow_assets.resources import SeedsResource

REAL_ROWS = 7043
VHVEG = "7590-VHVEG"
SNAPSHOTS = [t.snapshot for t in TABLES]


def store_of(settings: Settings) -> ParquetSnapshotStore:
    return ParquetSnapshotStore(settings.snapshots_dir)


def stored_month(settings: Settings, key: str) -> dict[str, pd.DataFrame]:
    store = store_of(settings)
    return {t.snapshot: store.read(t.snapshot, months.as_of(key)) for t in TABLES}


def stored_files(settings: Settings) -> dict[str, bytes]:
    root = settings.snapshots_dir
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def check_evaluations(instance: DagsterInstance, run_id: str) -> dict[tuple[str, str], object]:
    """(snapshot table, check name) -> the AssetCheckEvaluation the run recorded.

    Only the ingestion checks: the monthly job also runs whatever is downstream of the snapshots.
    """
    evaluations = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        table = evaluation.asset_key.to_user_string()
        if table in SNAPSHOTS:
            evaluations[(table, evaluation.check_name)] = evaluation
    return evaluations


def materialized_snapshots(instance: DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(snapshot table, partition) of every snapshot materialization the run recorded."""
    found = []
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.dagster_event.event_specific_data.materialization
        table = materialization.asset_key.to_user_string()
        if table in SNAPSHOTS:
            found.append((table, materialization.partition))
    return sorted(found)


def csv_text(seeds: Path, month: str, file: str, user_id: str) -> dict[str, str]:
    with (seeds / month / file).open(newline="") as handle:
        (row,) = [row for row in csv.DictReader(handle) if row["user_id"] == user_id]
    return row


def as_csv_text(value: object) -> str:
    if value is pd.NA:
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def evaluate_sensor(settings: Settings, instance: DagsterInstance):
    defs = build_definitions(settings)
    context = build_sensor_context(instance=instance, resources={"seeds": defs.resources["seeds"]})
    return new_seed_month_sensor(context)


def requested(result) -> list[RunRequest]:
    if isinstance(result, SkipReason):
        return []
    assert isinstance(result, SensorResult), result
    return list(result.run_requests or [])


@pytest.fixture
def ingest(materialize) -> Callable[[Settings, list[str]], list]:
    """Real Dagster runs of the monthly job narrowed to the ingestion group and its checks."""
    return lambda settings, keys: materialize(settings, keys, group="ingestion")


@pytest.fixture
def real_settings(settings_for, tmp_path: Path, real_seeds: Path) -> Settings:
    return settings_for(tmp_path / "data", real_seeds)


def test_both_real_months_materialize_through_dagster(
    real_settings: Settings, ingest, dagster_instance: DagsterInstance
) -> None:
    outcomes = ingest(real_settings, ["2024-02", "2024-01"])
    assert [(o.partition, o.success, o.error) for o in outcomes] == [
        ("2024-01", True, None),
        ("2024-02", True, None),
    ]
    for outcome in outcomes:
        assert materialized_snapshots(dagster_instance, outcome.run_id) == sorted(
            (table, outcome.partition) for table in SNAPSHOTS
        )
    store = store_of(real_settings)
    for table in TABLES:
        assert store.as_ofs(table.snapshot) == [months.as_of("2024-01"), months.as_of("2024-02")]
        for key in ("2024-01", "2024-02"):
            assert store.row_count(table.snapshot, months.as_of(key)) == REAL_ROWS
            assert len(store.read(table.snapshot, months.as_of(key))) == REAL_ROWS
    for table in TABLES:
        assert dagster_instance.get_materialized_partitions(AssetKey(table.snapshot)) == {
            "2024-01",
            "2024-02",
        }
    runs = dagster_instance.get_runs()
    assert sorted(run.tags["dagster/partition"] for run in runs) == ["2024-01", "2024-02"]


def test_every_check_of_the_real_months_passes(
    real_settings: Settings, ingest, dagster_instance: DagsterInstance
) -> None:
    for outcome in ingest(real_settings, ["2024-01", "2024-02"]):
        evaluations = check_evaluations(dagster_instance, outcome.run_id)
        assert set(evaluations) == {
            (t.snapshot, name) for t in TABLES for name in ("contract", "row_count_change")
        }
        failed = {key: e.metadata for key, e in evaluations.items() if not e.passed}
        assert not failed, f"{outcome.partition}: {failed}"
        previous = 0 if outcome.partition == "2024-01" else REAL_ROWS
        for table in TABLES:
            assert evaluations[(table.snapshot, "contract")].metadata["rows"].value == REAL_ROWS
            change = evaluations[(table.snapshot, "row_count_change")].metadata
            assert change["previous_rows"].value == previous


@pytest.mark.parametrize(("key", "month"), [("2024-01", "month_000"), ("2024-02", "month_001")])
def test_stored_values_of_7590_vhveg_equal_the_csv(
    real_settings: Settings, real_seeds: Path, ingest, key: str, month: str
) -> None:
    (outcome,) = ingest(real_settings, [key])
    assert outcome.success, outcome.error
    stored = stored_month(real_settings, key)
    for table in TABLES:
        df = stored[table.snapshot]
        (position,) = df.index[df["user_id"] == VHVEG]
        text = csv_text(real_seeds, month, table.file, VHVEG)
        for column in table.columns:
            value = df[column.name].array[position]
            expected = text[column.name]
            if column.kind.name == "FLOAT":
                assert value == float(expected), (table.file, column.name)
            else:
                assert as_csv_text(value) == expected, (table.file, column.name, value)
        assert (df["as_of"] == pd.Timestamp(months.as_of(key))).all()


def test_stored_stream_flags_stay_null_for_users_without_service(
    real_settings: Settings, ingest
) -> None:
    (outcome,) = ingest(real_settings, ["2024-01"])
    assert outcome.success, outcome.error
    subscriptions = stored_month(real_settings, "2024-01")["subscriptions_profile_snapshots"]
    no_service = subscriptions["net_service"] == "No"
    for flag in ("plan_stream_tv", "plan_stream_movies"):
        assert str(subscriptions[flag].dtype) == "boolean"
        assert (subscriptions[flag].isna() == no_service).all()
        assert subscriptions[flag].isna().sum() == 1526


def test_rerunning_a_month_gives_identical_data(real_settings: Settings, ingest) -> None:
    (first,) = ingest(real_settings, ["2024-01"])
    before = stored_month(real_settings, "2024-01")
    names = set(stored_files(real_settings))
    (second,) = ingest(real_settings, ["2024-01"])
    assert first.success and second.success, (first.error, second.error)
    assert first.run_id != second.run_id
    assert set(stored_files(real_settings)) == names
    after = stored_month(real_settings, "2024-01")
    for table in TABLES:
        pd.testing.assert_frame_equal(after[table.snapshot], before[table.snapshot])


def test_a_corrupted_month_fails_naming_file_and_column_and_writes_nothing(
    settings_for, tmp_path: Path, copy_seeds, edit_csv, ingest, dagster_instance
) -> None:
    seeds = copy_seeds("month_000", "month_001")
    cell = edit_csv(
        seeds / "month_001" / "subscriptions.csv",
        "monthly_fee",
        "-12.5",
        lambda row: row["user_id"] == "9305-CDSKC",
    )
    settings = settings_for(tmp_path / "data", seeds)
    (good,) = ingest(settings, ["2024-01"])
    assert good.success, good.error
    january = stored_files(settings)
    (bad,) = ingest(settings, ["2024-02"])
    assert not bad.success
    assert "subscriptions.csv" in bad.error
    assert "monthly_fee" in bad.error
    assert f"line {cell.line}" in bad.error and "9305-CDSKC" in bad.error
    assert materialized_snapshots(dagster_instance, bad.run_id) == []
    assert stored_files(settings) == january, "January intact, nothing of February written"
    for table in TABLES:
        assert store_of(settings).as_ofs(table.snapshot) == [months.as_of("2024-01")]


def test_a_corrupted_rerun_keeps_the_month_stored_before(
    settings_for, tmp_path: Path, copy_seeds, edit_csv, ingest
) -> None:
    seeds = copy_seeds("month_000", "month_001")
    settings = settings_for(tmp_path / "data", seeds)
    assert all(o.success for o in ingest(settings, ["2024-01", "2024-02"]))
    before = stored_files(settings)
    edit_csv(seeds / "month_001" / "users.csv", "user_gender", "Unknown")
    (rerun,) = ingest(settings, ["2024-02"])
    assert not rerun.success
    assert "users.csv" in rerun.error and "user_gender" in rerun.error
    assert stored_files(settings) == before


def test_the_sensor_requests_exactly_the_months_not_yet_ingested(
    settings_for, tmp_path: Path, copy_seeds, ingest, dagster_instance: DagsterInstance
) -> None:
    seeds = copy_seeds("month_000", "month_001")
    (seeds / "notes").mkdir()
    (seeds / "month_1").mkdir()
    settings = settings_for(tmp_path / "data", seeds)

    first = requested(evaluate_sensor(settings, dagster_instance))
    assert [r.partition_key for r in first] == ["2024-01", "2024-02"]
    assert len({r.run_key for r in first}) == 2

    assert ingest(settings, ["2024-01"])[0].success
    second = requested(evaluate_sensor(settings, dagster_instance))
    assert [r.partition_key for r in second] == ["2024-02"]

    assert ingest(settings, ["2024-02"])[0].success
    assert requested(evaluate_sensor(settings, dagster_instance)) == []


def test_a_month_becomes_a_partition_when_its_seeds_land_and_never_without_them(
    tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    seeds = tmp_path / "seeds"
    (seeds / "month_000").mkdir(parents=True)
    context = build_sensor_context(
        instance=dagster_instance, resources={"seeds": SeedsResource(seeds_dir=str(seeds))}
    )

    def tick() -> SensorResult | SkipReason:
        result = seed_months_sensor(context)
        # What the daemon does with the partitions a sensor asks for.
        for request in getattr(result, "dynamic_partitions_requests", None) or []:
            dagster_instance.add_dynamic_partitions(
                request.partitions_def_name, request.partition_keys
            )
        return result

    def offered() -> list[str]:
        return monthly_partitions.get_partition_keys(dynamic_partitions_store=dagster_instance)

    assert offered() == []
    tick()
    assert offered() == ["2024-01"]
    assert isinstance(tick(), SkipReason)
    (seeds / "month_001").mkdir()
    tick()
    # No calendar month after the last seeded one (the launch dialog's "Latest" is 2024-02).
    assert offered() == ["2024-01", "2024-02"]
    (seeds / "month_003").mkdir()
    tick()
    assert offered() == ["2024-01", "2024-02", "2024-04"], "2024-03 has no seeds"
    run_requests = requested(new_seed_month_sensor(context))
    assert [r.partition_key for r in run_requests] == ["2024-01", "2024-02", "2024-04"]


def test_the_sensor_requests_a_month_again_after_its_folder_is_fixed(
    settings_for, tmp_path: Path, copy_seeds, edit_csv, ingest, dagster_instance
) -> None:
    seeds = copy_seeds("month_000")
    path = seeds / "month_000" / "labels.csv"
    edit_csv(path, "churn_label", "maybe")
    settings = settings_for(tmp_path / "data", seeds)
    (before,) = requested(evaluate_sensor(settings, dagster_instance))
    assert not ingest(settings, ["2024-01"])[0].success
    (path.parent / "labels.csv").write_text(path.read_text().replace("maybe", "False", 1))
    (after,) = requested(evaluate_sensor(settings, dagster_instance))
    assert after.partition_key == before.partition_key == "2024-01"
    assert after.run_key != before.run_key, "a fixed folder is a new request"


@pytest.mark.parametrize(
    ("rows", "warns"),
    [(5000, True), (6000, False)],
    ids=["loses-29pct-warns", "loses-15pct-passes"],
)
def test_row_count_change_warns_when_a_month_loses_over_20_percent(
    settings_for,
    tmp_path: Path,
    copy_seeds,
    ingest,
    dagster_instance: DagsterInstance,
    rows: int,
    warns: bool,
) -> None:
    seeds = copy_seeds("month_000")
    copy_seeds("month_001", rows=rows, into=seeds)
    settings = settings_for(tmp_path / "data", seeds)
    january, february = ingest(settings, ["2024-01", "2024-02"])
    assert january.success and february.success, "a warning never fails the run"
    assert not [
        e for e in check_evaluations(dagster_instance, january.run_id).values() if not e.passed
    ]
    evaluations = check_evaluations(dagster_instance, february.run_id)
    for table in TABLES:
        change = evaluations[(table.snapshot, "row_count_change")]
        assert change.passed is (not warns), table.snapshot
        assert change.severity == AssetCheckSeverity.WARN
        assert change.metadata["rows"].value == rows
        assert change.metadata["previous_rows"].value == REAL_ROWS
        assert evaluations[(table.snapshot, "contract")].passed
    failed = [key for key, e in evaluations.items() if not e.passed]
    assert len(failed) == (len(TABLES) if warns else 0)


def test_the_checks_are_declared_on_the_asset_with_their_names_and_blocking() -> None:
    from streamflow_assets.ingestion.assets import monthly_snapshots

    specs = {
        (spec.asset_key.to_user_string(), spec.name): spec for spec in monthly_snapshots.check_specs
    }
    assert set(specs) == {(t, name) for t in SNAPSHOTS for name in ("contract", "row_count_change")}
    for table in SNAPSHOTS:
        assert specs[(table, "contract")].blocking
        assert not specs[(table, "row_count_change")].blocking
        assert specs[(table, "contract")].partitions_def is not None


def test_the_checks_come_from_the_ingestion_step_which_reads_no_table_back(
    real_settings: Settings, ingest, dagster_instance: DagsterInstance, monkeypatch
) -> None:
    reads: list[str] = []
    read = ParquetSnapshotStore.read

    def recorded_read(store, table, as_of):
        reads.append(table)
        return read(store, table, as_of)

    monkeypatch.setattr(ParquetSnapshotStore, "read", recorded_read)
    outcomes = ingest(real_settings, ["2024-01", "2024-02"])
    assert all(o.success for o in outcomes), [o.error for o in outcomes]
    assert reads == []
    for outcome in outcomes:
        entries = dagster_instance.all_logs(
            outcome.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
        )
        assert len(entries) == 2 * len(TABLES)
        assert {entry.step_key for entry in entries} == {"monthly_snapshots"}
        assert {e.dagster_event.event_specific_data.partition for e in entries} == {
            outcome.partition
        }


class SeedsWithANegativeFee(SeedsResource):
    """Seeds whose parsed subscriptions gain a negative fee after validation: a fault of the
    parser that the stored contract must still catch (the CSVs themselves cannot cause it)."""

    def iter_month(self, partition_key: str, rows: int):
        for table, chunks in super().iter_month(partition_key, rows):
            if table == "subscriptions_profile_snapshots":
                chunks = map(self.negative_fee, chunks)
            yield table, chunks

    @staticmethod
    def negative_fee(df):
        df.loc[df["user_id"] == VHVEG, "monthly_fee"] = -1.0
        return df


@asset(deps=["subscriptions_profile_snapshots"], partitions_def=monthly_partitions)
def downstream_of_subscriptions() -> None:
    """Stands for every asset downstream of a snapshot table."""


def test_a_failed_contract_fails_the_month_and_blocks_downstream(
    real_settings: Settings, real_seeds: Path, dagster_instance: DagsterInstance
) -> None:
    full = build_definitions(real_settings)
    selection = AssetSelection.groups("ingestion") | AssetSelection.assets(
        downstream_of_subscriptions
    )
    defs = Definitions(
        assets=[*full.assets, downstream_of_subscriptions],
        asset_checks=full.asset_checks,
        jobs=[define_asset_job(MONTHLY_PIPELINE, selection=selection)],
        resources=full.resources | {"seeds": SeedsWithANegativeFee(seeds_dir=str(real_seeds))},
    )
    (outcome,) = run_months(["2024-01"], defs=defs, instance=dagster_instance)
    assert not outcome.success
    assert "blocking asset check" in outcome.error
    assert "subscriptions_profile_snapshots: contract" in outcome.error
    evaluations = check_evaluations(dagster_instance, outcome.run_id)
    contract = evaluations[("subscriptions_profile_snapshots", "contract")]
    assert not contract.passed
    assert contract.severity == AssetCheckSeverity.ERROR
    problems = contract.metadata["problems"].value
    assert "monthly_fee" in problems and "below 0" in problems and VHVEG in problems
    others = {key: e.passed for key, e in evaluations.items() if key[1] == "contract"}
    assert sum(not passed for passed in others.values()) == 1
    assert not dagster_instance.get_materialized_partitions(AssetKey("downstream_of_subscriptions"))
    started = dagster_instance.all_logs(outcome.run_id, of_type=DagsterEventType.STEP_START)
    assert [entry.step_key for entry in started] == ["monthly_snapshots"]
