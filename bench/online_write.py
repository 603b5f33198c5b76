"""Benchmark: a month's guarded online write per store (SQLite, PostgreSQL, Redis), side by side.

Generates synthetic seeds, encodes each month's four feature views once (as `materialize_month`
does), then per store and per implementation (this tree's `adapters/online_store.py`, and with
`--baseline REV` the file as it was at that commit) writes, in a fresh store:
  1. month 1 (every user new), 2. month 2 (every user updated), 3. month 2 again (a re-run),
  4. month 1 again (a backfill: every user older), 5. month 3 (every user updated),
timing each `write_encoded` and measuring the store's size after it (PostgreSQL:
pg_total_relation_size of the four tables; SQLite: the file; Redis: not measured).
With --redis-batches, times instead Redis's month 1 and month 2 per entities-a-script-call and
script-calls-a-pipeline setting.

    .venv/bin/python bench/online_write.py --users 100000 --baseline 42d156b --save
    .venv/bin/python bench/online_write.py --users 30000 --redis-batches
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import psycopg
import redis
from feast import Entity, FeatureView, Field, FileSource
from feast.repo_config import RepoConfig
from feast.types import Bool, Float32, Int64, String
from feast.value_type import ValueType
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamflow.adapters.feature_store import _encoded, _entity_keys  # noqa: E402
from streamflow.domain.features import FEATURE_VIEWS, JOIN_KEY  # noqa: E402
from streamflow.domain.seeds import read_month  # noqa: E402
from tests.cluster import REDIS, redis_db  # noqa: E402
from tests.profiles import POSTGRES, throwaway_databases  # noqa: E402

MODULE = "streamflow/adapters/online_store.py"
PROJECT = "bench"
AS_OF = [datetime(2024, 1, 31, tzinfo=UTC), datetime(2024, 2, 29, tzinfo=UTC)]
AS_OF.append(datetime(2024, 3, 31, tzinfo=UTC))
# (label, month index) of each step, in order.
STEPS = [
    ("month 1 (new)", 0),
    ("month 2 (update)", 1),
    ("month 2 re-run", 1),
    ("month 1 backfill (older)", 0),
    ("month 3 (update)", 2),
]
_TYPES = {"Int64": Int64, "Float32": Float32, "Bool": Bool, "String": String}
USER = Entity(name="user", join_keys=[JOIN_KEY], value_type=ValueType.STRING)
VIEWS = {
    spec.name: FeatureView(
        name=spec.name,
        entities=[USER],
        ttl=timedelta(days=62),
        schema=[Field(name=f.name, dtype=_TYPES[f.dtype]) for f in spec.features],
        source=FileSource(name=f"{spec.name}_source", path="unused.parquet", timestamp_field="t"),
    )
    for spec in FEATURE_VIEWS
}


def load_module(source: str) -> ModuleType:
    """`online_store.py` of this tree ("current") or of a commit, as a module of its own."""
    if source == "current":
        path = REPO / MODULE
    else:
        text = subprocess.run(
            ["git", "show", f"{source}:{MODULE}"], cwd=REPO, check=True, capture_output=True
        ).stdout
        path = Path(tempfile.mkdtemp(prefix="sf-bench-")) / "online_store.py"
        path.write_bytes(text)
    spec = importlib.util.spec_from_file_location(f"online_store_{source}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def encode_months(seeds: Path, months: int) -> list[list]:
    """Each month's views as `materialize_month` hands them to the store (sorted by user)."""
    encoded = []
    for month in range(months):
        tables = read_month(seeds / f"month_{month:03d}")
        views = []
        for spec in FEATURE_VIEWS:
            df = tables[spec.source_table].sort_values(JOIN_KEY, ignore_index=True)
            views.append(
                (
                    spec.name,
                    _entity_keys(df[JOIN_KEY].to_numpy(), 3),
                    {f.name: _encoded(df[f.name], f.dtype) for f in spec.features},
                )
            )
        encoded.append(views)
    return encoded


@contextlib.contextmanager
def store_config(kind: str, scratch: Path) -> Iterator[RepoConfig]:
    """A fresh, empty online store of one kind, with Feast's base store type in the config."""
    base = {"project": PROJECT, "provider": "local", "entity_key_serialization_version": 3}
    base["registry"] = {"registry_type": "sql", "path": "sqlite://"}
    if kind == "sqlite":
        path = scratch / f"online-{time.monotonic_ns()}.db"
        yield RepoConfig(**base, online_store={"type": "sqlite", "path": str(path)})
    elif kind == "postgres":
        with throwaway_databases("_online") as (database,):
            online = {"type": "postgres", "database": database, "sslmode": "disable"}
            online |= {"host": POSTGRES["host"], "port": POSTGRES["port"], "db_schema": "public"}
            online |= {"user": POSTGRES["user"], "password": ""}
            yield RepoConfig(**base, online_store=online)
    else:
        with redis_db() as db:
            target = f"{REDIS[0]}:{REDIS[1]},db={db}"
            yield RepoConfig(**base, online_store={"type": "redis", "connection_string": target})


def store_size(kind: str, config: RepoConfig) -> int | None:
    if kind == "sqlite":
        return Path(config.online_store.path).stat().st_size
    if kind == "postgres":
        online = config.online_store
        with psycopg.connect(
            host=online.host, port=online.port, user=online.user, dbname=online.database
        ) as conn:
            names = [f"{PROJECT}_{name}" for name in VIEWS]
            total = sql.SQL(" + ").join(
                sql.SQL("pg_total_relation_size({})").format(sql.Literal(name)) for name in names
            )
            return conn.execute(sql.SQL("SELECT {}").format(total)).fetchone()[0]
    return None


def run(
    module: ModuleType, kind: str, months: list[list], scratch: Path, steps: list = STEPS
) -> list[dict]:
    store_class = {
        "sqlite": module.MonotonicSqliteOnlineStore,
        "postgres": module.MonotonicPostgreSQLOnlineStore,
        "redis": module.MonotonicRedisOnlineStore,
    }[kind]
    results = []
    with store_config(kind, scratch) as config:
        store = store_class()
        store.update(config, [], list(VIEWS.values()), [], [USER], partial=False)
        for label, month in steps:
            views = [module.EncodedView(VIEWS[n], keys, vals) for n, keys, vals in months[month]]
            started = time.perf_counter()
            stats = store.write_encoded(config, views, AS_OF[month])
            seconds = time.perf_counter() - started
            written = min(s.written for s in stats.values())
            results.append(
                {"step": label, "s": seconds, "written": written, "bytes": store_size(kind, config)}
            )
            print(json.dumps({"store": kind, **results[-1]}), file=sys.stderr)
        if kind == "redis":
            redis.Redis(*REDIS).close()
    return results


def redis_batches(months: list[list], scratch: Path) -> str:
    """Redis's write per (entities a script call, calls a pipeline), each in a fresh db."""
    module = load_module("current")
    lines = ["| entities a call | calls a pipeline | month 1 (new) | month 2 (update) |"]
    lines.append("|---:|---:|---:|---:|")
    for chunk, depth in [(100, 1), (500, 1), (2000, 1), (100, 16), (500, 16), (500, 64)]:
        module._REDIS_CHUNK, module._REDIS_PIPELINE = chunk, depth
        results = run(module, "redis", months, scratch, steps=STEPS[:2])
        cells = " | ".join(f"{r['s']:.1f} s" for r in results)
        lines.append(f"| {chunk} | {depth} | {cells} |")
    return "\n".join(lines)


def table(users: int, runs: dict[tuple[str, str], list[dict]]) -> str:
    header = "| store | implementation | " + " | ".join(label for label, _ in STEPS) + " |"
    lines = [header, "|---|---|" + "---:|" * len(STEPS)]
    for (kind, source), results in runs.items():
        cells = []
        for r in results:
            size = f", {r['bytes'] / 2**20:,.0f} MB" if r["bytes"] is not None else ""
            cells.append(f"{r['s']:.1f} s{size}")
        lines.append(f"| {kind} | {source} | " + " | ".join(cells) + " |")
    per_value = [
        f"{kind} ({source}): {users * 14 / results[1]['s']:,.0f} values/s updating"
        for (kind, source), results in runs.items()
    ]
    return "\n".join(lines) + "\n\n" + "; ".join(per_value) + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres", "redis"])
    parser.add_argument("--baseline", help="also run adapters/online_store.py as of this commit")
    parser.add_argument("--redis-batches", action="store_true", help="sweep Redis batch sizes")
    parser.add_argument("--save", action="store_true", help="write bench/reports/online_write.md")
    args = parser.parse_args()
    sources = ["current"] + ([args.baseline] if args.baseline else [])
    modules = {source: load_module(source) for source in sources}
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as scratch:
        seeds = Path(scratch) / "seeds"
        subprocess.run(
            [REPO / ".venv/bin/streamflow", "generate", "--users", str(args.users)]
            + ["--months", "3", "--seed", "11", "--out", str(seeds)],
            check=True,
            capture_output=True,
        )
        months = encode_months(seeds, 3)
        if args.redis_batches:
            print(redis_batches(months, Path(scratch)))
            return
        load = os.getloadavg()[0]
        runs = {}
        # Stores side by side; the baseline right after the current code on the same store.
        for kind in args.stores:
            for source in sources:
                runs[kind, source] = run(modules[source], kind, months, Path(scratch))
        load = max(load, os.getloadavg()[0])
    report = table(args.users, runs)
    print(report)
    if args.save:
        command = " ".join(["bench/online_write.py", *sys.argv[1:]])
        (REPO / "bench" / "reports" / "online_write.md").write_text(
            f"# Online write per store\n\n`.venv/bin/python {command}`: {args.users:,} users, "
            f"generated seeds (seed 11), each store fresh; seconds of `write_encoded` and the "
            f"store's size after each step. 2-core machine; highest 1-minute load average seen "
            f"{load:.1f}.\n\n{report}\n"
        )


if __name__ == "__main__":
    main()
