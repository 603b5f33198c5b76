"""`make demo`: the whole loop on generated seeds, told as it happens.

The months before the last are materialized first, so a champion exists; the API starts on it in
the background; the last month runs while the API serves, and the seeds' catalogue change in it
makes its candidate beat the champion: promotion, then the API hot-reloads the new champion and
/predict answers with it. `streamflow monitor` shows the drift that came with the change, and the
API stays in the foreground until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from streamflow.domain import months
from streamflow.settings import get_settings

# The seeds `make demo` generates: the real seeds' population, three months, the last one with
# the catalogue change (`ops.generator.CATALOGUE_CHANGE_MONTH`).
DEMO_USERS, DEMO_MONTHS, DEMO_SEED = 7043, 3, 42
# The real seeds' first user, whom the generator keeps: the documented examples work on both.
DEMO_USER = "7590-VHVEG"
# The API polls the registry this often during the demo (30 s by default), so the swap shows
# within seconds of the promotion.
DEMO_RELOAD_SECONDS = 3
# Where `make mlflow` serves the local profile's registry: the drift report's link opens there.
LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"
API_START_TIMEOUT_SECONDS = 180


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _get(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) != 0


def _wait_for(what: str, ready: Callable[[], bool], timeout: float, api: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if api.poll() is not None:
            raise RuntimeError(f"the API exited (code {api.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f}s")
        time.sleep(1)


def _served_version(base: str) -> str | None:
    try:
        return str(_get(f"{base}/model")["version"])
    except (urllib.error.URLError, OSError, KeyError):
        return None


def _registry():
    from mlflow.tracking import MlflowClient

    from streamflow.adapters.registry import Registry

    return Registry(MlflowClient(get_settings().tracking_uri))


def _champion() -> str | None:
    champion = _registry().champion()
    return None if champion is None else str(champion.version)


def _print_decisions(keys: list[str]) -> None:
    """What the promotion gate decided for each month's candidate, and why."""
    registry = _registry()
    for key in keys:
        version = registry.latest_for_partition(key)
        if version is not None:
            decision = version.tags.get("promotion_decision", "undecided")
            reason = version.tags.get("promotion_reason", "")
            print(f"{key}  v{version.version} {decision}: {reason}", flush=True)


def _predict(base: str) -> str:
    answer = _get(f"{base}/predict", {"user_id": DEMO_USER})
    model = answer["model"]
    return (
        f"POST /predict {DEMO_USER}: churn probability {answer['probability']:.3f}, "
        f"answered by {model['name']} v{model['version']}"
    )


def run_demo(seeds: Path | None, host: str, port: int) -> int:
    """Generate seeds (unless `seeds` is given), run the story, keep the API in the foreground."""
    # Imported here: the CLI's commands, run in this process one after the other.
    from streamflow.ops import cli

    os.environ.setdefault("STREAMFLOW_MLFLOW_UI_URL", LOCAL_MLFLOW_UI)
    if not _port_is_free(host, port):
        print(f"streamflow demo: {host}:{port} is taken; stop what listens there", file=sys.stderr)
        return 2
    started = time.monotonic()
    if seeds is None:
        seeds = get_settings().seeds_dir
        _say(f"1/5 generating {DEMO_MONTHS} months of {DEMO_USERS:,} users into {seeds}")
        cli.generate(users=DEMO_USERS, months_=DEMO_MONTHS, seed=DEMO_SEED, out=seeds)
    os.environ["STREAMFLOW_SEEDS_DIR"] = str(seeds.resolve())
    get_settings.cache_clear()
    keys = months.seeded_months(get_settings().seeds_dir)
    if not keys:
        print(f"streamflow demo: no month_NNN/ folders in {seeds}", file=sys.stderr)
        return 2
    if _champion() is not None:
        print(
            f"note: {get_settings().data_dir} already holds a champion from an earlier run; "
            "the story below (a promotion in the last month) is told from a fresh data dir "
            "(rm -rf it, or set STREAMFLOW_DATA_DIR)",
            flush=True,
        )
    first, last = (keys[:-1], keys[-1:]) if len(keys) > 1 else (keys, [])
    _say(
        f"2/5 the pipeline on {first[0]}..{first[-1]} (about a minute a month): each asset as it "
        "is materialized, then the month's summary"
    )
    if code := cli.pipeline(seeds=None, partitions=f"{first[0]}..{first[-1]}"):
        return code
    _print_decisions(first)

    base = f"http://{host}:{port}"
    _say(f"3/5 starting the API on {base}, serving the champion v{_champion()}")
    env = os.environ | {"STREAMFLOW_RELOAD_INTERVAL_SECONDS": str(DEMO_RELOAD_SECONDS)}
    api = subprocess.Popen(
        [
            Path(sys.executable).with_name("streamflow"),
            "serve",
            "--host",
            host,
            "--port",
            str(port),
        ],
        env=env,
    )
    try:
        _wait_for(
            "a ready API", lambda: _served_version(base) is not None, API_START_TIMEOUT_SECONDS, api
        )
        print(_predict(base), flush=True)
        if last:
            _say(
                f"4/5 the pipeline on {last[0]}, with the API serving: its catalogue change makes "
                "skips_7d a churn driver the champion never learned"
            )
            if code := cli.pipeline(seeds=None, partitions=last[0]):
                return code
            _print_decisions(last)
            champion = _champion()
            _wait_for(
                f"hot reload of v{champion}",
                lambda: _served_version(base) == champion,
                10 * DEMO_RELOAD_SECONDS + 60,
                api,
            )
            print(_predict(base), flush=True)
            _say(f"5/5 streamflow monitor: {last[0]} against the month the champion learned from")
            cli.monitor(partition=last[0], as_json=False)
        _say(f"done in {(time.monotonic() - started) / 60:.1f} min; what to look for:")
        print(_where_to_look(base, last[0] if last else first[-1]), flush=True)
        api.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if api.poll() is None:
            api.terminate()
            api.wait(timeout=30)
    return 0


def _where_to_look(base: str, month: str) -> str:
    return f"""\
  MLflow (make mlflow, {LOCAL_MLFLOW_UI}): Models > streamflow_churn: the @champion alias on the
    last month's version; each version's tags promotion_decision and promotion_reason say why it
    was promoted or kept out (the gate: a candidate must beat the champion's AUC by the margin).
  Dagster (make dev, http://127.0.0.1:3000): asset production_model, partition {month}: decision
    and reason; churn_model: the ROC curve and confusion matrix; feature_drift: the drifted
    columns and `report`, Evidently's report on its MLflow page.
  API ({base}/docs): POST /predict answers with the new champion, loaded without a restart;
    GET /model shows the version it serves.
The API keeps running here: Ctrl-C stops it."""
