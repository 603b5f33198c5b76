"""Liveness and readiness."""

from fastapi import APIRouter, HTTPException, status
from starlette.concurrency import run_in_threadpool

from serving.dependencies import State
from serving.errors import NOT_READY
from serving.schemas import Status

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> Status:
    """200 while the process lives."""
    return Status(status="ok")


@router.get("/ready", responses=NOT_READY)
async def ready(state: State) -> Status:
    """200 while the model is loaded and the online store answers, else 503 with the reason."""
    # A networked online store (Redis, PostgreSQL) may hang while down: ask it off the loop.
    reason = await run_in_threadpool(state.probe)
    if reason is not None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=reason)
    return Status(status="ready")
