"""The churn model: a scikit-learn Pipeline on the shared features, its split, metrics, plots."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from streamflow.domain.encoding import ENCODING_KEY, Encoding
from streamflow.domain.features import (
    CATEGORICAL,
    LABEL,
    NUMERIC,
    TIMESTAMP,
    ContentHash,
    to_model_frame,
)

# scikit-learn is imported by the functions that fit, split and score: the code location imports
# this module for ModelParams, and every idle Dagster process would otherwise hold scikit-learn.
if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# How far the compiled model's probabilities may stray from scikit-learn's (float32 thresholds).
ONNX_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ModelParams:
    """The recipe: histogram gradient-boosted trees on a stratified, seeded 75/25 split.

    Its size is max_iter trees of at most max_leaf_nodes leaves whatever the number of users, and
    fitting is linear in rows: at 1M users the 300-tree random forest it replaced took 17 minutes
    and 2 GB of artifacts a month. On the real seeds it ranks at least as well (2024-01 AUC 0.833
    against the forest's 0.823, 2024-02 0.661 against 0.661; bench/reports/scale.md).
    """

    learning_rate: float = 0.03
    max_iter: int = 200
    max_leaf_nodes: int = 8
    # Leaves of at least 200 users and an L2 penalty: the seeds' 5,000 training rows overfit
    # anything finer, and millions of rows lose nothing by it.
    min_samples_leaf: int = 200
    l2_regularization: float = 1.0
    class_weight: str | None = "balanced"
    random_state: int = 42
    validation_size: float = 0.25

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def build_pipeline(params: ModelParams) -> Pipeline:
    """One-hot categoricals (missing is a category of its own), median-imputed numbers, boosting."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    preprocess = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ("numeric", SimpleImputer(strategy="median"), NUMERIC),
        ]
    )
    classifier = HistGradientBoostingClassifier(
        learning_rate=params.learning_rate,
        max_iter=params.max_iter,
        max_leaf_nodes=params.max_leaf_nodes,
        min_samples_leaf=params.min_samples_leaf,
        l2_regularization=params.l2_regularization,
        class_weight=params.class_weight,
        random_state=params.random_state,
        # Every month fits the same number of trees: no internal split that would change with
        # the month's size and make the recipe depend on it.
        early_stopping=False,
    )
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


def one_thread() -> threadpool_limits:
    """Fit and score with one OpenMP thread, as a context manager.

    StreamFlow scales out by runs and steps (a backfill runs two months at once, a celery worker
    one step each); OpenMP threads on top of those oversubscribe the cores, and its idle threads
    spin: at 100k users a fit on a loaded 2-core machine took 103 s with them and 12 s without.
    """
    return threadpool_limits(limits=1, user_api="openmp")


# A month's training table, read again each time it is called, as chunks of rows in the stored
# order (`SnapshotStore.read_batches`): the month is streamed, never held whole.
Chunks = Callable[[], Iterable[pd.DataFrame]]


@dataclass(frozen=True)
class Split:
    """A month's rows by position in the stored order: those the fit takes, in the order it
    takes them, and the held-out ones; `train_rows` is the training side before the cap."""

    train: np.ndarray
    val: np.ndarray
    train_rows: int

    @property
    def capped(self) -> bool:
        return len(self.train) < self.train_rows


def split(labels: np.ndarray, params: ModelParams, max_rows: int | None = None) -> Split:
    """The deterministic held-out split of a month, and the fit's stratified sample of at most
    `max_rows` of the rest: the same rows every time they are asked for.

    The held-out side is the month's whole stratified `validation_size` share whatever the cap,
    so the promotion gate compares models on the same rows; the sample keeps the churn rate.
    """
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels, dtype=int)
    train, val = train_test_split(
        np.arange(len(y)),
        test_size=params.validation_size,
        stratify=y,
        random_state=params.random_state,
    )
    available = len(train)
    if max_rows is not None and available > max_rows:
        train, _ = train_test_split(
            train, train_size=max_rows, stratify=y[train], random_state=params.random_state
        )
    return Split(train, val, available)


def rows_at(chunks: Iterable[pd.DataFrame], positions: np.ndarray) -> Iterator[pd.DataFrame]:
    """The rows at `positions` of the concatenated chunks, chunk by chunk, in stored order."""
    wanted = np.sort(positions)
    start = 0
    for chunk in chunks:
        end = start + len(chunk)
        here = wanted[np.searchsorted(wanted, start) : np.searchsorted(wanted, end)]
        if len(here):
            yield chunk.iloc[here - start]
        start = end


def take(
    chunks: Iterable[pd.DataFrame],
    positions: np.ndarray,
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """The rows at `positions` of the concatenated chunks, in the order of `positions`; each
    chunk's rows through `prepare` before they are gathered (only what it keeps is held whole)."""
    parts = rows_at(chunks, positions)
    found = pd.concat(
        [prepare(part) for part in parts] if prepare else list(parts), ignore_index=True
    )
    return found.iloc[np.searchsorted(np.sort(positions), positions)].reset_index(drop=True)


def month_labels(chunks: Iterable[pd.DataFrame]) -> np.ndarray:
    """The label column of a month's training table (read alone: a byte a row)."""
    return np.concatenate([chunk[LABEL].astype(int).to_numpy() for chunk in chunks])


def score_rows(
    chunks: Iterable[pd.DataFrame],
    positions: np.ndarray,
    models: Sequence[Callable[[pd.DataFrame], np.ndarray]],
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The labels of the rows at `positions` and each model's churn probabilities of them (from
    `to_model_frame` rows), scored chunk by chunk; in stored order."""
    labels: list[np.ndarray] = []
    scores: list[list[np.ndarray]] = [[] for _ in models]
    for part in rows_at(chunks, positions):
        x = to_model_frame(part)
        labels.append(part[LABEL].astype(int).to_numpy())
        for found, model in zip(scores, models, strict=True):
            found.append(np.asarray(model(x), dtype=np.float64))
    return np.concatenate(labels), [np.concatenate(found) for found in scores]


def labels_and_hash(chunks: Iterable[pd.DataFrame]) -> tuple[np.ndarray, str]:
    """The label column of a month's training table, and the `ContentHash` of its rows (without
    as_of) that `training_dataset` recorded when it wrote them."""
    labels: list[np.ndarray] = []
    digest = ContentHash()
    for chunk in chunks:
        rows = chunk.drop(columns=[TIMESTAMP])
        digest.update(rows)
        labels.append(rows[LABEL].astype(int).to_numpy())
    if not labels:
        raise ValueError("the training table has no rows")
    return np.concatenate(labels), digest.hexdigest()


def metrics(y: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    predicted = (probability >= 0.5).astype(int)
    auc = roc_auc_score(y, probability) if len(np.unique(y)) == 2 else float("nan")
    return {
        "val_auc": float(auc),
        "val_f1": float(f1_score(y, predicted, zero_division=0)),
        "val_acc": float(accuracy_score(y, predicted)),
        "val_precision": float(precision_score(y, predicted, zero_division=0)),
        "val_recall": float(recall_score(y, predicted, zero_division=0)),
    }


@dataclass(frozen=True)
class TrainedModel:
    pipeline: Pipeline
    onnx: bytes
    split: Split
    y_val: np.ndarray
    val_probability: np.ndarray
    # The first held-out rows as the Pipeline takes them: MLflow's input example and signature.
    example: pd.DataFrame
    metrics: dict[str, float]


class Compiled(Protocol):
    """A compiled model as its runtime loads it (`adapters.onnx_model.CompiledModel`)."""

    def predict_proba(self, columns: Any) -> np.ndarray: ...


def train(
    chunks: Chunks,
    labels: np.ndarray,
    params: ModelParams,
    max_rows: int | None = None,
    *,
    load_compiled: Callable[[bytes], Compiled],
) -> TrainedModel:
    """Fit on the month's stratified sample of at most `max_rows` training rows, compile the fit
    to ONNX and score the held-out rows chunk by chunk with both: the month is read twice and
    only the sample is held whole. The compiled model, as `load_compiled` runs it, is refused
    unless it predicts every held-out row like scikit-learn (within `ONNX_TOLERANCE`)."""
    rows = split(labels, params, max_rows)
    x_train = take(chunks(), rows.train, to_model_frame)
    pipeline = build_pipeline(params)
    with one_thread():
        started = time.perf_counter()
        pipeline.fit(x_train, labels[rows.train].astype(int))
        train_time = time.perf_counter() - started
    del x_train
    onnx_bytes = to_onnx(pipeline)
    compiled = load_compiled(onnx_bytes)
    probabilities, held_out, worst = [], [], 0.0
    example = None
    for part in rows_at(chunks(), rows.val):
        x = to_model_frame(part)
        with one_thread():
            probability = pipeline.predict_proba(x)[:, 1]
        worst = max(worst, float(np.max(np.abs(compiled.predict_proba(x) - probability))))
        probabilities.append(probability)
        held_out.append(part[LABEL].astype(int).to_numpy())
        example = x.head(5) if example is None else example
    if worst > ONNX_TOLERANCE:
        raise ValueError(f"ONNX model strays {worst:.2e} from scikit-learn (> {ONNX_TOLERANCE})")
    y_val, val_probability = np.concatenate(held_out), np.concatenate(probabilities)
    found = metrics(y_val, val_probability) | {
        "train_time_s": round(train_time, 3),
        "train_sample_rows": len(rows.train),
    }
    return TrainedModel(pipeline, onnx_bytes, rows, y_val, val_probability, example, found)


def to_onnx(pipeline: Pipeline) -> bytes:
    """The fitted Pipeline compiled to ONNX (`train` checks it against scikit-learn).

    The graph holds the trees; the one-hot categories and imputation medians go in its metadata
    as the `Encoding` that the served model applies (`adapters/onnx_model.py`).
    """
    from onnx.helper import set_model_props
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    preprocess = pipeline.named_steps["preprocess"]
    encoder = preprocess.named_transformers_["categorical"]
    imputer = preprocess.named_transformers_["numeric"]
    encoding = Encoding(
        categories={
            name: [str(level) for level in levels]
            for name, levels in zip(CATEGORICAL, encoder.categories_, strict=True)
        },
        medians={name: float(m) for name, m in zip(NUMERIC, imputer.statistics_, strict=True)},
    )
    classifier = pipeline.named_steps["classifier"]
    compiled = convert_sklearn(
        classifier,
        initial_types=[("features", FloatTensorType([None, encoding.width]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
        # Plain probability tensors instead of a list of dicts per row.
        options={id(classifier): {"zipmap": False}},
    )
    set_model_props(compiled, {ENCODING_KEY: encoding.to_json()})
    return compiled.SerializeToString()


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def roc_curve_png(y: np.ndarray, probability: np.ndarray, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, probability)
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, probability):.3f}")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    axes.legend(loc="lower right")
    try:
        return _png(figure)
    finally:
        plt.close(figure)


def roc_curve_svg(y: np.ndarray, probability: np.ndarray, points: int = 41) -> str:
    """The ROC curve as a few hundred bytes of SVG: small enough for the Dagster UI to show it
    inline in the asset's metadata (it hides markdown of 1,000 characters or more)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, probability)
    grid = np.linspace(0.0, 1.0, points)
    # On a 100-unit square, y pointing down: whole units are finer than the 200-pixel image.
    rate = np.interp(grid, fpr, tpr)
    # From (0, 0): the grid's first point is the best rate at no false positive.
    curve = "0,100," + ",".join(
        f"{100 * x:.0f},{100 - 100 * y:.0f}" for x, y in zip(grid, rate, strict=True)
    )
    auc = roc_auc_score(y, probability)
    return (
        "<svg xmlns='http://www.w3.org/2000/svg' width='200' height='200' viewBox='-1 -1 102 102'>"
        "<rect width='100' height='100' fill='white' stroke='gray'/>"
        "<path d='M0,100L100,0' stroke='silver' stroke-dasharray='3'/>"
        f"<polyline points='{curve}' fill='none' stroke='#1f77b4' stroke-width='2'/>"
        "<text x='95' y='93' font-family='sans-serif' font-size='10' text-anchor='end'>"
        f"AUC {auc:.3f}</text>"
        "</svg>"
    )


def confusion_counts(y: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """[[stays kept, stays flagged], [churners missed, churners flagged]] at threshold 0.5."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y, (probability >= 0.5).astype(int), labels=[0, 1])


def confusion_matrix_png(y: np.ndarray, probability: np.ndarray, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    matrix = confusion_counts(y, probability)
    figure, axes = plt.subplots(figsize=(4, 4))
    axes.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        axes.text(col, row, str(count), ha="center", va="center")
    axes.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["stays", "churns"],
        yticklabels=["stays", "churns"],
        xlabel="predicted",
        ylabel="actual",
        title=title,
    )
    try:
        return _png(figure)
    finally:
        plt.close(figure)
