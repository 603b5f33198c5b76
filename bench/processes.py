"""RSS of named process trees, sampled in a thread: the benchmarks' memory meter.

`RssSampler.follow(pid, label, group)` names a process and, unless a nearer followed process
claims them, all its descendants (a descendant is labelled `<label>:<its name>`). Each sample
reads every process of the machine once (psutil) and keeps the RSS of the followed ones, plus
PostgreSQL backends connected to the given databases (their process title names the database)
and, if asked, the machine's shared servers (Redis, RabbitMQ), whose RSS is not ours alone.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

# Processes that belong to a machine-wide server, which other programs use too.
SHARED_SERVERS = {"redis-server": "Redis server", "beam.smp": "RabbitMQ server"}


@dataclass(frozen=True)
class Proc:
    """A sampled process: its group (`run`, `stack`, `postgres`, `shared`), label and parent."""

    group: str
    label: str
    ppid: int
    name: str


class RssSampler(threading.Thread):
    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, dict[int, int]]] = []
        self.loads: list[tuple[float, float]] = []
        self.procs: dict[int, Proc] = {}
        self._roots: dict[int, tuple[str, str]] = {}
        self._databases: tuple[str, ...] = ()
        self._shared = False
        self._titles: dict[tuple[int, float], str] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()

    def follow(self, pid: int, label: str, group: str) -> None:
        with self._lock:
            self._roots[pid] = (label, group)

    def follow_postgres(self, databases: Iterable[str]) -> None:
        with self._lock:
            self._databases = tuple(databases)

    def follow_shared_servers(self) -> None:
        with self._lock:
            self._shared = True

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join()

    def sample(self) -> None:
        now = time.time()
        table = {}
        for process in psutil.process_iter(["ppid", "name", "memory_info", "create_time"]):
            info = process.info
            if info["memory_info"] is not None:
                table[process.pid] = info
        with self._lock:
            roots, databases, shared = dict(self._roots), self._databases, self._shared
        rss: dict[int, int] = {}
        for pid, info in table.items():
            proc = self._classify(pid, info, table, roots, databases, shared)
            if proc is not None:
                self.procs[pid] = proc
                rss[pid] = info["memory_info"].rss
        self.samples.append((now, rss))
        self.loads.append((now, os.getloadavg()[0]))

    def _classify(self, pid, info, table, roots, databases, shared) -> Proc | None:
        name = info["name"] or "?"
        ancestor = pid
        # Walk up to the nearest followed process (a program under supervisord before
        # supervisord itself); the depth bound guards against a ppid loop in a racing read.
        for _ in range(64):
            if ancestor in roots:
                label, group = roots[ancestor]
                if ancestor != pid:
                    label = f"{label}:{name}"
                return Proc(group, label, info["ppid"], name)
            parent = table.get(ancestor)
            if parent is None or parent["ppid"] in (0, ancestor):
                break
            ancestor = parent["ppid"]
        if databases and name == "postgres":
            title = self._title(pid, info["create_time"])
            # "postgres: 16/main: <user> <database> <host>(<port>) <state>"
            if any(f" {database} " in title for database in databases):
                return Proc("postgres", "PostgreSQL backends of the run's databases", 0, name)
        if shared and name in SHARED_SERVERS:
            return Proc("shared", SHARED_SERVERS[name], 0, name)
        return None

    def _title(self, pid: int, created: float) -> str:
        key = (pid, created)
        if key not in self._titles:
            try:
                self._titles[key] = " ".join(psutil.Process(pid).cmdline()) + " "
            except psutil.Error:
                self._titles[key] = ""
        return self._titles[key]

    # Figures over a window of time [start, end] (seconds since the epoch).

    def window(self, start: float, end: float) -> list[dict[int, int]]:
        return [rss for t, rss in self.samples if start <= t <= end]

    def peak(self, start: float, end: float, pids=None, groups=None) -> int:
        """The largest sum of RSS at one sample, over `pids` or the processes of `groups`."""
        best = 0
        for rss in self.window(start, end):
            total = sum(
                v
                for pid, v in rss.items()
                if (pids is None or pid in pids)
                and (groups is None or self.procs[pid].group in groups)
            )
            best = max(best, total)
        return best

    def last(self, start: float, end: float, groups) -> int:
        window = self.window(start, end)
        if not window:
            return 0
        return sum(v for pid, v in window[-1].items() if self.procs[pid].group in groups)

    def process_peaks(self, start: float, end: float) -> dict[int, int]:
        """Each process's own peak RSS in the window."""
        peaks: dict[int, int] = defaultdict(int)
        for rss in self.window(start, end):
            for pid, v in rss.items():
                peaks[pid] = max(peaks[pid], v)
        return dict(peaks)

    def subtree(self, pid: int) -> set[int]:
        """`pid` and every sampled process whose recorded parent chain leads to it."""
        members = {pid}
        for other in self.procs:
            ancestor, depth = other, 0
            while ancestor and depth < 64:
                if ancestor == pid:
                    members.add(other)
                    break
                proc = self.procs.get(ancestor)
                ancestor, depth = (proc.ppid if proc else 0), depth + 1
        return members

    def load_range(self, start: float, end: float) -> tuple[float, float]:
        loads = [load for t, load in self.loads if start <= t <= end] or [0.0]
        return min(loads), max(loads)
