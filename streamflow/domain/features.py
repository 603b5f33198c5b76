"""The model's features: names, Feast types, views, and how raw values become model inputs.

Training (from Feast's offline store) and serving (from its online store) both go through
`to_model_frame`, so a user's served features and the model's training inputs cannot disagree.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd

FeastType = Literal["Int64", "Float32", "Bool", "String"]

FEATURE_SERVICE = "churn_model_v1"
ENTITY = "user"
JOIN_KEY = "user_id"
TIMESTAMP = "as_of"
LABEL = "churn_label"
# A snapshot older than about two months no longer joins: a month-end snapshot is 28-31 days
# old at the next month end and 59-62 days old at the one after.
FEATURE_TTL = timedelta(days=62)


@dataclass(frozen=True)
class Feature:
    name: str
    view: str
    dtype: FeastType

    @property
    def categorical(self) -> bool:
        # Booleans are one-hot encoded with "missing" as a category of its own: an empty stream
        # flag means "no internet service", which is information, not noise to impute.
        return self.dtype in ("Bool", "String")


@dataclass(frozen=True)
class FeatureView:
    name: str
    source_table: str
    features: tuple[Feature, ...]


def _view(name: str, source_table: str, *fields: tuple[str, FeastType]) -> FeatureView:
    return FeatureView(name, source_table, tuple(Feature(f, name, t) for f, t in fields))


FEATURE_VIEWS: tuple[FeatureView, ...] = (
    _view(
        "subs_profile",
        "subscriptions_profile_snapshots",
        ("months_active", "Int64"),
        ("monthly_fee", "Float32"),
        ("paperless_billing", "Bool"),
        ("plan_stream_tv", "Bool"),
        ("plan_stream_movies", "Bool"),
        ("net_service", "String"),
    ),
    _view(
        "usage_agg_30d",
        "usage_agg_30d_snapshots",
        ("watch_hours_30d", "Float32"),
        ("avg_session_mins_7d", "Float32"),
        ("unique_devices_30d", "Int64"),
        ("skips_7d", "Int64"),
        ("rebuffer_events_7d", "Int64"),
    ),
    _view(
        "payments_agg_90d",
        "payments_agg_90d_snapshots",
        ("failed_payments_90d", "Int64"),
    ),
    _view(
        "support_agg_90d",
        "support_agg_90d_snapshots",
        ("support_tickets_90d", "Int64"),
        ("ticket_avg_resolution_hrs_90d", "Float32"),
    ),
)
# Each view's source table and its features, as the snapshot store's reads and joins take them.
FEATURE_COLUMNS = {view.source_table: [f.name for f in view.features] for view in FEATURE_VIEWS}
FEATURES: tuple[Feature, ...] = tuple(f for view in FEATURE_VIEWS for f in view.features)
FEATURE_NAMES: list[str] = [f.name for f in FEATURES]
CATEGORICAL: list[str] = [f.name for f in FEATURES if f.categorical]
NUMERIC: list[str] = [f.name for f in FEATURES if not f.categorical]
FEATURE_REFS: list[str] = [f"{f.view}:{f.name}" for f in FEATURES]
MISSING = "missing"
# How a training set stores each feature, whichever offline store produced it: nullable where a
# join may find nothing (e.g. a user whose snapshot is past the TTL).
STORED_DTYPES = {"Int64": "Int64", "Float32": "float64", "Bool": "boolean", "String": "object"}


def with_stored_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """The features of an offline retrieval in their storage dtypes (Feast's stores differ)."""
    typed = frame.copy()
    for feature in FEATURES:
        typed[feature.name] = frame[feature.name].astype(STORED_DTYPES[feature.dtype])
    return typed


_BOOL_TEXT = {True: "True", False: "False"}


def _floats(values: Sequence[Any]) -> np.ndarray:
    if hasattr(values, "to_numpy"):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(values, dtype=np.float64)


def _flag_texts(values: Sequence[Any]) -> np.ndarray:
    if isinstance(values, pd.Series) and values.dtype == "boolean":
        # The same texts without iterating a nullable column in Python (a third of a second per
        # column of 100,000 users: batch scoring and monitoring go through here).
        known = values.notna().to_numpy()
        flags = values.to_numpy(dtype=bool, na_value=False)
        return np.where(known, np.where(flags, "True", "False"), MISSING).astype(object)
    return np.array([_BOOL_TEXT.get(v, MISSING) for v in values], dtype=object)


def _model_column(feature: Feature, values: Sequence[Any]) -> np.ndarray:
    if feature.dtype == "Float32":
        # Feast serves Float32 features as float32 (a fee of 29.85 comes back as
        # 29.850000381469727) while the offline store keeps the float64 it read: rounding through
        # float32 on both sides makes them the same number.
        return _floats(values).astype(np.float32).astype(np.float64)
    if feature.dtype == "Int64":
        return _floats(values)
    if feature.dtype == "Bool":
        return _flag_texts(values)
    return np.array([v if isinstance(v, str) else MISSING for v in values], dtype=object)


def model_inputs(raw: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
    """The model's input columns, in feature order, from raw feature values of any source.

    Numbers become float64 (missing as NaN, for the imputer); booleans and strings become text
    categories with `missing` for an empty value. Works on one row (serving) as on millions
    (training), without building a DataFrame per request.
    """
    absent = [name for name in FEATURE_NAMES if name not in raw]
    if absent:
        raise KeyError(f"features missing from the input: {absent}")
    return {f.name: _model_column(f, raw[f.name]) for f in FEATURES}


ModelInput = float | str


def model_row(raw: Mapping[str, Any]) -> dict[str, ModelInput]:
    """`model_inputs` of one row, in plain Python: the same values, as scalars.

    A request scores one user: numpy's cost per call, some thirty calls in `model_inputs`, would
    be most of its scoring time.
    """
    return {f.name: _model_value(f, raw[f.name]) for f in FEATURES}


def _model_value(feature: Feature, value: Any) -> ModelInput:
    if feature.categorical:
        if feature.dtype == "Bool":
            return _BOOL_TEXT.get(value, MISSING)
        return value if isinstance(value, str) else MISSING
    if value is None:
        return math.nan
    # Float32 as in `_model_column`: through float32 and back.
    return float(np.float32(value)) if feature.dtype == "Float32" else float(value)


def to_model_frame(raw: pd.DataFrame | Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """`model_inputs` as the DataFrame that the scikit-learn Pipeline is trained on."""
    return pd.DataFrame(model_inputs(raw))


class ContentHash:
    """A stable fingerprint of a dataset's columns and rows, fed a chunk at a time: row hashes in
    order, so the digest does not depend on how the rows were cut. Recorded with the model."""

    def __init__(self) -> None:
        self._digest: Any = None

    def update(self, rows: pd.DataFrame) -> None:
        if self._digest is None:
            self._digest = hashlib.sha256(",".join(rows.columns).encode())
        self._digest.update(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes())

    def hexdigest(self) -> str:
        if self._digest is None:
            raise ValueError("no rows were hashed")
        return self._digest.hexdigest()[:16]


def content_hash(rows: pd.DataFrame) -> str:
    """`ContentHash` of a whole frame."""
    digest = ContentHash()
    digest.update(rows)
    return digest.hexdigest()


def user_id_hashes(user_ids: pd.Series) -> np.ndarray:
    """A 64-bit hash of each user_id, for sets of users kept or compared in 8 bytes a user."""
    return pd.util.hash_array(user_ids.to_numpy(dtype=object))


@dataclass
class UsersFingerprint:
    """Which users a table holds, in constant space, fed a chunk of ids at a time: their count
    and the sum of their ids' 64-bit hashes (order-free: equal sets of users give equal
    fingerprints, different ones almost surely not)."""

    rows: int = 0
    digest: int = 0

    def add(self, user_ids: pd.Series) -> UsersFingerprint:
        hashes = user_id_hashes(user_ids)
        self.rows += len(hashes)
        self.digest = (self.digest + int(hashes.sum(dtype=np.uint64))) % 2**64
        return self
