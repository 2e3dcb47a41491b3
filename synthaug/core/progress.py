"""One place that makes progress bars: live on a terminal, sparse in a log.

tqdm redraws its bar up to ten times a second with a carriage return; on a terminal that is
one line, in a redirected log (``synthaug sample ... 2> log``) thousands. Where the bar's
stream is not a terminal, :func:`progress_bar` redraws it at most once every
:data:`LOG_INTERVAL` seconds, so a log holds a bar's start, its end and a line a minute.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

#: Seconds between two redraws of a bar whose stream is not a terminal.
LOG_INTERVAL = 60.0


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, redrawn at most every :data:`LOG_INTERVAL` seconds when its
    ``file`` (default: stderr) is not a terminal. Every progress bar of synthaug is made here."""
    if not _is_terminal(kwargs.get("file") or sys.stderr):
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), LOG_INTERVAL)
        kwargs["maxinterval"] = max(float(kwargs.get("maxinterval", 10.0)), LOG_INTERVAL)
    return tqdm(iterable, **kwargs)
