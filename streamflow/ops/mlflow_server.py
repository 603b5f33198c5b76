"""`mlflow server` in one process: the CLI becomes its uvicorn server instead of waiting on it.

MLflow 3.17's `mlflow server` validates its options, migrates the database, then starts
`python -m uvicorn mlflow.server.fastapi_app:app` as a child and waits on it, holding a full MLflow
import (about 250 MB) only to forward signals. No public option runs the server in place, so this
adapter swaps the private `mlflow.server._exec_cmd` (the spawn) for an exec: the same command line,
checks and migration, one process less. Re-check on an MLflow upgrade.

Run as `python -m streamflow.ops.mlflow_server [mlflow server options]`.
"""

import os
import sys


def _exec_in_place(cmd: list[str], extra_env: dict[str, str] | None = None, **_: object) -> None:
    os.execvpe(cmd[0], cmd, {**os.environ, **(extra_env or {})})


def main(argv: list[str] | None = None) -> None:
    import mlflow.server
    from mlflow.cli import cli

    mlflow.server._exec_cmd = _exec_in_place
    # MLflow 3 otherwise prepares job-queue workers (GenAI scorers, each a full MLflow import)
    # for work this project never submits; the one place both stacks start the server from.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    cli(["server", *(sys.argv[1:] if argv is None else argv)], prog_name="mlflow")


if __name__ == "__main__":
    main()
