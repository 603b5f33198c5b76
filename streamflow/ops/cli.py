"""The `streamflow` command: generate seeds, run the monthly pipeline through Dagster."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from streamflow.domain import months
from streamflow.settings import REPO_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from streamflow.adapters.pipeline_lock import PipelineLock


def dagster_yaml(profile: str) -> Path:
    """The instance file a profile ships: `dagster.yaml` (local) or `dagster.<profile>.yaml`."""
    return REPO_ROOT / ("dagster.yaml" if profile == "local" else f"dagster.{profile}.yaml")


def dagster_postgres_env(settings: Settings, database: str = "dagster") -> dict[str, str]:
    """The DAGSTER_POSTGRES_* variables dagster.postgres.yaml reads: StreamFlow's own server."""
    return {
        "DAGSTER_POSTGRES_HOST": settings.postgres_host,
        "DAGSTER_POSTGRES_PORT": str(settings.postgres_port),
        "DAGSTER_POSTGRES_USER": settings.postgres_user,
        "DAGSTER_POSTGRES_PASSWORD": settings.postgres_password.get_secret_value(),
        "DAGSTER_POSTGRES_DB": database,
    }


def prepare_dagster_home(settings: Settings) -> Path:
    """Point DAGSTER_HOME at the data dir's instance (unless set) and give it the profile's
    dagster.yaml; under the postgres and cluster profiles, default its DAGSTER_POSTGRES_*."""
    if settings.uses_postgres:
        for name, value in dagster_postgres_env(settings).items():
            os.environ.setdefault(name, value)
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        shutil.copyfile(dagster_yaml(settings.profile), target)
    return home


def _generate(args: argparse.Namespace) -> int:
    from streamflow.ops.generator import generate_seeds

    started = time.perf_counter()
    summary = generate_seeds(Path(args.out), users=args.users, months=args.months, seed=args.seed)
    print(summary)
    print(f"generated in {time.perf_counter() - started:.1f}s")
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    if args.seeds:
        os.environ["STREAMFLOW_SEEDS_DIR"] = str(Path(args.seeds).resolve())
        get_settings.cache_clear()
    settings = get_settings()
    keys = months.parse_range(args.partitions) if args.partitions else None
    if keys is None:
        keys = months.seeded_months(settings.seeds_dir)
        if not keys:
            print(f"no month_NNN/ folders in {settings.seeds_dir}", file=sys.stderr)
            return 2

    from streamflow.adapters.pipeline_lock import PipelineBusy, pipeline_lock

    # The lock comes first: two pipelines starting at once must not both create the Dagster
    # instance (SQLite's schema migrations race) or copy its dagster.yaml.
    try:
        with pipeline_lock(settings) as lock:
            return _run_pipeline(settings, keys, lock)
    except PipelineBusy as busy:
        print(f"streamflow pipeline: {busy}", file=sys.stderr)
        return 3


def _run_pipeline(settings: Settings, keys: list[str], lock: PipelineLock) -> int:
    from dagster import DagsterInstance

    from streamflow.ops.pipeline import run_months

    home = prepare_dagster_home(settings)
    with DagsterInstance.get() as instance:
        # Under the lock: no other pipeline of these stores is running, so a run left in
        # progress by a process that is gone was killed.
        _release_dead_runs(instance, settings)
        print(
            f"materializing {len(keys)} month(s) from {settings.seeds_dir} (DAGSTER_HOME={home})",
            flush=True,
        )
        outcomes = run_months(keys, instance=instance, on_start=lock.announce)
    for outcome in outcomes:
        print(outcome.summary())
    failed = [o for o in outcomes if not o.success]
    if failed:
        print(f"{len(failed)} partition(s) failed:", file=sys.stderr)
        for outcome in failed:
            print(f"{outcome.partition}: {outcome.error}", file=sys.stderr)
        return 1
    return 0


def _release_dead_runs(instance, settings: Settings) -> None:
    """Print, and undo, what runs of killed `streamflow` processes left held or open."""
    from mlflow.tracking import MlflowClient

    from streamflow.adapters.registry import Registry
    from streamflow.ops.pipeline import release_dead_runs

    released = release_dead_runs(instance)
    registry = Registry(MlflowClient(settings.tracking_uri)) if released else None
    # Flushed line by line: what was freed is on record even if this process is killed in turn.
    for run in released:
        print(run.summary(), flush=True)
        for cleaned in registry.abandon_dagster_run(run.run_id):
            print(f"  {cleaned}", flush=True)


def _freshness(args: argparse.Namespace) -> int:
    """Print the online store's freshness facts; exit 0 fresh, 1 stale, 2 could not tell."""
    from streamflow_assets.resources import build_resources

    resources = build_resources(get_settings())
    try:
        result = resources["freshness"].evaluate(
            resources["feature_store"].open(), resources["snapshots"].store()
        )
    except Exception as error:
        # Cron and ops read the exit code: 1 must only ever mean "stale", so a store that
        # cannot be read at all is reported, with its error, as "could not tell".
        print(f"streamflow freshness: could not tell: {error!r}", file=sys.stderr)
        return 2
    for name, value in result.facts().items():
        print(f"{name:<30}{'-' if value is None else value}")
    return result.exit_code


def _latest_metadata(instance, asset: str, partition: str) -> dict[str, object] | None:
    from dagster import AssetKey, AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def monitor_report(instance, partition: str | None) -> tuple[int, dict[str, object]]:
    """A month's drift and decay as the monitoring assets recorded them, and its exit code:
    0 nothing drifted and decay within its threshold, 1 drift or decay, 2 cannot tell."""
    from dagster import AssetKey

    if partition is None:
        partitions = instance.get_materialized_partitions(AssetKey("feature_drift"))
        if not partitions:
            return 2, {"partition": None, "error": "feature_drift was never materialized"}
        partition = max(partitions)
    months.month_index(partition)
    drift = _latest_metadata(instance, "feature_drift", partition)
    if drift is None:
        return 2, {"partition": partition, "error": f"feature_drift {partition} not materialized"}
    if drift.get("status") != "measured":
        return 2, {"partition": partition, "error": f"{drift.get('status')}: {drift.get('reason')}"}
    measured = drift["drift"]
    decay = _latest_metadata(instance, "model_performance", partition) or {}
    performance = (
        {"auc": decay["auc"], "decay": decay["decay"], "model_version": decay["incumbent_version"]}
        if decay.get("status") == "measured"
        else None
    )
    report = {
        "partition": partition,
        "reference_partition": drift["reference_partition"],
        "drift_share": measured["drift_share"],
        "dataset_drift": measured["dataset_drift"],
        "columns": {
            name: {k: facts[k] for k in ("statistic", "score", "threshold", "drifted")}
            for name, facts in measured["columns"].items()
        },
        "performance": performance,
    }
    decayed = performance is not None and performance["decay"] > get_settings().decay_max_auc_drop
    drifted = measured["dataset_drift"] or any(c["drifted"] for c in report["columns"].values())
    return (1 if drifted or decayed else 0), report


def _monitor(args: argparse.Namespace) -> int:
    """Print a month's drift table, drift share and decay; exit 0 fine, 1 drift/decay, 2 unknown."""
    prepare_dagster_home(get_settings())
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        code, report = monitor_report(instance, args.partition)
    if args.json:
        print(json.dumps(report))
        return code
    if "error" in report:
        print(f"streamflow monitor: {report['error']}", file=sys.stderr)
        return code
    print(f"partition {report['partition']} vs reference {report['reference_partition']}")
    print(f"{'column':<32}{'statistic':<34}{'score':>10}{'threshold':>11}  drifted")
    for name, c in report["columns"].items():
        score = "-" if c["score"] is None else f"{c['score']:.4f}"
        threshold = "-" if c["threshold"] is None else f"{c['threshold']:g}"
        drifted = "YES" if c["drifted"] else "no"
        print(f"{name:<32}{c['statistic']:<34}{score:>10}{threshold:>11}  {drifted}")
    print(f"drift share {report['drift_share']:.3f} (dataset drift: {report['dataset_drift']})")
    performance = report["performance"]
    if performance is None:
        print("performance: no labels yet")
    else:
        print(
            f"performance: v{performance['model_version']} AUC {performance['auc']:.4f}, "
            f"decay {performance['decay']:+.4f} (max {get_settings().decay_max_auc_drop})"
        )
    return code


def _serve(args: argparse.Namespace) -> int:
    """Serve the churn API with uvicorn; no Dagster is imported on this path."""
    import uvicorn

    from serving.app import create_app, log_config
    from streamflow.settings import get_serving_settings

    settings = get_serving_settings()
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.serve_host,
        port=args.port if args.port is not None else settings.serve_port,
        access_log=settings.serve_access_log,
        limit_concurrency=settings.serve_limit_concurrency,
        backlog=settings.serve_backlog,
        timeout_keep_alive=settings.serve_timeout_keep_alive_seconds,
        log_config=log_config(),
    )
    return 0


def _dagster_dev(args: argparse.Namespace) -> int:
    """`dagster dev` (UI + daemon) over the instance that `streamflow pipeline` records runs in."""
    prepare_dagster_home(get_settings())
    dagster = Path(sys.executable).with_name("dagster")
    os.chdir(REPO_ROOT)
    command = ["dagster", "dev", "-w", "workspace.yaml", "--host", args.host, "--port", args.port]
    os.execv(dagster, command)


def _celery_worker(args: argparse.Namespace) -> int:
    """A celery worker of the cluster profile: celery's own command on dagster-celery's tasks,
    configured (broker, results, acknowledgement) from the same settings as the runs'."""
    from streamflow_assets.cluster import worker_command

    prepare_dagster_home(get_settings())
    command = worker_command(Path(sys.executable).parent, args.name, args.concurrency)
    os.execv(command[0], command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write synthetic seeds in the real format")
    generate.add_argument("--users", type=int, default=7043)
    generate.add_argument("--months", type=int, default=3)
    generate.add_argument("--seed", type=int, default=42)
    generate.add_argument("--out", default="data/seeds")
    generate.set_defaults(run=_generate)

    pipeline = commands.add_parser(
        "pipeline", help="materialize every seeded month through Dagster, in month order"
    )
    pipeline.add_argument("--seeds", help="seeds dir (default: $STREAMFLOW_SEEDS_DIR)")
    pipeline.add_argument(
        "--partitions", help="months to run, e.g. 2024-01..2024-03 (default: every seeded month)"
    )
    pipeline.set_defaults(run=_pipeline)

    freshness = commands.add_parser(
        "freshness",
        help="is the online store as fresh as the newest snapshots? exit 0 yes, 1 no, 2 unknown",
    )
    freshness.set_defaults(run=_freshness)

    monitor = commands.add_parser(
        "monitor",
        help="a month's drift and decay: exit 0 fine, 1 drift or decay, 2 not known",
    )
    monitor.add_argument("--partition", help="YYYY-MM (default: the latest measured)")
    monitor.add_argument("--json", action="store_true", help="one JSON object")
    monitor.set_defaults(run=_monitor)

    serve = commands.add_parser(
        "serve", help="serve /predict from the champion model and the online store"
    )
    serve.add_argument("--host", help="interface to bind (default: $STREAMFLOW_SERVE_HOST)")
    serve.add_argument("--port", type=int, help="port (default: $STREAMFLOW_SERVE_PORT)")
    serve.set_defaults(run=_serve)

    worker = commands.add_parser(
        "celery-worker", help="a celery worker that runs the cluster profile's steps"
    )
    worker.add_argument("--name", default=f"streamflow-{socket.gethostname()}-{os.getpid()}")
    worker.add_argument("--concurrency", type=int, default=1, help="steps at a time")
    worker.set_defaults(run=_celery_worker)

    dev = commands.add_parser("dagster-dev", help="the Dagster UI and daemon over this data dir")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", default="3000")
    dev.set_defaults(run=_dagster_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The console shows one line per step of work; library deprecation notices and progress
    # bars would bury it (Dagster keeps every event of a run for the UI).
    # Libraries add warning filters of their own on import, so warnings are routed to a logger
    # that stays quiet rather than filtered; MLflow sets its log level from the environment.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        return args.run(args)
    except ValueError as error:
        print(f"streamflow {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
