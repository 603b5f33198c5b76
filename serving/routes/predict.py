"""Churn predictions for one user or a batch, from the online features and the served model."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.dependencies import Scorer
from serving.errors import (
    BAD_BODY,
    NOT_READY,
    STALE,
    UNKNOWN_USER,
    batch_too_large,
    stale_features,
    unknown_user,
)
from serving.model import DECISION_THRESHOLD, LoadedModel
from serving.online_features import (
    OnlineFeatureReader,
    OnlineFeatures,
    OnlineStoreUnavailable,
    is_stale,
)
from serving.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    ModelRef,
    PredictRequest,
    PredictResponse,
)
from serving.state import ServingState
from streamflow.domain.features import model_inputs, model_row

# A body of one user id is under 100 bytes; anything larger, or over `max_body_bytes`, takes
# FastAPI's own path (and its body-size handling).
_DIRECT_BODY_LIMIT = 1024
PREDICT_PATH = "/predict"
_RESPONSE = TypeAdapter(PredictResponse)
_JSON_HEADERS = (b"content-type", b"application/json")


async def predict_directly(
    app: FastAPI, scope: Scope, receive: Receive, send: Send, declared: ASGIApp
) -> None:
    """`POST /predict` for a small JSON body, answered ahead of FastAPI's stack; else `declared`.

    FastAPI's middleware stack, routing, request object and dependency resolution cost about
    as much CPU as the feature read and the model together (a /health is mostly that). A JSON
    body of a valid user id, with the model and store loaded, is answered here with the same
    `_predict_one` as the endpoint, pydantic's compiled JSON parsing and serialization of the
    same models (same bytes), its errors by the app's own handlers, and counted in the same
    metrics. Anything else (an invalid body, another content type, a server not loaded) goes,
    with the body read so far, through the app as declared: every error answer is unchanged.
    """
    state: ServingState | None = getattr(app.state, "serving", None)
    model = state.models.current if state is not None else None
    reader = state.features if state is not None else None
    if (
        state is None
        or model is None
        or reader is None
        or not _small_json(scope, min(_DIRECT_BODY_LIMIT, state.settings.max_body_bytes))
    ):
        await declared(scope, receive, send)
        return
    started = time.perf_counter()
    read: list[Message] = []
    body = b""
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    try:
        user_id = PredictRequest.model_validate_json(body).user_id
    except ValidationError:
        # FastAPI's own 422 (or 400), from the endpoint's declaration, over the same messages.
        await declared(scope, _replaying(read, receive), send)
        return
    status = 500
    try:
        try:
            result = await _predict_one(state, model, reader, user_id)
        except (HTTPException, OnlineStoreUnavailable) as error:
            response = await _handler(app, error)(Request(scope), error)
        else:
            content = _RESPONSE.dump_json(result)
            status = 200
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", str(len(content)).encode()), _JSON_HEADERS],
                }
            )
            await send({"type": "http.response.body", "body": content})
            return
        status = response.status_code
        await response(scope, receive, send)
    finally:
        state.metrics.request_done(PREDICT_PATH, "POST", str(status), time.perf_counter() - started)


def _handler(app: FastAPI, error: Exception) -> Callable[[Request, Exception], Awaitable[Response]]:
    """The app's handler of `error`, looked up as Starlette does: by status code, then by class."""
    handlers = app.exception_handlers
    status = getattr(error, "status_code", None)
    if status in handlers:
        return handlers[status]
    return next(handlers[cls] for cls in type(error).__mro__ if cls in handlers)


def _small_json(scope: Scope, limit: int) -> bool:
    content_type = length = None
    # The first of repeated headers, as Starlette's `Headers.get` reads them.
    for name, value in scope["headers"]:
        if name == b"content-type" and content_type is None:
            content_type = value
        elif name == b"content-length" and length is None:
            length = value
    return (
        content_type == b"application/json"
        and length is not None
        and length.isdigit()
        and int(length) <= limit
    )


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """`receive` that gives the messages already read again first."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


router = APIRouter(tags=["predict"])


def _score(
    state: ServingState, model: LoadedModel, features: OnlineFeatures, rows: Sequence[int]
) -> list[PredictResponse]:
    """Predictions for some rows of a read, in one model call; 409 first if strict and stale."""
    settings, metrics = state.settings, state.metrics
    max_age = settings.max_feature_age
    now = datetime.now(UTC)
    as_ofs = [features.as_of(i) for i in rows]
    stale = [is_stale(as_of, now, max_age) for as_of in as_ofs]
    if any(stale):
        if settings.strict_freshness:
            metrics.stale.labels("refused").inc(sum(stale))
            refused = [features.user_ids[i] for i, s in zip(rows, stale, strict=True) if s]
            raise stale_features(refused, min(as_ofs), max_age)
        metrics.stale.labels("flagged").inc(sum(stale))
    used = [features.row(i) for i in rows]
    # The one conversion from raw features to model inputs, shared with training; for one user
    # its plain-Python twin. A response's Float32 value is the shortest decimal of the same
    # float32, so the row it shows gives the model the same input.
    if len(rows) == 1:
        probabilities = [model.compiled.predict_proba_row(model_row(used[0]))]
    else:
        probabilities = model.compiled.predict_proba(model_inputs(features.columns(rows)))
    ref = ModelRef(name=model.name, version=model.version, run_id=model.run_id)
    results = []
    # Validated construction runs in pydantic's compiled core: 4x cheaper than `model_construct`.
    for k, i in enumerate(rows):
        probability = float(probabilities[k])
        prediction = int(probability >= DECISION_THRESHOLD)
        metrics.predicted[prediction].inc()
        metrics.probability.observe(probability)
        results.append(
            PredictResponse(
                user_id=features.user_ids[i],
                prediction=prediction,
                probability=probability,
                features_used=used[k],
                features_as_of=as_ofs[k],
                stale=stale[k],
                model=ref,
            )
        )
    if state.prediction_log is not None:
        state.prediction_log.submit(results)
    return results


async def _predict_one(
    state: ServingState, model: LoadedModel, reader: OnlineFeatureReader, user_id: str
) -> PredictResponse:
    # On the event loop: a local or Redis read takes tens of microseconds, less than a hop to
    # the thread pool and back; a PostgreSQL read lets the loop serve others while it waits.
    features = await reader.read_async([user_id])
    missing = features.missing_features(0)
    if missing:
        state.metrics.unknown_users.inc()
        raise unknown_user(user_id, missing)
    (result,) = _score(state, model, features, [0])
    return result


@router.post(PREDICT_PATH, responses=BAD_BODY | UNKNOWN_USER | STALE | NOT_READY)
async def predict(body: PredictRequest, scoring: Scorer) -> PredictResponse:
    """The churn prediction of one user, with the features it was made from."""
    return await _predict_one(scoring.state, scoring.model, scoring.reader, body.user_id)


def _predict_batch(
    user_ids: list[str], state: ServingState, model: LoadedModel, reader: OnlineFeatureReader
) -> BatchPredictResponse:
    distinct = list(dict.fromkeys(user_ids))
    features = reader.read(distinct)
    known = [i for i in range(len(distinct)) if not features.missing_features(i)]
    by_id = {r.user_id: r for r in _score(state, model, features, known)} if known else {}
    unknown = [user_id for user_id in distinct if user_id not in by_id]
    state.metrics.unknown_users.inc(len(unknown))
    return BatchPredictResponse(
        results=[by_id[user_id] for user_id in user_ids if user_id in by_id],
        unknown_user_ids=unknown,
        model=ModelRef(name=model.name, version=model.version, run_id=model.run_id),
    )


@router.post("/predict/batch", responses=BAD_BODY | STALE | NOT_READY)
async def predict_batch(body: BatchPredictRequest, scoring: Scorer) -> BatchPredictResponse:
    """Predictions for up to `batch_max_users` users: one feature read, one model call."""
    limit = scoring.state.settings.batch_max_users
    if len(body.user_ids) > limit:
        raise batch_too_large(len(body.user_ids), limit)
    # A thousand users take tens of milliseconds: off the event loop, so single predictions
    # keep flowing meanwhile.
    return await run_in_threadpool(
        _predict_batch, body.user_ids, scoring.state, scoring.model, scoring.reader
    )
