"""PNG previews of cases: coronal CT slice, coronal PET MIP, and labels over the CT."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.case import Case
from ..core.io import atomic_write_bytes


def _coronal(a: np.ndarray) -> np.ndarray:
    """(X, Y, Z) -> an image with head up and the patient's right on the viewer's left."""
    return np.flipud(a.T)[:, ::-1]  # rows: z from head down; columns: RAS x (right) reversed


def coronal_views(case: Case) -> dict[str, np.ndarray]:
    """The three 2D views of a case (mid-coronal CT, coronal PET MIP, mid-coronal labels)."""
    y_mid = case.shape[1] // 2
    if case.organs is not None and (case.organs > 0).any():
        ys = np.nonzero((case.organs > 0).any(axis=(0, 2)))[0]
        y_mid = int((ys.min() + ys.max()) // 2)
    views = {"ct": _coronal(case.ct[:, y_mid, :])}
    if case.pet is not None:
        views["pet"] = _coronal(case.pet.max(axis=1))
    if case.organs is not None:
        views["organs"] = _coronal(case.organs[:, y_mid, :])
    if case.lesions is not None:
        views["lesions"] = _coronal(case.lesions.max(axis=1))
    return views


def preview_png(cases: Sequence[Case], path: str | Path, titles: Sequence[str] | None = None) -> Path:
    """Write one row per case: coronal CT, coronal PET MIP, organ labels + lesions over the CT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(cases)
    if n == 0:
        raise ValueError("preview_png: no cases given")
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 4.4 * n), squeeze=False)
    for r, case in enumerate(cases):
        v = coronal_views(case)
        sx, _, sz = case.spacing
        aspect = sz / sx
        axes[r, 0].imshow(v["ct"], cmap="gray", vmin=-400, vmax=600, aspect=aspect)
        if "pet" in v:
            axes[r, 1].imshow(v["pet"], cmap="gray_r", vmin=0, vmax=8, aspect=aspect)
        axes[r, 2].imshow(v["ct"], cmap="gray", vmin=-400, vmax=600, aspect=aspect)
        if "organs" in v:
            axes[r, 2].imshow(np.ma.masked_equal(v["organs"], 0), cmap="tab20", vmin=0, vmax=20, alpha=0.55,
                              aspect=aspect, interpolation="nearest")
        if "lesions" in v and v["lesions"].any():
            axes[r, 2].contour(v["lesions"], levels=[0.5], colors="red", linewidths=0.8)
        title = titles[r] if titles else _title(case)
        axes[r, 0].set_title(f"CT  {title}", fontsize=7, loc="left")
        axes[r, 1].set_title("PET MIP (SUV 0-8)", fontsize=7)
        axes[r, 2].set_title("organs + lesions", fontsize=7)
        for a in axes[r]:
            a.set_axis_off()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _title(case: Case) -> str:
    d = case.demographics
    if d is None:
        return str(case.meta.get("case_id", ""))
    parts = [f"{d.age:.0f}y" if d.age is not None else "", d.sex or "",
             f"{d.height_cm:.0f}cm" if d.height_cm is not None else "", f"{d.weight_kg:.0f}kg" if d.weight_kg is not None else ""]
    return " ".join(p for p in parts if p)
