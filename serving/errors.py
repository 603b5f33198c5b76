"""The API's error answers, with the `detail` bodies clients rely on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from fastapi import HTTPException, status


def unknown_user(user_id: str, missing_features: Sequence[str]) -> HTTPException:
    """404: the online store holds no features for the user (or not for every feature view)."""
    return HTTPException(
        status.HTTP_404_NOT_FOUND,
        detail={
            "error": f"no online features for user {user_id}",
            "user_id": user_id,
            "missing_features": list(missing_features),
        },
    )


def stale_features(
    user_ids: Sequence[str], features_as_of: datetime, max_age: timedelta
) -> HTTPException:
    """409 in strict mode: the features are older than the maximum age, so no prediction."""
    return HTTPException(
        status.HTTP_409_CONFLICT,
        detail={
            "error": "features are older than the maximum feature age (strict mode)",
            "user_ids": list(user_ids),
            "features_as_of": features_as_of.isoformat(),
            "max_feature_age_seconds": max_age.total_seconds(),
        },
    )


def batch_too_large(size: int, limit: int) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=f"{size} user_ids in one batch; at most {limit}",
    )
