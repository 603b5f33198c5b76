"""The cluster profile's servers in tests: a Redis db, a RabbitMQ vhost, celery workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamflow.ops.dagster_home import dagster_postgres_env, dagster_yaml
from streamflow.settings import Settings
from tests.serving.conftest import Child

RABBITMQ = ("127.0.0.1", 5672)
REDIS = ("127.0.0.1", 6379)
BIN = Path(sys.executable).parent


def require_servers() -> None:
    """Skip, naming the server, when RabbitMQ or Redis does not answer (.ci/run starts both)."""
    for name, address in (("RabbitMQ", RABBITMQ), ("Redis", REDIS)):
        try:
            socket.create_connection(address, timeout=2).close()
        except OSError as error:
            pytest.skip(f"{name} is not reachable on {address[0]}:{address[1]} ({error})")


@contextlib.contextmanager
def redis_db() -> Iterator[int]:
    """A database number of the shared Redis that holds no key, marked as taken while in use;
    afterwards every key written to it is deleted (the other databases are never touched)."""
    marker = f"streamflow-test:{uuid.uuid4().hex}"
    for db in range(15, 0, -1):
        client = redis.Redis(*REDIS, db=db)
        # SET NX on a key only this test uses, then re-check that nothing else is there.
        if client.dbsize() == 0 and client.set(marker, "1", nx=True) and client.dbsize() == 1:
            break
    else:
        raise RuntimeError("every Redis database 1-15 holds keys: none free for the test")
    try:
        yield db
    finally:
        for key in client.scan_iter(count=1000):
            client.delete(key)
        client.close()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A vhost of its own on the shared RabbitMQ (queues named `dagster` stay apart), deleted."""
    vhost = f"streamflow-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def group_pids(pgid: int) -> set[int]:
    """Every live process of a process group (a worker: celery's main process and its pool)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                    pids.add(int(entry.name))
    return pids


@contextlib.contextmanager
def celery_workers(
    settings: Settings, env: dict[str, str], logs: Path, count: int = 2
) -> Iterator[list[Child]]:
    """`count` workers started as `streamflow celery-worker` (celery's own worker), each
    answering the broker's ping before this yields; each is stopped (its process group) after."""
    from celery import Celery

    names = [f"streamflow-test-{n}-{uuid.uuid4().hex[:6]}" for n in range(count)]
    workers = []
    app = Celery(broker=settings.celery_broker)
    try:
        for name in names:
            command = [str(BIN / "streamflow"), "celery-worker", "--name", name]
            workers.append(Child.start(command, env, logs / f"{name}.log"))
        deadline = time.monotonic() + 180
        while True:
            answered = {n.split("@")[0] for reply in app.control.ping(timeout=1) for n in reply}
            if answered >= set(names):
                break
            for worker in workers:
                if worker.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"celery worker did not come up:\n{worker.output()}")
        yield workers
    finally:
        app.close()
        for worker in workers:
            worker.stop()


def dagster_home(settings: Settings, path: Path, database: str) -> dict[str, str]:
    """A DAGSTER_HOME with the cluster instance over `database`, as the variables to set."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dagster_yaml("cluster"), path / "dagster.yaml")
    return {"DAGSTER_HOME": str(path), **dagster_postgres_env(settings, database)}


# What a step leaves in its process (pandas' and glibc's freed-but-kept memory, a module cache):
# here, on purpose, a block kept by the module of the job below.
KEPT: list[bytearray] = []
KEPT_MB = 400


def keeping_job():
    """A one-step job on the cluster profile's executor whose step keeps KEPT_MB in its process
    and returns its pid; rebuilt by the worker from this module (`reconstructable`)."""
    from dagster import job, op

    from streamflow.settings import get_settings
    from streamflow_assets.cluster import executor_config
    from streamflow_assets.executors import checked_celery_executor

    @op
    def keep_memory() -> int:
        KEPT.append(bytearray(os.urandom(1024)) * (KEPT_MB * 1024))
        return os.getpid()

    @job(executor_def=checked_celery_executor.configured(executor_config(get_settings())))
    def keeping():
        keep_memory()

    return keeping
