"""`make install`: quiet, ending with one line that says what was installed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_install_prints_a_one_line_summary_instead_of_the_package_list() -> None:
    # -W: as if uv.lock had changed, so the sync runs (a no-op on an installed .venv: seconds).
    result = subprocess.run(
        ["make", "--no-print-directory", "-W", "uv.lock", "install"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[0].startswith("installing uv.lock into .venv")
    count = re.fullmatch(r"installed (\d+) packages into \.venv in \d+s", lines[1])
    assert count and int(count[1]) > 100, lines[1]
    assert not result.stderr.strip(), result.stderr
