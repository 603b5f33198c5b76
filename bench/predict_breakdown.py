"""Where a /predict's CPU goes, in process: the app over ASGI (no socket), then its parts.

Over a data dir built by `streamflow pipeline` (default `$STREAMFLOW_DATA_DIR`, else ./var) and
the users of its newest seeds month, taken in turn (one user over and over keeps the forest's
paths in cache and reads too fast). Prints CPU microseconds per call, the best of three rounds:

    .venv/bin/python bench/predict_breakdown.py --data-dir var --seeds ../shared/seeds
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROUNDS, CALLS = 3, 3000


def best_cpu_us(call: Callable[[], object]) -> float:
    for _ in range(300):
        call()
    rounds = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(CALLS):
            call()
        rounds.append((time.process_time() - started) / CALLS * 1e6)
    return min(rounds)


def asgi_call(app, method: str, path: str, bodies: itertools.cycle) -> Callable[[], None]:
    """One request through the whole ASGI app, as uvicorn would hand it over.

    Nothing in the exchange waits (the body is in memory, the response goes nowhere), so the
    coroutine runs to its end on its first step, without a round trip through the event loop.
    """

    async def exchange() -> None:
        body = next(bodies) if method == "POST" else b""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            pass

        await app(scope, receive, send)

    def call() -> None:
        coroutine = exchange()
        try:
            coroutine.send(None)
        except StopIteration:
            return
        coroutine.close()
        raise RuntimeError(f"{method} {path} waited: this measurement assumes it never does")

    return call


async def measure_app(users: list[str]) -> dict[str, float]:
    from serving.app import create_app
    from streamflow.settings import ServingSettings

    app = create_app(ServingSettings(reload_interval_seconds=0))
    bodies = itertools.cycle([json.dumps({"user_id": u}).encode() for u in users])
    # One request after another, as from a single keep-alive client.
    async with app.router.lifespan_context(app):
        return {
            f"{method} {path} (whole app)": best_cpu_us(asgi_call(app, method, path, bodies))
            for method, path in (("GET", "/health"), ("POST", "/predict"))
        }


def measure_parts(users: list[str]) -> dict[str, float]:
    from serving.metrics import ServingMetrics
    from serving.routes.predict import _score
    from serving.state import ServingState
    from streamflow.domain.features import model_row
    from streamflow.settings import ServingSettings

    state = ServingState.create(ServingSettings(reload_interval_seconds=0), ServingMetrics())
    state.refresh()
    model, reader = state.models.current, state.features
    reads = [reader.read([u]) for u in users]
    known = [r for r in reads if not r.missing_features(0)]
    inputs = [model_row(r.row(0)) for r in known]
    ids, feats, rows = itertools.cycle(users), itertools.cycle(known), itertools.cycle(inputs)
    return {
        "online read (one user)": best_cpu_us(lambda: reader.read([next(ids)])),
        "model inputs": best_cpu_us(lambda: model_row(next(feats).row(0))),
        "forest (encoding + ONNX)": best_cpu_us(
            lambda: model.compiled.predict_proba_row(next(rows))
        ),
        "score (inputs, forest, response)": best_cpu_us(
            lambda: _score(state, model, next(feats), [0])
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("STREAMFLOW_DATA_DIR"))
    parser.add_argument("--seeds", type=Path, default=Path("../shared/seeds"))
    args = parser.parse_args()
    if args.data_dir is not None:
        os.environ["STREAMFLOW_DATA_DIR"] = str(args.data_dir.resolve())
    newest = sorted(args.seeds.glob("month_*"))[-1]
    with open(newest / "users.csv", newline="") as source:
        users = [row["user_id"] for row in csv.DictReader(source)]
    warnings.simplefilter("ignore")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    figures = asyncio.run(measure_app(users)) | measure_parts(users)
    # What /predict costs beyond its read and its scoring: the direct path's body parsing, JSON
    # serialization and metrics (it answers ahead of FastAPI's stack, which /health goes through).
    figures["the rest (body, JSON, metrics)"] = (
        figures["POST /predict (whole app)"]
        - figures["online read (one user)"]
        - figures["score (inputs, forest, response)"]
    )
    print(f"{len(users):,} users of {newest.name}, CPU µs per call (best of {ROUNDS} × {CALLS:,})")
    for name, micros in figures.items():
        print(f"  {name:32s} {micros:8.1f}")


if __name__ == "__main__":
    main()
