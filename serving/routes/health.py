"""Liveness and readiness."""

from fastapi import APIRouter, HTTPException, status
from starlette.concurrency import run_in_threadpool

from serving.dependencies import State
from serving.schemas import Status

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> Status:
    """200 while the process lives."""
    return Status(status="ok")


@router.get("/ready", responses={503: {"description": "Model or feature store not loaded"}})
async def ready(state: State) -> Status:
    """200 once the model and the feature store are loaded and the store answers, else 503."""
    # A networked online store (Redis) may be down after it opened: ask it, off the event loop.
    reason = state.not_ready_reason or await run_in_threadpool(state.online_store_problem)
    if reason is not None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=reason)
    return Status(status="ready")
