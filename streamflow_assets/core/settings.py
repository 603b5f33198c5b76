"""Every StreamFlow setting, read once from `STREAMFLOW_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["local", "postgres"]
REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Where StreamFlow keeps its state and which stores it uses.

    The `local` profile keeps every store under `data_dir`, so two data dirs never share state.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMFLOW_", extra="ignore")

    profile: Profile = "local"
    data_dir: Path = Path("var")
    seeds_dir: Path = Path("data/seeds")
    feature_repo: Path = REPO_ROOT / "feature_repo"

    @field_validator("data_dir", "seeds_dir", "feature_repo")
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

    @property
    def feast_dir(self) -> Path:
        return self.data_dir / "feast"

    @property
    def feature_store_yaml(self) -> Path:
        name = (
            "feature_store.yaml"
            if self.profile == "local"
            else f"feature_store.{self.profile}.yaml"
        )
        return self.feature_repo / name

    def feast_env(self) -> dict[str, str]:
        """The variables `feature_store.yaml` refers to, so the `feast` CLI sees the same stores."""
        return {"STREAMFLOW_DATA_DIR": str(self.data_dir)}


@lru_cache
def get_settings() -> Settings:
    return Settings()
