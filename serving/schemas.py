"""Request and response bodies of the API, compatible with the original stack's clients."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from streamflow.domain.features import FEATURES

USER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]

_PYTHON_TYPES = {"Int64": int, "Float32": float, "Bool": bool, "String": str}

# The 14 features with their served types, from the shared spec; None is an empty value (a
# stream flag of a user without internet service). A Float32 feature shows the shortest decimal
# of Feast's float32 value: the source value.
UserFeatures = create_model(
    "UserFeatures",
    __doc__="A user's online feature values, as Feast serves them and the model reads them.",
    **{
        f.name: (_PYTHON_TYPES[f.dtype] | None, Field(description=f"{f.view}: {f.dtype}"))
        for f in FEATURES
    },
)


class PredictRequest(BaseModel):
    user_id: UserId = Field(examples=["7590-VHVEG"])


class BatchPredictRequest(BaseModel):
    # The upper bound is the `batch_max_users` setting, checked by the route.
    user_ids: list[UserId] = Field(min_length=1, examples=[["7590-VHVEG", "5575-GNVDE"]])


class ModelRef(BaseModel):
    name: str
    version: str
    run_id: str


class PredictResponse(BaseModel):
    user_id: str
    prediction: Literal[0, 1] = Field(description="1 when the user is predicted to churn.")
    probability: float = Field(description="Probability of churn.")
    features_used: UserFeatures  # type: ignore[valid-type]
    features_as_of: datetime = Field(description="Event time of the user's oldest feature view.")
    stale: bool = Field(description="The features are older than the maximum feature age.")
    model: ModelRef


class BatchPredictResponse(BaseModel):
    results: list[PredictResponse] = Field(description="One per known user id, in request order.")
    unknown_user_ids: list[str] = Field(description="Ids the online store holds no features for.")
    model: ModelRef


class FeaturesResponse(BaseModel):
    user_id: str
    features: UserFeatures  # type: ignore[valid-type]
    event_timestamps: dict[str, datetime] = Field(description="Event time per feature view.")
    features_as_of: datetime
    stale: bool


class ReloadInfo(BaseModel):
    interval_seconds: float
    registry_reachable: bool | None
    last_poll_at: datetime | None
    last_error: str | None
    failed_version: str | None = Field(
        description="Newest version the URI points at that failed to load (an older one serves)."
    )
    reloads: int
    failures: int


class ShadowInfo(BaseModel):
    """The shadow challenger: scored off the request path on a share of requests, logged only."""

    model_config = ConfigDict(protected_namespaces=())

    model_uri: str
    fraction: float = Field(description="Share of requests the shadow also scores.")
    version: str | None = Field(description="The loaded version; None when none is shadowed.")
    as_of: str | None
    loaded_since: datetime | None
    reload: ReloadInfo


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    run_id: str
    model_uri: str
    stage: str
    aliases: list[str]
    as_of: str | None
    partition: str | None
    feature_service: str | None
    metrics: dict[str, float]
    tags: dict[str, str]
    source: str
    loaded_since: datetime
    reload: ReloadInfo
    shadow: ShadowInfo | None = Field(
        default=None, description="The shadow challenger, when STREAMFLOW_SHADOW_MODEL_URI is set."
    )


class Status(BaseModel):
    status: Literal["ok", "ready"]


class ErrorResponse(BaseModel):
    """400, 413, 503: what is wrong, in words."""

    detail: str


class UnknownUser(BaseModel):
    error: str
    user_id: str
    missing_features: list[str]


class UnknownUserResponse(BaseModel):
    """404: the online store holds no features for the user."""

    detail: UnknownUser


class StaleFeatures(BaseModel):
    error: str
    user_ids: list[str]
    features_as_of: datetime
    max_feature_age_seconds: float


class StaleFeaturesResponse(BaseModel):
    """409 in strict mode: the features are older than the maximum age."""

    detail: StaleFeatures
