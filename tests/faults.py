"""What the fault tests share: `streamflow pipeline` as a real process, watched and killed."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import child_env

REPO_ROOT = Path(__file__).resolve().parents[1]
STREAMFLOW = REPO_ROOT / ".venv" / "bin" / "streamflow"
# A pipeline over one month of the real seeds takes one to two minutes on a busy 2-core machine.
RUN_TIMEOUT = 420


@dataclass
class Pipeline:
    """A running `streamflow pipeline`, its output in files beside the data dir."""

    process: subprocess.Popen
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def finish(self, timeout: float = RUN_TIMEOUT) -> tuple[int, str, str]:
        """Exit code, stdout and stderr, once it has exited by itself (a hang fails the test)."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as hung:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"still running after {timeout}s: {self.output()}") from hung
        return code, self.stdout.read_text(), self.stderr.read_text()

    def kill9(self) -> None:
        self.process.kill()  # SIGKILL: no handler, no cleanup, as `kill -9`
        self.process.wait(timeout=30)

    def output(self) -> str:
        return self.stdout.read_text()[-3000:] + self.stderr.read_text()[-3000:]


def start_pipeline(data_dir: Path, *args: str, **env: str) -> Pipeline:
    """`streamflow pipeline ARGS` with STREAMFLOW_DATA_DIR=data_dir plus `env`."""
    logs = data_dir.parent
    logs.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.monotonic_ns()}"
    stdout, stderr = logs / f"pipeline.{stamp}.out", logs / f"pipeline.{stamp}.err"
    with open(stdout, "w") as out, open(stderr, "w") as err:
        process = subprocess.Popen(
            [str(STREAMFLOW), "pipeline", *args],
            cwd=logs,
            env=child_env(STREAMFLOW_DATA_DIR=str(data_dir), **env),
            stdout=out,
            stderr=err,
        )
    return Pipeline(process, stdout, stderr)


def wait_until(
    condition: Callable[[], bool], pipeline: Pipeline, what: str, timeout: float = RUN_TIMEOUT
) -> None:
    """Poll `condition` until it holds; fail if the pipeline exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if pipeline.process.poll() is not None:
            raise AssertionError(f"pipeline exited before {what}: {pipeline.output()}")
        if time.monotonic() > deadline:
            pipeline.kill9()
            raise AssertionError(f"no {what} within {timeout}s: {pipeline.output()}")
        time.sleep(0.005)
