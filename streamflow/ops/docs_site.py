"""What the documentation site shows of the code, generated from it: the asset graph (mermaid),
the assets, checks and automations, and the CLI; also the site's MkDocs hook (`mkdocs.yml`).

A page asks for a generated block with a marker line, `<!-- generated: asset-graph -->`; the
README, which GitHub renders without MkDocs, carries a copy that tests/test_docs.py compares.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from graphlib import TopologicalSorter

import typer
from dagster import Definitions

from streamflow.ops.cli import app

# The click command behind the typer app, for mkdocs-click (`:module:` / `:command:`).
cli_command = typer.main.get_command(app)

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
# Dagster's implicit job of every asset, not one of ours.
_IMPLICIT_JOB = "__ASSET_JOB"


@dataclass(frozen=True)
class Counts:
    """The numbers the docs state about the code location."""

    assets: int
    checks: int
    jobs: int
    schedules: int
    sensors: int

    @property
    def automations(self) -> int:
        return self.schedules + self.sensors


@cache
def definitions() -> Definitions:
    # Imported on first use: the code location's import is seconds, and mkdocs-click needs
    # only the CLI.
    from streamflow_assets.definitions import defs

    return defs


def jobs(defs: Definitions) -> list:
    return sorted(
        (job for job in defs.resolve_all_job_defs() if job.name != _IMPLICIT_JOB),
        key=lambda job: job.name,
    )


def counts(defs: Definitions) -> Counts:
    graph = defs.resolve_asset_graph()
    return Counts(
        assets=len(graph.get_all_asset_keys()),
        checks=len(graph.asset_check_keys),
        jobs=len(jobs(defs)),
        schedules=len(list(defs.schedules or [])),
        sensors=len(list(defs.sensors or [])),
    )


def asset_graph_mermaid(defs: Definitions) -> str:
    """The assets as a mermaid flowchart, a subgraph per group. A group of source assets only
    (ingestion: six snapshot tables that every later group reads) is drawn as one box with its
    members listed, and an edge leaves the box once per asset it feeds, so the picture stays
    readable."""
    graph = defs.resolve_asset_graph()
    nodes = [graph.get(key) for key in graph.get_all_asset_keys()]
    groups: dict[str, list] = defaultdict(list)
    for node in nodes:
        groups[node.group_name].append(node)
    order = _group_order(graph, groups)
    collapsed = {
        group for group, members in groups.items() if all(not n.parent_keys for n in members)
    }
    group_of = {node.key: node.group_name for node in nodes}

    def name(key) -> str:
        return key.to_user_string()

    lines = ["```mermaid", "flowchart TD"]
    for group in order:
        members = sorted(groups[group], key=lambda n: name(n.key))
        if group in collapsed:
            listed = "<br/>".join([f"<b>{group}</b>", *(name(n.key) for n in members)])
            lines.append(f'  {group}["{listed}"]')
            continue
        lines.append(f"  subgraph {group}_group [{group}]")
        lines.extend(f"    {name(n.key)}" for n in members)
        lines.append("  end")
    edges = set()
    for node in nodes:
        for parent in node.parent_keys:
            source = group_of[parent] if group_of[parent] in collapsed else name(parent)
            edges.add((order.index(group_of[parent]), source, name(node.key)))
    lines.extend(f"  {source} --> {target}" for _, source, target in sorted(edges))
    lines.append("```")
    return "\n".join(lines)


def _group_order(graph, groups: dict[str, list]) -> list[str]:
    """Groups in the order the data flows between them (ties by name)."""
    sorter = TopologicalSorter({group: set() for group in sorted(groups)})
    for group, members in sorted(groups.items()):
        for node in members:
            parents = {graph.get(p).group_name for p in node.parent_keys} - {group}
            sorter.add(group, *sorted(parents))
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order += ready
        sorter.done(*ready)
    return order


def assets_reference(defs: Definitions) -> str:
    """A table per group: each asset, whether it is monthly, what it means, and its checks."""
    graph = defs.resolve_asset_graph()
    nodes = [graph.get(key) for key in graph.get_all_asset_keys()]
    groups: dict[str, list] = defaultdict(list)
    for node in nodes:
        groups[node.group_name].append(node)
    total = counts(defs)
    out = [
        f"{total.assets} assets and {total.checks} asset checks, in "
        f"{len(groups)} groups (generated from `streamflow_assets.definitions`).",
        "",
    ]
    for group in _group_order(graph, groups):
        out += [
            f"### {group}",
            "",
            "| asset | partitions | what it is | checks |",
            "|---|---|---|---|",
        ]
        for node in sorted(groups[group], key=lambda n: n.key.to_user_string()):
            checks = []
            for check_key in sorted(node.check_keys, key=lambda k: k.name):
                spec = graph.get_check_spec(check_key)
                checks.append(f"`{check_key.name}`" + (" (blocking)" if spec.blocking else ""))
            partitions = "monthly" if node.is_partitioned else "–"
            out.append(
                f"| `{node.key.to_user_string()}` | {partitions} | {_first_line(node.description)}"
                f" | {', '.join(checks) or '–'} |"
            )
        out.append("")
    return "\n".join(out)


def automations_reference(defs: Definitions) -> str:
    """The jobs, schedules and sensors, with their descriptions."""
    total = counts(defs)
    out = [
        f"{total.jobs} jobs and {total.automations} automations ({total.schedules} schedule, "
        f"{total.sensors} sensors).",
        "",
        "| kind | name | what it does |",
        "|---|---|---|",
    ]
    out += [f"| job | `{job.name}` | {_first_line(job.description)} |" for job in jobs(defs)]
    for kind, items in (("schedule", defs.schedules or []), ("sensor", defs.sensors or [])):
        for item in sorted(items, key=lambda i: i.name):
            out.append(f"| {kind} | `{item.name}` | {_first_line(item.description)} |")
    return "\n".join(out) + "\n"


def _first_line(text: str | None) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split()).replace("|", "\\|") or "–"


GENERATED = {
    "asset-graph": asset_graph_mermaid,
    "assets": assets_reference,
    "automations": automations_reference,
}


def render(markdown: str) -> str:
    """A page with each marker line replaced by its generated block."""
    if not MARKER.search(markdown):
        return markdown
    return MARKER.sub(lambda match: GENERATED[match.group(1)](definitions()), markdown)


def on_page_markdown(markdown: str, **_: object) -> str:
    """MkDocs hook (`hooks:` in mkdocs.yml)."""
    return render(markdown)
