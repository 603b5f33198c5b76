"""FastAPI dependencies: the app's state, and the model and feature reader a route needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from serving.features import OnlineFeatureReader
from serving.model import LoadedModel
from serving.state import ServingState


def get_state(request: Request) -> ServingState:
    return request.app.state.serving


State = Annotated[ServingState, Depends(get_state)]


def get_model(state: State) -> LoadedModel:
    # Read once: a reload swapping the model mid-request must not change what this request uses.
    model = state.models.current
    if model is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"model not loaded: {state.models.status.last_error or 'loading'}",
        )
    return model


def get_features(state: State) -> OnlineFeatureReader:
    if state.features is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"feature store not available: {state.features_error}",
        )
    return state.features


Model = Annotated[LoadedModel, Depends(get_model)]
Features = Annotated[OnlineFeatureReader, Depends(get_features)]
