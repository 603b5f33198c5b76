"""The cluster profile end to end: steps on celery workers, Redis online, MLflow over HTTP."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
from mlflow.tracking import MlflowClient

from serving.online_features import OnlineFeatureReader
from streamflow.adapters.feature_store import materialize_month, open_store
from streamflow.adapters.registry import CHAMPION_ALIAS, MODEL_NAME
from streamflow.domain import months
from streamflow.domain.features import FEATURE_NAMES, FEATURE_SERVICE, FEATURE_VIEWS, JOIN_KEY
from streamflow.settings import Settings
from tests.cluster import REDIS, celery_workers, group_pids, require_servers
from tests.conftest import child_env
from tests.profiles import free_port, profile
from tests.serving.conftest import KNOWN_USER, STREAMFLOW, Child
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow, pytest.mark.e2e]

MONTHS = ["2024-01", "2024-02"]
LATEST = months.as_of("2024-02")


@dataclass
class Cluster:
    settings: Settings
    env: dict[str, str]
    instance: object
    workers: list[Child]
    worker_pids: set[int]
    run_ids: list[str]
    data_dir: Path


def _profile_env() -> dict[str, str]:
    own = {k: v for k, v in os.environ.items() if k.startswith(("STREAMFLOW_", "DAGSTER_"))}
    return child_env(**own)


@contextlib.contextmanager
def watched_pids(workers: list[Child]) -> Iterator[set[int]]:
    """Every process the workers' process groups ever hold while this runs: a pool process
    replaced after a step (its memory limit) is a worker's process too."""
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(*(group_pids(w.process.pid) for w in workers))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()


@pytest.fixture(scope="module")
def cluster(real_seeds: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Both real months on two workers started WITHOUT STREAMFLOW_SEEDS_DIR: January through
    `run_months`, February through `streamflow pipeline --seeds DIR`; the runs carry the seeds."""
    require_servers()
    from dagster import DagsterInstance, RunsFilter

    from streamflow.ops.pipeline import run_months
    from streamflow_assets.definitions import build_definitions

    data_dir = tmp_path_factory.mktemp("cluster")
    with profile("cluster", data_dir, real_seeds) as settings:
        env = {k: v for k, v in _profile_env().items() if k != "STREAMFLOW_SEEDS_DIR"}
        # A worker's own default (<its cwd>/data/seeds) holds no seeds.
        assert not (Path.cwd() / "data" / "seeds" / "month_000").exists()
        with (
            celery_workers(settings, env, data_dir) as workers,
            watched_pids(workers) as worker_pids,
            DagsterInstance.get() as instance,
        ):
            (january,) = run_months(MONTHS[:1], defs=build_definitions(settings), instance=instance)
            assert january.success, january.error
            done = subprocess.run(
                [
                    str(STREAMFLOW),
                    "pipeline",
                    "--seeds",
                    str(real_seeds),
                    "--partitions",
                    MONTHS[1],
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=1200,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"from {real_seeds} " in done.stdout
            (february,) = instance.get_runs(RunsFilter(tags={"dagster/partition": MONTHS[1]}))
            yield Cluster(
                settings,
                env,
                instance,
                workers,
                worker_pids,
                [january.run_id, february.run_id],
                data_dir,
            )


def _events(instance, run_id: str, kind: str) -> list:
    return [
        entry.dagster_event
        for entry in instance.all_logs(run_id)
        if entry.dagster_event is not None and entry.dagster_event.event_type_value == kind
    ]


def test_every_step_of_the_backfill_ran_in_a_celery_worker_process(cluster: Cluster) -> None:
    for run_id in cluster.run_ids:
        starts = _events(cluster.instance, run_id, "STEP_START")
        assert len(starts) >= 6
        step_pids = {event.pid for event in starts}
        assert os.getpid() not in step_pids
        assert step_pids <= cluster.worker_pids, (step_pids, cluster.worker_pids)
        # dagster-celery's own engine event, one per step, names the worker that took it.
        taken = [
            event
            for event in _events(cluster.instance, run_id, "ENGINE_EVENT")
            if "in celery worker" in (event.message or "")
        ]
        assert {e.step_key for e in taken} == {e.step_key for e in starts}
        hosts = {e.engine_event_data.metadata["Celery worker"].value for e in taken}
        assert all(host.startswith("streamflow-test-") for host in hosts)
        _report_queue_latency(cluster.instance, run_id)


def _report_queue_latency(instance, run_id: str) -> None:
    """Print (with -s) how long each step waited from its queueing to its start in a worker."""
    submitted, started = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "ENGINE_EVENT" and "Submitting celery task" in event.message:
            submitted[event.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
    waits = sorted(started[key] - submitted[key] for key in started if key in submitted)
    print(
        f"run {run_id[:8]}: {len(waits)} steps, queue-to-start seconds "
        f"min {waits[0]:.2f} median {waits[len(waits) // 2]:.2f} max {waits[-1]:.2f}"
    )


def test_features_are_read_back_from_redis_and_an_older_month_never_wins(
    cluster: Cluster,
) -> None:
    settings = cluster.settings
    store = open_store(settings)
    reader = OnlineFeatureReader(store)
    assert reader.uses_redis
    from streamflow_assets.resources import build_resources

    snapshots = build_resources(settings)["snapshots"].store()
    users = snapshots.read(FEATURE_VIEWS[0].source_table, LATEST)[JOIN_KEY].tolist()
    assert len(users) == 7043
    served = reader.read(users)
    assert {served.as_of(i) for i in range(len(users))} == {LATEST}
    client = redis.Redis(*REDIS, db=settings.redis_db)
    assert client.dbsize() >= 7043
    # The reader's one HMGET per user returns what Feast's SDK returns; unknown users are unknown.
    sample = [*users[:25], "0000-NOBODY"]
    sdk = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[{JOIN_KEY: user_id} for user_id in sample],
    ).to_dict()
    fast = reader.read(sample)
    for name in FEATURE_NAMES:
        assert fast.values[name] == sdk[name], name
    assert sorted(fast.missing_features(len(sample) - 1)) == sorted(FEATURE_NAMES)
    assert not any(fast.missing_features(i) for i in range(len(sample) - 1))

    # A backfill of January after February: Redis keeps February, and says so.
    january = months.as_of("2024-01")
    stats = materialize_month(
        store, lambda table: snapshots.read_batches(table, january, 200_000), january
    )
    assert {(s.written, s.skipped_as_older) for s in stats.values()} == {(0, 7043)}
    assert reader.read(users[:100]).values == served.columns(range(100))
    online = store.provider.online_store
    for view in FEATURE_VIEWS:
        assert online.newest_event_time(store.config, store.get_feature_view(view.name)) == LATEST
    # The same month again is rewritten (a corrected re-run), not skipped as Feast's write would.
    stats = materialize_month(
        store, lambda table: snapshots.read_batches(table, LATEST, 200_000), LATEST
    )
    assert {(s.written, s.skipped_as_older) for s in stats.values()} == {(7043, 0)}


def test_freshness_cli_reads_redis(cluster: Cluster) -> None:
    done = subprocess.run(
        [str(STREAMFLOW), "freshness"], env=cluster.env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2024-02" in done.stdout


def test_predict_answers_from_redis_with_the_champion_from_mlflow_and_survives_an_outage(
    cluster: Cluster,
) -> None:
    proxy = TcpProxy(*REDIS)
    port = free_port()
    env = cluster.env | {
        "STREAMFLOW_REDIS_PORT": str(proxy.port),
        "STREAMFLOW_REDIS_TIMEOUT_SECONDS": "1",
    }
    api = Child.start(
        [str(STREAMFLOW), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        cluster.data_dir / "api.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        api.wait_for(f"{url}/ready", status=200)
        tracking = cluster.settings.tracking_uri
        assert tracking.startswith("http://127.0.0.1:")
        registry = MlflowClient(tracking, tracking)
        champion = registry.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS)
        # Logged by a worker through the server's proxy: no path on anybody's disk.
        assert registry.get_run(champion.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
        answer = httpx.post(f"{url}/predict", json={"user_id": KNOWN_USER}, timeout=10)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"]["version"] == champion.version
        assert datetime.fromisoformat(body["features_as_of"]).astimezone(UTC) == LATEST
        unknown = httpx.post(f"{url}/predict", json={"user_id": "0000-NOBODY"}, timeout=10)
        assert unknown.status_code == 404

        proxy.cut()
        started = time.monotonic()
        down = httpx.post(f"{url}/predict", json={"user_id": KNOWN_USER}, timeout=10)
        assert down.status_code == 503, down.text
        assert "Redis" in down.json()["detail"]
        ready = httpx.get(f"{url}/ready", timeout=10)
        assert ready.status_code == 503
        assert "Redis" in ready.json()["detail"]
        # Named errors, not a hang: redis-py 8 retries a refused connection three times with
        # backoff (seconds per call on a loaded machine), far below a client's patience.
        assert time.monotonic() - started < 30

        proxy.restore()
        deadline = time.monotonic() + 15
        while (
            httpx.post(f"{url}/predict", json={"user_id": KNOWN_USER}, timeout=10).status_code
            != 200
        ):
            assert time.monotonic() < deadline, "no recovery once Redis was back"
            time.sleep(0.2)
        assert httpx.get(f"{url}/ready", timeout=10).status_code == 200
    finally:
        api.stop()
        proxy.close()


def test_seeds_a_worker_cannot_read_fail_the_month_naming_the_path_and_the_workers_host(
    cluster: Cluster,
) -> None:
    from streamflow.ops.pipeline import run_month
    from streamflow_assets.definitions import build_definitions

    # February is a partition (the launcher found its seeds); the run carries a seeds location
    # the workers cannot read. (`streamflow pipeline` checks its own seeds before any run.)
    missing = cluster.data_dir / "not-mounted-on-the-workers"
    settings = cluster.settings.model_copy(update={"seeds_dir": missing})
    failed = run_month(build_definitions(settings), cluster.instance, MONTHS[1])
    assert not failed.success
    (named,) = re.findall(
        rf"the seeds location {re.escape(str(missing))} is not a readable directory "
        rf"on host {re.escape(socket.gethostname())} \(pid (\d+)\)",
        failed.error or "",
    )
    assert int(named) in cluster.worker_pids, failed.error


def test_a_run_launched_with_the_broker_down_fails_at_once_naming_it(cluster: Cluster) -> None:
    closed = free_port()
    env = cluster.env | {"STREAMFLOW_CELERY_BROKER": f"amqp://guest:guest@127.0.0.1:{closed}//"}
    seeds = str(cluster.settings.seeds_dir)
    done = subprocess.run(
        [str(STREAMFLOW), "pipeline", "--seeds", seeds, "--partitions", "2024-02"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"celery broker amqp://guest:**@127.0.0.1:{closed}//" in done.stderr
    assert "is not reachable" in done.stderr
    # The run's own time, from the CLI's summary line (its imports take longer on a busy machine).
    (seconds,) = re.findall(r"2024-02  FAILED .*  ([0-9.]+)s  run", done.stdout)
    assert float(seconds) < 30, done.stdout
    (run,) = cluster.instance.get_runs(limit=1)
    assert run.is_failure


def test_a_worker_killed_mid_step_fails_the_run_and_the_rerun_rewrites_the_month(
    cluster: Cluster,
) -> None:
    from streamflow.ops.pipeline import run_month
    from streamflow_assets.definitions import build_definitions

    defs = build_definitions(cluster.settings)
    instance = cluster.instance
    known = {run.run_id for run in instance.get_runs()}
    killed: list[int] = []
    running = threading.Event()

    def kill_the_training_step() -> None:
        deadline = time.monotonic() + 600
        while not killed and not running.is_set() and time.monotonic() < deadline:
            for run in instance.get_runs(limit=5):
                if run.run_id in known:
                    continue
                for event in _events(instance, run.run_id, "STEP_START"):
                    # Only ever a pool process of the workers this module started.
                    ours = event.pid in cluster.worker_pids
                    if event.step_key == "churn_model" and ours and not killed:
                        os.kill(event.pid, signal.SIGKILL)
                        killed.append(event.pid)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_training_step, daemon=True)
    killer.start()
    try:
        failed = run_month(defs, instance, "2024-02")
    finally:
        running.set()
        killer.join(timeout=30)
    assert killed, "the churn_model step never started"
    assert not failed.success
    assert "WorkerLostError" in (failed.error or ""), failed.error

    rerun = run_month(defs, instance, "2024-02")
    assert rerun.success, rerun.error
    from streamflow_assets.resources import build_resources

    snapshots = build_resources(cluster.settings)["snapshots"].store()
    for view in FEATURE_VIEWS:
        rows = snapshots.read(view.source_table, LATEST)
        assert len(rows) == rows[JOIN_KEY].nunique() == 7043
    served = OnlineFeatureReader(open_store(cluster.settings)).read([KNOWN_USER])
    assert served.as_of(0) == LATEST
