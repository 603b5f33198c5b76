"""The pipeline lock: a second holder is refused naming the first; a killed holder frees it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamflow.adapters.pipeline_lock import Holder, PipelineBusy, pipeline_lock
from streamflow.settings import Settings
from tests.conftest import child_env
from tests.profiles import PROFILES, throwaway_databases

HOLD_IN_CHILD = """
import sys, time
from streamflow.settings import get_settings
from streamflow.adapters.pipeline_lock import pipeline_lock
with pipeline_lock(get_settings()):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture(params=PROFILES)
def lock_settings(request, settings_for, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "local":
        yield settings_for(tmp_path / "data", tmp_path / "seeds")
        return
    with throwaway_databases("") as (database,):
        yield settings_for(
            tmp_path / "data", tmp_path / "seeds", profile="postgres", postgres_db=database
        )


def test_a_second_holder_is_refused_naming_the_first_and_its_run(lock_settings: Settings) -> None:
    with pipeline_lock(lock_settings) as lock:
        with pytest.raises(PipelineBusy) as refused, pipeline_lock(lock_settings):
            pass
        assert refused.value.holder is not None and refused.value.holder.pid == os.getpid()
        assert f"(pid {os.getpid()}, on " in str(refused.value)
        lock.announce("2024-02", "1a2b3c4d-0000-4000-8000-000000000000")
        with pytest.raises(PipelineBusy) as refused, pipeline_lock(lock_settings):
            pass
        assert f"(pid {os.getpid()}, run 1a2b3c4d of 2024-02, on " in str(refused.value)
    with pipeline_lock(lock_settings):
        pass  # released on exit


def test_a_refusal_while_the_holder_writes_itself_in_still_names_it(tmp_path: Path) -> None:
    """Two pipelines started at once: the second may find the lock taken and its file empty."""
    path = tmp_path / "data" / "pipeline.lock"
    path.parent.mkdir()
    settings = Settings(data_dir=tmp_path / "data")
    with open(path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder = Holder(4242, "elsewhere", "20240229T000000Z")
        # The holder writes itself in a moment after the refused one looked.
        writer = threading.Timer(0.2, lambda: (held.write(holder.encode()), held.flush()))
        writer.start()
        with pytest.raises(PipelineBusy) as refused, pipeline_lock(settings):
            pass
        writer.join()
    assert refused.value.holder == holder


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(lock_settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if k.startswith("STREAMFLOW_")}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_IN_CHILD],
        env=child_env(**env),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(PipelineBusy) as refused, pipeline_lock(lock_settings):
            pass
        assert refused.value.holder.pid == child.pid
    finally:
        child.kill()
        child.wait(timeout=30)
    # The server notices a dead client's session within moments; the kernel at once.
    deadline = time.monotonic() + 10
    while True:
        try:
            with pipeline_lock(lock_settings):
                return
        except PipelineBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
