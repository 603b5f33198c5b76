"""Monitoring statistics: a month's features and scores, drift (Evidently), decay, retraining.

Pure logic: no Dagster. The drift tests are Evidently's, chosen by its default rule per column
type and size (Wasserstein / Jensen-Shannon above 1,000 rows, K-S / chi-square / Z below) with its
default thresholds; this module only assembles the columns and reads Evidently's verdicts back.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from streamflow.domain.features import (
    CATEGORICAL,
    FEATURE_NAMES,
    FEATURE_VIEWS,
    JOIN_KEY,
    NUMERIC,
    model_inputs,
    with_stored_dtypes,
)

# The incumbent's churn probability, judged beside the 14 features: a model's inputs can move in
# ways that cancel out, or barely move and still push its scores across the threshold.
SCORE_COLUMN = "incumbent_score"
DRIFT_COLUMNS = [*FEATURE_NAMES, SCORE_COLUMN]
DECISION_THRESHOLD = 0.5
SNAPSHOT_TABLES = [view.source_table for view in FEATURE_VIEWS]


def month_features(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Every user of a month's four feature snapshots with their 14 features, by user_id.

    These are the rows `online_features` writes for the month, so they are what /predict reads for
    it; typed as training stores them (`with_stored_dtypes`), so `model_inputs` treats them alike.
    """
    missing = [table for table in SNAPSHOT_TABLES if table not in frames]
    if missing:
        raise KeyError(f"feature snapshots missing: {missing}")
    # Aligned on the user_id index (unique per month by the snapshot contract): a fifth of the
    # time of chained outer merges, which factorize and sort the keys once per merge.
    parts = [
        frames[view.source_table].set_index(JOIN_KEY)[[f.name for f in view.features]]
        for view in FEATURE_VIEWS
    ]
    joined = pd.concat(parts, axis=1, join="outer").sort_index().rename_axis(JOIN_KEY)
    return with_stored_dtypes(joined.reset_index())


def typed_chunks(chunks: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Chunks of a month's joined features (`join_batches` of `features.FEATURE_COLUMNS`, in user_id
    order) typed as `month_features` types the whole month: its rows, chunk by chunk."""
    for chunk in chunks:
        yield with_stored_dtypes(chunk)


def drift_frame(features: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """The columns drift is measured on: the model's inputs (an empty flag is its category
    `missing`, as the model sees it) and the incumbent's score."""
    frame = pd.DataFrame(model_inputs(features))
    frame[SCORE_COLUMN] = np.asarray(scores, dtype=np.float64)
    return frame


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict: Evidently's test, its score (distance or p-value), threshold."""

    name: str
    statistic: str
    score: float | None
    threshold: float | None
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """Every column's verdict and the dataset's: drifted when the share reaches the threshold."""

    columns: tuple[ColumnDrift, ...]
    drift_share: float
    share_threshold: float
    reference_rows: int
    current_rows: int

    @property
    def dataset_drift(self) -> bool:
        return self.drift_share >= self.share_threshold

    @property
    def drifted(self) -> list[str]:
        return [c.name for c in self.columns if c.drifted]

    def as_dict(self) -> dict[str, Any]:
        return {
            "drift_share": self.drift_share,
            "share_threshold": self.share_threshold,
            "dataset_drift": self.dataset_drift,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "columns": {
                c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in self.columns
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftResult:
        return cls(
            columns=tuple(ColumnDrift(name, **facts) for name, facts in data["columns"].items()),
            drift_share=float(data["drift_share"]),
            share_threshold=float(data["share_threshold"]),
            reference_rows=int(data["reference_rows"]),
            current_rows=int(data["current_rows"]),
        )


def _all_missing(column: pd.Series) -> bool:
    return bool(column.isna().all() or (column.dtype == object and (column == "missing").all()))


# Rows per side Evidently tests: its time grows with the rows (two minutes for 100,000 users on
# two busy cores), while a distance between two distributions is as well estimated from a seeded
# uniform sample of this size; above 1,000 rows the tests it chooses are the same.
DRIFT_SAMPLE_ROWS = 20_000


def sample_chunks(
    chunks: Iterable[pd.DataFrame], rows: int = DRIFT_SAMPLE_ROWS
) -> tuple[pd.DataFrame, int]:
    """A seeded uniform sample of at most `rows` rows of the chunks, in their order, and how
    many rows there were; every row when there are no more. Only the sample and one chunk are
    held: each row draws a key from one seeded stream and the smallest keys stay, so the sample
    does not depend on how the rows were chunked."""
    keys = np.random.default_rng(0)
    kept: pd.DataFrame | None = None
    kept_keys = np.empty(0)
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        frame = chunk if kept is None else pd.concat([kept, chunk], ignore_index=True)
        kept_keys = np.concatenate([kept_keys, keys.random(len(chunk))])
        if len(frame) > rows:
            smallest = np.sort(np.argpartition(kept_keys, rows)[:rows])
            frame, kept_keys = frame.iloc[smallest].reset_index(drop=True), kept_keys[smallest]
        kept = frame
    if kept is None:
        raise ValueError("no rows to sample")
    return kept, seen


def drift_sample(frame: pd.DataFrame, rows: int = DRIFT_SAMPLE_ROWS) -> pd.DataFrame:
    """The seeded sample of at most `rows` rows that drift is measured on (taken before scoring,
    so only the sample is scored); `sample_chunks` of the frame whole."""
    return frame if len(frame) <= rows else sample_chunks([frame], rows)[0]


def import_evidently() -> None:
    """Evidently's import alone costs seconds of CPU: its legacy metrics, UI and plotting
    packages come with it, whatever is used (`drift_worker` runs it ahead of the step)."""
    import evidently.presets  # noqa: F401


def measure_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    share_threshold: float,
    sample_rows: int = DRIFT_SAMPLE_ROWS,
    rows: tuple[int, int] | None = None,
) -> tuple[DriftResult, str]:
    """Evidently's DataDriftPreset on `DRIFT_COLUMNS`: the result and the report as HTML.

    Each side is a seeded sample of at most `sample_rows` rows (`drift_sample`); `rows` are the
    months' own row counts when the sides were sampled already. A column without a single value
    on one side cannot be tested; it is reported as drifted (statistic `all values missing in
    …`), since a feature that lost every value has moved.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    rows = rows or (len(reference), len(current))
    reference, current = drift_sample(reference, sample_rows), drift_sample(current, sample_rows)

    empty = {
        name: side
        for name in DRIFT_COLUMNS
        for side, frame in (("current", current), ("reference", reference))
        if _all_missing(frame[name])
    }
    tested = [name for name in DRIFT_COLUMNS if name not in empty]
    numerical = [name for name in [*NUMERIC, SCORE_COLUMN] if name in tested]
    categorical = [name for name in CATEGORICAL if name in tested]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    report = Report(
        [DataDriftPreset(columns=tested, drift_share=share_threshold)], include_tests=True
    )
    with warnings.catch_warnings():
        # Constant columns (avg_session_mins_7d in the real seeds) make numpy divide by a zero std.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            Dataset.from_pandas(current[tested], data_definition=definition),
            Dataset.from_pandas(reference[tested], data_definition=definition),
        )
    outcome = snapshot.dict()
    failed = {
        test["metric_config"]["metric_id"] for test in outcome["tests"] if test["status"] == "FAIL"
    }
    verdicts: dict[str, ColumnDrift] = {}
    for metric in outcome["metrics"]:
        config = metric["config"]
        if not config["type"].endswith(":ValueDrift"):
            continue
        verdicts[config["column"]] = ColumnDrift(
            name=config["column"],
            statistic=config["method"],
            score=float(metric["value"]),
            threshold=float(config["threshold"]),
            drifted=metric["id"] in failed,
        )
    for name, side in empty.items():
        verdicts[name] = ColumnDrift(name, f"all values missing in {side}", None, None, True)
    columns = tuple(verdicts[name] for name in DRIFT_COLUMNS)
    result = DriftResult(
        columns=columns,
        drift_share=sum(c.drifted for c in columns) / len(columns),
        share_threshold=share_threshold,
        reference_rows=rows[0],
        current_rows=rows[1],
    )
    return result, snapshot.get_html_str(as_iframe=False)


def score_summary(probability: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Rows, mean probability, share predicted to churn and a histogram over [0, 1]."""
    probability = np.asarray(probability, dtype=np.float64)
    counts, edges = np.histogram(probability, bins=bins, range=(0.0, 1.0))
    return {
        "rows": int(len(probability)),
        "mean_probability": float(probability.mean()) if len(probability) else math.nan,
        "predicted_churn_share": (
            float((probability >= DECISION_THRESHOLD).mean()) if len(probability) else math.nan
        ),
        "histogram": [
            (f"{low:.1f}-{high:.1f}", int(n))
            for low, high, n in zip(edges[:-1], edges[1:], counts, strict=True)
        ],
    }


def performance(
    labels: np.ndarray, probability: np.ndarray, training_auc: float
) -> dict[str, float]:
    """How a model did on labels it never saw: AUC, F1/precision/recall at 0.5, Brier, decay.

    Decay is its own training (held-out) AUC minus this AUC: positive when it got worse.
    """
    # Imported by the step that scores: the code location loads this module, not scikit-learn.
    from sklearn.metrics import (
        brier_score_loss,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(labels, dtype=int)
    p = np.asarray(probability, dtype=np.float64)
    predicted = (p >= DECISION_THRESHOLD).astype(int)
    auc = float(roc_auc_score(y, p)) if len(set(y)) == 2 else math.nan
    return {
        "auc": auc,
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "brier": float(brier_score_loss(y, p)),
        "training_auc": float(training_auc),
        "decay": float(training_auc) - auc,
        "labelled_users": int(len(y)),
        "churn_rate": float(y.mean()) if len(y) else math.nan,
    }


class RetrainReason(StrEnum):
    """Why the retraining sensor asks for a new candidate (one run per month and reason)."""

    DRIFT = "drift"
    DECAY = "decay"
    CHAMPION_AGE = "champion_age"
    NO_CHAMPION = "no_champion"


def months_between(older: str, newer: str) -> int:
    """`2024-01`, `2024-04` -> 3."""
    (y1, m1), (y2, m2) = (map(int, key.split("-")) for key in (older, newer))
    return (y2 - y1) * 12 + m2 - m1


def retrain_reasons(
    *,
    partition: str,
    champion_partition: str | None,
    drift_share: float | None,
    drift_share_threshold: float,
    decay: float | None,
    max_auc_drop: float,
    max_age_months: int,
) -> list[RetrainReason]:
    """The evidence for retraining a month, from what its monitoring assets found.

    `drift_share` / `decay` are None when not measured yet (no reference, no labels); a decay
    that is NaN (one class only) is no evidence either way.
    """
    if champion_partition is None:
        return [RetrainReason.NO_CHAMPION]
    reasons = []
    if drift_share is not None and drift_share >= drift_share_threshold:
        reasons.append(RetrainReason.DRIFT)
    if decay is not None and not math.isnan(decay) and decay > max_auc_drop:
        reasons.append(RetrainReason.DECAY)
    if months_between(champion_partition, partition) > max_age_months:
        reasons.append(RetrainReason.CHAMPION_AGE)
    return reasons


def served_performance(
    served: pd.DataFrame, labels: pd.DataFrame | None, batch: pd.DataFrame | None
) -> dict[str, Any]:
    """What the API answered for a month's features, judged after the fact.

    `served`: the prediction log's rows for the month (`user_id`, `request_id`, `model_version`,
    `probability`, `prediction`, `stale`, `shadow_version`, `shadow_probability`); `labels`: the
    month's `user_id`, `churn_label`; `batch`: the month's `batch_scores` (`user_id`,
    `prediction`). Each served version (and the shadow) is judged on its latest answer per
    labelled user; the shadow and the version it shadowed on the same users.
    """
    if served.empty:
        return {"status": "no_traffic", "count": 0}
    summary: dict[str, Any] = {
        "status": "measured",
        "count": int(len(served)),
        "requests": int(served["request_id"].nunique()),
        "users": int(served[JOIN_KEY].nunique()),
        "stale_share": float(served["stale"].mean()),
        "labelled": labels is not None,
        "versions": {},
    }
    truth = None if labels is None else labels.set_index(JOIN_KEY)["churn_label"].astype(int)
    for version, answers in served.groupby("model_version", sort=True):
        facts: dict[str, Any] = {"count": int(len(answers))}
        if truth is not None:
            facts |= _judged(answers, "probability", truth)
        summary["versions"][str(version)] = facts
    if batch is not None and not batch.empty:
        batch_prediction = batch.set_index(JOIN_KEY)["prediction"]
        both = served[served[JOIN_KEY].isin(batch_prediction.index)]
        summary["batch_agreement"] = (
            float((both["prediction"].to_numpy() == batch_prediction.loc[both[JOIN_KEY]]).mean())
            if len(both)
            else None
        )
    shadowed = served[served["shadow_probability"].notna()]
    summary["shadow"] = None if shadowed.empty else _shadow_summary(shadowed, truth)
    return summary


def _judged(answers: pd.DataFrame, column: str, truth: pd.Series) -> dict[str, Any]:
    """AUC, F1 and Brier of `column` on each labelled user's latest answer."""
    latest = answers.drop_duplicates(JOIN_KEY, keep="last")
    labelled = latest[latest[JOIN_KEY].isin(truth.index)]
    if labelled.empty:
        return {"labelled_users": 0, "auc": None, "f1": None, "brier": None}
    scores = performance(
        truth.loc[labelled[JOIN_KEY]].to_numpy(), labelled[column].to_numpy(), math.nan
    )
    auc = scores["auc"]
    return {
        "labelled_users": int(len(labelled)),
        "auc": None if math.isnan(auc) else auc,
        "f1": scores["f1"],
        "brier": scores["brier"],
    }


def _shadow_summary(shadowed: pd.DataFrame, truth: pd.Series | None) -> dict[str, Any]:
    """The shadow against the served answers it shadowed: agreement, and both AUCs on the same
    labelled users."""
    shadow_prediction = (shadowed["shadow_probability"] >= DECISION_THRESHOLD).astype(int)
    facts: dict[str, Any] = {
        "versions": sorted(str(v) for v in shadowed["shadow_version"].unique()),
        "served_versions": sorted(str(v) for v in shadowed["model_version"].unique()),
        "count": int(len(shadowed)),
        "agreement": float((shadow_prediction == shadowed["prediction"]).mean()),
    }
    if truth is not None:
        facts["shadow"] = _judged(shadowed, "shadow_probability", truth)
        facts["served"] = _judged(shadowed, "probability", truth)
    return facts
