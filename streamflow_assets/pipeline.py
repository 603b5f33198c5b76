"""Run the monthly pipeline for a list of months, in order, recorded in the Dagster instance."""

import time
from collections.abc import Sequence
from dataclasses import dataclass

from dagster import AssetKey, DagsterInstance, Definitions

from streamflow_assets.jobs import MONTHLY_PIPELINE


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
    return None if result.success else "run failed (see the Dagster UI)"


def run_month(
    defs: Definitions,
    instance: DagsterInstance,
    partition: str,
    assets: Sequence[str] | None = None,
) -> MonthOutcome:
    """Run the monthly pipeline for one month: every asset, or just `assets` (and their checks)."""
    job = defs.resolve_job_def(MONTHLY_PIPELINE)
    started = time.perf_counter()
    result = job.execute_in_process(
        partition_key=partition,
        instance=instance,
        asset_selection=[AssetKey(name) for name in assets] if assets else None,
        raise_on_error=False,
        # The one-line summary is the console output; every event stays in the instance and UI.
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
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


def run_months(
    partitions: list[str],
    defs: Definitions | None = None,
    instance: DagsterInstance | None = None,
    assets: Sequence[str] | None = None,
) -> list[MonthOutcome]:
    """Materialize each month in order; keep going past a failed month so every error shows.

    Runs are recorded in `instance`, by default the one under DAGSTER_HOME that the UI reads.
    """
    if defs is None:
        from streamflow_assets.definitions import defs
    if instance is not None:
        return [run_month(defs, instance, key, assets) for key in sorted(partitions)]
    with DagsterInstance.get() as instance:
        return [run_month(defs, instance, key, assets) for key in sorted(partitions)]
