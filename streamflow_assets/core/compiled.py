"""The served form of a churn model: its preprocessing as arrays, its trees in ONNX (one thread).

scikit-learn's per-call overhead dwarfs one row's trees (milliseconds); onnxruntime runs the same
trees in microseconds with the same probabilities (checked at training, within 1e-5). The
Pipeline's one-hot encoding and median imputation are a few array operations, done here from
parameters stored in the ONNX file: the graph takes one float tensor, which onnxruntime accepts
at a third of the cost of fourteen named inputs, four of them strings (as versions compiled
before took them, and still do).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from streamflow_assets.core.features import (
    CATEGORICAL,
    FEATURE_NAMES,
    FEATURES,
    NUMERIC,
    ModelInput,
)

ONNX_FILE = "model.onnx"
# The ONNX metadata entry that holds the model's `Encoding`, as JSON.
ENCODING_KEY = "streamflow.encoding"


@dataclass(frozen=True)
class Encoding:
    """How `features.model_inputs` columns become the trees' input matrix, as the Pipeline did.

    Columns: each categorical feature one-hot over the categories seen in training (an unseen
    one is all zeros, as `handle_unknown="ignore"`), then the numeric features with a missing
    value replaced by the training median: the order of the Pipeline's ColumnTransformer.
    """

    categories: Mapping[str, Sequence[str]]
    medians: Mapping[str, float]

    def __post_init__(self) -> None:
        if list(self.categories) != CATEGORICAL or list(self.medians) != NUMERIC:
            raise ValueError(
                f"encoding of {[*self.categories, *self.medians]}; the model's features are "
                f"{CATEGORICAL + NUMERIC}"
            )

    @property
    def width(self) -> int:
        return sum(len(levels) for levels in self.categories.values()) + len(self.medians)

    # What the per-call work looks up or broadcasts against, built once.
    @cached_property
    def _levels(self) -> list[np.ndarray]:
        return [np.array(self.categories[name], dtype=object) for name in CATEGORICAL]

    @cached_property
    def _medians(self) -> np.ndarray:
        return np.array(list(self.medians.values()))

    @cached_property
    def _one_hot_column(self) -> dict[tuple[str, str], int]:
        columns = [(name, level) for name in CATEGORICAL for level in self.categories[name]]
        return {key: j for j, key in enumerate(columns)}

    def matrix(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """The (n, width) float32 input of the trees for n rows of model-input columns."""
        one_hot = [
            np.asarray(columns[name])[:, np.newaxis] == levels
            for name, levels in zip(CATEGORICAL, self._levels, strict=True)
        ]
        numbers = np.column_stack([np.asarray(columns[name]) for name in NUMERIC])
        imputed = np.where(np.isnan(numbers), self._medians, numbers)
        return np.hstack([*one_hot, imputed], dtype=np.float32)

    def vector(self, row: Mapping[str, ModelInput]) -> list[float]:
        """`matrix` of one `features.model_row`, in plain Python (the same numbers)."""
        vector = [0.0] * len(self._one_hot_column)
        for name in CATEGORICAL:
            column = self._one_hot_column.get((name, row[name]))
            if column is not None:
                vector[column] = 1.0
        for name, median in self.medians.items():
            value = row[name]
            vector.append(median if math.isnan(value) else value)
        return vector

    def to_json(self) -> str:
        return json.dumps({"categories": self.categories, "medians": self.medians})

    @classmethod
    def from_json(cls, text: str) -> Encoding:
        parsed = json.loads(text)
        return cls(parsed["categories"], parsed["medians"])


class CompiledModel:
    """An ONNX churn model: `predict_proba` of the churn class for model-input columns."""

    def __init__(self, onnx_bytes: bytes):
        # Imported with the first model: the code location imports this module's constants.
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One request, one thread: a pool per call costs more than the trees themselves.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            onnx_bytes, options, providers=["CPUExecutionProvider"]
        )
        stored = self._session.get_modelmeta().custom_metadata_map.get(ENCODING_KEY)
        inputs = self._session.get_inputs()
        self._output = self._session.get_outputs()[1].name
        if stored is None:
            # Compiled before the encoding moved out of the graph: the Pipeline whole, over the
            # features as fourteen named inputs. Registries hold such versions; they still serve.
            self.encoding = None
            names = sorted(tensor.name for tensor in inputs)
            if names != sorted(FEATURE_NAMES):
                raise ValueError(
                    f"the ONNX model takes {names}: neither one tensor with its "
                    f"{ENCODING_KEY!r} metadata nor the features {FEATURE_NAMES}"
                )
            return
        self.encoding = Encoding.from_json(stored)
        (tensor,) = inputs
        if tensor.shape[1] != self.encoding.width:
            raise ValueError(
                f"the ONNX model takes {tensor.shape[1]} columns, its encoding makes "
                f"{self.encoding.width}"
            )
        self._input = tensor.name

    def predict_proba(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.encoding is None:
            return self._run(_named_inputs(columns))
        return self._run({self._input: self.encoding.matrix(columns)})

    def predict_proba_row(self, row: Mapping[str, ModelInput]) -> float:
        """`predict_proba` of one `features.model_row`: a request's one user, without the arrays."""
        if self.encoding is None:
            return float(self.predict_proba({name: [value] for name, value in row.items()})[0])
        vector = np.array([self.encoding.vector(row)], dtype=np.float32)
        return float(self._run({self._input: vector})[0])

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        (probabilities,) = self._session.run([self._output], feed)
        return probabilities[:, 1]


def _named_inputs(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Model-input columns as the older graphs take them: one (n, 1) tensor per feature."""
    return {
        f.name: (
            np.asarray(columns[f.name], dtype=object)
            if f.categorical
            else np.asarray(columns[f.name], dtype=np.float32)
        ).reshape(-1, 1)
        for f in FEATURES
    }
