"""release_dead_runs: runs of killed `streamflow` processes are ended and their pool slots freed."""

from __future__ import annotations

import subprocess

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from streamflow_assets.assets.registry import PROMOTION_POOL
from streamflow_assets.pipeline import process_tags, release_dead_runs


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
    reused = process_tags() | {"streamflow/process_started": "1"}
    run = started_run(dagster_instance, reused, "2024-03")
    (released,) = release_dead_runs(dagster_instance)
    assert released.run_id == run.run_id
