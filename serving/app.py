"""The FastAPI app: lifespan loads model and feature store, a background task keeps them fresh."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path
from uvicorn.config import LOGGING_CONFIG

from serving.body_limit import BodyLimitMiddleware
from serving.errors import add_error_handlers
from serving.metrics import MetricsMiddleware, ServingMetrics
from serving.routes import features, health, metrics, model, predict
from serving.state import ServingState
from streamflow.settings import ServingSettings, get_serving_settings

log = logging.getLogger(__name__)


def log_config() -> dict[str, Any]:
    """uvicorn's logging, plus the API's own loggers (loads, swaps, registry outages)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["serving"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
    }
    config["handlers"]["serving"] = {
        "formatter": "serving",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["serving"] = {"handlers": ["serving"], "level": "INFO", "propagate": False}
    return config


async def _poll(state: ServingState) -> None:
    """Ask the registry every interval; loading runs in a thread, requests keep the old model."""
    interval = state.settings.reload_interval_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(state.refresh)
        # Registry and load failures are handled and reported inside; anything else is a bug
        # that must be seen in the log without ending the polling of a running server.
        except Exception:
            log.exception("model refresh failed")


class ChurnAPI(FastAPI):
    """The FastAPI app, with `POST /predict` taken before its middleware stack.

    A prediction is what clients call; `predict.predict_directly` answers it at a fraction of
    the generic path's cost, and hands anything it does not answer to the app as declared.
    """

    # What the direct path does itself: it counts the request as `MetricsMiddleware` does, and
    # takes only bodies within the limit `BodyLimitMiddleware` enforces.
    DIRECT_PATH_MIDDLEWARE = (BodyLimitMiddleware, MetricsMiddleware)

    @property
    def predicts_directly(self) -> bool:
        """False once any other middleware is added (authentication, CORS, tracing): it must
        see every /predict, which then goes through the stack as declared."""
        return all(m.cls in self.DIRECT_PATH_MIDDLEWARE for m in self.user_middleware)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == predict.PREDICT_PATH
            and scope["method"] == "POST"
            and self.predicts_directly
        ):
            await predict.predict_directly(self, scope, receive, send, super().__call__)
        else:
            await super().__call__(scope, receive, send)


DOCS_ASSETS = "/docs/assets"


def add_offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs with its files served by the API itself (the swagger-ui-bundle
    package), as FastAPI documents self-hosting them: the page works with no internet."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png",
        )


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The API over `settings` (by default read from `STREAMFLOW_*`)."""
    app_metrics = ServingMetrics()
    resolved = settings or get_serving_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServingState.create(resolved, app_metrics)
        # The first load happens before the first request, so a healthy start is ready at once;
        # a failed one still starts the API, which answers 503 with the reason until a poll works.
        await asyncio.to_thread(state.refresh)
        app.state.serving = state
        # Feast, MLflow and pandas leave some 350,000 long-lived objects; unfrozen, every full
        # collection walks them all, a pause of hundreds of milliseconds in some request.
        gc.collect()
        gc.freeze()
        reason = state.not_ready_reason
        if reason:
            log.warning("starting not ready: %s", reason)
        if state.prediction_log is not None:
            state.prediction_log.start()
        poller = None
        if resolved.reload_interval_seconds > 0:
            poller = asyncio.create_task(_poll(state), name="streamflow-model-reload")
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            if state.prediction_log is not None:
                # Requests have ended: what they left is written before the process exits.
                await asyncio.to_thread(state.prediction_log.close)
            gc.unfreeze()

    app = ChurnAPI(
        title="StreamFlow churn API",
        summary="Churn predictions from the champion model and the Feast online store.",
        lifespan=lifespan,
        # FastAPI's pages load Swagger UI and ReDoc from a CDN: /docs is served offline below.
        docs_url=None,
        redoc_url=None,
    )
    add_offline_docs(app)
    add_error_handlers(app)
    for module in (health, predict, features, model, metrics):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=resolved.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app_metrics)
    return app


app = create_app()
