"""The served form of a churn model: its preprocessing as arrays, its trees in ONNX (one thread).

scikit-learn's per-call overhead dwarfs one row's trees (milliseconds); onnxruntime runs the same
trees in microseconds with the same probabilities (checked at training, within 1e-5). The
Pipeline's one-hot encoding and median imputation are a few array operations, done here from
parameters stored in the ONNX file: the graph takes one float tensor, which onnxruntime accepts
at a third of the cost of fourteen named inputs, four of them strings (as versions compiled
before took them, and still do).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from streamflow.domain.encoding import ENCODING_KEY, Encoding
from streamflow.domain.features import FEATURE_NAMES, FEATURES, ModelInput

ONNX_FILE = "model.onnx"


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
