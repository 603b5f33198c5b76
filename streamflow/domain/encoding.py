"""How a churn model's inputs become the trees' input matrix, as its scikit-learn Pipeline did.

The Pipeline's one-hot encoding and median imputation are a few array operations, done from
parameters stored with the compiled model (`ENCODING_KEY` in its ONNX metadata): the trees then take
one float tensor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from streamflow.domain.features import CATEGORICAL, NUMERIC, ModelInput

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
