"""One month's drift, measured in a process of its own (`DriftResource` starts it).

`python -m streamflow.adapters.drift_worker` imports Evidently first, then reads
`(reference, current, share_threshold, rows)` pickled on stdin and writes `measure_drift`'s
result, or the exception it raised, pickled on stdout. Parent and worker are one installation,
so the pickles are as trusted as the parent's own objects.
"""

from __future__ import annotations

import pickle
import sys

from streamflow.domain.model_monitoring import import_evidently, measure_drift


def main() -> None:
    results = sys.stdout.buffer
    # Whatever a library prints goes to stderr, never into the pickle.
    sys.stdout = sys.stderr
    import_evidently()
    reference, current, share_threshold, rows = pickle.load(sys.stdin.buffer)
    try:
        outcome: object = measure_drift(reference, current, share_threshold, rows=rows)
    except Exception as error:
        outcome = error
    pickle.dump(outcome, results)
    results.flush()


if __name__ == "__main__":
    main()
