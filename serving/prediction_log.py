"""The prediction log's writer: a bounded queue filled by requests, emptied by one thread.

A request only appends its answers to a deque (atomic under the GIL: no lock, no I/O); a full
queue drops them and counts the drop. The writer thread takes batches, scores the shadow
challenger on a sampled share of them, and writes them to the store, holding a batch through a
store outage until it can be written; `close` drains the queue on shutdown.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from serving.metrics import ServingMetrics
from serving.model import LoadedModel, describe
from serving.schemas import PredictResponse
from streamflow.adapters.prediction_log import (
    LoggedPrediction,
    PredictionLog,
    PredictionLogUnavailable,
    encode_features,
)
from streamflow.domain.features import FEATURE_NAMES, model_inputs

log = logging.getLogger(__name__)

# A write that fails for a store outage is tried again after this, doubling up to the maximum.
_RETRY_SECONDS = 0.5
_RETRY_MAX_SECONDS = 5.0
# The writer yields the GIL this often while it builds a batch's rows (well under 1 ms of work).
_ROWS_BETWEEN_YIELDS = 200
# Old rows are deleted at start and then this often.
_PURGE_EVERY_SECONDS = 3600.0

# What a request leaves for the writer, per answer: (served at, request number, user_id, model
# name, model version, probability, prediction, features_as_of, stale, shadowed, features). Plain
# values in a tuple, which the garbage collector stops tracking: answers held for a second would
# otherwise be walked by every collection. The features (a pydantic model) are kept only when the
# shadow scores this request or the setting keeps them.
Entry = tuple


def _entry(
    served_at: float, request: int, answer: PredictResponse, shadowed: bool, keep: bool
) -> Entry:
    model = answer.model
    return (
        served_at,
        request,
        answer.user_id,
        model.name,
        model.version,
        answer.probability,
        answer.prediction,
        answer.features_as_of,
        answer.stale,
        shadowed,
        answer.features_used if keep else None,
    )


class PredictionLogger:
    """Collects answers off the request path and writes them in batches from one thread."""

    def __init__(
        self,
        store: PredictionLog,
        metrics: ServingMetrics,
        *,
        capacity: int,
        batch_size: int,
        flush_seconds: float,
        retention: timedelta | None,
        keep_features: bool,
        shadow_fraction: float = 0.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.retention = retention
        self.keep_features = keep_features
        self.shadow_fraction = shadow_fraction
        # Set by the state when a shadow model is loaded; read once per batch by the writer.
        self.shadow: LoadedModel | None = None
        self._queue: deque[Entry] = deque()
        # Request ids are this server's id and a request number: unique, and cheap to take.
        self._server_id = uuid.uuid4().hex[:12]
        self._requests = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._last_purge = float("-inf")
        metrics.log_queue_depth.set_function(lambda: len(self._queue))

    def submit(self, answers: Sequence[PredictResponse]) -> None:
        """Leave one request's answers for the writer, or drop them when the queue is full."""
        if len(self._queue) + len(answers) > self.capacity:
            self.metrics.log_dropped.inc(len(answers))
            return
        served_at, request = time.time(), next(self._requests)
        # The shadow scores all of a request's answers or none of them.
        shadowed = self.shadow_fraction > 0 and random.random() < self.shadow_fraction
        keep = shadowed or self.keep_features
        self._queue.extend([_entry(served_at, request, a, shadowed, keep) for a in answers])

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer; what it cannot write in time is dropped
        and counted."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive() or self._queue:
            left = len(self._queue)
            self.metrics.log_dropped.inc(left)
            log.error("prediction log: %d entries not written at shutdown", left)

    def _run(self) -> None:
        while True:
            self._purge_when_due()
            # Every `flush_seconds` (at once on shutdown) everything queued is written, in
            # batches of at most `batch_size` (one transaction each).
            stopping = self._stop.wait(self.flush_seconds)
            while batch := self._take():
                self._write(batch)
            if stopping:
                return

    def _take(self) -> list[Entry]:
        batch: list[Entry] = []
        queue = self._queue
        while queue and len(batch) < self.batch_size:
            batch.append(queue.popleft())
        return batch

    def _write(self, batch: list[Entry]) -> None:
        """Write one batch; through an outage, try again until it is written or shutdown ends."""
        try:
            rows = self._rows(batch)
        # A bug in building rows must not stop the writer: the batch is lost and counted.
        except Exception:
            log.exception("prediction log: %d entries could not be prepared", len(batch))
            self.metrics.log_dropped.inc(len(batch))
            return
        wait, last_try = _RETRY_SECONDS, False
        while True:
            try:
                self.store.write(rows)
            except PredictionLogUnavailable as error:
                self.metrics.log_write_errors.inc()
                self.metrics.log_store_up.set(0)
                if last_try:
                    left = len(rows) + len(self._queue)
                    self._queue.clear()
                    self.metrics.log_dropped.inc(left)
                    log.error("prediction log store down at shutdown: %d entries dropped", left)
                    return
                log.warning("prediction log store unavailable, holding %d: %s", len(rows), error)
                # On shutdown the store gets one more try, not an outage's worth of them.
                last_try = self._stop.wait(wait)
                wait = min(wait * 2, _RETRY_MAX_SECONDS)
                continue
            except Exception:
                log.exception("prediction log: writing %d entries failed", len(rows))
                self.metrics.log_write_errors.inc()
                self.metrics.log_dropped.inc(len(rows))
                return
            self.metrics.log_store_up.set(1)
            self.metrics.log_written.inc(len(rows))
            return

    def _rows(self, batch: list[Entry]) -> list[LoggedPrediction]:
        shadow = self._shadow_probabilities(batch)
        shadow_version = self.shadow.version if self.shadow is not None else None
        server, keep = self._server_id, self.keep_features
        rows = []
        for k, entry in enumerate(batch):
            if k % _ROWS_BETWEEN_YIELDS == 0:
                # Hand the GIL to the event loop: otherwise a request may wait for it for the
                # interpreter's whole switch interval (5 ms) while a large batch is built.
                time.sleep(0)
            probability = shadow.get(k)
            rows.append(
                LoggedPrediction(
                    f"{server}-{entry[1]}",
                    entry[0],
                    *entry[2:9],
                    shadow_version if probability is not None else None,
                    probability,
                    encode_features(entry[10].model_dump(mode="json")) if keep else None,
                )
            )
        return rows

    def _shadow_probabilities(self, batch: list[Entry]) -> dict[int, float]:
        """The shadow model's probability for the sampled answers, on the features the champion
        used."""
        shadow = self.shadow
        sampled = [k for k, entry in enumerate(batch) if entry[9]]
        if shadow is None or not sampled:
            return {}
        started = time.perf_counter()
        features = [batch[k][10] for k in sampled]
        columns = {name: [getattr(f, name) for f in features] for name in FEATURE_NAMES}
        try:
            probabilities = shadow.compiled.predict_proba(model_inputs(columns))
        # The shadow must never cost the log its rows: they are written without its answer.
        except Exception as error:
            log.warning("shadow v%s failed on a batch: %s", shadow.version, describe(error))
            self.metrics.shadow_errors.inc()
            return {}
        self.metrics.shadow_latency.observe(time.perf_counter() - started)
        self.metrics.shadow_scored.inc(len(sampled))
        return {k: float(p) for k, p in zip(sampled, probabilities, strict=True)}

    def _purge_when_due(self) -> None:
        if self.retention is None or time.monotonic() - self._last_purge < _PURGE_EVERY_SECONDS:
            return
        self._last_purge = time.monotonic()
        try:
            deleted = self.store.purge(datetime.now(UTC) - self.retention)
        except PredictionLogUnavailable as error:
            log.warning("prediction log retention skipped: %s", error)
            return
        if deleted:
            log.info("prediction log: %d entries past retention deleted", deleted)
