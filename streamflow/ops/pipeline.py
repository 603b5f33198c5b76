"""Run the monthly pipeline for a list of months, in order, recorded in the Dagster instance."""

import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    RunsFilter,
    execute_job,
    reconstructable,
)

from streamflow_assets.cluster import BrokerUnreachable
from streamflow_assets.executors import CELERY
from streamflow_assets.jobs import MONTHLY_PIPELINE
from streamflow_assets.partitions import add_seeded_months
from streamflow_assets.resources import run_config_for

# Every run records the process that executes it, so that a later pipeline can tell a run whose
# process was killed (kill -9 leaves it STARTED forever, holding its pool slots) from a live one.
PID_TAG = "streamflow/pid"
HOST_TAG = "streamflow/host"
# When that process started, so that a later process given the same pid is not taken for it.
STARTED_TAG = "streamflow/process_create_time"
_IN_PROGRESS = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


@dataclass(frozen=True)
class MonthOutcome:
    """What one partition's run did, for a one-line summary."""

    partition: str
    run_id: str
    success: bool
    seconds: float
    materialized: int
    checks_passed: int
    checks_failed: int
    error: str | None = None

    def summary(self) -> str:
        status = "ok    " if self.success else "FAILED"
        checks = f"{self.checks_passed} checks passed"
        if self.checks_failed:
            checks += f", {self.checks_failed} failed"
        return (
            f"{self.partition}  {status}  {self.materialized} assets, {checks}  "
            f"{self.seconds:.1f}s  run {self.run_id[:8]}"
        )


def _first_error(result) -> str | None:
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            cause = error.cause or error
            while cause.cause:
                cause = cause.cause
            return f"step {event.step_key}: {cause.message.strip()}"
    if result.success:
        return None
    # A run that failed before any step (its executor could not start: the broker is down).
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if event.is_failure and error is not None:
            return error.message.strip()
    return "run failed (see the Dagster UI)"


# `on_asset(partition, asset, seconds)`: an asset of the month's run was just materialized,
# `seconds` after the run started.
AssetListener = Callable[[str, str, float], None]


def run_month(
    defs: Definitions,
    instance: DagsterInstance,
    partition: str,
    assets: Sequence[str] | None = None,
    on_start: Callable[[str, str], None] | None = None,
    on_asset: AssetListener | None = None,
) -> MonthOutcome:
    """Run the monthly pipeline for one month: every asset, or just `assets` (and their checks).

    The month must be a partition of `instance` already (`run_months` adds it from the seeds).
    `on_start(partition, run_id)` is called just before the run starts, `on_asset` as each asset
    is materialized (runs in this process only: celery workers report to the instance).
    """
    job = defs.resolve_job_def(MONTHLY_PIPELINE)
    # The form of Dagster's own run ids; execute_job (celery) draws its own, which the lock
    # cannot name beforehand.
    run_id = str(uuid.uuid4())
    if on_start is not None:
        on_start(partition, run_id)
    started = time.perf_counter()
    if on_asset is not None:

        def materialized(record) -> None:
            event = record.get_dagster_event() if record.is_dagster_event else None
            if event is not None and event.is_step_materialization:
                name = event.asset_key.to_user_string()
                on_asset(partition, name, time.perf_counter() - started)

        # The instance calls its listeners of a run with each event it stores for it.
        instance.add_event_listener(run_id, materialized)
    selection = [AssetKey(name) for name in assets] if assets else None
    # The one-line summary is the console output; every event stays in the instance and UI.
    # The run carries this process's seeds location (and step limits) to every step: a celery
    # worker uses them whatever its own environment says.
    run_config = {
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
        **run_config_for(defs.resources),
    }
    # execute_in_process runs every step in this process whatever the job's executor; only the
    # celery executor's steps must run elsewhere, on its workers.
    if job.executor_def.name != CELERY:
        result = job.execute_in_process(
            run_id=run_id,
            partition_key=partition,
            instance=instance,
            asset_selection=selection,
            raise_on_error=False,
            tags=process_tags(),
            run_config=run_config,
        )
    else:
        # Steps run in other processes (celery workers), which rebuild the job from the code
        # location's module and record their events in the (shared) instance.
        from streamflow_assets.definitions import monthly_pipeline_job

        try:
            result = execute_job(
                reconstructable(monthly_pipeline_job),
                instance,
                run_config=run_config,
                tags={"dagster/partition": partition, **process_tags()},
                asset_selection=selection,
            )
        except BrokerUnreachable as error:
            # The executor could not start, which Dagster raises with the run left NOT_STARTED:
            # record it as failed with the reason, so the UI says what the console says.
            (run,) = instance.get_runs(RunsFilter(tags={"dagster/partition": partition}), limit=1)
            instance.report_run_failed(run, message=str(error))
            return MonthOutcome(
                partition, run.run_id, False, time.perf_counter() - started, 0, 0, 0, str(error)
            )
    evaluations = [
        event.asset_check_evaluation_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    return MonthOutcome(
        partition=partition,
        run_id=result.run_id,
        success=result.success,
        seconds=time.perf_counter() - started,
        materialized=len(result.get_asset_materialization_events()),
        checks_passed=sum(e.passed for e in evaluations),
        checks_failed=sum(not e.passed for e in evaluations),
        error=_first_error(result),
    )


def process_tags() -> dict[str, str]:
    """The tags that tie a run to the process executing it (this one)."""
    return {
        PID_TAG: str(os.getpid()),
        HOST_TAG: socket.gethostname(),
        STARTED_TAG: repr(psutil.Process().create_time()),
    }


def _process_is_gone(tags: Mapping[str, str]) -> bool:
    try:
        process = psutil.Process(int(tags[PID_TAG]))
        status, started = process.status(), repr(process.create_time())
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False
    # A zombie has exited (its parent has not reaped it yet); another start time is another
    # process that was given the pid after the run's own died.
    return status == psutil.STATUS_ZOMBIE or started != tags.get(STARTED_TAG, started)


@dataclass(frozen=True)
class ReleasedRun:
    """A run whose process died mid-run, now marked failed, and the pool slots it held."""

    run_id: str
    partition: str | None
    pid: int
    pools: list[str]

    def summary(self) -> str:
        held = ", ".join(self.pools) if self.pools else "none held"
        return (
            f"run {self.run_id[:8]} ({self.partition or 'no partition'}) of dead pid {self.pid}: "
            f"marked failed; pool slots freed: {held}"
        )


def in_progress_runs(instance: DagsterInstance, pid: int | None = None) -> list:
    """Runs of this host still in progress, of one `streamflow` process or of all."""
    tags = {HOST_TAG: socket.gethostname()} | ({PID_TAG: str(pid)} if pid is not None else {})
    return list(instance.get_runs(RunsFilter(statuses=_IN_PROGRESS, tags=tags)))


def release_dead_runs(instance: DagsterInstance) -> list[ReleasedRun]:
    """Mark failed every in-progress run of this host whose process is gone, and free its slots.

    A killed `streamflow pipeline` cannot end its run: the run stays STARTED and keeps the
    `mlflow_promotion` slot it held, so every later promotion would wait for it; run monitoring
    frees it only for runs it already sees as ended, with the daemon up. Runs of live processes
    and of other hosts are left alone (only this host can tell whether their pid is alive).
    """
    runs = in_progress_runs(instance)
    dead = [run for run in runs if _process_is_gone(run.tags)]
    if not dead:
        return []
    storage = instance.event_log_storage
    infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys()))
    released = []
    for run in dead:
        pid = int(run.tags[PID_TAG])
        pools = [key for key, info in infos.items() if run.run_id in info.active_run_ids]
        instance.report_run_failed(
            run,
            message=f"Its process (pid {pid}) is gone; marked failed by streamflow pipeline "
            f"(pid {os.getpid()}), which freed its pool slots.",
        )
        storage.free_concurrency_slots_for_run(run.run_id)
        released.append(ReleasedRun(run.run_id, run.tags.get("dagster/partition"), pid, pools))
    return released


def run_months(
    partitions: list[str],
    defs: Definitions | None = None,
    instance: DagsterInstance | None = None,
    assets: Sequence[str] | None = None,
    on_start: Callable[[str, str], None] | None = None,
    on_asset: AssetListener | None = None,
    on_done: Callable[[MonthOutcome], None] | None = None,
) -> list[MonthOutcome]:
    """Materialize each month in order; keep going past a failed month so every error shows.

    Runs are recorded in `instance`, by default the one under DAGSTER_HOME that the UI reads;
    `on_done` is called with each month's outcome as it ends. Every seeded month becomes a
    partition first; a month without seeds raises `months.MonthsNotSeeded` before any run.
    """
    if defs is None:
        from streamflow_assets.definitions import defs

    def run_all(instance: DagsterInstance) -> list[MonthOutcome]:
        add_seeded_months(instance, Path(defs.resources["seeds"].seeds_dir), partitions)
        outcomes = []
        for key in sorted(partitions):
            outcomes.append(run_month(defs, instance, key, assets, on_start, on_asset))
            if on_done is not None:
                on_done(outcomes[-1])
        return outcomes

    if instance is not None:
        return run_all(instance)
    with DagsterInstance.get() as instance:
        return run_all(instance)
