"""What changes between counterfactual twins: a montage and a per-organ table (volume, SUVmean).

The cases come from :func:`synthaug.sampling.twins.sample_twins` (their ``meta["twin"]`` says
what was varied); the measurements are :func:`synthaug.evaluation.metrics.measure_case`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ..core.case import Case
from ..core.io import atomic_write_json, atomic_write_text
from ..sampling.twins import twin_label
from .metrics import ORGANS, measure_case
from .preview import montage_png

#: Whole-body rows of the table (from :func:`measure_case`'s ``"body"``).
BODY_ROWS = ("body_volume_ml", "body_extent_mm", "body_mass_kg")


def twin_table(cases: Sequence[Case], case_ids: Sequence[str] | None = None) -> list[dict]:
    """One record per twin, in order: case id, varied values, label, per-organ volume (ml) and
    SUVmean, and the body's volume, extent and mass."""
    rows = []
    for i, case in enumerate(cases):
        twin = case.meta.get("twin") or {"varied": {}, "index": i}
        m = measure_case(case)
        rows.append({"case_id": case_ids[i] if case_ids else case.meta.get("case_id", f"twin_{i:02d}"),
                     "index": twin["index"], "varied": twin["varied"], "label": twin_label(twin["varied"]),
                     "organs": {o: {"volume_ml": m[o]["volume_ml"], "suv_mean": m[o]["suv_mean"]} for o in ORGANS},
                     "body": {k: m["body"][k] for k in BODY_ROWS}})
    return rows


def _cell(v: float, fmt: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def twin_markdown(rows: Sequence[dict]) -> str:
    """The table as markdown: one column per twin; organ volumes with the body rows, then SUVmean."""
    header = "| | " + " | ".join(r["label"] or r["case_id"] for r in rows) + " |"
    rule = "|---|" + "---|" * len(rows)
    lines = ["# Counterfactual twins", "", "Volume (ml; body extent in mm, body mass in kg):", "", header, rule]
    for organ in ORGANS:
        lines.append(f"| {organ} | " + " | ".join(_cell(r["organs"][organ]["volume_ml"], ".0f") for r in rows) + " |")
    for key in BODY_ROWS:
        lines.append(f"| {key} | " + " | ".join(_cell(r["body"][key], ".1f") for r in rows) + " |")
    lines += ["", "SUVmean:", "", header, rule]
    for organ in ORGANS:
        lines.append(f"| {organ} | " + " | ".join(_cell(r["organs"][organ]["suv_mean"], ".2f") for r in rows) + " |")
    return "\n".join(lines) + "\n"


def write_twin_report(cases: Sequence[Case], out: str | Path, case_ids: Sequence[str] | None = None,
                      stem: str = "twins") -> dict[str, Path]:
    """Write ``<stem>.png`` (montage: one column per twin), ``<stem>.md`` and ``<stem>.json`` (the
    table) into ``out``; returns their paths by kind."""
    out = Path(out)
    rows = twin_table(cases, case_ids)
    paths = {"montage": montage_png(cases, out / f"{stem}.png", titles=[r["label"] or r["case_id"] for r in rows]),
             "markdown": out / f"{stem}.md", "json": out / f"{stem}.json"}
    atomic_write_text(paths["markdown"], twin_markdown(rows))
    base = cases[0].meta.get("twin", {}).get("base") if cases else None
    atomic_write_json(paths["json"], {"base": base, "seed": cases[0].meta.get("seed") if cases else None,
                                      "model_sha256": cases[0].meta.get("model_sha256") if cases else None,
                                      "twins": rows})
    return paths
