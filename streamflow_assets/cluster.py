"""The cluster profile's celery setup: executor config, worker command, broker preflight."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kombu import Connection
from kombu.utils.url import maybe_sanitize_url

from streamflow.settings import Settings

# The queue dagster-celery routes every step to (its make_app names no other).
QUEUE = "dagster"
# The module that holds the workers' app (`celery -A`).
WORKER_APP = "streamflow_assets.celery_app"


class BrokerUnreachable(RuntimeError):
    """The celery broker does not accept connections: no step could ever be queued."""


def executor_config(settings: Settings) -> dict[str, Any]:
    """`celery_executor`'s config, the same for the run that queues steps and every worker."""
    return {
        "broker": settings.celery_broker,
        "backend": settings.celery_results,
        "config_source": {
            # Acknowledge a step's message when it ends, not when it starts: a worker that dies
            # whole (host lost, SIGKILL) drops its connection and the broker hands the step to
            # another worker instead of the run waiting for a result forever. A pool process
            # killed under a live worker fails the step (WorkerLostError) rather than looping.
            "task_acks_late": True,
            "task_reject_on_worker_lost": False,
            "broker_connection_retry_on_startup": True,
            "broker_connection_timeout": 5,
            "worker_hijack_root_logger": False,
            # In KiB; checked against the pool process's RSS after each step.
            "worker_max_memory_per_child": settings.celery_worker_max_memory_mb * 1024,
        },
    }


def worker_command(bin_dir: Path, name: str, concurrency: int = 1) -> list[str]:
    """celery's own worker command on the workers' app, with the options `dagster-celery worker
    start` gives it (one step prefetched, the dagster queue, `name@host`); one pool process runs
    one step at a time, and imports the code location when its first step comes."""
    return [
        str(bin_dir / "celery"), "-A", WORKER_APP, "worker", "--prefetch-multiplier=1",
        "--loglevel=INFO", "-Q", QUEUE, "-n", f"{name}@%h",
        f"--concurrency={concurrency}", "--pool=prefork",
    ]  # fmt: skip


def check_broker(url: str, timeout: float = 5.0) -> None:
    """Connect to the broker once; raise `BrokerUnreachable` naming it (password hidden)."""
    try:
        with Connection(url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as error:
        # kombu raises per transport (OperationalError, socket errors, auth errors): all mean
        # the same to a run that is about to queue its steps.
        raise BrokerUnreachable(
            f"celery broker {maybe_sanitize_url(url)} is not reachable "
            f"({type(error).__name__}: {error}); start RabbitMQ or set STREAMFLOW_CELERY_BROKER"
        ) from error
