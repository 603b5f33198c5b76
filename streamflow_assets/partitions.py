"""The month partitions every StreamFlow asset shares: exactly the months that have seeds.

Dynamic partitions, which the Dagster instance holds: a month becomes a partition when its
`month_NNN/` seeds folder is found, so the UI's "Latest" and "Missing" only ever launch months a
run can read (a calendar, MonthlyPartitionsDefinition, would offer every month up to today,
seeded or not). Keys stay `YYYY-MM` (`streamflow.domain.months` maps them to folders and
as_of dates); nothing reads a partition's time window.

Every path that launches a month adds it first, through `add_seeded_months` (`streamflow
pipeline`, tests) or the request a sensor returns (`seeded_months_request`).
"""

from collections.abc import Iterable
from pathlib import Path

from dagster import AddDynamicPartitionsRequest, DagsterInstance, DynamicPartitionsDefinition

from streamflow.domain import months

MONTHS = "months"
monthly_partitions = DynamicPartitionsDefinition(name=MONTHS)


def unregistered_months(instance: DagsterInstance, seeds_dir: Path) -> list[str]:
    """The seeded months that are not partitions of `instance` yet, in month order."""
    known = set(instance.get_dynamic_partitions(MONTHS))
    return [key for key in months.seeded_months(seeds_dir) if key not in known]


def add_seeded_months(
    instance: DagsterInstance, seeds_dir: Path, to_run: Iterable[str] = ()
) -> list[str]:
    """Make every seeded month a partition of `instance`; return the months it added.

    Raises `months.MonthsNotSeeded`, naming their folders, when a month of `to_run` has no seeds:
    before any run, rather than a run that fails for want of them.
    """
    months.require_seeds(seeds_dir, to_run)
    new = unregistered_months(instance, seeds_dir)
    if new:
        # Dagster orders dynamic partitions as they were added: in month order, the last is the
        # newest ("Latest" in the launch dialog).
        instance.add_dynamic_partitions(MONTHS, new)
    return new


def seeded_months_request(
    instance: DagsterInstance, seeds_dir: Path
) -> list[AddDynamicPartitionsRequest]:
    """What a sensor returns to have the daemon add the seeded months (none when none are new);
    the tick records the months it added."""
    new = unregistered_months(instance, seeds_dir)
    return [monthly_partitions.build_add_request(new)] if new else []
