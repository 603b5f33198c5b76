"""The Dagster instance StreamFlow's commands share: its home, and the profile's dagster.yaml."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from streamflow.settings import REPO_ROOT, Settings


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


def dagster_home(settings: Settings) -> Path:
    """$DAGSTER_HOME, or the data dir's instance."""
    return Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home).resolve()


def prepare_dagster_home(settings: Settings) -> Path:
    """The instance's home with the profile's dagster.yaml in it (one already there is kept,
    and said so if it differs: a user's edits or another deployment's instance)."""
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    target, source = home / "dagster.yaml", dagster_yaml(settings.profile)
    if not target.exists():
        shutil.copyfile(source, target)
    elif target.read_bytes() != source.read_bytes():
        # On stderr: `streamflow monitor --json` prints its one JSON object on stdout.
        print(f"keeping {target}, which differs from {source.name}", file=sys.stderr)
    return home


def use_dagster_home(settings: Settings) -> Path:
    """Make this process's Dagster instance the prepared home: DAGSTER_HOME (unless set) and,
    under the postgres and cluster profiles, the DAGSTER_POSTGRES_* it reads (unless set)."""
    if settings.uses_postgres:
        for name, value in dagster_postgres_env(settings).items():
            os.environ.setdefault(name, value)
    home = prepare_dagster_home(settings)
    os.environ.setdefault("DAGSTER_HOME", str(home))
    return home
