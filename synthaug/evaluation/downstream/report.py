"""The benchmark's summary (mean and 95 % interval over seeds, paired differences), report.md and plot."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ...core.io import atomic_path, atomic_write_text

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
PLOT_FILE = "downstream.png"

#: Aggregated metrics in the summary and the report: (key, label, higher is better).
METRICS: tuple[tuple[str, str, bool], ...] = (("lesion_dice", "lesion Dice", True), ("fp_ml", "FP vol (ml)", False),
                                              ("fn_ml", "FN vol (ml)", False), ("organ_dice_mean", "organ Dice", True))

ARM_ORDER = {a: i for i, a in enumerate(("real_only", "real_copypaste", "real_phantom", "real_synth_1to1",
                                         "real_synth_1to2", "real_lesion_insertion", "synth_only",
                                         "shift_real_only", "shift_synth"))}


def interval95(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval ``(mean, low, high)`` over seeds (``nan`` bounds for fewer than 2 values)."""
    from scipy import stats

    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
    if arr.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean, mean - half, mean + half


def summarise(records: Sequence[Mapping]) -> list[dict]:
    """Per arm x n_real: mean and 95 % interval over seeds of each metric, and the paired difference
    to ``real_only`` (``shift_real_only`` for ``shift_synth``) over the same seeds."""
    done = [r for r in records if r.get("status") == "done"]
    cells: dict[tuple[str, int], dict[int, Mapping]] = {}
    for r in done:
        cells.setdefault((r["arm"], r["n_real"]), {})[r["seed"]] = r["test"]["aggregate"]
    rows = []
    for (arm, n), by_seed in sorted(cells.items(), key=lambda kv: (ARM_ORDER.get(kv[0][0], 99), kv[0][1])):
        row: dict = {"arm": arm, "n_real": n, "seeds": sorted(by_seed)}
        base_arm = "shift_real_only" if arm == "shift_synth" else "real_only"
        base = cells.get((base_arm, n)) if arm not in ("real_only", "shift_real_only", "synth_only") else None
        for key, _, _ in METRICS:
            vals = [agg.get(key) for agg in by_seed.values()]
            row[key] = dict(zip(("mean", "low", "high"), interval95(vals)))
            if base:
                paired = [by_seed[s].get(key) - base[s].get(key) for s in by_seed
                          if s in base and by_seed[s].get(key) is not None and base[s].get(key) is not None]
                row[f"{key}_vs_{base_arm}"] = dict(zip(("mean", "low", "high"), interval95(paired)))
        rows.append(row)
    for r in records:
        if r.get("status") == "not available" and not any(row["arm"] == r["arm"] for row in rows):
            rows.append({"arm": r["arm"], "n_real": None, "status": "not available", "reason": r.get("reason")})
    return rows


def format_cell(cell: Mapping | None, digits: int = 3, signed: bool = False) -> str:
    """``mean [low, high]`` of a summary cell (``-`` when empty; the mean alone without an interval)."""
    if not cell or cell.get("mean") is None or not np.isfinite(cell["mean"]):
        return "-"
    sign = "+" if signed else ""
    if cell.get("low") is None or not np.isfinite(cell["low"]):
        return f"{cell['mean']:{sign}.{digits}f}"
    return f"{cell['mean']:{sign}.{digits}f} [{cell['low']:{sign}.{digits}f}, {cell['high']:{sign}.{digits}f}]"


def report_table(results: Mapping) -> list[str]:
    """The two tables: metrics per arm x n_real, and paired differences to the real-only arm."""
    lines = ["Mean over seeds [95 % t-interval]. Dice and FN volume over test cases with lesions, FP volume over "
             "all test cases; organ Dice is the mean over the 11 organs.", "",
             "| arm | n real | seeds | " + " | ".join(label for _, label, _ in METRICS) + " |",
             "|---|---|---|" + "---|" * len(METRICS)]
    for row in results["summary"]:
        if row.get("status") == "not available":
            lines.append(f"| {row['arm']} | - | - | not available ({row.get('reason')}) |" + " |" * (len(METRICS) - 1))
            continue
        lines.append(f"| {row['arm']} | {row['n_real']} | {len(row['seeds'])} | "
                     + " | ".join(format_cell(row[k], 1 if k.endswith("_ml") else 3) for k, _, _ in METRICS) + " |")
    lines += ["", "Paired differences to the real-only arm at the same n real and seed "
              "(shift_synth: to shift_real_only), mean [95 % interval]:", "",
              "| arm | n real | Δ lesion Dice | Δ FP vol (ml) | Δ FN vol (ml) | Δ organ Dice |", "|---|---|---|---|---|---|"]
    for row in results["summary"]:
        base = "shift_real_only" if row["arm"] == "shift_synth" else "real_only"
        deltas = [row.get(f"{k}_vs_{base}") for k, _, _ in METRICS]
        if any(deltas):
            lines.append(f"| {row['arm']} | {row['n_real']} | " + " | ".join(
                format_cell(d, 1 if k.endswith("_ml") else 3, signed=True) for d, (k, _, _) in zip(deltas, METRICS))
                + " |")
    return lines


def report_markdown(results: Mapping, plot_name: str | None = PLOT_FILE) -> str:
    """The report: settings, the tables (mean [95 % interval] over seeds, paired differences) and the plot."""
    args = results["arguments"]
    gen = results.get("generator") or {}
    lines = ["# synthaug downstream", "",
             f"Model: MONAI UNet channels {args['channels']}, {args['iterations']} iterations x batch "
             f"{args['batch_size']}, patch {args['patch']} at {args['spacing_mm']} mm, Adam lr {args['lr']}; "
             f"seeds {args['seeds']}; tasks {args['tasks']}.",
             f"Test: {len(results['cohorts']['test_ids'])} real cases (shift subgroup "
             f"`{args['shift_group']}`: {len(results['cohorts']['shift_test_ids'])}); "
             f"validation: {len(results['cohorts']['val_ids'])} real cases.",
             f"Generator: {gen.get('source', '-')} (sha256 `{gen.get('sha256') or '-'}`).", ""]
    if not results.get("complete"):
        lines += ["**Incomplete**: some runs have not finished; re-run the same command to resume.", ""]
    lines += report_table(results)
    if plot_name:
        lines += ["", f"![Dice vs number of real cases]({plot_name})"]
    return "\n".join(lines) + "\n"


def plot_results(results: Mapping, path: str | Path) -> Path:
    """Lesion and organ Dice vs number of real training cases, one line per arm with 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["summary"] if r.get("status") != "not available"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, label) in zip(axes, (("lesion_dice", "lesion Dice"), ("organ_dice_mean", "organ Dice (mean)"))):
        for arm in sorted({r["arm"] for r in rows}, key=lambda a: ARM_ORDER.get(a, 99)):
            cells = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["n_real"])
            x = np.array([r["n_real"] for r in cells], float)
            mean = np.array([r[key]["mean"] for r in cells], float)
            low = np.array([r[key]["low"] for r in cells], float)
            high = np.array([r[key]["high"] for r in cells], float)
            err = np.vstack([np.nan_to_num(mean - low), np.nan_to_num(high - mean)])
            style = {"marker": "s", "linestyle": "none"} if arm.startswith(("synth_only", "shift")) else {"marker": "o"}
            ax.errorbar(x, mean, yerr=err, capsize=3, label=arm, **style)
        ax.set_xticks(sorted({r["n_real"] for r in rows}))
        ax.set_xlabel("real training cases (synth_only: 0; shift: tested on the subgroup)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_report(out: str | Path) -> Path:
    """Write ``report.md`` and ``downstream.png`` from ``<out>/results.json`` (the ``--report-only`` mode)."""
    out = Path(out)
    path = out / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"`out`: no {RESULTS_FILE} in {out} (run the benchmark first)")
    results = json.loads(path.read_text())
    plot_results(results, out / PLOT_FILE)
    atomic_write_text(out / REPORT_FILE, report_markdown(results))
    return out / REPORT_FILE

