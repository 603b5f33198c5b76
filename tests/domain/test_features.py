"""The one conversion from raw features to model inputs: one request's lists, a month's columns."""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamflow.domain.features import (
    FEATURES,
    MISSING,
    model_inputs,
    model_row,
    with_stored_dtypes,
)

EXAMPLES = {"Bool": [True, False, None], "Int64": [3, None, 0], "Float32": [29.85, None, 0.5]}


def test_a_months_columns_become_the_inputs_of_the_same_values_one_by_one() -> None:
    """Batch scoring reads typed columns (nullable booleans included), /predict Python lists."""
    raw = {f.name: EXAMPLES.get(f.dtype, ["Yes", None, "No"]) for f in FEATURES}
    columns = model_inputs(with_stored_dtypes(pd.DataFrame(raw)))
    lists = model_inputs(raw)
    for feature in FEATURES:
        assert columns[feature.name].dtype == lists[feature.name].dtype, feature.name
        if feature.categorical:
            assert columns[feature.name].tolist() == lists[feature.name].tolist(), feature.name
        else:
            np.testing.assert_array_equal(columns[feature.name], lists[feature.name])
    flag = next(f.name for f in FEATURES if f.dtype == "Bool")
    assert columns[flag].tolist() == ["True", "False", MISSING]


def test_one_users_row_is_the_same_inputs_as_its_column_entries() -> None:
    """/predict scores one user through `model_row`, batches and training through the columns."""
    raw = {f.name: EXAMPLES.get(f.dtype, ["Yes", None, "No"]) for f in FEATURES}
    columns = model_inputs(raw)
    for i in range(3):
        row = model_row({name: values[i] for name, values in raw.items()})
        for name, column in columns.items():
            value, expected = row[name], column[i]
            if isinstance(expected, str):
                assert value == expected, name
            else:
                assert isinstance(value, float), name
                assert value == expected or (np.isnan(value) and np.isnan(expected)), name
