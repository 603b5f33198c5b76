"""Real seeds vs synthetic seeds: per-column distributions, churn rates and a forest's ROC AUC."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from streamflow.ops.generator import TABLE_COLUMNS, generate_seeds

REAL_SEEDS = Path("/work/shared/seeds")
NOTES = """
Deliberate differences. The real `avg_session_mins_7d` is one constant (29.14...) in every row; the
generator gives it the same mean with a spread that follows watch hours. The real month_001 repeats
month_000's users and profiles unchanged (tenure does not advance, nobody leaves or joins) and draws
its labels from a different concept (a forest reaches only 0.63 AUC there); the generator ages its
users, accumulates total_paid, replaces departed churners with sign-ups and keeps a learnable label
whose dependence shifts gradually from profile towards usage. Real usage counts change only upwards
(increments) between the two months; the generator redraws weekly counts around persistent per-user
levels, with the same mean shift.
"""
NUMERIC = (
    "months_active",
    "monthly_fee",
    "total_paid",
    "watch_hours_30d",
    "avg_session_mins_7d",
    "unique_devices_30d",
    "skips_7d",
    "rebuffer_events_7d",
    "failed_payments_90d",
    "support_tickets_90d",
    "ticket_avg_resolution_hrs_90d",
)
CATEGORICAL = (
    "user_gender",
    "user_is_senior",
    "has_family",
    "has_dependents",
    "plan_stream_tv",
    "plan_stream_movies",
    "contract_type",
    "paperless_billing",
    "net_service",
    "churn_label",
)


def load_month(folder: Path) -> pd.DataFrame:
    """The six CSVs of one month joined on user_id, read as text so nothing is coerced."""
    frames = [
        pd.read_csv(folder / file, dtype=str, keep_default_na=False) for file in TABLE_COLUMNS
    ]
    merged = frames[0]
    for frame in frames[1:]:
        merged = merged.merge(frame, on="user_id", how="outer", validate="one_to_one")
    for column in NUMERIC:
        merged[column] = pd.to_numeric(merged[column])
    return merged


def forest_auc(month: pd.DataFrame) -> float:
    """ROC AUC of the reference forest on a stratified 75/25 split of one month."""
    features = month.drop(columns=["user_id", "signup_date", "churn_label"])
    # Text columns one-hot encode as-is, so an empty stream flag is its own category.
    encoded = pd.get_dummies(features, columns=[c for c in CATEGORICAL if c != "churn_label"])
    target = month["churn_label"].eq("True").astype(int)
    x_train, x_test, y_train, y_test = train_test_split(
        encoded.astype(float), target, test_size=0.25, stratify=target, random_state=42
    )
    forest = RandomForestClassifier(
        n_estimators=300, class_weight="balanced", random_state=42, n_jobs=-1
    )
    forest.fit(x_train, y_train)
    return float(roc_auc_score(y_test, forest.predict_proba(x_test)[:, 1]))


def _numeric_rows(real: pd.DataFrame, synthetic: pd.DataFrame, month: str) -> list[str]:
    rows = []
    for column in NUMERIC:
        cells = []
        for frame in (real, synthetic):
            values = frame[column]
            cells.append(
                f"{values.mean():.2f} / {values.std():.2f} / {values.median():.2f} / "
                f"{values.quantile(0.05):.2f}–{values.quantile(0.95):.2f}"
            )
        rows.append(f"| {month} | {column} | {cells[0]} | {cells[1]} |")
    return rows


def _shares(values: pd.Series) -> str:
    shares = values.replace("", "(empty)").value_counts(normalize=True).sort_index()
    return ", ".join(f"{name} {share:.3f}" for name, share in shares.items())


def _categorical_rows(real: pd.DataFrame, synthetic: pd.DataFrame, month: str) -> list[str]:
    return [
        f"| {month} | {column} | {_shares(real[column])} | {_shares(synthetic[column])} |"
        for column in CATEGORICAL
    ]


def _null_share(frame: pd.DataFrame) -> str:
    empty = frame.eq("").mean()
    return ", ".join(f"{c} {s:.3f}" for c, s in empty.items() if s > 0) or "none"


def compare(real_dir: Path, synthetic_dir: Path, months: int) -> str:
    lines = ["## Numeric columns (mean / std / p50 / p5–p95)", ""]
    lines += ["| month | column | real | synthetic |", "|---|---|---|---|"]
    pairs = []
    for month in range(months):
        folder = f"month_{month:03d}"
        pairs.append((load_month(real_dir / folder), load_month(synthetic_dir / folder)))
    for month, (real, synthetic) in enumerate(pairs):
        lines += _numeric_rows(real, synthetic, f"{month:03d}")
    lines += ["", "## Categorical and boolean columns (shares)", ""]
    lines += ["| month | column | real | synthetic |", "|---|---|---|---|"]
    for month, (real, synthetic) in enumerate(pairs):
        lines += _categorical_rows(real, synthetic, f"{month:03d}")
    lines += ["", "## Rows, empty cells, churn rate, forest ROC AUC", ""]
    lines += ["| month | measure | real | synthetic |", "|---|---|---|---|"]
    for month, (real, synthetic) in enumerate(pairs):
        m = f"{month:03d}"
        lines.append(f"| {m} | rows | {len(real):,} | {len(synthetic):,} |")
        lines.append(f"| {m} | empty share | {_null_share(real)} | {_null_share(synthetic)} |")
        churn = [f"{f['churn_label'].eq('True').mean():.4f}" for f in (real, synthetic)]
        lines.append(f"| {m} | churn rate | {churn[0]} | {churn[1]} |")
        auc = [f"{forest_auc(f):.4f}" for f in (real, synthetic)]
        lines.append(f"| {m} | RandomForest ROC AUC | {auc[0]} | {auc[1]} |")
    if months > 1:
        gone_new = []
        for before, after in (pair_months(pairs, 0), pair_months(pairs, 1)):
            ids = set(before["user_id"]), set(after["user_id"])
            gone_new.append(f"{len(ids[0] - ids[1]):,} / {len(ids[1] - ids[0]):,}")
        lines.append(f"| 001 | users gone / new since 000 | {gone_new[0]} | {gone_new[1]} |")
        lines += ["", "## What changes from month_000 to month_001 (users in both months)", ""]
        lines += [
            "| column | real: share changed, mean change | synthetic: share changed, mean change |",
            "|---|---|---|",
        ]
        changes = [_changes(*pair_months(pairs, side)) for side in (0, 1)]
        for column in changes[0]:
            lines.append(f"| {column} | {changes[0][column]} | {changes[1][column]} |")
    return "\n".join(lines)


def pair_months(
    pairs: list[tuple[pd.DataFrame, pd.DataFrame]], side: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(month_000, month_001) of the real (side 0) or synthetic (side 1) seeds."""
    return pairs[0][side], pairs[1][side]


def _changes(before: pd.DataFrame, after: pd.DataFrame) -> dict[str, str]:
    joined = before.merge(after, on="user_id", suffixes=("_0", "_1"))
    result = {}
    for column in before.columns.drop("user_id"):
        old, new = joined[f"{column}_0"], joined[f"{column}_1"]
        cell = f"{(old != new).mean():.3f}"
        if column in NUMERIC:
            cell += f", {(new - old).mean():+.3f}"
        result[column] = cell
    return result


def auc_spread(seeds: range, users: int) -> str:
    """month_000 churn rate and forest AUC of the synthetic seeds for several seeds."""
    cells = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            generate_seeds(Path(tmp), users, 1, seed)
            month = load_month(Path(tmp) / "month_000")
            rate = month["churn_label"].eq("True").mean()
            cells.append(f"seed {seed}: churn {rate:.3f}, AUC {forest_auc(month):.3f}")
    return "; ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real", type=Path, default=REAL_SEEDS)
    parser.add_argument("--users", type=int, default=7043)
    parser.add_argument("--months", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--spread", type=int, default=5, help="extra seeds for the AUC spread")
    parser.add_argument("--report", type=Path, help="also write the markdown here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        summary = generate_seeds(Path(tmp), args.users, args.months, args.seed)
        elapsed = time.perf_counter() - started
        header = [
            "# Synthetic seeds vs real seeds",
            "",
            f"`generate_seeds(users={args.users}, months={args.months}, seed={args.seed})` "
            f"in {elapsed:.2f} s against `{args.real}`. Forest: RandomForestClassifier(300 trees, "
            "class_weight='balanced', random_state=42) on a stratified 75/25 split, one-hot "
            "categoricals with empty stream flags as their own category.",
            "",
            "```",
            str(summary).replace(tmp, "a temp dir"),
            "```",
            "",
        ]
        report = "\n".join(header) + compare(args.real, Path(tmp), args.months) + "\n"
    if args.spread:
        spread = auc_spread(range(1, args.spread + 1), args.users)
        report += f"\nSynthetic month_000 over other seeds: {spread}.\n"
    report += NOTES
    print(report)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report)


if __name__ == "__main__":
    main()
