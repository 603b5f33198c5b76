"""Every StreamFlow setting, read once from `STREAMFLOW_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["local", "postgres"]


class Settings(BaseSettings):
    """Where StreamFlow keeps its state and which stores it uses.

    The `local` profile keeps every store under `data_dir`, so two data dirs never share state.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMFLOW_", extra="ignore")

    profile: Profile = "local"
    data_dir: Path = Path("var")
    seeds_dir: Path = Path("data/seeds")

    @field_validator("data_dir", "seeds_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # Feast and MLflow resolve relative paths against their own working dirs; pin them once.
        return path.expanduser().resolve()

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster"

    @property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"


@lru_cache
def get_settings() -> Settings:
    return Settings()
