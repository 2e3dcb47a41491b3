"""PNG previews of cases: coronal CT slice, coronal PET MIP, and labels over the CT (one row per case,
or one column per case for a montage of twins)."""

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
        _draw(axes[r], case)
        title = titles[r] if titles else _title(case)
        axes[r, 0].set_title(f"CT  {title}", fontsize=7, loc="left")
        axes[r, 1].set_title("PET MIP (SUV 0-8)", fontsize=7)
        axes[r, 2].set_title("organs + lesions", fontsize=7)
    return _save(fig, path)


def montage_png(cases: Sequence[Case], path: str | Path, titles: Sequence[str] | None = None) -> Path:
    """Write one column per case (e.g. counterfactual twins side by side): coronal CT on top, the
    coronal PET MIP below it, organ labels + lesions over the CT at the bottom; ``titles`` head
    the columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(cases)
    if n == 0:
        raise ValueError("montage_png: no cases given")
    if titles is not None and len(titles) != n:
        raise ValueError(f"montage_png: {len(titles)} titles for {n} cases")
    fig, axes = plt.subplots(3, n, figsize=(2.2 * n, 13.2), squeeze=False)
    for c, case in enumerate(cases):
        _draw(axes[:, c], case)
        axes[0, c].set_title(titles[c] if titles else _title(case), fontsize=7)
    for r, name in enumerate(("CT coronal", "PET MIP (SUV 0-8)", "organs + lesions")):
        axes[r, 0].text(-0.04, 0.5, name, fontsize=7, rotation=90, ha="right", va="center",
                        transform=axes[r, 0].transAxes)
    return _save(fig, path)


def _draw(axes: Sequence, case: Case) -> None:
    """Coronal CT, PET MIP and labels over the CT of ``case`` into three axes."""
    v = coronal_views(case)
    sx, _, sz = case.spacing
    aspect = sz / sx
    axes[0].imshow(v["ct"], cmap="gray", vmin=-400, vmax=600, aspect=aspect)
    if "pet" in v:
        axes[1].imshow(v["pet"], cmap="gray_r", vmin=0, vmax=8, aspect=aspect)
    axes[2].imshow(v["ct"], cmap="gray", vmin=-400, vmax=600, aspect=aspect)
    if "organs" in v:
        axes[2].imshow(np.ma.masked_equal(v["organs"], 0), cmap="tab20", vmin=0, vmax=20, alpha=0.55,
                       aspect=aspect, interpolation="nearest")
    if "lesions" in v and v["lesions"].any():
        axes[2].contour(v["lesions"], levels=[0.5], colors="red", linewidths=0.8)
    for a in axes:
        a.set_axis_off()


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

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
