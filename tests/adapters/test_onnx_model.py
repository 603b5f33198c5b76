"""The fit on a capped sample of a month read in chunks, and its served form: trees in ONNX,
the Pipeline's encoding applied beside them."""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.model_selection import train_test_split

from streamflow.adapters.onnx_model import CompiledModel
from streamflow.domain.encoding import ENCODING_KEY, Encoding
from streamflow.domain.features import (
    FEATURES,
    LABEL,
    model_inputs,
    model_row,
    to_model_frame,
)
from streamflow.domain.training import (
    ModelParams,
    TrainedModel,
    build_pipeline,
    labels_and_hash,
    one_thread,
    score_rows,
    split,
    take,
    train,
)

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
    return train(
        lambda: [dataset],
        dataset[LABEL].to_numpy(),
        ModelParams(max_iter=20),
        load_compiled=CompiledModel,
    )


@pytest.fixture(scope="module")
def onnx_bytes(trained: TrainedModel) -> bytes:
    return trained.onnx


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


def test_the_fit_takes_a_stratified_sample_of_at_most_the_cap() -> None:
    y = (np.random.default_rng(4).random(20_000) < 0.27).astype(int)
    params = ModelParams()
    whole, capped = split(y, params), split(y, params, max_rows=3_000)
    assert len(whole.train) == capped.train_rows == 15_000 and not whole.capped
    assert len(capped.train) == 3_000 and capped.capped
    assert set(capped.train) <= set(whole.train)
    # Stratified: the sample keeps the training rows' churn rate to one row.
    assert abs(y[capped.train].sum() - y[whole.train].mean() * 3_000) <= 1
    # The held-out rows are the month's whatever the cap, and every draw is the same.
    np.testing.assert_array_equal(capped.val, whole.val)
    np.testing.assert_array_equal(capped.train, split(y, params, max_rows=3_000).train)


def _dataset(rows: int) -> pd.DataFrame:
    dataset = pd.DataFrame(raw_features(rows, seed=5))
    fee = dataset["monthly_fee"].fillna(50)
    dataset[LABEL] = (fee + 30 * (dataset["net_service"] == "Fiber optic") > 75).astype(int)
    return dataset


def _chunked(dataset: pd.DataFrame, rows: int):
    return lambda: (dataset.iloc[i : i + rows] for i in range(0, len(dataset), rows))


def test_training_on_chunks_is_training_on_the_whole_month() -> None:
    """The sample and the held-out rows are gathered chunk by chunk, in the split's order."""
    dataset = _dataset(2_000)
    labels, params = dataset[LABEL].to_numpy(), ModelParams(max_iter=10)
    whole = train(lambda: [dataset], labels, params, max_rows=1_000, load_compiled=CompiledModel)
    chunked = train(
        _chunked(dataset, 170), labels, params, max_rows=1_000, load_compiled=CompiledModel
    )
    assert chunked.metrics["train_sample_rows"] == 1_000
    np.testing.assert_array_equal(chunked.val_probability, whole.val_probability)
    # What train_test_split gives for the held-out rows of the frame, in stored order.
    expected = dataset.iloc[np.sort(whole.split.val)][LABEL].to_numpy()
    np.testing.assert_array_equal(chunked.y_val, expected)


def test_an_uncapped_fit_on_chunks_is_the_fit_on_the_split_frame() -> None:
    """Below the cap the model is the one fitted before chunks: train_test_split of the month
    as one frame, the fit on its training side in its order."""
    dataset = _dataset(2_000)
    labels, params = dataset[LABEL].to_numpy(), ModelParams(max_iter=10)
    x_train, x_val, y_train, _ = train_test_split(
        to_model_frame(dataset), labels, test_size=0.25, stratify=labels, random_state=42
    )
    with one_thread():
        pipeline = build_pipeline(params).fit(x_train, y_train)
        expected = pipeline.predict_proba(x_val.sort_index())[:, 1]
    chunked = train(
        _chunked(dataset, 170), labels, params, max_rows=1_500, load_compiled=CompiledModel
    )
    assert not chunked.split.capped
    np.testing.assert_array_equal(chunked.val_probability, expected)


def test_held_out_rows_are_scored_chunk_by_chunk_in_stored_order() -> None:
    dataset = _dataset(1_000)
    positions = np.array([999, 3, 500, 0, 171])
    y, (fee,) = score_rows(
        _chunked(dataset, 170)(), positions, [lambda x: x["monthly_fee"].to_numpy()]
    )
    rows = dataset.iloc[np.sort(positions)]
    np.testing.assert_array_equal(y, rows[LABEL].to_numpy())
    np.testing.assert_array_equal(fee, to_model_frame(rows)["monthly_fee"].to_numpy())
    taken = take(_chunked(dataset, 170)(), positions)
    assert taken["monthly_fee"].equals(
        dataset.iloc[positions]["monthly_fee"].reset_index(drop=True)
    )


def test_the_chunked_dataset_hash_is_the_whole_tables() -> None:
    from streamflow.domain.features import content_hash

    dataset = _dataset(1_000).assign(as_of=pd.Timestamp("2024-01-31", tz="UTC"))
    labels, digest = labels_and_hash(_chunked(dataset, 300)())
    assert digest == content_hash(dataset.drop(columns=["as_of"]))
    np.testing.assert_array_equal(labels, dataset[LABEL].to_numpy())
