"""What the scripts that write results files' numbers into Markdown share (readme_status.py for the
README's status table, model_card.py for the model card's tables).

A generated block sits between two HTML comment markers and is rewritten whole from the results
files; everything outside the blocks and outside ``` code blocks must hold no number that reads as
a measurement (:data:`MEASURED`), so every measured number a reader sees names the results file it
came from and the weights it was measured on (:func:`weights_cell`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Numbers that read as measurements: percentages, speed-ups, seconds, litres, percentage points,
#: correlations. What a Markdown file holds outside its generated blocks and code blocks must not match.
MEASURED = re.compile(r"\d+(\.\d+)?\s?%|\d+(\.\d+)?x\b|\d+\.\d+\s?(s|l|pp)\b|\br\s?=\s?\d")

#: Where results files record the generator digest they were measured on, first match wins.
_DIGEST_PATHS = (("weights", "generator_sha256"), ("weights_sha256",), ("generator", "sha256"), ("settings", "model_sha256"),
                 ("results", "settings", "model_sha256"))


def get(data: dict, *path):
    """``data[path[0]][path[1]]...``."""
    for key in path:
        data = data[key]
    return data


def load(rel: str) -> dict:
    """The results file ``rel`` (relative to the repository)."""
    return json.loads((REPO / rel).read_text())


def value_range(values: list[float], fmt: str) -> str:
    """``lo-hi`` in ``fmt``, or one value where both format alike."""
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}}-{hi:{fmt}}"


def measured_on(data: dict) -> str | None:
    """The generator digest a results file records, or ``None`` when it ran no trained weights."""
    for path in _DIGEST_PATHS:
        try:
            value = get(data, *path)
        except (KeyError, TypeError):
            continue
        if isinstance(value, str) and value:
            return value
    return None


def shipped_digest() -> str:
    """The generator digest of the shipped demo weights (weights + calibration, as cases record it)."""
    from synthaug.sampling.cascade import CascadedSampler

    return CascadedSampler.from_pretrained().sha256


def weights_cell(sha: str | None, shipped: str, stale: str | None = None) -> str:
    """How a table names the weights a result was measured on: the short digest, marked where it is
    not ``shipped``; the file's own stale note where it has one; or that it ran no trained weights."""
    if stale:
        return "**stale**: " + stale.split(", not the shipped")[0]
    if sha is None:
        return "no trained weights"
    return f"`{sha[:8]}`" + ("" if sha == shipped else " (**not the shipped weights**)")


def replace_block(text: str, begin: str, end: str, body: str, missing: str) -> str:
    """``text`` with what stands between the markers ``begin`` and ``end`` replaced by ``body``
    (which ends with a newline); ``ValueError(missing)`` when a marker is not there."""
    if begin not in text or end not in text:
        raise ValueError(missing)
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}{end}{tail}"


def outside_blocks(text: str, markers: list[tuple[str, str]]) -> str:
    """``text`` without its generated blocks (each from ``begin`` to ``end``, markers included) and
    without its ``` code blocks (commands, not claims)."""
    for begin, end in markers:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), "", text, flags=re.S)
    return re.sub(r"```.*?```", "", text, flags=re.S)


def measured_numbers(text: str) -> list[str]:
    """The measured-looking numbers in ``text`` (:data:`MEASURED`)."""
    return [m.group(0) for m in MEASURED.finditer(text)]
