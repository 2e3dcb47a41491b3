"""``make test`` fails when no test ran: its pytest command line, run on a folder with no tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


def _recipe(target: str) -> list[str]:
    """The shell lines of a Makefile target's recipe, with make's ``$$`` unescaped."""
    lines, inside = [], False
    for line in MAKEFILE.read_text().splitlines():
        if not line.startswith("\t"):
            inside = line.startswith(f"{target}:")
        elif inside:
            lines.append(line[1:].replace("$$", "$"))
    return lines


def test_make_tests_pytest_line_fails_when_it_collects_no_test(tmp_path):
    (line,) = [c for c in _recipe("test") if "pytest" in c]
    command = line.replace("$(PY)", sys.executable)
    assert "$(" not in command
    (tmp_path / "empty.py").write_text("x = 1\n")  # a folder with no tests: pytest exits with 5
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 5, done.stdout + done.stderr
