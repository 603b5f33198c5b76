"""Month partitions: keys, seed folder names, as_of dates, ranges and seeded folders."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from streamflow.domain import months


@pytest.mark.parametrize(
    ("key", "index", "folder"),
    [
        ("2024-01", 0, "month_000"),
        ("2024-02", 1, "month_001"),
        ("2024-12", 11, "month_011"),
        ("2025-01", 12, "month_012"),
        ("2032-04", 99, "month_099"),
    ],
    ids=lambda value: str(value),
)
def test_key_index_and_folder_agree(key: str, index: int, folder: str) -> None:
    assert months.month_index(key) == index
    assert months.partition_key(index) == key
    assert months.folder_name(key) == folder


def test_partition_key_and_month_index_are_inverse_over_ten_years() -> None:
    keys = [months.partition_key(i) for i in range(120)]
    assert [months.month_index(key) for key in keys] == list(range(120))
    assert keys == sorted(set(keys)), "keys must be distinct and in calendar order"


@pytest.mark.parametrize(
    ("key", "last_day"),
    [
        ("2024-01", date(2024, 1, 31)),
        ("2024-02", date(2024, 2, 29)),
        ("2025-02", date(2025, 2, 28)),
        ("2024-04", date(2024, 4, 30)),
        ("2024-12", date(2024, 12, 31)),
    ],
    ids=["january", "leap-february-2024", "february-2025", "april", "december"],
)
def test_as_of_is_midnight_utc_of_the_last_day(key: str, last_day: date) -> None:
    assert months.as_of_date(key) == last_day
    moment = months.as_of(key)
    assert moment == datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)
    assert (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0)
    assert months.key_for_as_of(moment) == key
    assert months.key_for_as_of(moment.date()) == key


@pytest.mark.parametrize(
    "text",
    [
        "2023-12",
        "2024-13",
        "2024-00",
        "2024-1",
        "24-01",
        "2024/01",
        "2024-01-31",
        "january",
        "",
        "2024-01\n",
    ],
    ids=lambda text: repr(text),
)
def test_month_index_rejects_what_is_not_a_partition_key(text: str) -> None:
    with pytest.raises(ValueError):
        months.month_index(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-02", ["2024-02"]),
        ("2024-01..2024-01", ["2024-01"]),
        ("2024-01..2024-03", ["2024-01", "2024-02", "2024-03"]),
        (" 2024-11 .. 2025-02 ", ["2024-11", "2024-12", "2025-01", "2025-02"]),
    ],
    ids=["single", "one-month-range", "range", "across-new-year-with-spaces"],
)
def test_parse_range(text: str, expected: list[str]) -> None:
    assert months.parse_range(text) == expected


@pytest.mark.parametrize(
    "text",
    ["2024-03..2024-01", "2024-01..", "..2024-02", "2024-01...2024-02", "2024-1..2024-2", "soon"],
    ids=["reversed", "no-end", "no-start", "three-dots", "unpadded", "not-a-month"],
)
def test_parse_range_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError):
        months.parse_range(text)


def test_parse_range_reversed_names_both_ends() -> None:
    with pytest.raises(ValueError, match="2024-01") as raised:
        months.parse_range("2024-03..2024-01")
    assert "2024-03" in str(raised.value)


def test_seeded_months_in_month_order_ignoring_other_entries(tmp_path: Path) -> None:
    for name in ["month_010", "month_000", "month_002", "month_1", "month_0003", "Month_004"]:
        (tmp_path / name).mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "month_005").write_text("a file, not a folder")
    (tmp_path / "month_006.zip").write_text("")
    assert months.seeded_months(tmp_path) == ["2024-01", "2024-03", "2024-11"]


def test_seeded_months_of_a_missing_or_empty_dir(tmp_path: Path) -> None:
    assert months.seeded_months(tmp_path / "nowhere") == []
    assert months.seeded_months(tmp_path) == []


def test_require_seeds_names_the_folder_of_every_month_without_seeds(tmp_path: Path) -> None:
    (tmp_path / "month_000").mkdir()
    (tmp_path / "month_001").write_text("a file, not a folder")
    months.require_seeds(tmp_path, ["2024-01"])
    months.require_seeds(tmp_path, [])
    with pytest.raises(months.MonthsNotSeeded) as raised:
        months.require_seeds(tmp_path, ["2024-01", "2024-02", "2024-03"])
    assert str(raised.value) == (
        f"no seeds for 2024-02: {tmp_path / 'month_001'} is not a folder; "
        f"no seeds for 2024-03: {tmp_path / 'month_002'} is not a folder"
    )
    assert isinstance(raised.value, ValueError), "a bad argument: the CLI exits 2 naming it"


def test_seeded_months_of_the_real_seeds(real_seeds: Path) -> None:
    assert months.seeded_months(real_seeds) == ["2024-01", "2024-02"]
