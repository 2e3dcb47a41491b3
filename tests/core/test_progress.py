"""progress_bar: a live tqdm bar on a terminal, a sparse one in a redirected log."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

from synthaug.core import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    """A clock that advances one second per reading: each update of the bar looks one second apart."""

    def __init__(self) -> None:
        self.t = time.time()  # from now on: the bar was started by the real clock

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def _redraws(stream: io.StringIO, steps: int = 600) -> int:
    bar = progress.progress_bar(total=steps, file=stream, miniters=1)
    bar._time = _Clock()  # tqdm's own hook for its clock
    for _ in range(steps):
        bar.update(1)
    bar.close()
    return stream.getvalue().count("\r")


def test_a_log_gets_a_redraw_per_log_interval_and_a_terminal_one_per_update():
    in_log, on_terminal = _redraws(io.StringIO()), _redraws(_Terminal())
    # 600 updates one second apart: about 600 / LOG_INTERVAL (+ start and end) in a log
    assert in_log <= 600 / progress.LOG_INTERVAL + 3
    assert on_terminal >= 500


def test_an_explicit_disable_still_wins():
    stream = io.StringIO()
    for _ in progress.progress_bar(range(50), file=stream, disable=True):
        pass
    assert stream.getvalue() == ""


def test_every_progress_bar_is_made_by_the_helper():
    root = Path(__file__).resolve().parents[2]
    users = [str(p.relative_to(root)) for folder in ("synthaug", "benchmarks", "scripts", "integrations")
             for p in (root / folder).rglob("*.py")
             if p.name != "progress.py" and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert users == [], f"import synthaug.core.progress.progress_bar instead of tqdm in {users}"
