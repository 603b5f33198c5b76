"""A user's online features and their event times, as the model would read them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path

from serving.dependencies import Features, State
from serving.errors import NOT_READY, UNKNOWN_USER, unknown_user
from serving.online_features import is_stale
from serving.schemas import USER_ID_PATTERN, FeaturesResponse

router = APIRouter(tags=["features"])


@router.get(
    "/features/{user_id}",
    responses=UNKNOWN_USER | NOT_READY,
)
async def features(
    user_id: Annotated[str, Path(pattern=USER_ID_PATTERN)], state: State, reader: Features
) -> FeaturesResponse:
    """The user's 14 online features, each view's event time, and whether they are stale."""
    read = await reader.read_async([user_id])
    missing = read.missing_features(0)
    if missing:
        state.metrics.unknown_users.inc()
        raise unknown_user(user_id, missing)
    as_of = read.as_of(0)
    return FeaturesResponse(
        user_id=user_id,
        features=read.row(0),
        event_timestamps=read.view_times(0),
        features_as_of=as_of,
        stale=is_stale(as_of, datetime.now(UTC), state.settings.max_feature_age),
    )
