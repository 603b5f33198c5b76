"""Monthly partitions: `month_NNN` seed folders, partition keys (`2024-01`) and as_of dates."""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

FIRST_MONTH = date(2024, 1, 1)
_KEY = re.compile(r"([0-9]{4})-([0-9]{2})")
_FOLDER = re.compile(r"month_([0-9]{3})")


def _parse_key(key: str) -> tuple[int, int]:
    match = _KEY.fullmatch(key)
    if not match or not 1 <= int(match[2]) <= 12:
        raise ValueError(f"not a month partition key (YYYY-MM): {key!r}")
    return int(match[1]), int(match[2])


def month_index(key: str) -> int:
    """`2024-01` -> 0: the NNN of its seeds folder."""
    year, month = _parse_key(key)
    index = (year - FIRST_MONTH.year) * 12 + month - FIRST_MONTH.month
    if index < 0:
        raise ValueError(f"month {key} is before the first partition {partition_key(0)}")
    return index


def partition_key(index: int) -> str:
    year, month = divmod(FIRST_MONTH.month - 1 + index, 12)
    return f"{FIRST_MONTH.year + year:04d}-{month + 1:02d}"


def folder_name(key: str) -> str:
    return f"month_{month_index(key):03d}"


def as_of_date(key: str) -> date:
    """The snapshot date of a month: its last day."""
    year, month = _parse_key(key)
    return date(year, month, calendar.monthrange(year, month)[1])


def as_of(key: str) -> datetime:
    """The as_of of a month as the UTC timestamp Feast joins on (midnight of its last day)."""
    day = as_of_date(key)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def key_for_as_of(moment: datetime | date) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def seeded_months(seeds_dir: Path) -> list[str]:
    """Partition keys of every `month_NNN/` folder in a seeds dir, in month order."""
    if not seeds_dir.is_dir():
        return []
    indexes = sorted(
        int(match[1])
        for child in seeds_dir.iterdir()
        if child.is_dir() and (match := _FOLDER.fullmatch(child.name))
    )
    return [partition_key(i) for i in indexes]


class MonthsNotSeeded(ValueError):
    """Months asked for whose `month_NNN/` seeds folder is not in the seeds dir (a bad argument,
    as a bad month range is)."""


def require_seeds(seeds_dir: Path, keys: Iterable[str]) -> None:
    """Raise `MonthsNotSeeded` naming the folder of every month of `keys` that has no seeds."""
    missing = [key for key in keys if not (seeds_dir / folder_name(key)).is_dir()]
    if missing:
        raise MonthsNotSeeded(
            "; ".join(
                f"no seeds for {key}: {seeds_dir / folder_name(key)} is not a folder"
                for key in missing
            )
        )


def parse_range(text: str) -> list[str]:
    """`2024-01..2024-03` -> every month in between, inclusive; `2024-02` -> just that one."""
    first, sep, last = text.partition("..")
    start, end = month_index(first.strip()), month_index((last if sep else first).strip())
    if end < start:
        raise ValueError(f"empty month range {text!r}: {last} is before {first}")
    return [partition_key(i) for i in range(start, end + 1)]
