"""Which registry version a model URI means: stage, alias or version, and what is refused."""

from __future__ import annotations

import pytest

from serving.model import ModelUri
from streamflow.settings import ServingSettings


@pytest.mark.parametrize(
    ("uri", "stage", "alias", "version"),
    [
        ("models:/streamflow_churn/Production", "Production", None, None),
        ("models:/streamflow_churn@production", None, "production", None),
        ("models:/streamflow_churn/3", None, None, "3"),
    ],
)
def test_a_model_uri_names_one_stage_alias_or_version(
    uri: str, stage: str | None, alias: str | None, version: str | None
) -> None:
    parsed = ModelUri.parse(uri)
    assert (parsed.name, parsed.stage, parsed.alias, parsed.version) == (
        "streamflow_churn",
        stage,
        alias,
        version,
    )


@pytest.mark.parametrize(
    "uri",
    [
        "runs:/abc/model",
        "models:/",
        "models:/streamflow_churn",
        "models:/streamflow_churn/",
        "models:/streamflow_churn/Production/extra",
        "models:/@production",
        "models:/streamflow_churn@",
        "models:/a/b@c",
    ],
)
def test_other_uris_are_refused_with_the_accepted_forms(uri: str) -> None:
    with pytest.raises(ValueError, match="models:/"):
        ModelUri.parse(uri)


def test_the_default_model_uri_is_the_champion_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMFLOW_MODEL_URI", raising=False)
    assert ServingSettings().model_uri == "models:/streamflow_churn@champion"
    monkeypatch.setenv("STREAMFLOW_MODEL_URI", "models:/streamflow_churn@production")
    monkeypatch.setenv("STREAMFLOW_MAX_FEATURE_AGE_DAYS", "0.5")
    settings = ServingSettings()
    assert ModelUri.parse(settings.model_uri).alias == "production"
    assert settings.max_feature_age.total_seconds() == 43200
