"""The calibration's ``work`` folder and what is read from it: the reduced samples and their label maps
(:func:`save_compact`, :func:`save_label_map` and their readers), the record of what made them
(:func:`sample_origin`, :func:`check_sample_origin`), and the samples measured as the sampler leaves its
output, with organ maps cleaned (:class:`CleanedSamples`). The procedure is
:mod:`synthaug.sampling.calibration`'s.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.io import atomic_write_json
from ..core.labels import NUM_ORGAN_CLASSES
from .calibration_fit import CompactLabels, LabelMap, cleaned_stats, histogram_medians


def save_compact(path, data: CompactLabels) -> None:
    """Write a reduced sample as ``.npz`` (plain arrays, read back without pickle)."""
    np.savez(path, fixed=data.fixed, free=data.free, lesion=data.lesion, fixed_suv=data.fixed_suv,
             fixed_hu_hist=data.fixed_hu_hist, free_values=data.free_values,
             scalars=np.array([data.lesion_fixed, data.cases, data.max_abs], dtype=np.float64))


def load_compact(path) -> CompactLabels:
    """Read a reduced sample written by :func:`save_compact`."""
    with np.load(path, allow_pickle=False) as z:
        if "fixed_hu_hist" not in z:
            raise ValueError(f"{path} was reduced without the CT and PET the intensity fit needs (an older synthaug): "
                             "sample again into a new `work` folder")
        lesion_fixed, cases, max_abs = z["scalars"]
        return CompactLabels(z["fixed"], z["free"], z["lesion"], int(lesion_fixed), int(cases), float(max_abs),
                             z["fixed_suv"], z["fixed_hu_hist"], z["free_values"])


def map_path(path: Path) -> Path:
    """Where the :class:`LabelMap` of the reduced sample at ``path`` is kept."""
    return path.with_name(f"{path.stem}_map.npz")


def save_label_map(path, labels: LabelMap) -> None:
    """Write a :class:`LabelMap` as ``.npz`` (plain arrays)."""
    np.savez(path, classes=labels.classes, hu=labels.hu, suv=labels.suv)


def load_label_map(path) -> LabelMap:
    """Read a :class:`LabelMap` written by :func:`save_label_map`."""
    with np.load(path, allow_pickle=False) as z:
        return LabelMap(z["classes"], z["hu"], z["suv"])


#: The file in a calibration's ``work`` folder that records what made its samples (:func:`sample_origin`).
ORIGIN_FILE = "origin.json"


def sample_origin(weights: str | Path, stage: str, sampler, cohort, max_abs: float) -> dict:
    """What a calibration sample of ``stage`` depends on, recorded beside the samples so that a ``work``
    folder is never fitted for weights other than those that made it: the stage's weights (sha256) and
    sampling settings, the demographics of the cohort it samples for, and ``max_abs``. The SR stage also
    depends on stage 1 as the cascade samples it (its weights, settings and calibration,
    :func:`~synthaug.sampling.cascade.generator_digest`); the stage being fitted is sampled uncalibrated, so
    its own calibration is left out (``--spread-only`` reuses the samples of the full fit)."""
    from .cascade import generator_digest

    sha = {s: json.loads((Path(weights) / f"{s}.json").read_text()).get("sha256") for s in ("global", stage)}
    settings = sampler.settings
    keys = ("sampler", "steps", "guidance", "sigma_min")
    if stage == "sr":
        keys += ("sr_sampler", "sr_steps", "patch_size", "overlap")
    demographics = [cohort.demographics[c].to_dict() for c in cohort.case_ids]
    origin = {"stage": stage, "weights_sha256": sha[stage], "settings": {k: settings[k] for k in keys},
              "demographics_sha256": hashlib.sha256(json.dumps(demographics, sort_keys=True).encode()).hexdigest(),
              "max_abs": float(max_abs), "label_maps": True}
    if stage == "sr":
        origin["global_stage"] = generator_digest([(sha["global"], sampler.global_config)])
    return origin


def check_sample_origin(work: Path, origin: dict) -> None:
    """Record ``origin`` in a new ``work`` folder, or refuse, in one line naming what differs, a folder whose
    samples something else made (other weights, settings, cohort or ``max_abs``) or whose origin is unknown
    (samples written before synthaug recorded one)."""
    path = work / ORIGIN_FILE
    if path.is_file():
        recorded = json.loads(path.read_text())
        differ = [f"{k} {_short(recorded.get(k))}, not {_short(v)}" for k, v in origin.items() if recorded.get(k) != v]
        if differ:
            raise ValueError(f"{work} holds calibration samples made otherwise ({'; '.join(differ)}): "
                             "use another work folder")
    elif any(work.glob("*.npz")):
        raise ValueError(f"{work} holds calibration samples that do not record what made them "
                         f"(no {ORIGIN_FILE}): use another work folder")
    else:
        atomic_write_json(path, origin)


def _short(value: object) -> str:
    """A recorded value for a one-line message: digests cut to 8 characters."""
    if isinstance(value, str) and len(value) == 64:
        return value[:8]
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)


class CleanedSamples:
    """The reduced samples of a calibration with their label maps, measured as the sampler leaves its
    output: organ maps cleaned (:func:`~synthaug.sampling.calibration_fit.cleaned_stats`). The maps are
    read one at a time, so only the reduced samples stay in memory."""

    def __init__(self, parts: list[CompactLabels], files: list[Path], spacing: Sequence[float]):
        self.parts, self.files, self.spacing = parts, files, tuple(float(v) for v in spacing)
        self._last: tuple[bytes, list] | None = None

    def per_case(self, bias: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each case's :func:`cleaned_stats` under ``bias`` (the last call's kept: the fit asks twice)."""
        key = np.asarray(bias, np.float64).tobytes()
        if self._last is None or self._last[0] != key:
            self._last = (key, [cleaned_stats(p, load_label_map(map_path(f)), bias, self.spacing)
                                for p, f in zip(self.parts, self.files)])
        return self._last[1]

    def counts(self, bias: np.ndarray) -> np.ndarray:
        """(cases, LABEL_BIAS_SIZE) voxels per case under ``bias``, cleaned."""
        return np.stack([c for c, _, _ in self.per_case(bias)])

    def intensities(self, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(median HU, mean SUV, per-case median HU)`` of each organ class as
        :func:`class_intensities` gives them, in the cleaned maps under ``bias``."""
        stats = self.per_case(bias)
        hist = np.sum([h for _, h, _ in stats], axis=0)
        voxels = np.sum([c[:NUM_ORGAN_CLASSES] for c, _, _ in stats], axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            suv = np.sum([s for _, _, s in stats], axis=0) / voxels
        return histogram_medians(hist), suv, np.stack([histogram_medians(h) for _, h, _ in stats])
