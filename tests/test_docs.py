"""The documentation holds true: the site builds strict, the README stays a front door, and every
count, command, setting and route it shows is the code's own."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from pydantic import SecretStr

from serving.app import app as api
from streamflow.ops import docs_site
from streamflow.ops.stack import StackSettings
from streamflow.settings import ServingSettings, Settings
from tests.conftest import child_env

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
PAGES = sorted((REPO_ROOT / "docs").rglob("*.md"))
DOCUMENTS = [README, *PAGES]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
WORDS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
NUMBERS = {word: value for value, word in enumerate(WORDS.split())}
NOUNS = "asset checks|assets|checks|jobs|schedules|sensors|automations"
COUNT = re.compile(rf"\b(\d+|{'|'.join(NUMBERS)}) ({NOUNS})\b")
# STREAMFLOW_* variables that are not settings: docker compose's image name, the browser test's
# screenshot folder.
NOT_SETTINGS = {"STREAMFLOW_IMAGE", "STREAMFLOW_SCREENSHOTS_DIR"}


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def _code(text: str) -> list[str]:
    """The lines of every fenced block and every inline code span of a page."""
    blocks = [line for block in FENCE.findall(text) for line in block.splitlines()]
    prose = FENCE.sub("", text)
    return blocks + [span for line in prose.splitlines() for span in CODE_SPAN.findall(line)]


@pytest.fixture(scope="module")
def defs():
    return docs_site.definitions()


def test_the_site_builds_strict_with_the_generated_blocks(tmp_path: Path, defs) -> None:
    built = subprocess.run(
        [REPO_ROOT / ".venv" / "bin" / "mkdocs", "build", "--strict", "-d", tmp_path / "site"],
        cwd=REPO_ROOT,
        env=child_env(NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "WARNING" not in built.stderr, built.stderr
    assets_page = (tmp_path / "site" / "reference" / "assets" / "index.html").read_text()
    assert "<!-- generated:" not in assets_page
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert key.to_user_string() in assets_page
    for check in graph.asset_check_keys:
        assert check.name in assets_page
    cli_page = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    for name, command in docs_site.cli_command.commands.items():
        assert f"streamflow {name}" in cli_page
        for param in command.params:
            assert all(opt in cli_page for opt in param.opts), (name, param.opts)


def test_the_readme_is_a_front_door_of_at_most_250_lines() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, len(lines)


def test_the_readme_asset_graph_is_the_generated_one(defs) -> None:
    readme = README.read_text()
    shown = re.search(r"^```mermaid\n.*?^```", readme, re.MULTILINE | re.DOTALL)
    assert shown, "README.md has no mermaid asset graph"
    assert shown.group(0) == docs_site.asset_graph_mermaid(defs), (
        "the README's asset graph differs from the definitions: paste the output of "
        "`.venv/bin/python -c 'from streamflow.ops import docs_site as d; "
        "print(d.asset_graph_mermaid(d.definitions()))'`"
    )


@pytest.mark.parametrize("path", DOCUMENTS, ids=_relative)
def test_every_count_stated_is_the_definitions(path: Path, defs) -> None:
    """`N assets`, `N checks`, `N sensors`... always mean the whole code location's; a subset is
    named as one ("the three monitoring assets")."""
    counts = docs_site.counts(defs)
    actual = {
        "assets": counts.assets,
        "asset checks": counts.checks,
        "checks": counts.checks,
        "jobs": counts.jobs,
        "schedules": counts.schedules,
        "sensors": counts.sensors,
        "automations": counts.automations,
    }
    text = path.read_text()
    wrong = [
        f"{number} {noun} (the definitions have {actual[noun]})"
        for number, noun in COUNT.findall(text)
        if _number(number) != actual[noun]
    ]
    # A group's own count: "the six snapshot assets" (ingestion), "the three monitoring assets".
    graph = defs.resolve_asset_graph()
    groups = Counter(graph.get(key).group_name for key in graph.get_all_asset_keys())
    groups["snapshot"] = groups["ingestion"]
    group_count = re.compile(rf"\b(\d+|{'|'.join(NUMBERS)}) ({'|'.join(groups)}) assets\b")
    wrong += [
        f"{number} {group} assets (the definitions have {groups[group]})"
        for number, group in group_count.findall(text)
        if _number(number) != groups[group]
    ]
    assert not wrong, wrong


def _number(text: str) -> int:
    return NUMBERS[text] if text in NUMBERS else int(text)


@pytest.mark.parametrize("path", DOCUMENTS, ids=_relative)
def test_every_streamflow_command_and_option_shown_is_the_clis(path: Path) -> None:
    commands = docs_site.cli_command.commands
    wrong = []
    for code in _code(path.read_text()):
        for found in re.finditer(r"(?<![\w.-])streamflow ([a-z][a-z-]*)(.*)", code):
            name, rest = found.groups()
            before = code[: found.start()].split()
            if before and before[-1].startswith("-"):  # an option's value: `psql -U streamflow`
                continue
            if name not in commands:
                wrong.append(f"streamflow {name}: no such command")
                continue
            options = {opt for param in commands[name].params for opt in param.opts}
            rest = re.split(r"[|;#&]", rest)[0]
            wrong += [
                f"streamflow {name} {opt}: no such option"
                for opt in re.findall(r"(?<!\S)(--[a-z][a-z-]*)", rest)
                if opt not in options | {"--help"}
            ]
    assert not wrong, wrong


@pytest.mark.parametrize("path", DOCUMENTS, ids=_relative)
def test_every_make_target_shown_is_the_makefiles(path: Path) -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    shown = {
        target
        for code in _code(path.read_text())
        for target in re.findall(r"(?<![\w-])make ([a-z][a-z-]*)", code)
    }
    assert shown <= targets, shown - targets


def _settings_fields() -> dict[str, object]:
    fields = {}
    for cls in (Settings, ServingSettings, StackSettings):
        prefix = cls.model_config["env_prefix"]
        for name, field in cls.model_fields.items():
            fields[f"{prefix}{name}".upper()] = field.default
    return fields


def _shown_default(default: object) -> str | None:
    """A default as the configuration page writes it, or None where the page explains it."""
    if default is None or isinstance(default, SecretStr):
        return None
    if isinstance(default, Path) and default.is_absolute():
        return None
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def test_the_configuration_page_lists_every_setting_with_its_default() -> None:
    page = (REPO_ROOT / "docs" / "reference" / "configuration.md").read_text()
    rows = dict(re.findall(r"^\| `(STREAMFLOW_[A-Z0-9_]+)` \| ([^|]*) \|", page, re.MULTILINE))
    fields = _settings_fields()
    assert set(rows) == set(fields), {
        "not documented": set(fields) - set(rows),
        "not a setting": set(rows) - set(fields),
    }
    wrong = {}
    for variable, default in fields.items():
        expected = _shown_default(default)
        cell = rows[variable].strip()
        if expected is None:
            continue
        if cell.replace(",", "") != f"`{expected}`":
            wrong[variable] = (cell, expected)
    assert not wrong, wrong


@pytest.mark.parametrize("path", DOCUMENTS, ids=_relative)
def test_every_streamflow_variable_named_is_a_setting(path: Path) -> None:
    fields = set(_settings_fields()) | NOT_SETTINGS
    wrong = []
    for found in re.finditer(r"STREAMFLOW_[A-Z0-9_]*[A-Z0-9](_\*|_\{)?", path.read_text()):
        name, prefix = found.group(0), found.group(1)
        if prefix:  # `STREAMFLOW_FRESHNESS_*`, `STREAMFLOW_STACK_{MLFLOW,DAGSTER}_PORT`
            stem = name[: -len(prefix)] + "_"
            if not any(field.startswith(stem) for field in fields):
                wrong.append(name)
        elif name not in fields:
            wrong.append(name)
    assert not wrong, wrong


def test_the_http_reference_lists_every_route_and_its_statuses() -> None:
    page = (REPO_ROOT / "docs" / "reference" / "http-api.md").read_text()
    rows = {
        (method, path): answers
        for method, path, answers in re.findall(
            r"^\| `(GET|POST|PUT|PATCH|DELETE) (/\S*)` \| (.*) \|$", page, re.MULTILINE
        )
    }
    spec = api.openapi()["paths"]
    routes = {
        (method.upper(), path): set(operation["responses"])
        for path, operations in spec.items()
        for method, operation in operations.items()
    }
    assert set(rows) == set(routes), {
        "not documented": set(routes) - set(rows),
        "not a route": set(rows) - set(routes),
    }
    missing = {
        route: statuses - set(re.findall(r"\b[1-5]\d\d\b", rows[route]))
        for route, statuses in routes.items()
    }
    assert not any(missing.values()), missing


def test_the_benchmarks_page_names_every_report_and_every_script_named_exists() -> None:
    page = (REPO_ROOT / "docs" / "benchmarks.md").read_text()
    reports = {_relative(path) for path in (REPO_ROOT / "bench" / "reports").glob("*.md")}
    assert reports <= set(re.findall(r"`(bench/reports/[\w.]+\.md)`", page)), reports
    named = {
        name
        for path in DOCUMENTS
        for name in re.findall(r"\b(bench/[\w/]+\.(?:py|md))\b", path.read_text())
    }
    assert all((REPO_ROOT / name).is_file() for name in named), {
        name for name in named if not (REPO_ROOT / name).is_file()
    }
