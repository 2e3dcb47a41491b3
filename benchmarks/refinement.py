"""Does the SR stage refine the global stage, or drift from it?

For a few demographics, the global stage is sampled once and then (a) upsampled to the
output grid exactly as the SR stage upsamples its input (its config's ``upsample``), and
(b) refined by the SR stage with the same seed. Two questions, two measurements:

* **High-frequency energy**: the spectral power of decoded CT (HU) and PET (SUV) above
  the Nyquist frequency of the global grid (the detail stage 1 cannot represent), per
  voxel. The cascade should add it: ratio cascade / interpolated > 1.
* **Organ means**: mean SUV and mean HU per organ of the synthaug organ map, inside the
  interpolated global stage's labels for both outputs (the intensity change alone: the
  drift measure, goal a few percent, ``TOLERANCE_PP``), and inside each output's own
  labels (which also moves with the change of resolution: the phantom-input control
  below measures by how much for a perfect SR stage). Deviations in percentage points as
  in the sampler benchmark (SUV relative, HU relative to HU + 1000). Per-organ label
  volume changes are reported beside the same control.
* **Organ interiors**: the same intensity change inside the interpolated global labels'
  interiors only, more than ``INTERIOR_MARGIN`` global voxels from the organ's border.
  There the global grid's 16 mm partial volume reaches no voxel, so a perfect SR stage
  changes nothing (the control), while a drifting one still shows: the drift measure that
  does not penalise the detail the SR stage is there to add at borders.

A diagnostic beside it separates the SR stage from the quality of stage 1: the same SR
weights applied to an in-distribution input, the phantom of the same demographics
resampled to the global grid exactly as in training, compared with that phantom on the
output grid (the truth the SR stage was trained to recover).
"""

from __future__ import annotations

import numpy as np

from .common import Context, has_stage, phantom_lowres, weights_info
from .sampler_fidelity import deviation_summary, nanmean_quiet, organ_stats, percent_deviation

NAME = "refinement"
TITLE = "Cascade vs interpolated global stage: high-frequency energy and organ means"
TOLERANCE_PP = 5.0
INTERIOR_MARGIN = 1.5  # global voxels: a voxel's own extent (0.5) plus trilinear interpolation's reach (1)


def high_frequency_energy(volume: np.ndarray, cutoff: tuple[float, ...]) -> float:
    """Mean spectral power per voxel of ``volume`` at frequencies beyond ``cutoff`` on any axis.

    ``cutoff`` is in cycles per voxel of ``volume`` (0.5 = its own Nyquist frequency), one
    value per axis; a component counts as high-frequency when it exceeds the cutoff on at
    least one axis. Parseval: the result is in the volume's units squared.
    """
    v = np.asarray(volume, dtype=np.float64)
    if v.ndim != len(cutoff):
        raise ValueError(f"cutoff has {len(cutoff)} values for a {v.ndim}-D volume")
    power = np.abs(np.fft.fftn(v - v.mean())) ** 2 / v.size
    high = np.zeros(v.shape, dtype=bool)
    for axis, (n, c) in enumerate(zip(v.shape, cutoff)):
        f = np.abs(np.fft.fftfreq(n))
        shape = [1] * v.ndim
        shape[axis] = n
        high |= (f > c).reshape(shape)
    return float(power[high].sum() / v.size)


def organ_stats_in(decoded: dict[str, np.ndarray], organs: np.ndarray) -> np.ndarray:
    """:func:`organ_stats` of ``decoded``'s intensities inside another case's labels."""
    return organ_stats({**decoded, "organs": organs})


def organ_interiors(organs: np.ndarray, spacing, margin_mm: float) -> np.ndarray:
    """``organs`` with every voxel within ``margin_mm`` of its organ's border set to 0 (background);
    an organ thinner than the margin disappears (its statistics are then nan)."""
    from scipy.ndimage import distance_transform_edt

    out = np.zeros_like(organs)
    for label in np.unique(organs):
        if label == 0:
            continue
        mask = organs == label
        # Padded so that the volume's edge counts as a border too.
        inside = distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1] > margin_mm
        out[inside] = label
    return out


def _demographics(n: int):
    from synthaug.core.demographics import sample_population

    return sample_population(n, seed=11)


def run(ctx: Context) -> dict:
    from synthaug.core.labels import ORGAN_LABELS
    from synthaug.model.channels import decode
    from synthaug.model.stages import upsample
    from synthaug.sampling.cascade import CascadedSampler

    folder = ctx.main_weights
    if not (has_stage(folder, "global") and has_stage(folder, "sr")):
        return {"weights": weights_info(folder), "skipped": "needs trained global and SR weights"}
    sampler = CascadedSampler.from_pretrained(folder)
    g_shape, out_shape = sampler.global_config.global_grid.shape, sampler.sr_config.output_grid.shape
    # Frequencies above the global grid's Nyquist, in cycles per output voxel.
    cutoff = tuple(0.5 * g / o for g, o in zip(g_shape, out_shape))
    names = [ORGAN_LABELS[k] for k in ORGAN_LABELS if k != 0]
    demos = _demographics(1 if ctx.quick else 4)
    cases = []
    stats = {"interpolated": [], "cascade": [], "cascade_in_global_labels": [], "interpolated_interior": [],
             "cascade_interior": []}
    margin_mm = INTERIOR_MARGIN * max(sampler.global_config.global_grid.spacing)
    out_spacing = sampler.sr_config.output_grid.spacing
    volumes = {"interpolated": [], "cascade": [], "truth": [], "truth_interpolated": []}
    oracle = {"truth": [], "interpolated": [], "cascade": [], "hf": [], "truth_in_interpolated_labels": [],
              "truth_interior": [], "interpolated_interior": []}
    for i, demo in enumerate(demos):
        seed = 100 + i
        lowres = sampler.sample_global([demo], [seed])
        mode = sampler.sr_config.upsample
        interp = decode(upsample(lowres.float(), out_shape, mode)[0])
        casc = decode(sampler.sample_sr(lowres, [demo], [seed])[0])
        row = {"demographics": demo.to_dict(), "seed": seed}
        for ch in ("ct", "pet"):
            e_i, e_c = high_frequency_energy(interp[ch], cutoff), high_frequency_energy(casc[ch], cutoff)
            row[f"hf_{ch}"] = {"interpolated": e_i, "cascade": e_c, "ratio": e_c / e_i if e_i > 0 else None}
        label_agreement = float((interp["organs"] == casc["organs"]).mean())
        row["label_voxel_agreement"] = label_agreement
        cases.append(row)
        stats["interpolated"].append(organ_stats(interp))
        stats["cascade"].append(organ_stats(casc))
        stats["cascade_in_global_labels"].append(organ_stats_in(casc, interp["organs"]))
        inner = organ_interiors(interp["organs"], out_spacing, margin_mm)
        stats["interpolated_interior"].append(organ_stats_in(interp, inner))
        stats["cascade_interior"].append(organ_stats_in(casc, inner))
        volumes["interpolated"].append(_voxels(interp["organs"], len(names)))
        volumes["cascade"].append(_voxels(casc["organs"], len(names)))
        lowres_o, hi = phantom_lowres(sampler.sr_config, demo, seed)
        truth = {"ct": hi.ct, "pet": hi.pet, "organs": hi.organs}
        interp_o = decode(upsample(lowres_o.float(), out_shape, mode)[0])
        casc_o = decode(sampler.sample_sr(lowres_o, [demo], [seed])[0])
        for key, d in (("truth", truth), ("interpolated", interp_o), ("cascade", casc_o)):
            oracle[key].append(organ_stats(d))
        # What a perfect SR stage changes inside fixed (interpolated) labels: the control for the drift measure.
        oracle["truth_in_interpolated_labels"].append(organ_stats_in(truth, interp_o["organs"]))
        inner_o = organ_interiors(interp_o["organs"], out_spacing, margin_mm)
        oracle["truth_interior"].append(organ_stats_in(truth, inner_o))
        oracle["interpolated_interior"].append(organ_stats_in(interp_o, inner_o))
        volumes["truth"].append(_voxels(truth["organs"], len(names)))
        volumes["truth_interpolated"].append(_voxels(interp_o["organs"], len(names)))
        oracle["hf"].append({key: {ch: high_frequency_energy(d[ch], cutoff) for ch in ("ct", "pet")}
                             for key, d in (("truth", truth), ("interpolated", interp_o), ("cascade", casc_o))})
    arr = {k: np.stack(v) for k, v in stats.items()}
    vol = {k: np.stack(v).astype(np.float64) for k, v in volumes.items()}
    with np.errstate(invalid="ignore"):
        own = percent_deviation(arr["cascade"], arr["interpolated"])            # (cases, organs, 2)
        fixed = percent_deviation(arr["cascade_in_global_labels"], arr["interpolated"])
        fixed_truth = percent_deviation(np.stack(oracle["truth_in_interpolated_labels"]),
                                        np.stack(oracle["interpolated"]))
        interior = percent_deviation(arr["cascade_interior"], arr["interpolated_interior"])
        interior_truth = percent_deviation(np.stack(oracle["truth_interior"]),
                                           np.stack(oracle["interpolated_interior"]))
        per_organ = {name: {"suv_own_labels_pp": _nan(nanmean_quiet(own[:, j, 0], 0)),
                            "hu_own_labels_pp": _nan(nanmean_quiet(own[:, j, 1], 0)),
                            "suv_global_labels_pp": _nan(nanmean_quiet(fixed[:, j, 0], 0)),
                            "hu_global_labels_pp": _nan(nanmean_quiet(fixed[:, j, 1], 0)),
                            "truth_suv_global_labels_pp": _nan(nanmean_quiet(fixed_truth[:, j, 0], 0)),
                            "truth_hu_global_labels_pp": _nan(nanmean_quiet(fixed_truth[:, j, 1], 0)),
                            "suv_interior_pp": _nan(nanmean_quiet(interior[:, j, 0], 0)),
                            "hu_interior_pp": _nan(nanmean_quiet(interior[:, j, 1], 0)),
                            "truth_suv_interior_pp": _nan(nanmean_quiet(interior_truth[:, j, 0], 0)),
                            "truth_hu_interior_pp": _nan(nanmean_quiet(interior_truth[:, j, 1], 0)),
                            "suv_interpolated": _nan(nanmean_quiet(arr["interpolated"][:, j, 0], 0)),
                            "suv_cascade": _nan(nanmean_quiet(arr["cascade"][:, j, 0], 0)),
                            "hu_interpolated": _nan(nanmean_quiet(arr["interpolated"][:, j, 1], 0)),
                            "hu_cascade": _nan(nanmean_quiet(arr["cascade"][:, j, 1], 0)),
                            "volume_change_percent": _change(vol["cascade"][:, j], vol["interpolated"][:, j]),
                            "truth_volume_change_percent": _change(vol["truth"][:, j], vol["truth_interpolated"][:, j])}
                     for j, name in enumerate(names)}
        summary_own = deviation_summary(nanmean_quiet(own, 0))
        summary_fixed = deviation_summary(nanmean_quiet(fixed, 0))
        summary_fixed_truth = deviation_summary(nanmean_quiet(fixed_truth, 0))
        summary_interior = deviation_summary(nanmean_quiet(interior, 0))
        summary_interior_truth = deviation_summary(nanmean_quiet(interior_truth, 0))
        truth = np.stack(oracle["truth"])
        oracle_summary = {k: deviation_summary(nanmean_quiet(percent_deviation(np.stack(oracle[k]), truth), 0))
                          for k in ("interpolated", "cascade")}
    oracle_hf = {key: {ch: float(np.mean([h[key][ch] for h in oracle["hf"]])) for ch in ("ct", "pet")}
                 for key in ("truth", "interpolated", "cascade")}
    hf_ratio = {ch: float(np.mean([c[f"hf_{ch}"]["ratio"] for c in cases])) for ch in ("ct", "pet")}
    more_detail = all(r > 1 for r in hf_ratio.values())
    # Drift is judged inside fixed regions (the global stage's labels): in each output's own labels the
    # change of resolution alone moves organ means (the phantom-input control measures how much).
    no_drift = all(summary_fixed[k] is not None and summary_fixed[k] <= TOLERANCE_PP for k in ("suv_mean_pp", "hu_mean_pp"))
    interior_within = all(summary_interior[k] is not None and summary_interior[k] <= TOLERANCE_PP
                          for k in ("suv_mean_pp", "hu_mean_pp"))
    own_within = all(summary_own[k] is not None and summary_own[k] <= TOLERANCE_PP for k in ("suv_mean_pp", "hu_mean_pp"))
    return {"weights": weights_info(folder), "settings": sampler.settings, "cutoff_cycles_per_voxel": list(cutoff),
            "tolerance_pp": TOLERANCE_PP, "cases": cases, "per_organ": per_organ,
            "summary_own_labels": summary_own, "summary_global_labels": summary_fixed,
            "summary_global_labels_truth": summary_fixed_truth, "interior_margin_global_voxels": INTERIOR_MARGIN,
            "summary_interior": summary_interior, "summary_interior_truth": summary_interior_truth,
            "hf_ratio_mean": hf_ratio, "phantom_input": {"vs_truth": oracle_summary, "hf_energy": oracle_hf},
            "more_high_frequency": more_detail, "organ_means_within_tolerance": no_drift,
            "own_label_means_within_tolerance": own_within, "interior_means_within_tolerance": interior_within,
            "passed": bool(more_detail and no_drift)}


def _voxels(organs: np.ndarray, n: int) -> np.ndarray:
    """Voxels per organ class 1..n of a label map."""
    return np.bincount(organs.ravel(), minlength=n + 1)[1:n + 1]


def _change(new: np.ndarray, old: np.ndarray) -> float | None:
    """Percent change of the summed volume over cases (None when the organ is absent)."""
    total = float(old.sum())
    return None if total == 0 else 100.0 * (float(new.sum()) - total) / total


def _nan(v) -> float | None:
    v = float(v)
    return None if v != v else v
