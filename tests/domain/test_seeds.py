"""The seed contract: the real months parse exactly, and every class of bad input is named."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamflow.domain.seeds import (
    STREAM_FLAGS,
    TABLES,
    TABLES_BY_SNAPSHOT,
    Kind,
    SeedError,
    iter_month,
    read_month,
)

SLICE_ROWS = 50
VHVEG = "7590-VHVEG"


@cache
def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def equals_csv_text(value: object, text: str, kind: Kind) -> bool:
    """Whether a parsed value is exactly what its CSV text says, read independently of pandas."""
    if kind is Kind.NULLABLE_BOOL and text == "":
        return value is pd.NA
    if kind in (Kind.BOOL, Kind.NULLABLE_BOOL):
        return isinstance(value, bool | np.bool_) and str(bool(value)) == text
    if kind is Kind.INT:
        return isinstance(value, int | np.integer) and int(value) == int(text)
    if kind is Kind.FLOAT:
        return isinstance(value, float) and value == float(text)
    if kind is Kind.DATE:
        return isinstance(value, date) and value.isoformat() == text
    return isinstance(value, str) and value == text


@pytest.fixture
def month_slice(copy_seeds: Callable[..., Path]) -> Path:
    """The first 50 rows of every CSV of the real month_000, as a writable month folder."""
    return copy_seeds("month_000", rows=SLICE_ROWS) / "month_000"


def test_the_slice_is_valid(month_slice: Path) -> None:
    frames = read_month(month_slice)
    assert {name: len(df) for name, df in frames.items()} == {
        t.snapshot: SLICE_ROWS for t in TABLES
    }


@pytest.mark.parametrize("month", ["month_000", "month_001"])
def test_real_month_parses_to_7043_rows_per_table(real_seeds: Path, month: str) -> None:
    frames = read_month(real_seeds / month)
    assert list(frames) == [t.snapshot for t in TABLES]
    for table in TABLES:
        df = frames[table.snapshot]
        assert list(df.columns) == table.column_names
        assert len(df) == 7043, table.snapshot
        assert df["user_id"].is_unique


def test_empty_stream_flags_stay_null(real_seeds: Path) -> None:
    subscriptions = read_month(real_seeds / "month_000")["subscriptions_profile_snapshots"]
    no_service = subscriptions["net_service"] == "No"
    assert no_service.sum() == 1526
    for flag in STREAM_FLAGS:
        values = subscriptions[flag]
        assert str(values.dtype) == "boolean", "nullable, never coerced to bool"
        assert values.isna().sum() == 1526
        assert (values.isna() == no_service).all(), "null exactly where net_service is 'No'"


def test_user_7590_vhveg_parses_to_its_csv_text(real_seeds: Path) -> None:
    frames = read_month(real_seeds / "month_000")
    for table in TABLES:
        rows = csv_rows(real_seeds / "month_000" / table.file)
        (text,) = [row for row in rows if row["user_id"] == VHVEG]
        df = frames[table.snapshot]
        (position,) = df.index[df["user_id"] == VHVEG]
        for column in table.columns:
            value = df[column.name].array[position]
            assert equals_csv_text(value, text[column.name], column.kind), (
                f"{table.file} {column.name}: parsed {value!r}, csv {text[column.name]!r}"
            )


@cache
def parsed_real_month(folder: Path) -> dict[str, pd.DataFrame]:
    """The real months are read only, so each is parsed once per session."""
    return read_month(folder)


def mismatches(seeds: Path, month: str, file: str, column: str) -> list[tuple[int, str, object]]:
    """(line, csv text, parsed value) of every value of a column that differs from its text."""
    table = next(t for t in TABLES if t.file == file)
    kind = next(c.kind for c in table.columns if c.name == column)
    values = parsed_real_month(seeds / month)[table.snapshot][column].array
    rows = csv_rows(seeds / month / file)
    return [
        (line, row[column], value)
        for line, row, value in zip(range(2, len(rows) + 2), rows, values, strict=True)
        if not equals_csv_text(value, row[column], kind)
    ]


COLUMNS = [pytest.param(t.file, c.name, id=f"{t.file}-{c.name}") for t in TABLES for c in t.columns]


@pytest.mark.parametrize("month", ["month_000", "month_001"])
@pytest.mark.parametrize(("file", "column"), COLUMNS)
def test_every_value_equals_its_csv_text(real_seeds: Path, month: str, file: str, column: str):
    wrong = mismatches(real_seeds, month, file, column)
    assert not wrong, f"{len(wrong)} values differ, e.g. {wrong[:3]}"


def test_missing_month_folder_names_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "seeds" / "month_007"
    with pytest.raises(FileNotFoundError, match="month_007") as raised:
        read_month(folder)
    assert str(folder) in str(raised.value)


@dataclass(frozen=True)
class Corruption:
    """One broken thing in one file; `apply` breaks it and returns what the error must show."""

    file: str
    column: str | None
    apply: Callable[[Path, Callable[..., object]], list[str]]


def set_value(
    column: str,
    value: str,
    where: Callable[[dict[str, str]], bool] | None = None,
    shows: str | None = "raw",
) -> Callable[[Path, Callable[..., object]], list[str]]:
    """Set one cell; the error must show its line, its user_id and (unless None) the value."""

    def apply(path: Path, edit_csv: Callable[..., object]) -> list[str]:
        cell = edit_csv(path, column, value, where)
        expected = [f"line {cell.line} ", f"user_id={cell.user_id!r}"]
        if shows is not None:
            expected.append(f"{column}={value!r}" if shows == "raw" else f"{column}={shows}")
        return expected

    return apply


def user(user_id: str) -> Callable[[dict[str, str]], bool]:
    return lambda cells: cells["user_id"] == user_id


def on(column: str, value: str) -> Callable[[dict[str, str]], bool]:
    return lambda cells: cells[column] == value


def rewrite(change: Callable[[list[str]], list[str]], *shows: str) -> Callable[..., list[str]]:
    """Rewrite the file's lines; the error must show the given fragments."""

    def apply(path: Path, _edit_csv: Callable[..., object]) -> list[str]:
        path.write_text("\n".join(change(path.read_text().split("\n"))))
        return list(shows)

    return apply


def delete(path: Path, _edit_csv: Callable[..., object]) -> list[str]:
    path.unlink()
    return ["missing"]


def drop_column(column: str) -> Callable[[list[str]], list[str]]:
    def change(lines: list[str]) -> list[str]:
        position = lines[0].split(",").index(column)
        return [
            ",".join(c for i, c in enumerate(line.split(",")) if i != position) if line else line
            for line in lines
        ]

    return change


def add_column(name: str) -> Callable[[list[str]], list[str]]:
    return lambda lines: (
        [lines[0] + f",{name}"] + [line + ",1" if line else line for line in lines[1:]]
    )


SUBS = "subscriptions.csv"
USERS = "users.csv"
USAGE = "usage_agg_30d.csv"
PAYMENTS = "payments_agg_90d.csv"
SUPPORT = "support_agg_90d.csv"
LABELS = "labels.csv"

CASES = [
    pytest.param(Corruption(SUBS, None, delete), id="missing-file"),
    pytest.param(Corruption(PAYMENTS, None, rewrite(lambda _: [], "empty")), id="empty-file"),
    pytest.param(
        Corruption(LABELS, None, rewrite(lambda lines: lines[:1] + [""], "no rows")),
        id="header-only-file",
    ),
    pytest.param(
        Corruption(USERS, None, rewrite(lambda lines: lines[:1], "no rows")),
        id="header-only-users-without-newline",
    ),
    pytest.param(
        Corruption(SUPPORT, None, rewrite(lambda _: ["", ""], "empty")),
        id="file-of-one-blank-line",
    ),
    pytest.param(
        Corruption(SUPPORT, "user_id", rewrite(lambda _: ["   ", "", ""], "missing")),
        id="file-of-blank-lines",
    ),
    pytest.param(
        Corruption(SUBS, "monthly_fee", rewrite(drop_column("monthly_fee"))), id="missing-column"
    ),
    pytest.param(
        Corruption(USERS, "user_id", rewrite(drop_column("user_id"))), id="missing-user-id-column"
    ),
    pytest.param(
        Corruption(USAGE, "discount", rewrite(add_column("discount"))), id="unexpected-column"
    ),
    pytest.param(
        Corruption(SUBS, "months_active", set_value("months_active", "twelve", user("3668-QPYBK"))),
        id="int-as-word",
    ),
    pytest.param(
        Corruption(USAGE, "skips_7d", set_value("skips_7d", "1.5", user("9237-HQITU"))),
        id="int-as-decimal",
    ),
    pytest.param(
        Corruption(
            PAYMENTS,
            "failed_payments_90d",
            set_value("failed_payments_90d", "", user("7795-CFOCW")),
        ),
        id="int-empty",
    ),
    pytest.param(
        Corruption(
            PAYMENTS,
            "failed_payments_90d",
            set_value("failed_payments_90d", "\u0663", user("7795-CFOCW")),
        ),
        id="int-as-arabic-indic-digit",
    ),
    pytest.param(
        Corruption(
            USAGE, "skips_7d", set_value("skips_7d", "99999999999999999999", user("9237-HQITU"))
        ),
        id="int-beyond-int64",
    ),
    pytest.param(
        Corruption(SUBS, "monthly_fee", set_value("monthly_fee", "abc", user("1452-KIOVK"))),
        id="float-as-word",
    ),
    pytest.param(
        Corruption(SUBS, "total_paid", set_value("total_paid", "", user("6713-OKOMC"))),
        id="float-empty",
    ),
    pytest.param(
        Corruption(
            SUPPORT,
            "ticket_avg_resolution_hrs_90d",
            set_value("ticket_avg_resolution_hrs_90d", "nan", user("7892-POOKP")),
        ),
        id="float-nan",
    ),
    pytest.param(
        Corruption(
            USAGE, "watch_hours_30d", set_value("watch_hours_30d", "inf", user("6388-TABGU"))
        ),
        id="float-inf",
    ),
    pytest.param(
        Corruption(USERS, "has_family", set_value("has_family", "maybe", user("9305-CDSKC"))),
        id="bool-as-word",
    ),
    pytest.param(
        Corruption(
            USERS, "user_is_senior", set_value("user_is_senior", "true", user("5575-GNVDE"))
        ),
        id="bool-lowercase-true",
    ),
    pytest.param(
        Corruption(LABELS, "churn_label", set_value("churn_label", "yes", user("9763-GRSKD"))),
        id="bool-yes",
    ),
    pytest.param(
        Corruption(
            SUBS, "paperless_billing", set_value("paperless_billing", "1", user("9305-CDSKC"))
        ),
        id="bool-one",
    ),
    pytest.param(
        Corruption(LABELS, "churn_label", set_value("churn_label", "", user("3668-QPYBK"))),
        id="bool-empty",
    ),
    pytest.param(
        Corruption(SUBS, "plan_stream_tv", set_value("plan_stream_tv", "yes", user("9305-CDSKC"))),
        id="nullable-bool-yes",
    ),
    pytest.param(
        Corruption(
            USERS, "signup_date", set_value("signup_date", "05/02/2022", user("7795-CFOCW"))
        ),
        id="date-day-first",
    ),
    pytest.param(
        Corruption(
            USERS, "signup_date", set_value("signup_date", "2022-02-30", user("1452-KIOVK"))
        ),
        id="date-impossible-day",
    ),
    pytest.param(
        Corruption(USERS, "signup_date", set_value("signup_date", "", user("6713-OKOMC"))),
        id="date-empty",
    ),
    pytest.param(
        Corruption(USERS, "signup_date", set_value("signup_date", "2022-2-5", user("7892-POOKP"))),
        id="date-not-zero-padded",
    ),
    pytest.param(
        Corruption(USERS, "user_id", set_value("user_id", "", user("9237-HQITU"))),
        id="empty-user-id",
    ),
    pytest.param(
        Corruption(SUBS, "user_id", set_value("user_id", "", user("9237-HQITU"))),
        id="empty-user-id-in-subscriptions",
    ),
    pytest.param(
        Corruption(USERS, "user_id", set_value("user_id", "7590 VHVEG", user("7590-VHVEG"))),
        id="user-id-with-space",
    ),
    pytest.param(
        Corruption(LABELS, "user_id", set_value("user_id", "7590/VHVEG", user("7590-VHVEG"))),
        id="user-id-with-slash",
    ),
    pytest.param(
        Corruption(USAGE, "user_id", set_value("user_id", "A" * 65, user("6388-TABGU"))),
        id="user-id-of-65-chars",
    ),
    pytest.param(
        Corruption(SUBS, "user_id", set_value("user_id", "5575-GNVDE", user("3668-QPYBK"))),
        id="duplicate-user-id",
    ),
    pytest.param(
        Corruption(USERS, "user_id", set_value("user_id", "7590-VHVEG", user("9763-GRSKD"))),
        id="duplicate-user-id-in-users",
    ),
    pytest.param(
        Corruption(
            SUBS, "monthly_fee", set_value("monthly_fee", "-1.5", user("7892-POOKP"), shows="-1.5")
        ),
        id="negative-fee",
    ),
    pytest.param(
        Corruption(
            SUBS, "total_paid", set_value("total_paid", "-0.01", user("6388-TABGU"), shows="-0.01")
        ),
        id="negative-total-paid",
    ),
    pytest.param(
        Corruption(
            SUPPORT,
            "support_tickets_90d",
            set_value("support_tickets_90d", "-1", user("9305-CDSKC"), shows="-1"),
        ),
        id="negative-count",
    ),
    pytest.param(
        Corruption(
            USAGE,
            "avg_session_mins_7d",
            set_value("avg_session_mins_7d", "-3.0", user("1452-KIOVK"), shows="-3.0"),
        ),
        id="negative-minutes",
    ),
    pytest.param(
        Corruption(
            SUBS,
            "months_active",
            set_value("months_active", "101", user("5575-GNVDE"), shows="101"),
        ),
        id="months-active-above-100",
    ),
    pytest.param(
        Corruption(SUBS, "contract_type", set_value("contract_type", "Weekly", user("9237-HQITU"))),
        id="unknown-contract-type",
    ),
    pytest.param(
        Corruption(SUBS, "net_service", set_value("net_service", "Satellite", user("6713-OKOMC"))),
        id="unknown-net-service",
    ),
    pytest.param(
        Corruption(USERS, "user_gender", set_value("user_gender", "female", user("7590-VHVEG"))),
        id="unknown-user-gender",
    ),
    pytest.param(
        Corruption(
            SUBS,
            "plan_stream_tv",
            set_value("plan_stream_tv", "", on("net_service", "DSL"), shows="<NA>"),
        ),
        id="empty-stream-flag-with-service",
    ),
    pytest.param(
        Corruption(
            SUBS,
            "plan_stream_movies",
            set_value("plan_stream_movies", "False", on("net_service", "No"), shows=None),
        ),
        id="filled-stream-flag-without-service",
    ),
    pytest.param(
        Corruption(SUBS, "user_id", set_value("user_id", "0000-NOBODY", user("9305-CDSKC"))),
        id="user-id-not-in-users",
    ),
    pytest.param(
        Corruption(LABELS, "user_id", set_value("user_id", "0000-NOBODY", user("7795-CFOCW"))),
        id="label-for-unknown-user",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_naming_file_column_and_example(
    month_slice: Path, edit_csv: Callable[..., object], case: Corruption
) -> None:
    expected = case.apply(month_slice / case.file, edit_csv)
    with pytest.raises(SeedError) as raised:
        read_month(month_slice)
    error = raised.value
    message = str(error)
    assert str(month_slice) in message
    named = [
        str(p) for p in error.problems if p.file.endswith(case.file) and p.column == case.column
    ]
    assert named, f"no problem for {case.file} column {case.column} in:\n{message}"
    for text in named:
        assert text in message
        assert case.file in text
        if case.column:
            assert f"column {case.column}" in text
    for fragment in expected:
        assert any(fragment in text for text in named), f"{fragment!r} not in {named}"


def test_every_broken_file_is_reported_at_once(month_slice: Path, edit_csv) -> None:
    edit_csv(month_slice / USAGE, "skips_7d", "-4", user("5575-GNVDE"))
    edit_csv(month_slice / LABELS, "churn_label", "no", user("9237-HQITU"))
    (month_slice / PAYMENTS).unlink()
    with pytest.raises(SeedError) as raised:
        read_month(month_slice)
    assert {(p.file.rsplit("/")[-1], p.column) for p in raised.value.problems} == {
        (USAGE, "skips_7d"),
        (LABELS, "churn_label"),
        (PAYMENTS, None),
    }


def test_examples_show_at_most_five_rows(month_slice: Path) -> None:
    path = month_slice / LABELS
    rewrite(lambda lines: [lines[0]] + [line.replace("False", "no") for line in lines[1:]])(
        path, None
    )
    with pytest.raises(SeedError) as raised:
        read_month(month_slice)
    (problem,) = raised.value.problems
    assert len(problem.examples) == 5
    assert problem.examples[0].startswith("line ")


def test_example_line_numbers_count_blank_lines(month_slice: Path, edit_csv) -> None:
    path = month_slice / SUBS
    cell = edit_csv(path, "monthly_fee", "-2.0", user("9305-CDSKC"))
    lines = path.read_text().split("\n")
    path.write_text("\n".join([*lines[:3], "", *lines[3:]]))
    with pytest.raises(SeedError) as raised:
        read_month(month_slice)
    (problem,) = raised.value.problems
    assert problem.examples[0].startswith(f"line {cell.line + 1} "), problem.examples


@pytest.mark.parametrize(
    ("file", "column", "value"),
    [
        (SUBS, "months_active", "100"),
        (SUBS, "months_active", "0"),
        (SUBS, "monthly_fee", "0"),
        (USAGE, "watch_hours_30d", "1e2"),
        (PAYMENTS, "failed_payments_90d", "0"),
    ],
    ids=["months-active-100", "months-active-0", "fee-0", "float-exponent", "zero-count"],
)
def test_values_on_the_edge_of_the_rules_are_accepted(
    month_slice: Path, edit_csv, file: str, column: str, value: str
) -> None:
    edit_csv(month_slice / file, column, value, user("3668-QPYBK"))
    frames = read_month(month_slice)
    snapshot = next(t.snapshot for t in TABLES if t.file == file)
    stored = frames[snapshot].set_index("user_id").loc["3668-QPYBK", column]
    assert stored == float(value)


@pytest.mark.parametrize(
    "new_id", ["A" * 64, "user_1-b", "x"], ids=["64-chars", "underscore-and-dash", "one-char"]
)
def test_any_valid_user_id_is_accepted_in_every_table(
    month_slice: Path, edit_csv, new_id: str
) -> None:
    for table in TABLES:
        edit_csv(month_slice / table.file, "user_id", new_id, user("6713-OKOMC"))
    frames = read_month(month_slice)
    for table in TABLES:
        assert new_id in set(frames[table.snapshot]["user_id"]), table.file


def test_a_user_without_a_subscription_row_is_allowed(month_slice: Path) -> None:
    path = month_slice / SUBS
    path.write_text(
        "\n".join(line for line in path.read_text().split("\n") if "5575-GNVDE" not in line)
    )
    frames = read_month(month_slice)
    assert len(frames["subscriptions_profile_snapshots"]) == SLICE_ROWS - 1
    assert len(frames["users_snapshots"]) == SLICE_ROWS


def test_tables_by_snapshot_covers_the_six_files() -> None:
    assert sorted(t.file for t in TABLES_BY_SNAPSHOT.values()) == sorted(
        [USERS, SUBS, USAGE, PAYMENTS, SUPPORT, LABELS]
    )


def test_a_month_streams_in_chunks_and_fails_after_the_last_file(
    month_slice: Path, edit_csv
) -> None:
    edit_csv(month_slice / LABELS, "churn_label", "no", user("9237-HQITU"))
    tables = iter_month(month_slice, rows=20)
    # The first chunk comes before the rest of its file and the later files are read.
    first, chunks = next(tables)
    assert first == "users_snapshots" and len(next(chunks)) == 20
    (month_slice / USAGE).unlink()
    with pytest.raises(SeedError) as raised:
        for _, rest in tables:
            list(rest)
    assert {(p.file.rsplit("/")[-1], p.column) for p in raised.value.problems} == {
        (USAGE, None),
        (LABELS, "churn_label"),
    }


def test_the_month_in_chunks_is_the_month_whole(month_slice: Path) -> None:
    chunked = {name: pd.concat(list(chunks)) for name, chunks in iter_month(month_slice, rows=7)}
    whole = read_month(month_slice)
    assert list(chunked) == list(whole)
    for name, df in whole.items():
        pd.testing.assert_frame_equal(chunked[name], df, check_exact=True)


def append_row(path: Path, row: str) -> int:
    """Adds a line at the end of a CSV; returns its line number."""
    text = path.read_text()
    path.write_text(text + row + "\n")
    return text.count("\n") + 1


def test_rules_of_a_whole_file_hold_across_chunks(month_slice: Path) -> None:
    """A user_id repeated in another chunk, an unknown user in a later chunk of another file,
    and the problems of two chunks merged into one with their examples, line numbers right."""
    payments = (month_slice / PAYMENTS).read_text().splitlines()
    first = payments[1]
    repeated = append_row(month_slice / PAYMENTS, first)
    support = (month_slice / SUPPORT).read_text().splitlines()[1].split(",")
    unknown = append_row(month_slice / SUPPORT, ",".join(["0000-NOONE", *support[1:]]))
    with pytest.raises(SeedError) as raised:
        read_month_in_chunks(month_slice, rows=10)
    problems = {(p.file, p.column, p.message): p for p in raised.value.problems}
    uid = first.split(",")[0]
    duplicate = problems[(PAYMENTS, "user_id", "duplicate user_id")]
    assert duplicate.examples == (
        f"line 2 user_id={uid!r} user_id={uid!r}",
        f"line {repeated} user_id={uid!r} user_id={uid!r}",
    )
    orphan = problems[(SUPPORT, "user_id", f"user_id not in {USERS}")]
    assert orphan.examples == (f"line {unknown} user_id='0000-NOONE' user_id='0000-NOONE'",)


def test_a_problem_in_many_chunks_is_named_once_with_the_first_examples(
    month_slice: Path, edit_csv
) -> None:
    for uid in [r["user_id"] for r in csv_rows(month_slice / USAGE)][::6]:
        edit_csv(month_slice / USAGE, "skips_7d", "-1", user(uid))
    with pytest.raises(SeedError) as raised:
        read_month_in_chunks(month_slice, rows=5)
    (below,) = [p for p in raised.value.problems if p.column == "skips_7d"]
    assert below.message == "below 0" and len(below.examples) == 5
    assert [e.split()[1] for e in below.examples] == ["2", "8", "14", "20", "26"]


def read_month_in_chunks(folder: Path, rows: int) -> None:
    for _, chunks in iter_month(folder, rows=rows):
        list(chunks)
