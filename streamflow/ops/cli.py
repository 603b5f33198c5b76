"""The `streamflow` command: generate seeds, run the monthly pipeline through Dagster, serve,
check freshness and monitoring, and start the cluster's workers (typer; `--help` on each)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from streamflow.domain import months
from streamflow.ops.dagster_home import use_dagster_home
from streamflow.settings import REPO_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from streamflow.adapters.pipeline_lock import PipelineLock


def _exit_with(code: int | None, **_: object) -> None:
    """A command's return value is the process's exit code (its documented meaning)."""
    raise typer.Exit(code or 0)


app = typer.Typer(
    name="streamflow",
    help=__doc__,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    result_callback=_exit_with,
)


@app.command()
def generate(
    users: int = 7043, months_: Annotated[int, typer.Option("--months")] = 3, seed: int = 42,
    out: Path = Path("data/seeds"),
) -> int:  # fmt: skip
    """Write synthetic seeds in the real format."""
    from streamflow.ops.generator import generate_seeds

    started = time.perf_counter()
    print(generate_seeds(out, users=users, months=months_, seed=seed))
    print(f"generated in {time.perf_counter() - started:.1f}s")
    return 0


@app.command()
def pipeline(
    seeds: Annotated[
        Path | None, typer.Option(help="seeds dir (default: $STREAMFLOW_SEEDS_DIR)")
    ] = None,
    partitions: Annotated[
        str | None,
        typer.Option(help="months to run, e.g. 2024-01..2024-03 (default: every seeded month)"),
    ] = None,
) -> int:
    """Materialize every seeded month through Dagster, in month order."""
    if seeds:
        os.environ["STREAMFLOW_SEEDS_DIR"] = str(seeds.resolve())
        get_settings.cache_clear()
    settings = get_settings()
    keys = months.parse_range(partitions) if partitions else None
    if keys is None:
        keys = months.seeded_months(settings.seeds_dir)
        if not keys:
            print(f"no month_NNN/ folders in {settings.seeds_dir}", file=sys.stderr)
            return 2
    # Before the lock and any run: a month without seeds is no partition, its run would fail.
    months.require_seeds(settings.seeds_dir, keys)

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

    home = use_dagster_home(settings)
    with DagsterInstance.get() as instance:
        # Under the lock: no other pipeline of these stores is running, so a run left in
        # progress by a process that is gone was killed.
        _release_dead_runs(instance, settings)
        print(
            f"materializing {len(keys)} month(s) from {settings.seeds_dir} (DAGSTER_HOME={home})",
            flush=True,
        )
        with _console() as console:
            outcomes = run_months(
                keys,
                instance=instance,
                on_start=lock.announce,
                on_asset=lambda key, asset, seconds: print(
                    f"{key}  {seconds:6.1f}s  {asset}", file=console
                ),
                on_done=lambda outcome: print(outcome.summary(), file=console),
            )
    failed = [o for o in outcomes if not o.success]
    if failed:
        print(f"{len(failed)} partition(s) failed:", file=sys.stderr)
        for outcome in failed:
            print(f"{outcome.partition}: {outcome.error}", file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _console() -> Iterator[TextIO]:
    """This process's stdout as it is now, line-buffered: a console sees each line at once, and
    so does a file or pipe. While a run executes in this process, Dagster points stdout into the
    run's captured logs (shown late, through its own copying); lines written here bypass that."""
    sys.stdout.flush()
    with os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1) as console:
        yield console


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


@app.command()
def freshness() -> int:
    """Is the online store as fresh as the newest snapshots? Exit 0 yes, 1 no, 2 unknown."""
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


@app.command()
def monitor(
    partition: Annotated[
        str | None, typer.Option(help="YYYY-MM (default: the latest measured)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
) -> int:
    """A month's drift and decay: exit 0 fine, 1 drift or decay, 2 not known."""
    use_dagster_home(get_settings())
    from dagster import DagsterInstance

    from streamflow.ops.monitor import monitor_report

    with DagsterInstance.get() as instance:
        code, report = monitor_report(instance, partition)
    if as_json:
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
    served = report["served"]
    if served is None or served["status"] != "measured":
        print(f"served: {'not measured' if served is None else served['status']}")
    else:
        aucs = ", ".join(f"v{v} AUC {auc}" for v, auc in served["auc"].items())
        print(
            f"served: {served['count']} answers ({aucs}); "
            f"shadow agreement {served['shadow_agreement']}"
        )
    return code


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="interface to bind (default: $STREAMFLOW_SERVE_HOST)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port (default: $STREAMFLOW_SERVE_PORT)")] = None,
) -> int:
    """Serve /predict from the champion model and the online store (no Dagster imported)."""
    import uvicorn

    from serving.app import create_app, log_config
    from streamflow.settings import get_serving_settings

    settings = get_serving_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.serve_host,
        port=port if port is not None else settings.serve_port,
        access_log=settings.serve_access_log,
        limit_concurrency=settings.serve_limit_concurrency,
        backlog=settings.serve_backlog,
        timeout_keep_alive=settings.serve_timeout_keep_alive_seconds,
        log_config=log_config(),
    )
    return 0


@app.command()
def demo(
    seeds: Annotated[
        Path | None, typer.Option(help="seeds dir to use (default: generate the demo's seeds)")
    ] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> int:
    """The whole loop, told as it happens: generate, run the months, serve, promote, hot-reload,
    monitor; the API then stays up until Ctrl-C (`make demo`)."""
    from streamflow.ops.demo import run_demo

    return run_demo(seeds, host, port)


@app.command("celery-worker")
def celery_worker(
    name: str = f"streamflow-{socket.gethostname()}-{os.getpid()}",
    concurrency: Annotated[int, typer.Option(help="steps at a time")] = 1,
) -> int:
    """A celery worker that runs the cluster profile's steps: celery's own command on
    dagster-celery's tasks, configured from the same settings as the runs'."""
    from streamflow_assets.cluster import worker_command

    use_dagster_home(get_settings())
    command = worker_command(Path(sys.executable).parent, name, concurrency)
    os.execv(command[0], command)


@app.command("dagster-dev")
def dagster_dev(host: str = "127.0.0.1", port: str = "3000") -> int:
    """The Dagster UI and daemon (`dagster dev`) over the instance `streamflow pipeline` uses."""
    settings = get_settings()
    home = use_dagster_home(settings)
    dagster = Path(sys.executable).with_name("dagster")
    # Started from the instance's home: from the repository, `dagster dev` warns that the
    # dagster.yaml it finds there is not its instance's (it is the file copied into the home).
    # Its processes then start there too, so the settings' relative paths are pinned first.
    os.environ["STREAMFLOW_DATA_DIR"] = str(settings.data_dir)
    os.environ["STREAMFLOW_SEEDS_DIR"] = str(settings.seeds_dir)
    os.chdir(home)
    # dagster 1.13 recommends `dg dev` (the dagster-dg package, which we do not ship) each start.
    superseded = "ignore:Function `dev_command` is superseded"
    os.environ["PYTHONWARNINGS"] = ",".join(
        filter(None, [os.environ.get("PYTHONWARNINGS"), superseded])
    )
    workspace = str(REPO_ROOT / "workspace.yaml")
    command = ["dagster", "dev", "-w", workspace, "--host", host, "--port", port]
    os.execv(dagster, command)


def main(argv: list[str] | None = None) -> int:
    """The command's exit code: a command's own; 2 for a bad argument or a ValueError (a bad
    month range, a seeds folder that is not one), named after the command."""
    args = sys.argv[1:] if argv is None else argv
    # The console shows one line per step of work; library deprecation notices and progress
    # bars would bury it (Dagster keeps every event of a run for the UI).
    # Libraries add warning filters of their own on import, so warnings are routed to a logger
    # that stays quiet rather than filtered; MLflow sets its log level from the environment.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # MLflow prints two "View run/experiment at" links per run against a tracking server: the
    # month's summary line names what ran, and the MLflow UI lists the runs.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        # Typer's own handling of the command line: usage errors named, exit 2; --help.
        app(args, prog_name="streamflow")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    except ValueError as error:
        command = next((arg for arg in args if not arg.startswith("-")), "")
        print(f"streamflow {command}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
