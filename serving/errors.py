"""The API's error answers, with the `detail` bodies clients rely on, and how OpenAPI shows them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.model import describe
from serving.online_features import OnlineStoreUnavailable
from serving.schemas import ErrorResponse, StaleFeaturesResponse, UnknownUserResponse

# The error answers of the routes, for OpenAPI; every one is JSON with a `detail`.
UNKNOWN_USER = {404: {"model": UnknownUserResponse, "description": "Unknown user"}}
STALE = {409: {"model": StaleFeaturesResponse, "description": "Stale features, in strict mode"}}
NOT_READY = {
    503: {
        "model": ErrorResponse,
        "description": "Model not loaded, or the online store not open or unreachable",
    }
}
BAD_BODY = {
    400: {"model": ErrorResponse, "description": "Body not parsed: not UTF-8, or nested too deep"},
    413: {"model": ErrorResponse, "description": "Body over `STREAMFLOW_MAX_BODY_BYTES`"},
}


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


def batch_too_large(size: int, limit: int) -> RequestValidationError:
    """422 in the shape of every other validation error, naming the field and the limit."""
    return RequestValidationError(
        [
            {
                "type": "too_long",
                "loc": ("body", "user_ids"),
                "msg": f"{size} user_ids in one batch; at most {limit} "
                "(STREAMFLOW_BATCH_MAX_USERS)",
                "input": None,
                "ctx": {"max_length": limit, "actual_length": size},
            }
        ]
    )


async def _body_not_parsed(request: Request, error: Exception) -> JSONResponse:
    # FastAPI answers 400 "There was an error parsing the body" for a body that is not UTF-8 or
    # nests too deep for the JSON decoder, and keeps the decoder's error as the cause: name it.
    assert isinstance(error, StarletteHTTPException)
    cause = error.__cause__
    detail = error.detail if cause is None else f"body is not valid JSON: {describe(cause)}"
    return JSONResponse({"detail": detail}, status.HTTP_400_BAD_REQUEST, headers=error.headers)


async def _store_unavailable(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status.HTTP_503_SERVICE_UNAVAILABLE)


def add_error_handlers(app: FastAPI) -> None:
    handlers: dict[Any, Any] = {
        status.HTTP_400_BAD_REQUEST: _body_not_parsed,
        OnlineStoreUnavailable: _store_unavailable,
    }
    for key, handler in handlers.items():
        app.add_exception_handler(key, handler)
