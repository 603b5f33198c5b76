"""FastAPI dependencies: the app's state, and the model and feature reader a route needs.

They are `async def` and take the request rather than each other: FastAPI runs a plain `def`
dependency in its thread pool, and resolves every nested one on every request, both of which
cost more than a prediction's own work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from serving.model import LoadedModel
from serving.online_features import OnlineFeatureReader
from serving.state import ServingState


async def get_state(request: Request) -> ServingState:
    return request.app.state.serving


def _model(state: ServingState) -> LoadedModel:
    # Read once: a reload swapping the model mid-request must not change what this request uses.
    model = state.models.current
    if model is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"model not loaded: {state.models.status.last_error or 'loading'}",
        )
    return model


def _features(state: ServingState) -> OnlineFeatureReader:
    if state.features is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"feature store not available: {state.features_error}",
        )
    return state.features


async def get_model(request: Request) -> LoadedModel:
    return _model(request.app.state.serving)


async def get_features(request: Request) -> OnlineFeatureReader:
    return _features(request.app.state.serving)


@dataclass(frozen=True)
class Scoring:
    """What a prediction needs, resolved as one dependency: state, the model, the reader."""

    state: ServingState
    model: LoadedModel
    reader: OnlineFeatureReader


async def get_scoring(request: Request) -> Scoring:
    state = request.app.state.serving
    return Scoring(state, _model(state), _features(state))


State = Annotated[ServingState, Depends(get_state)]
Model = Annotated[LoadedModel, Depends(get_model)]
Features = Annotated[OnlineFeatureReader, Depends(get_features)]
Scorer = Annotated[Scoring, Depends(get_scoring)]
