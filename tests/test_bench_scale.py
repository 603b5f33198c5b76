"""bench/scale.py's memory meter (bench/processes.py), its arguments and its verdicts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import scale  # noqa: E402
from processes import RssSampler  # noqa: E402

from tests.profiles import POSTGRES, throwaway_databases  # noqa: E402

# A parent that starts a child holding 200 MB, prints the child's pid, and waits for stdin.
PARENT = textwrap.dedent(
    """
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c",
        "import sys; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
        "print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child.stdout.readline()
    print(child.pid, flush=True)
    sys.stdin.read()
    child.stdin.close()
    child.wait()
    """
)


@pytest.fixture
def parent():
    process = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    child = int(process.stdout.readline())
    yield process.pid, child
    process.stdin.close()
    process.wait(timeout=30)


def test_a_followed_process_brings_its_descendants_under_its_label(parent):
    parent_pid, child_pid = parent
    sampler = RssSampler()
    sampler.follow(parent_pid, "run", "run")
    sampler.sample()
    sampler.sample()
    assert sampler.procs[parent_pid].label == "run"
    assert sampler.procs[child_pid].label.startswith("run:")
    assert sampler.procs[child_pid].group == "run"
    assert sampler.subtree(parent_pid) == {parent_pid, child_pid}
    # Only what was followed is sampled: not this test's own process.
    assert set(sampler.samples[-1][1]) == {parent_pid, child_pid}
    everything = sampler.peak(0, float("inf"), groups={"run"})
    assert everything >= 200 * 2**20
    assert sampler.peak(0, float("inf"), pids={child_pid}) >= 200 * 2**20
    assert everything > sampler.peak(0, float("inf"), pids={parent_pid})


def test_the_nearest_followed_ancestor_names_a_process(parent):
    parent_pid, child_pid = parent
    sampler = RssSampler()
    sampler.follow(parent_pid, "supervisord", "stack")
    sampler.follow(child_pid, "celery-worker-1", "stack")
    sampler.sample()
    assert sampler.procs[parent_pid].label == "supervisord"
    assert sampler.procs[child_pid].label == "celery-worker-1"


@pytest.mark.postgres
def test_postgres_backends_of_the_given_databases_are_sampled():
    with (
        throwaway_databases("", "_other") as (database, other),
        psycopg.connect(dbname=database, **POSTGRES) as connection,
        psycopg.connect(dbname=other, **POSTGRES),
    ):
        backend = connection.info.backend_pid
        sampler = RssSampler()
        sampler.sample()
        assert not sampler.samples[-1][1]
        sampler.follow_postgres([database])
        sampler.sample()
        # Only the backend serving the database named, not the other's nor the server's own.
        assert set(sampler.samples[-1][1]) == {backend}
        assert sampler.procs[backend].group == "postgres"


def test_arguments_are_lists_and_bad_ones_are_named(capsys):
    args = scale.parse_args(["--profile", "cluster", "--profiles", "local,cluster"])
    assert args.profiles == ["cluster", "local"]
    args = scale.parse_args(["--sizes", "1000000,100000", "--sizes", "20000"])
    assert args.sizes == [20_000, 100_000, 1_000_000]
    assert scale.parse_args([]).profiles == ["local", "postgres", "cluster"]
    for bad, named in [
        (["--profiles", "local,kubernetes"], "'kubernetes'"),
        (["--sizes", "ten"], "'ten'"),
        (["--sizes", "10"], "at least 1000 users"),
        (["--months", "0"], "--months"),
    ]:
        with pytest.raises(SystemExit):
            scale.parse_args(bad)
        assert named in capsys.readouterr().err


def _result(profile: str, wall: float, **memory) -> scale.ProfileResult:
    result = scale.ProfileResult(profile, 1_000_000, 3, wall_s=wall, returncode=0, runs_ok=3)
    for name, value in memory.items():
        setattr(result, name, value)
    return result


def test_verdicts_against_the_targets():
    gb = 10**9
    results = [
        _result("local", 600.0, run_process=2 * gb, run_tree=3 * gb, together=3 * gb),
        _result("postgres", 899.0, idle_stack=1 * gb, run_process=1 * gb, together=4 * gb),
        _result(
            "cluster",
            901.0,
            idle_stack=2 * gb,
            run_process=1 * gb,
            together=4 * gb,
            largest_worker=("celery-worker-2:celery (pid 1)", int(1.3 * gb)),
        ),
    ]
    lines = "\n".join(scale.verdicts(results))
    assert "the target's size" in lines
    assert "postgres wall 899 s = 1.50× local (target ≤ 1.5×): met" in lines
    assert "cluster wall 901 s = 1.50× local (target ≤ 1.5×): **NOT met**" in lines
    assert "postgres idle stack 954 MB (target < 1.5 GB): met" in lines
    assert "cluster idle stack 1,907 MB (target < 1.5 GB): **NOT met**" in lines
    assert "celery-worker-2:celery (pid 1) (target < 1.2 GB each): **NOT met**" in lines
    results[2].runs_ok = 2
    assert "cluster: the run was not green" in "\n".join(scale.verdicts(results))
