"""Prometheus exposition of the app's own metrics registry."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.dependencies import State

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    """Requests and latency by route and status, predictions, staleness, model and reloads."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
