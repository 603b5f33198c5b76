"""The pipeline's runs: what they carry to every step, and runs of killed `streamflow` processes
ended with their pool slots freed."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, build_sensor_context

from streamflow.domain.months import MonthsNotSeeded
from streamflow.domain.seeds import TABLES
from streamflow.ops.pipeline import (
    STARTED_TAG,
    process_tags,
    release_dead_runs,
    run_month,
    run_months,
)
from streamflow_assets.definitions import build_definitions
from streamflow_assets.ingestion.assets import new_seed_month_sensor
from streamflow_assets.partitions import MONTHS, add_seeded_months
from streamflow_assets.promotion.assets import PROMOTION_POOL
from streamflow_assets.resources import SeedsResource


def started_run(instance: DagsterInstance, tags: dict[str, str], partition: str) -> DagsterRun:
    run = DagsterRun(
        job_name="monthly_pipeline",
        status=DagsterRunStatus.STARTED,
        tags=tags | {"dagster/partition": partition},
    )
    return instance.add_run(run)


def test_a_run_of_a_dead_process_is_marked_failed_and_its_slot_freed(
    dagster_instance: DagsterInstance,
) -> None:
    child = subprocess.Popen(["sleep", "60"])
    tags = process_tags() | {"streamflow/pid": str(child.pid)}
    child.kill()
    child.wait()
    dead = started_run(dagster_instance, tags, "2024-02")
    live = started_run(dagster_instance, process_tags(), "2024-01")
    storage = dagster_instance.event_log_storage
    storage.set_concurrency_slots(PROMOTION_POOL, 1)
    claim = storage.claim_concurrency_slot(PROMOTION_POOL, dead.run_id, "production_model")
    assert claim.is_claimed

    (released,) = release_dead_runs(dagster_instance)

    assert (released.run_id, released.partition, released.pools) == (
        dead.run_id,
        "2024-02",
        [PROMOTION_POOL],
    )
    assert f"dead pid {child.pid}: marked failed; pool slots freed: {PROMOTION_POOL}" in (
        released.summary()
    )
    assert dagster_instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
    assert dagster_instance.get_run_by_id(live.run_id).status == DagsterRunStatus.STARTED
    assert not storage.get_concurrency_info(PROMOTION_POOL).active_run_ids
    assert release_dead_runs(dagster_instance) == []


def test_a_pid_given_to_another_process_is_not_taken_for_the_run(
    dagster_instance: DagsterInstance,
) -> None:
    # This very process, but with another start time: the run's own process is gone.
    reused = process_tags() | {STARTED_TAG: "1.0"}
    run = started_run(dagster_instance, reused, "2024-03")
    (released,) = release_dead_runs(dagster_instance)
    assert released.run_id == run.run_id


def test_a_run_carries_the_launching_processs_seeds_location_and_limits(
    settings_for, tmp_path: Path, real_seeds: Path, dagster_instance: DagsterInstance
) -> None:
    settings = settings_for(tmp_path / "data", real_seeds, chunk_rows=1234)
    defs = build_definitions(settings)
    (outcome,) = run_months(["2024-01"], defs, dagster_instance, ["feature_registry"])
    assert outcome.success, outcome.error
    carried = dagster_instance.get_run_by_id(outcome.run_id).run_config["resources"]
    assert carried["seeds"] == {"config": {"seeds_dir": str(real_seeds)}}
    assert carried["limits"]["config"]["chunk_rows"] == 1234


def test_a_month_without_seeds_fails_before_any_run_naming_its_folder(
    settings_for, tmp_path: Path, real_seeds: Path, dagster_instance: DagsterInstance
) -> None:
    defs = build_definitions(settings_for(tmp_path / "data", real_seeds))
    with pytest.raises(MonthsNotSeeded, match=re.escape(str(real_seeds / "month_002"))):
        run_months(["2024-02", "2024-03"], defs, dagster_instance, ["feature_registry"])
    assert not dagster_instance.get_runs()
    assert "2024-03" not in dagster_instance.get_dynamic_partitions(MONTHS)


def test_seeds_the_step_cannot_read_fail_the_month_naming_the_path_and_the_host(
    settings_for, tmp_path: Path, real_seeds: Path, dagster_instance: DagsterInstance
) -> None:
    # The launching process saw the month's seeds; the process running the step cannot read them.
    add_seeded_months(dagster_instance, real_seeds, ["2024-01"])
    missing = tmp_path / "not-mounted-here"
    settings = settings_for(tmp_path / "data", missing)
    snapshots = [table.snapshot for table in TABLES]
    outcome = run_month(build_definitions(settings), dagster_instance, "2024-01", snapshots)
    assert not outcome.success
    assert f"the seeds location {missing} is not a readable directory" in outcome.error
    assert f"on host {socket.gethostname()}" in outcome.error


def test_the_new_month_sensor_asks_for_a_run_of_the_folder_it_saw(
    tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    (tmp_path / "month_000").mkdir()
    seeds = SeedsResource(seeds_dir=str(tmp_path))
    context = build_sensor_context(instance=dagster_instance, resources={"seeds": seeds})
    result = new_seed_month_sensor(context)
    (request,) = result.run_requests
    assert request.partition_key == "2024-01"
    # The daemon adds the month as a partition before it creates the run.
    (added,) = result.dynamic_partitions_requests
    assert (added.partitions_def_name, added.partition_keys) == (MONTHS, ["2024-01"])
    assert request.run_config == {"resources": {"seeds": {"config": {"seeds_dir": str(tmp_path)}}}}
