"""The seed data contract: six CSVs per month, parsed strictly and validated with named errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

USER_ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
MAX_EXAMPLES = 5


class Kind(Enum):
    ID = "user id"
    DATE = "date (YYYY-MM-DD)"
    BOOL = "boolean (True/False)"
    NULLABLE_BOOL = "boolean (True/False, or empty)"
    INT = "integer"
    FLOAT = "number"
    CATEGORY = "category"


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    categories: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class SeedTable:
    """One CSV of a month folder and the snapshot table it becomes."""

    file: str
    snapshot: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _id() -> Column:
    return Column("user_id", Kind.ID)


def _count(name: str, max: float | None = None) -> Column:
    return Column(name, Kind.INT, min=0, max=max)


def _amount(name: str) -> Column:
    return Column(name, Kind.FLOAT, min=0)


STREAM_FLAGS = ("plan_stream_tv", "plan_stream_movies")

TABLES: tuple[SeedTable, ...] = (
    SeedTable(
        "users.csv",
        "users_snapshots",
        (
            _id(),
            Column("signup_date", Kind.DATE),
            Column("user_gender", Kind.CATEGORY, ("Female", "Male")),
            Column("user_is_senior", Kind.BOOL),
            Column("has_family", Kind.BOOL),
            Column("has_dependents", Kind.BOOL),
        ),
    ),
    SeedTable(
        "subscriptions.csv",
        "subscriptions_profile_snapshots",
        (
            _id(),
            _count("months_active", max=100),
            Column("plan_stream_tv", Kind.NULLABLE_BOOL),
            Column("plan_stream_movies", Kind.NULLABLE_BOOL),
            Column("contract_type", Kind.CATEGORY, ("Month-to-month", "One year", "Two year")),
            Column("paperless_billing", Kind.BOOL),
            _amount("monthly_fee"),
            _amount("total_paid"),
            Column("net_service", Kind.CATEGORY, ("DSL", "Fiber optic", "No")),
        ),
    ),
    SeedTable(
        "usage_agg_30d.csv",
        "usage_agg_30d_snapshots",
        (
            _id(),
            _amount("watch_hours_30d"),
            _amount("avg_session_mins_7d"),
            _count("unique_devices_30d"),
            _count("skips_7d"),
            _count("rebuffer_events_7d"),
        ),
    ),
    SeedTable(
        "payments_agg_90d.csv",
        "payments_agg_90d_snapshots",
        (_id(), _count("failed_payments_90d")),
    ),
    SeedTable(
        "support_agg_90d.csv",
        "support_agg_90d_snapshots",
        (_id(), _count("support_tickets_90d"), _amount("ticket_avg_resolution_hrs_90d")),
    ),
    SeedTable("labels.csv", "labels_snapshots", (_id(), Column("churn_label", Kind.BOOL))),
)
TABLES_BY_SNAPSHOT: dict[str, SeedTable] = {t.snapshot: t for t in TABLES}
USERS = TABLES[0]


@dataclass(frozen=True)
class Problem:
    """One broken rule, with the file, the column and a few offending rows."""

    file: str
    column: str | None
    message: str
    examples: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        where = f"{self.file}, column {self.column}" if self.column else self.file
        shown = f" (e.g. {'; '.join(self.examples)})" if self.examples else ""
        return f"{where}: {self.message}{shown}"


class SeedError(ValueError):
    """A month's seeds break the data contract; nothing of that month is written."""

    def __init__(self, folder: Path, problems: list[Problem]):
        self.folder = folder
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid seeds in {folder}:\n{lines}")


def _examples(df: pd.DataFrame, mask: pd.Series, column: str) -> tuple[str, ...]:
    # CSV line numbers: header is line 1, the first row line 2.
    rows = df.loc[mask.to_numpy()].head(MAX_EXAMPLES)
    ids = rows["user_id"] if "user_id" in rows else pd.Series("?", index=rows.index)
    return tuple(
        f"line {index + 2} user_id={uid!r} {column}={value!r}"
        for index, uid, value in zip(rows.index, ids, rows[column], strict=True)
    )


# Column-wide tests in pyarrow's C++ kernels: pandas' str.fullmatch and object isin call Python per
# row, which made them most of a million-user month's ingestion time.
def _fullmatch(text: pd.Series, pattern: str) -> pd.Series:
    """Whether each value matches `pattern` whole (RE2: `$` is the end of the text, no newline)."""
    matched = pc.match_substring_regex(_arrow_text(text), f"^(?:{pattern})$")
    return pd.Series(matched.to_numpy(zero_copy_only=False), index=text.index)


def _isin(values: pd.Series, allowed) -> pd.Series:
    """Whether each value is one of the texts `allowed`; a missing value never is."""
    try:
        arrow = pa.array(values.to_numpy(dtype=object, na_value=None), type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Not all text (a stored snapshot written by something else): pandas compares any type.
        return values.isin(list(allowed))
    found = pc.is_in(arrow, value_set=pa.array(list(allowed), type=pa.string()))
    return pd.Series(found.fill_null(False).to_numpy(zero_copy_only=False), index=values.index)


def _arrow_text(text: pd.Series) -> pa.Array:
    return pa.array(text.to_numpy(dtype=object), type=pa.string())


def _parse_column(
    raw: pd.DataFrame, col: Column, file: str
) -> tuple[pd.Series | None, Problem | None]:
    text = raw[col.name]
    if col.kind is Kind.ID:
        bad = ~_fullmatch(text, USER_ID_PATTERN)
        message = f"user_id must be 1-64 letters, digits, '-' or '_' (pattern {USER_ID_PATTERN})"
        return text, (
            Problem(file, col.name, message, _examples(raw, bad, col.name)) if bad.any() else None
        )
    if col.kind is Kind.BOOL:
        bad = ~_isin(text, ["True", "False"])
        parsed = text == "True"
    elif col.kind is Kind.NULLABLE_BOOL:
        # Empty stays missing: coercing it to False (or True) would invent a plan the user lacks.
        bad = ~_isin(text, ["True", "False", ""])
        parsed = (text == "True").astype("boolean").mask(text == "")
    elif col.kind is Kind.INT:
        # ASCII digits only (\d admits any Unicode digit), and at most 18 so it fits int64.
        bad = ~_fullmatch(text, r"-?[0-9]{1,18}")
        parsed = text.where(~bad, "0").astype(np.int64)
    elif col.kind is Kind.FLOAT:
        trimmed = pc.utf8_trim_whitespace(_arrow_text(text)).to_numpy(zero_copy_only=False)
        valid = pd.to_numeric(text, errors="coerce").notna() & (trimmed == text.to_numpy())
        # pd.to_numeric is not correctly rounded (1 ulp off for some long decimals); numpy's
        # conversion of the text is, so stored values equal the CSV's to the last bit.
        parsed = text.where(valid, "nan").astype(np.float64)
        bad = ~np.isfinite(parsed)
    elif col.kind is Kind.DATE:
        # strptime would also take 2022-2-5: insist on the zero-padded form of the contract.
        shaped = _fullmatch(text, r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
        parsed = pd.to_datetime(text.where(shaped, ""), format="%Y-%m-%d", errors="coerce").dt.date
        bad = parsed.isna()
    else:
        return text, None
    if bad.any():
        return None, Problem(
            file, col.name, f"not a valid {col.kind.value}", _examples(raw, bad, col.name)
        )
    return parsed, None


def find_problems(table: SeedTable, df: pd.DataFrame) -> list[Problem]:
    """Rules on typed values: keys, ranges, categories, nullable flags. Also run on stored data."""
    problems: list[Problem] = []
    file = table.file
    if df.empty:
        return [Problem(file, None, "no rows")]
    ids = df["user_id"]
    missing = ids.isna() | (ids.astype("string").str.len() == 0)
    if missing.any():
        problems.append(
            Problem(file, "user_id", "empty user_id", _examples(df, missing, "user_id"))
        )
    duplicated = ids.duplicated(keep=False) & ~missing
    if duplicated.any():
        problems.append(
            Problem(file, "user_id", "duplicate user_id", _examples(df, duplicated, "user_id"))
        )
    for col in table.columns:
        values = df[col.name]
        if col.kind is Kind.CATEGORY:
            unknown = ~_isin(values, col.categories)
            if unknown.any():
                message = f"unknown category, expected one of {list(col.categories)}"
                problems.append(Problem(file, col.name, message, _examples(df, unknown, col.name)))
        if col.kind is Kind.BOOL and values.isna().any():
            problems.append(
                Problem(file, col.name, "empty boolean", _examples(df, values.isna(), col.name))
            )
        if col.min is not None and (low := values < col.min).any():
            problems.append(
                Problem(file, col.name, f"below {col.min:g}", _examples(df, low, col.name))
            )
        if col.max is not None and (high := values > col.max).any():
            problems.append(
                Problem(file, col.name, f"above {col.max:g}", _examples(df, high, col.name))
            )
    if "net_service" in df:
        # An empty stream flag means "no internet service", never "unknown": it must agree.
        has_net = df["net_service"] != "No"
        for flag in STREAM_FLAGS:
            wrong = df[flag].isna() == has_net
            if wrong.any():
                message = "must be empty exactly where net_service is 'No'"
                problems.append(Problem(file, flag, message, _examples(df, wrong, flag)))
    return problems


_STORED_DTYPES = {
    Kind.ID: "object",
    Kind.CATEGORY: "object",
    Kind.DATE: "object",
    Kind.BOOL: "bool",
    Kind.NULLABLE_BOOL: "boolean",
    Kind.INT: "int64",
    Kind.FLOAT: "float64",
}


def stored_problems(table: SeedTable, df: pd.DataFrame) -> list[Problem]:
    """Whether a stored snapshot still has the contract's columns, types and rules."""
    file = table.snapshot
    expected = table.column_names
    actual = [c for c in df.columns if c != "as_of"]
    if actual != expected:
        return [Problem(file, None, f"columns are {actual}, expected {expected}")]
    wrong = [
        Problem(file, c.name, f"stored as {df[c.name].dtype}, expected {_STORED_DTYPES[c.kind]}")
        for c in table.columns
        if str(df[c.name].dtype) != _STORED_DTYPES[c.kind]
    ]
    return wrong or find_problems(table, df)


def cross_table_problems(frames: Mapping[str, pd.DataFrame]) -> list[Problem]:
    """Every user_id of a month's tables must exist in its users table."""
    known = frames[USERS.snapshot]["user_id"]
    problems = []
    for table in TABLES[1:]:
        df = frames.get(table.snapshot)
        if df is None:
            continue
        orphan = ~_isin(df["user_id"], known)
        if orphan.any():
            message = f"user_id not in {USERS.file}"
            problems.append(
                Problem(table.file, "user_id", message, _examples(df, orphan, "user_id"))
            )
    return problems


def parse_table(path: Path, table: SeedTable) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read one CSV as text and turn it into typed columns, collecting every problem found."""
    file = f"{path.parent.name}/{path.name}"
    if not path.is_file():
        return None, [Problem(file, None, "file is missing")]
    if path.stat().st_size == 0:
        return None, [Problem(file, None, "file is empty")]
    try:
        # Blank lines are read as empty rows and then dropped, so that the index of every row
        # that remains still gives its line in the file (index + 2) for error messages.
        raw = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=False, skip_blank_lines=False
        )
        raw = raw[~(raw == "").all(axis=1)]
    except pd.errors.EmptyDataError:
        return None, [Problem(file, None, "file is empty")]
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        return None, [Problem(file, None, f"not a readable CSV: {error}")]
    expected = table.column_names
    missing = [c for c in expected if c not in raw.columns]
    unexpected = [c for c in raw.columns if c not in expected]
    if missing or unexpected:
        return None, [Problem(file, c, "missing column") for c in missing] + [
            Problem(file, c, "unexpected column") for c in unexpected
        ]
    typed: dict[str, pd.Series] = {}
    problems: list[Problem] = []
    for col in table.columns:
        series, problem = _parse_column(raw, col, file)
        if problem:
            problems.append(problem)
        else:
            typed[col.name] = series
    if problems:
        return None, problems
    df = pd.DataFrame(typed, columns=expected)
    return df, find_problems(table, df)


def read_month(folder: Path) -> dict[str, pd.DataFrame]:
    """Parse and validate the six CSVs of one month folder, keyed by snapshot table name.

    Raises SeedError naming every broken file, column and example rows; returns nothing partial.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"no seeds folder for this month: looked for {folder}")
    frames: dict[str, pd.DataFrame] = {}
    problems: list[Problem] = []
    for table in TABLES:
        df, found = parse_table(folder / table.file, table)
        problems.extend(found)
        if df is not None:
            frames[table.snapshot] = df
    if USERS.snapshot in frames:
        problems.extend(cross_table_problems(frames))
    if problems:
        raise SeedError(folder, problems)
    return frames
