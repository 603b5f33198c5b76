"""The online store freshness check and its alerts, on real stores built from the real seeds."""

from __future__ import annotations

import sqlite3

import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    build_schedule_context,
)

from streamflow.adapters.snapshots import ParquetSnapshotStore
from streamflow.domain import months
from streamflow.domain.features import JOIN_KEY
from streamflow.domain.freshness import sample_users
from streamflow_assets.definitions import build_definitions
from streamflow_assets.freshness.checks import ONLINE_FRESHNESS_KEY
from tests.monitoring.conftest import (
    ONLINE_MONTH,
    SNAPSHOTS_ONLY,
    Sensor,
    run_assets,
    run_freshness_checks,
)

LINK = "http://127.0.0.1:3000/assets/online_features"


def meta(evaluation) -> dict:
    return {name: value.value for name, value in evaluation.metadata.items()}


def new_users_in_sample(world) -> int:
    """Sampled February users that January did not have: the online store cannot hold them."""
    store = ParquetSnapshotStore(world.data_dir / "snapshots")
    users = {
        key: store.read("subscriptions_profile_snapshots", months.as_of(key))[JOIN_KEY]
        for key in ("2024-01", "2024-02")
    }
    sample = sample_users(users["2024-02"].tolist(), 500)
    return len(set(sample) - set(users["2024-01"]))


def test_right_after_materialization_the_check_passes_and_nothing_alerts(
    january, session_instance: DagsterInstance, settings_for
) -> None:
    settings = settings_for(january.data_dir, january.seeds_dir)
    # The check ran inside the materializing run, right after online_features.
    record = session_instance.get_latest_asset_check_evaluation_record(ONLINE_FRESHNESS_KEY)
    evaluation = record.event.dagster_event.event_specific_data
    assert evaluation.passed, meta(evaluation)
    facts = meta(evaluation)
    assert (facts["status"], facts["expected_partition"], facts["lag_days"]) == (
        "FRESH",
        "2024-01",
        0.0,
    )
    assert (facts["sampled_users"], facts["stale_users"], facts["missing_users"]) == (500, 0, 0)
    sensor = Sensor(settings, session_instance)
    for _ in range(3):
        sensor.tick()
    assert not sensor.failing
    assert january.alerts == []


def test_a_new_month_not_online_fails_once_then_recovers_once(
    january, world_copy, real_seeds, copy_seeds, settings_for, dagster_instance
) -> None:
    world = world_copy(january)
    settings = settings_for(world.data_dir, world.seeds_dir)
    sensor = Sensor(settings, dagster_instance)
    assert run_freshness_checks(settings, dagster_instance).passed
    sensor.tick()
    assert world.alerts == []

    copy_seeds("month_001", into=world.seeds_dir)
    run_assets(settings, dagster_instance, "2024-02", SNAPSHOTS_ONLY)
    for _ in range(3):
        evaluation = run_freshness_checks(settings, dagster_instance)
        sensor.tick()
        sensor.tick()
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.ERROR
    facts = meta(evaluation)
    assert facts["status"] == "STALE"
    assert (facts["expected_as_of"], facts["actual_as_of"], facts["lag_days"]) == (
        "2024-02-29",
        "2024-01-31",
        29.0,
    )
    # The real months have the same 7,043 users: all held, all with January's values.
    assert (facts["stale_fraction"], facts["stale_users"]) == (1.0, 500)
    assert facts["missing_users"] == new_users_in_sample(world) == 0

    (alert,) = world.alerts
    assert (alert["event"], alert["state"], alert["asset"]) == (
        "alert",
        "failing",
        "online_features",
    )
    assert (alert["partition"], alert["lag_days"], alert["link"]) == ("2024-02", 29.0, LINK)
    assert "2024-02" in alert["text"] and "29 days" in alert["text"] and LINK in alert["text"]
    assert sensor.failing

    run_assets(settings, dagster_instance, "2024-02", ONLINE_MONTH)
    for _ in range(3):
        sensor.tick()
    assert run_freshness_checks(settings, dagster_instance).passed
    sensor.tick()
    failing, recovered = world.alerts
    assert failing == alert
    assert (recovered["state"], recovered["partition"], recovered["lag_days"]) == (
        "recovered",
        "2024-02",
        0.0,
    )
    assert recovered["link"] == LINK
    assert not sensor.failing


def _roll_back(world, january) -> None:
    # A restore from January's backup: the guarded writes never allow this, an operator can.
    world.online_db.write_bytes(january.online_db.read_bytes())


def _wipe(world, january) -> None:
    with sqlite3.connect(world.online_db) as db:
        tables = [
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            db.execute(f'DELETE FROM "{table}"')


def _delete(world, january) -> None:
    world.online_db.unlink()


@pytest.mark.parametrize(
    ("damage", "actual", "reason"),
    [
        pytest.param(_roll_back, "2024-01-31", "holds 2024-01-31", id="rolled back"),
        pytest.param(_wipe, None, "holds none of the 500 sampled users", id="wiped"),
        pytest.param(_delete, None, "has no tables", id="deleted"),
    ],
)
def test_an_online_store_rolled_back_or_wiped_fails_and_alerts(
    damage, actual, reason, february, january, world_copy, settings_for, dagster_instance
) -> None:
    world = world_copy(february)
    settings = settings_for(world.data_dir, world.seeds_dir)
    sensor = Sensor(settings, dagster_instance)
    assert run_freshness_checks(settings, dagster_instance).passed
    sensor.tick()

    damage(world, january)
    evaluation = run_freshness_checks(settings, dagster_instance)
    assert not evaluation.passed and evaluation.severity == AssetCheckSeverity.ERROR
    facts = meta(evaluation)
    assert facts["status"] == "STALE" and facts["actual_as_of"] == actual
    assert reason in facts["reasons"]
    if damage is _wipe:
        assert facts["missing_users"] == 500
        assert len(facts["missing_examples"].split(", ")) == 5
    sensor.tick()
    sensor.tick()
    (alert,) = world.alerts
    assert (alert["state"], alert["partition"]) == ("failing", "2024-02")


def test_the_schedule_runs_only_the_checks_on_its_cron(
    january, world_copy, settings_for, dagster_instance
) -> None:
    world = world_copy(january)
    settings = settings_for(world.data_dir, world.seeds_dir, freshness_schedule_cron="*/15 * * * *")
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("freshness_checks_schedule")
    assert (schedule.cron_schedule, schedule.job_name) == ("*/15 * * * *", "freshness_checks")
    assert schedule.default_status.value == "RUNNING"
    result = defs.resolve_job_def("freshness_checks").execute_in_process(instance=dagster_instance)
    assert result.success
    assert result.get_asset_materialization_events() == []
    (run,) = dagster_instance.get_runs()
    assert run.status == DagsterRunStatus.SUCCESS
    record = dagster_instance.get_latest_asset_check_evaluation_record(ONLINE_FRESHNESS_KEY)
    assert record.run_id == run.run_id


@pytest.mark.parametrize(
    ("job", "selection", "status", "skips"),
    [
        ("monthly_pipeline", None, DagsterRunStatus.STARTED, True),
        ("__ASSET_JOB", {AssetKey("online_features")}, DagsterRunStatus.STARTING, True),
        ("monthly_pipeline", {AssetKey("users_snapshots")}, DagsterRunStatus.STARTED, False),
        ("monthly_pipeline", None, DagsterRunStatus.SUCCESS, False),
        ("freshness_checks", None, DagsterRunStatus.STARTED, False),
    ],
)
def test_the_schedule_waits_for_a_run_writing_the_online_store(
    settings_for, tmp_path, dagster_instance, job, selection, status, skips: bool
) -> None:
    run = dagster_instance.add_run(
        DagsterRun(job_name=job, status=status, asset_selection=selection)
    )
    defs = build_definitions(settings_for(tmp_path / "data", tmp_path / "seeds"))
    schedule = defs.resolve_schedule_def("freshness_checks_schedule")
    with build_schedule_context(instance=dagster_instance) as context:
        result = schedule.evaluate_tick(context)
    if skips:
        assert result.run_requests == [] and run.run_id[:8] in result.skip_message
    else:
        assert len(result.run_requests) == 1


def test_the_default_schedule_is_hourly(settings_for, tmp_path) -> None:
    defs = build_definitions(settings_for(tmp_path / "data", tmp_path / "seeds"))
    assert defs.resolve_schedule_def("freshness_checks_schedule").cron_schedule == "0 * * * *"
