"""Where Evidently measures a month's drift."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import TYPE_CHECKING

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from streamflow.domain.model_monitoring import DriftResult, measure_drift

if TYPE_CHECKING:
    import pandas as pd


class DriftResource(ConfigurableResource):
    """Where Evidently measures a month's drift: in a worker process started with the run, or in
    the step's own process.

    Importing Evidently takes seconds of CPU, about half of `feature_drift` at 100,000 users. When
    a run executes all its steps in one process (the local and postgres profiles), the worker
    (`core.drift_worker`) is started as the run's resources are set up and imports Evidently on
    another core while the month is ingested and trained; Evidently's memory leaves with it. A
    plain subprocess rather than multiprocessing's spawn, which would re-run an unguarded
    `__main__` script (and any materialization in it) in the child. Where every step is a
    process of its own (the cluster profile's celery tasks) there is nothing to overlap with.
    """

    in_worker: bool = True
    _worker: subprocess.Popen | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        if self.in_worker:
            self._worker = subprocess.Popen(
                [sys.executable, "-m", "streamflow.adapters.drift_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        # A run that ended before measuring (a failed step, a month without an incumbent).
        if self._worker is not None:
            self._worker.kill()
            self._worker.communicate()

    def measure(
        self,
        reference: pd.DataFrame,
        current: pd.DataFrame,
        share_threshold: float,
        rows: tuple[int, int],
    ) -> tuple[DriftResult, str]:
        """`core.monitoring.measure_drift`, in the worker when there is one (it serves once)."""
        worker, self._worker = self._worker, None
        if worker is None:
            return measure_drift(reference, current, share_threshold, rows=rows)
        request = pickle.dumps((reference, current, share_threshold, rows))
        output, errors = worker.communicate(request)
        if worker.returncode != 0:
            raise RuntimeError(
                f"the drift worker exited with {worker.returncode}: "
                f"{errors.decode(errors='replace')[-2000:]}"
            )
        outcome = pickle.loads(output)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
