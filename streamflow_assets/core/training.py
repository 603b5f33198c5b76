"""The churn model: a scikit-learn Pipeline on the shared features, its split, metrics, plots."""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from streamflow_assets.core.compiled import ENCODING_KEY, CompiledModel, Encoding
from streamflow_assets.core.features import (
    CATEGORICAL,
    LABEL,
    NUMERIC,
    to_model_frame,
)

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


@dataclass(frozen=True)
class Split:
    x_train: pd.DataFrame
    x_val: pd.DataFrame
    y_train: np.ndarray
    y_val: np.ndarray


def split(dataset: pd.DataFrame, params: ModelParams) -> Split:
    """The deterministic held-out split of a month: the same rows every time it is asked for."""
    x = to_model_frame(dataset)
    y = dataset[LABEL].astype(int).to_numpy()
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=params.validation_size, stratify=y, random_state=params.random_state
    )
    return Split(x_train, x_val, y_train, y_val)


def metrics(y: np.ndarray, probability: np.ndarray) -> dict[str, float]:
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
    split: Split
    val_probability: np.ndarray
    metrics: dict[str, float]


def train(dataset: pd.DataFrame, params: ModelParams) -> TrainedModel:
    data = split(dataset, params)
    pipeline = build_pipeline(params)
    with one_thread():
        started = time.perf_counter()
        pipeline.fit(data.x_train, data.y_train)
        train_time = time.perf_counter() - started
        probability = pipeline.predict_proba(data.x_val)[:, 1]
    found = metrics(data.y_val, probability) | {"train_time_s": round(train_time, 3)}
    return TrainedModel(pipeline, data, probability, found)


def to_onnx(pipeline: Pipeline, check_on: pd.DataFrame) -> bytes:
    """The fitted Pipeline compiled to ONNX, refused unless it predicts `check_on` like sklearn.

    The graph holds the trees; the one-hot categories and imputation medians go in its metadata
    as the `Encoding` that `CompiledModel` applies (see `core/compiled.py`).
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
    onnx_bytes = compiled.SerializeToString()
    with one_thread():
        expected = pipeline.predict_proba(check_on)[:, 1]
    actual = CompiledModel(onnx_bytes).predict_proba(check_on)
    worst = float(np.max(np.abs(actual - expected))) if len(expected) else 0.0
    if worst > ONNX_TOLERANCE:
        raise ValueError(f"ONNX model strays {worst:.2e} from scikit-learn (> {ONNX_TOLERANCE})")
    return onnx_bytes


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def roc_curve_png(y: np.ndarray, probability: np.ndarray, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

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


def confusion_matrix_png(y: np.ndarray, probability: np.ndarray, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    matrix = confusion_matrix(y, (probability >= 0.5).astype(int), labels=[0, 1])
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
