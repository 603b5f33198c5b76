"""The served form of a model: trees in ONNX, the Pipeline's encoding applied beside them."""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType

from streamflow_assets.core.compiled import ENCODING_KEY, CompiledModel, Encoding
from streamflow_assets.core.features import FEATURES, LABEL, model_inputs, model_row
from streamflow_assets.core.training import ModelParams, TrainedModel, to_onnx, train

ROWS = 600


def raw_features(rows: int, seed: int) -> dict[str, list]:
    """Raw feature values as Feast serves them, with empty values and categories of every kind."""
    rng = np.random.default_rng(seed)
    choices = {"Bool": [True, False, None], "String": ["DSL", "Fiber optic", "No", None]}
    raw: dict[str, list] = {}
    for f in FEATURES:
        if f.categorical:
            raw[f.name] = list(rng.choice(np.array(choices[f.dtype], dtype=object), rows))
        else:
            values = rng.integers(0, 100, rows).astype(float)
            values[rng.random(rows) < 0.1] = np.nan
            raw[f.name] = [
                None if np.isnan(v) else v + 0.15 * (f.dtype == "Float32") for v in values
            ]
    return raw


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    dataset = pd.DataFrame(raw_features(ROWS, seed=1))
    fee = dataset["monthly_fee"].fillna(50)
    dataset[LABEL] = (fee + 30 * (dataset["net_service"] == "Fiber optic") > 75).astype(int)
    return train(dataset, ModelParams(max_iter=20))


@pytest.fixture(scope="module")
def onnx_bytes(trained: TrainedModel) -> bytes:
    return to_onnx(trained.pipeline, trained.split.x_val)


def test_one_row_scores_as_its_row_in_a_batch(onnx_bytes: bytes) -> None:
    """/predict scores one user in plain Python, a batch as arrays: the same probabilities."""
    model = CompiledModel(onnx_bytes)
    raw = raw_features(200, seed=2)
    # A category the model never saw is all zeros, as with the Pipeline's handle_unknown.
    raw["net_service"][0] = "Satellite"
    batch = model.predict_proba(model_inputs(raw))
    for i in range(200):
        row = model_row({name: values[i] for name, values in raw.items()})
        assert model.predict_proba_row(row) == batch[i], i


def test_the_encoding_is_the_pipelines(onnx_bytes: bytes) -> None:
    encoding = CompiledModel(onnx_bytes).encoding
    assert set(encoding.categories["net_service"]) == {"DSL", "Fiber optic", "No", "missing"}
    assert set(encoding.categories["paperless_billing"]) == {"True", "False", "missing"}
    # 4 categorical features one-hot, 10 numeric: the Pipeline's ColumnTransformer order.
    assert encoding.width == 4 + 3 * 3 + 10


def test_a_version_compiled_before_the_encoding_still_serves(
    trained: TrainedModel, onnx_bytes: bytes
) -> None:
    """Registries hold versions whose graph is the whole Pipeline over fourteen named inputs."""
    inputs = [
        (f.name, StringTensorType([None, 1]) if f.categorical else FloatTensorType([None, 1]))
        for f in FEATURES
    ]
    classifier = trained.pipeline.named_steps["classifier"]
    older = convert_sklearn(
        trained.pipeline,
        initial_types=inputs,
        target_opset={"": 17, "ai.onnx.ml": 3},
        options={id(classifier): {"zipmap": False}},
    )
    legacy, current = CompiledModel(older.SerializeToString()), CompiledModel(onnx_bytes)
    assert legacy.encoding is None
    raw = raw_features(50, seed=3)
    columns = model_inputs(raw)
    np.testing.assert_allclose(
        legacy.predict_proba(columns), current.predict_proba(columns), atol=1e-6
    )
    row = model_row({name: values[0] for name, values in raw.items()})
    assert legacy.predict_proba_row(row) == pytest.approx(current.predict_proba_row(row), abs=1e-6)


def test_a_graph_of_one_tensor_without_its_encoding_is_refused_naming_it(onnx_bytes: bytes) -> None:
    model = onnx.load_from_string(onnx_bytes)
    del model.metadata_props[:]
    with pytest.raises(ValueError, match=f"takes \\['features'\\]: neither.*'{ENCODING_KEY}'"):
        CompiledModel(model.SerializeToString())


def test_an_encoding_of_other_features_is_refused() -> None:
    with pytest.raises(ValueError, match="the model's features are"):
        Encoding(categories={"plan": ["a"]}, medians={"fee": 1.0})
