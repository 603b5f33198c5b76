"""The one conversion from raw features to model inputs: one request's lists, a month's columns."""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamflow_assets.core.features import FEATURES, MISSING, model_inputs, with_stored_dtypes

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
