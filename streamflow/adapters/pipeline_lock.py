"""One `streamflow pipeline` at a time over a set of stores; a second is refused, naming the holder.

Two pipelines over the same months would each register a candidate per month and race to
promote; refusing the second keeps one candidate per partition. The lock lives with the stores:
a file under the data dir (local profile, every store is under it) or a PostgreSQL advisory lock
in the database (postgres profile, whichever data dir each run uses). Both are released by the
operating system or the server when the holder dies, `kill -9` included: no stale lock to clear.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

import psycopg
import tenacity
from psycopg import conninfo

from streamflow.settings import Settings

# The advisory lock key, and the application_name prefix by which a holder's session is found.
LOCK_NAME = "streamflow pipeline"


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, and the run it is on: enough for a refused user to find it."""

    pid: int
    host: str
    since: str
    run: str | None = None  # "<first 8 of the run id>@<partition>", as the summary lines print it

    def describe(self) -> str:
        run = f", run {self.run.replace('@', ' of ')}" if self.run else ""
        return f"pid {self.pid}{run}, on {self.host} since {self.since}"

    def encode(self) -> str:
        run = f" run={self.run}" if self.run else ""
        return f"{LOCK_NAME} pid={self.pid}{run} since={self.since} host={self.host}"

    @classmethod
    def decode(cls, text: str) -> Holder | None:
        fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
        if "pid" not in fields:
            return None
        return cls(
            int(fields["pid"]), fields.get("host", "?"), fields.get("since", "?"), fields.get("run")
        )

    @classmethod
    def this_process(cls) -> Holder:
        since = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return cls(os.getpid(), socket.gethostname(), since)

    def on(self, partition: str, run_id: str) -> Holder:
        return dataclasses.replace(self, run=f"{run_id[:8]}@{partition}")


class PipelineLock:
    """A held lock; `announce` records the run its holder starts, for whoever is refused."""

    def __init__(self, me: Holder, publish: Callable[[Holder], None]):
        self.holder = me
        self._publish = publish

    def announce(self, partition: str, run_id: str) -> None:
        self.holder = self.holder.on(partition, run_id)
        self._publish(self.holder)


class PipelineBusy(RuntimeError):
    """Another pipeline holds the stores; `holder` is None when it could not be read."""

    def __init__(self, where: str, holder: Holder | None):
        self.holder = holder
        who = holder.describe() if holder else "a process whose details could not be read"
        super().__init__(f"another streamflow pipeline is running over {where} ({who}); refused")


def _published_holder(handle: IO[str], wait_seconds: float = 1.0) -> Holder | None:
    """The holder the lock file names. A holder writes itself in just after taking the lock (and
    rewrites itself on each run): a refusal in between waits for the record, briefly."""

    def read() -> Holder | None:
        handle.seek(0)
        return Holder.decode(handle.read())

    return tenacity.Retrying(
        stop=tenacity.stop_after_delay(wait_seconds),
        wait=tenacity.wait_fixed(0.01),
        retry=tenacity.retry_if_result(lambda holder: holder is None),
        retry_error_callback=lambda _: None,
    )(read)


@contextlib.contextmanager
def _file_lock(path: os.PathLike[str] | str, me: Holder) -> Iterator[PipelineLock]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineBusy(f"the data dir ({path})", _published_holder(handle)) from None

        def publish(holder: Holder) -> None:
            handle.seek(0)
            handle.truncate()
            handle.write(holder.encode() + "\n")
            handle.flush()

        publish(me)
        try:
            yield PipelineLock(me, publish)
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(dsn: str, database: str, me: Holder) -> Iterator[PipelineLock]:
    # application_name is what pg_stat_activity shows for the session: the refused run reads
    # the holder from it (at most 63 bytes: pid and run first; since and host may be cut short).
    with psycopg.connect(dsn, autocommit=True, application_name=me.encode()[:63]) as conn:
        (taken,) = conn.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s))", (LOCK_NAME,)
        ).fetchone()
        if not taken:
            row = conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database() "
                "AND a.application_name LIKE %s AND a.pid <> pg_backend_pid() LIMIT 1",
                (f"{LOCK_NAME}%",),
            ).fetchone()
            raise PipelineBusy(
                f"the PostgreSQL database {database!r}", Holder.decode(row[0]) if row else None
            )

        def publish(holder: Holder) -> None:
            conn.execute(
                "SELECT set_config('application_name', %s, false)", (holder.encode()[:63],)
            )

        try:
            yield PipelineLock(me, publish)
        finally:
            # Released here, before the connection closes: a session's locks go only when its
            # server process has finished exiting, which a run started right after this one
            # could beat (and be refused). A holder that dies leaves that to the server.
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (LOCK_NAME,))


def pipeline_lock(settings: Settings) -> contextlib.AbstractContextManager[PipelineLock]:
    """Held while a pipeline runs over the profile's stores; PipelineBusy if another holds it."""
    me = Holder.this_process()
    if settings.profile == "postgres":
        dsn = conninfo.make_conninfo(
            host=settings.postgres_host,
            port=settings.postgres_port,
            user=settings.postgres_user,
            password=settings.postgres_password.get_secret_value(),
            dbname=settings.postgres_db,
        )
        return _advisory_lock(dsn, settings.postgres_db, me)
    return _file_lock(settings.data_dir / "pipeline.lock", me)
