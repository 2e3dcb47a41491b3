"""The evaluation's figures: box plots per organ and subgroup, a deviation heat map, requested vs
measured height and weight, and a montage of reference cases beside matched synthetic ones.

Every PNG is written atomically and kept below :data:`MAX_PNG_BYTES`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.demographics import Demographics
from ..core.io import atomic_write_bytes
from .cases import CaseSummary
from .compare import metric_table, subgroup_cells
from .metrics import ORGANS
from .report import fmt

#: Most bytes a PNG of the report may have.
MAX_PNG_BYTES = 300_000
REF_COLOUR, SYN_COLOUR = "#9e9e9e", "#d95f02"
METRIC_TITLES = {"suv_mean": "SUVmean", "volume_ml": "volume (ml)", "suv_max": "SUVmax", "suv_peak": "SUVpeak"}
#: Metrics with a box plot each (``boxplot_<metric>.png``).
BOXPLOT_METRICS = ("suv_mean", "volume_ml")


def plot_files(montage: bool = True) -> list[str]:
    """Names of the PNGs :func:`write_plots` writes, in its order (``montage.png`` when there are cases to pair)."""
    files = [f"boxplot_{metric}.png" for metric in BOXPLOT_METRICS] + ["deviation_heatmap.png", "conditioning.png"]
    return files + ["montage.png"] if montage else files


def _save_png(fig, path: Path) -> None:
    """Save ``fig`` atomically as a PNG below :data:`MAX_PNG_BYTES` (lowering the resolution if needed)."""
    import matplotlib.pyplot as plt

    data = b""
    for dpi in (90, 72, 56, 44, 34):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        data = buf.getvalue()
        if len(data) < MAX_PNG_BYTES:
            break
    plt.close(fig)
    atomic_write_bytes(path, data)


def write_plots(out: Path, ref: Sequence[CaseSummary], syn: Sequence[CaseSummary], comparison: dict,
                fidelity: dict) -> list[str]:
    """Box plots, deviation heat map, requested-vs-measured scatter and an image montage; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    files = []
    for metric in BOXPLOT_METRICS:
        _save_png(_boxplot(ref, syn, comparison, metric), out / f"boxplot_{metric}.png")
        files.append(f"boxplot_{metric}.png")
    _save_png(_heatmap(comparison), out / "deviation_heatmap.png")
    files.append("deviation_heatmap.png")
    _save_png(_scatter(fidelity), out / "conditioning.png")
    files.append("conditioning.png")
    fig = _montage(ref, syn)
    if fig is not None:
        _save_png(fig, out / "montage.png")
        files.append("montage.png")
    return files


def _single_factor_cells(ref, syn, comparison) -> list[tuple[str, np.ndarray, np.ndarray]]:
    names = {c["name"] for c in comparison["cells"] if len(c["factors"]) <= 1}
    cells = subgroup_cells([s.demographics for s in ref], [s.demographics for s in syn], 1)
    return [(c["name"], c["ref_index"], c["syn_index"]) for c in cells if c["name"] in names]


def _boxplot(ref, syn, comparison, metric):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rt, st = metric_table(ref), metric_table(syn)
    cells = _single_factor_cells(ref, syn, comparison)
    ncols = 4
    nrows = math.ceil(len(ORGANS) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.6 * nrows), squeeze=False)
    for ax, organ in zip(axes.ravel(), ORGANS):
        for values, k, dx, colour in ((rt[(organ, metric)], 1, -0.2, REF_COLOUR), (st[(organ, metric)], 2, 0.2,
                                                                                    SYN_COLOUR)):
            data, pos = [], []
            for g, cell in enumerate(cells):
                v = values[cell[k]]
                v = v[np.isfinite(v)]
                if v.size:
                    data.append(v)
                    pos.append(g + dx)
            if data:
                ax.boxplot(data, positions=pos, widths=0.36, patch_artist=True, showfliers=False,
                           medianprops={"color": "black", "linewidth": 1}, boxprops={"facecolor": colour})
        ax.set_title(organ, fontsize=9)
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([c[0] for c in cells], rotation=60, fontsize=7, ha="right")
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.ravel()[len(ORGANS):]:
        ax.axis("off")
    axes.ravel()[-1].legend(handles=[Patch(color=REF_COLOUR, label="reference"), Patch(color=SYN_COLOUR,
                            label="synthetic")], loc="center", fontsize=9)
    fig.suptitle(f"{METRIC_TITLES.get(metric, metric)} by organ and subgroup", fontsize=11)
    fig.tight_layout()
    return fig


def _heatmap(comparison):
    import matplotlib.pyplot as plt

    cells = [c["name"] for c in comparison["cells"]]
    rows = {(r["cell"], r["organ"], r["metric"]): r["deviation_pct"] for r in comparison["rows"]}
    fig, axes = plt.subplots(1, 2, figsize=(max(9.0, 2.5 + 0.64 * len(cells)), 5.0), squeeze=False)
    for ax, metric in zip(axes[0], ("suv_mean", "volume_ml")):
        m = np.array([[rows.get((c, o, metric)) if rows.get((c, o, metric)) is not None else np.nan for c in cells]
                      for o in ORGANS], dtype=float)
        finite = np.abs(m[np.isfinite(m)])
        vmax = float(min(max(finite.max() if finite.size else 0.0, 5.0), 50.0))
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_yticks(range(len(ORGANS)))
        ax.set_yticklabels(ORGANS, fontsize=8)
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels(cells, rotation=75, fontsize=7, ha="right")
        ax.set_title(f"{METRIC_TITLES[metric]} deviation (%)", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return fig


def _scatter(fidelity):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, (quantity, unit, munit) in zip(axes, (("height", "cm", "mm"), ("weight", "kg", "kg"))):
        entry = fidelity[quantity]
        for name, style in (("reference", {"s": 36, "facecolors": "none", "edgecolors": "#555555"}),
                            ("synthetic", {"s": 12, "color": SYN_COLOUR, "alpha": 0.7})):
            pts = entry[name]["points"]
            if pts:
                ax.scatter([p["requested"] for p in pts], [p["measured"] for p in pts], **style,
                           label=f"{name} (r={fmt(entry[name]['pearson_r'], 2)})")
        cal = entry["calibration"]
        xs = [p["requested"] for n in ("reference", "synthetic") for p in entry[n]["points"]]
        if cal is not None and xs:
            x = np.array([min(xs), max(xs)])
            ax.plot(x, cal["a"] * x + cal["b"], color="black", linewidth=1, label="reference calibration")
        ax.set_xlabel(f"requested {quantity} ({unit})")
        ax.set_ylabel(f"measured {entry['measured']} ({munit})")
        ax.legend(fontsize=8)
    fig.suptitle("Conditioning fidelity", fontsize=11)
    fig.tight_layout()
    return fig


def _demo_distance(a: Demographics | None, b: Demographics | None) -> float:
    if a is None or b is None:
        return 1e6
    d = 0.0 if a.sex == b.sex else 100.0
    for field_name, scale in (("age", 15.0), ("height_cm", 10.0), ("weight_kg", 15.0)):
        x, y = getattr(a, field_name), getattr(b, field_name)
        d += 3.0 if x is None or y is None else abs(x - y) / scale
    return d


def montage_pairs(ref: Sequence[CaseSummary], syn: Sequence[CaseSummary], n: int = 4) -> list[tuple[int, int]]:
    """Up to ``n`` (reference, synthetic) index pairs with matched demographics, spread over the reference cohort."""
    if not ref or not syn:
        return []
    order = sorted(range(len(ref)), key=lambda i: (str(getattr(ref[i].demographics, "sex", "")),
                                                   getattr(ref[i].demographics, "height_cm", None) or 0.0,
                                                   ref[i].case_id))
    picks = sorted({order[int(round(k))] for k in np.linspace(0, len(order) - 1, min(n, len(order)))})
    pairs = []
    for i in picks:
        linked = [j for j, s in enumerate(syn) if s.meta.get("reference_case") == ref[i].case_id]
        j = linked[0] if linked else min(range(len(syn)), key=lambda j: (_demo_distance(ref[i].demographics,
                                                                                          syn[j].demographics), j))
        pairs.append((i, j))
    return pairs


def _label(s: CaseSummary) -> str:
    d = s.demographics
    if d is None:
        return s.case_id
    parts = [d.sex or "?", "?" if d.age is None else f"{d.age:.0f} y", "?" if d.height_cm is None else
             f"{d.height_cm:.0f} cm", "?" if d.weight_kg is None else f"{d.weight_kg:.0f} kg"]
    return " ".join(parts)


def _montage(ref, syn):
    import matplotlib.pyplot as plt

    pairs = montage_pairs(ref, syn)
    if not pairs:
        return None
    fig, axes = plt.subplots(2, 2 * len(pairs), figsize=(2.0 * 2 * len(pairs), 7.0), squeeze=False)
    for p, (i, j) in enumerate(pairs):
        for k, (s, tag) in enumerate(((ref[i], "reference"), (syn[j], "synthetic"))):
            col = 2 * p + k
            t = s.thumbs
            axes[0, col].imshow(t["pet_mip"].astype(np.float32), cmap="gray_r", vmin=0, vmax=5.0, aspect=t["aspect"],
                                interpolation="nearest")
            axes[1, col].imshow(t["ct_slice"].astype(np.float32), cmap="gray", vmin=-400, vmax=600,
                                aspect=t["aspect"], interpolation="nearest")
            axes[0, col].set_title(f"{tag}\n{s.case_id[:18]}\n{_label(s)}", fontsize=7)
            for r in range(2):
                axes[r, col].set_xticks([])
                axes[r, col].set_yticks([])
    axes[0, 0].set_ylabel("PET MIP (SUV 0-5)", fontsize=8)
    axes[1, 0].set_ylabel("CT coronal (-400..600 HU)", fontsize=8)
    fig.tight_layout()
    return fig
