"""``benchmarks/RESULTS.md`` from the JSON results (``python -m benchmarks.report``).

Every number in RESULTS.md comes from a ``results/*.json`` file; the text around the
tables is generated from the same numbers, so re-running a benchmark and this script
keeps the two in step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import RESULTS_DIR, RESULTS_MD, read_result
from .sampler_fidelity import choose_converged

ORDER = ("sampler_fidelity", "denoiser", "global_samples", "speed", "train_speed", "memory", "seams", "refinement", "throughput", "io", "gpu_autopet", "twins", "twins_full")


def _f(v, fmt: str = ".2f", none: str = "–") -> str:
    if v is None:
        return none
    if isinstance(v, float) and v != v:  # nan
        return "nan"
    return format(v, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _provenance(r: dict) -> list[str]:
    load = r.get("load_average", {})
    lines = [f"Command: `{r['command']}`" + (" (quick)" if r.get("quick") else "")]
    if r.get("started"):
        lines.append(f"Run {r['started']} → {r['finished']} ({r['seconds']:.0f} s); load average (1/5/15 min) "
                     f"at start {load.get('start')}, at end {load.get('end')}.")
    else:
        lines.append(f"Written {r.get('finished')}; no load average recorded.")
    return lines


def _weights_line(info: dict | None, random: bool | None = None) -> str:
    if random:
        return "Weights: **random** (no trained weights available for this benchmark)."
    if not info:
        return "Weights: none."
    parts = []
    for stage in ("global", "sr"):
        s = info.get(stage)
        if s:
            parts.append(f"{stage}: {s['objective']}, training step {s.get('step')}, sha256 {str(s['sha256'])[:12]}…, "
                         f"saved {s.get('modified')}")
    return f"Weights: `{info['path']}` — " + ("; ".join(parts) if parts else "no stages")


# --- per benchmark -------------------------------------------------------------------------------


def sampler_fidelity(r: dict) -> list[str]:
    res = r["results"]
    s = res["settings"]
    out = [f"Global stage; {s['seeds']} seeds with the same demographics and initial noise for every sampler. "
           f"Reference: `{s['ref'][0]}` with {s['ref'][1]} steps. Deviations in percentage points: SUV relative to the "
           "reference organ mean, HU relative to (HU + 1000) of the reference (1 pp = 10 HU in water); mean over the "
           "organs of the synthaug organ map present in the generated labels (max in brackets). *vs reference*: organ "
           "means pooled over the seeds; *vs ODE ref.*: paired per seed against "
           f"`{s['ode_ref'][0]}` with {s['ode_ref'][1]} steps (same ODE, converged).", ""]
    for obj, o in res["objectives"].items():
        out.append(f"#### Objective `{obj}`")
        out.append("")
        if o.get("status") == "no weights":
            out += [f"Not measured ({o['note']}).", ""]
            continue
        out.append(_weights_line(o.get("weights")))
        out.append("")
        ref, ode = o["reference"], o["ode_reference"]
        rows = []
        for row in o["rows"]:
            v, p = row["vs_reference"], row["vs_ode_reference_paired"]
            rows.append([row["sampler"], row["steps"], row["evaluations"],
                         f"{_f(v['suv_mean_pp'])} ({_f(v['suv_max_pp'], '.1f')})",
                         f"{_f(v['hu_mean_pp'])} ({_f(v['hu_max_pp'], '.1f')})",
                         f"{_f(p['suv_mean_pp'])} / {_f(p['hu_mean_pp'])}", _f(row["seconds"], ".1f")])
        fl = ode["vs_reference"]
        rows.append([f"*{ode['sampler']} (ODE ref.)*", ode["steps"], ode["evaluations"],
                     f"{_f(fl['suv_mean_pp'])} ({_f(fl['suv_max_pp'], '.1f')})",
                     f"{_f(fl['hu_mean_pp'])} ({_f(fl['hu_max_pp'], '.1f')})", "0 / 0", _f(ode["seconds"], ".1f")])
        out += _table(["sampler", "steps", "evaluations", "SUV dev. vs reference, pp", "HU dev. vs reference, pp",
                       "SUV / HU dev. vs ODE ref. (paired), pp", "seconds"], rows)
        out.append("")
        out.append(f"Reference `{ref['sampler']}` {ref['steps']} steps took {ref['seconds']:.0f} s. Its organ means "
                   "(pooled over seeds): " + ", ".join(f"{k} {_f(v['suv'], '.2f')} SUV / {_f(v['hu'], '.0f')} HU"
                                                         for k, v in ref["organ_means"].items() if v["suv"] is not None) + ".")
        out.append("")
        unstable = [f"`{row['sampler']}` {row['steps']} steps" for row in o["rows"]
                    if row["vs_reference"]["suv_mean_pp"] is None or row["vs_reference"]["suv_mean_pp"] > 100
                    or (row["vs_reference"]["hu_mean_pp"] or 0) > 100]
        if unstable:
            out.append(f"Diverged or unstable (deviation above 100 pp or non-finite): {', '.join(unstable)}.")
        out.append(f"The converged ODE itself differs from the ancestral reference by {_f(fl['suv_mean_pp'])} pp (SUV) and "
                   f"{_f(fl['hu_mean_pp'])} pp (HU): the floor of this comparison (the sampling noise of "
                   f"{s['seeds']} seeds plus the difference between deterministic and stochastic sampling with these "
                   "weights).")
        step = ((o.get("weights") or {}).get("global") or {}).get("step")
        if step is not None:
            out.append(f"Measured on the global-stage weights of training step {step}; the choice depends on the "
                       "weights, so rerun `python -m benchmarks --only sampler_fidelity` when they change.")
        out.append("")
        ch = o.get("chosen")
        if ch:
            out.append(f"**Cohort means settled for `{obj}`: `{ch['sampler']}`, {ch['steps']} steps ({ch['evaluations']} "
                       "evaluations)** — "
                       f"{ch['criterion']}: SUV {_f(ch['vs_reference']['suv_mean_pp'])} pp, "
                       f"HU {_f(ch['vs_reference']['hu_mean_pp'])} pp.")
        else:
            out.append(f"**No setting for `{obj}` is within {res['threshold_pp']} pp of the reference**, not even the "
                       "converged ODE; see the table.")
        conv = choose_converged(o["rows"])
        if conv:
            p = conv["vs_ode_reference_paired"]
            out.append(f"**Cases converged (the sampler's default) for `{obj}`: `{conv['sampler']}`, {conv['steps']} "
                       f"steps ({conv['evaluations']} evaluations)** — {conv['criterion']}: SUV {_f(p['suv_mean_pp'])} pp, "
                       f"HU {_f(p['hu_mean_pp'])} pp.")
        else:
            out.append(f"**No setting for `{obj}` has its cases within {res['threshold_pp']} pp of their converged ODE "
                       "solutions** at that and every larger number of evaluations.")
        cd = o["config_default"]
        out.append(f"The weights' configured default is `{cd['sampler']}`, {cd['steps']} steps.")
        out.append("")
    absent = [k for k, o in res["objectives"].items() if o.get("status") == "no weights"]
    if absent:
        measured = [k for k in res["objectives"] if k not in absent]
        out += [f"No {' or '.join(f'`{k}`' for k in absent)} weights were given, so only "
                f"{', '.join(f'`{k}`' for k in measured) or 'no objective'} is reported.", ""]
    main = (res.get("chosen") or {}).get("objective")
    conv = choose_converged(res["objectives"][main]["rows"]) if main else None
    if conv:
        out += [f"`tests/scripts/test_benchmarks.py` checks that `default_stage_config('global')` (and the shipped "
                f"weights' JSON) use the setting whose cases converged (`{conv['sampler']}`, {conv['steps']} steps).",
                ""]
    return out


def speed(r: dict) -> list[str]:
    res = r["results"]
    t = res["timing"]
    st = res["settings"]
    out = [_weights_line(res.get("weights"), res.get("random_weights")), "",
           f"{res['cases']} case(s); global `{st['sampler']}` {st['steps']} steps, SR `{st.get('sr_sampler')}` "
           f"{st.get('sr_steps')} steps, patch {st.get('patch_size')} overlap {st.get('overlap')}; "
           f"global grid {res['global_grid']['shape']}, output {res['output_grid']['shape']}.", ""]
    rows = []
    for name, label in (("global", "global stage"), ("sr", "SR stage"), ("cascade", "whole cascade")):
        x = t[name]
        rows.append([label, _f(x["seconds_per_case"], ".1f"), _f(x["network_seconds_per_case"], ".1f"),
                     _f(x.get("network_calls_per_case"), ".0f"), _f(100 * x["outside_network_share"], ".1f")])
    out += _table(["", "seconds per case", "in the network, s", "network calls", "outside the network, %"], rows)
    b = res["global_forward_batch_scaling"]
    other = b.get("pytorch_choice_seconds_per_sample", {})
    out += ["", "Global network forward, seconds per sample by batch size (interleaved, median), with oneDNN forced "
            "for the convolutions (shipped) and with PyTorch's own kernel choice:", ""]
    out += _table(["batch", "s per sample (oneDNN)", "ratio to batch 1", "s per sample (PyTorch's choice)"],
                  [[k, _f(v, ".3f"), _f(b["ratio_to_batch_1"][k], ".2f"), _f(other.get(k), ".3f")]
                   for k, v in b["seconds_per_sample"].items()])
    if "previous_single_case_over_shipped" in b:
        out += ["", "PyTorch's choice takes a slow native kernel for one small volume, which the sampler used to avoid by "
                "evaluating a single case as a batch of two; that took "
                f"{_f(b['previous_single_case_over_shipped'], '.2f')}x as long as a batch of one with oneDNN forced "
                "(`synthaug.model.nets`), the shipped path."]
    p = res.get("sr_patching")
    if p:
        out += ["", f"SR stage on {p.get('samples', 1)} stage-1 sample(s), shipped patching vs split z-patches "
                "(mean seconds per case):", ""]
        out += _table(["patching", "patch", "overlap", "patches per call", "seconds"],
                      [[name, p[name]["patch_size"], p[name]["overlap"], p[name]["patch_batch"], _f(p["seconds"][name], ".1f")]
                       for name in ("shipped", "split")])
        out += ["", f"Split / shipped time: {_f(p['split_over_shipped'], '.2f')}. Split vs shipped output: mean |CT| "
                f"difference {_f(p['ct_mean_abs_difference_hu'], '.1f')} HU, mean |PET| difference "
                f"{_f(p['pet_mean_abs_difference_suv'], '.4f')} SUV, organ labels agree in "
                f"{_f(100 * p['organ_label_agreement'], '.2f')} % of voxels, lesion labels in "
                f"{_f(100 * p['lesion_label_agreement'], '.2f')} %."]
        per = p.get("split_vs_shipped_pct")
        if per:
            out += ["", "Per organ, split relative to shipped (%, summed over the samples):", ""]
            out += _table(["organ", "volume", "SUVmean"],
                          [[o, _f(v["volume"], "+.1f"), _f(v["suv_mean"], "+.1f")] for o, v in per.items()])
    out.append("")
    return out


def denoiser(r: dict) -> list[str]:
    res = r["results"]
    if "skipped" in res:
        return [f"Skipped: {res['skipped']}.", ""]
    sigmas = res["sigmas"]
    out = [f"{res['cases']} phantom cases (not in any training cohort) on the global grid. Each cell: "
           "`mse / sigma^2` of the denoised estimate over all channels (1 = the noise stays, 0 = perfect), then the "
           "organ channels alone.", ""]
    rows = []
    for row in res["rows"]:
        w = row["weights"]
        e = row["errors"]
        cells = [f"{_f(a, '.3g')} / {_f(o, '.3g')}" for a, o in zip(e["all"]["ratio"], e["organs"]["ratio"])]
        rows.append([f"`{w['path']}`", row["objective"], row["step"], *cells])
    out += _table(["weights", "objective", "step", *[f"sigma {s:g}" for s in sigmas]], rows)
    out += ["", "Absolute error over all channels (mse, encoded units), same rows:", ""]
    out += _table(["weights", *[f"sigma {s:g}" for s in sigmas]],
                  [[f"`{row['weights']['path']}`", *[_f(v, ".2g") for v in row["errors"]["all"]["mse"]]] for row in res["rows"]])
    with_dice = [row for row in res["rows"] if "dice" in row["errors"]]
    if with_dice:
        out += ["", "Organ Dice of the denoised estimate (argmax of the organ channels vs the truth, mean over the "
                "organs present), then the share of training examples drawn above that level and the share of the "
                "default sampler's steps taken above it:", ""]
        rows = []
        for row in with_dice:
            sh = row.get("schedule") or {}
            cells = [f"{_f(d)} · {_f(t, '.1%')} · {_f(m, '.0%')}" for d, t, m in
                     zip(row["errors"]["dice"], sh.get("train_above", [None] * len(sigmas)),
                         sh.get("sampler_above", [None] * len(sigmas)))]
            noise = f"{_f(sh.get('p_mean'), 'g')} / {_f(sh.get('p_std'), 'g')}"
            rows.append([f"`{row['weights']['path']}`", row["step"], noise, *cells])
        out += _table(["weights", "step", "training log-sigma mean / std", *[f"sigma {s:g}" for s in sigmas]], rows)
    with_lesions = [row for row in res["rows"] if any(v is not None for v in row["errors"].get("lesion_value", []))]
    if with_lesions:
        out += ["", "Lesion channel of the denoised estimate inside the true lesions, mean (+1: the lesion is "
                "recovered, -1: erased):", ""]
        out += _table(["weights", *[f"sigma {s:g}" for s in sigmas]],
                      [[f"`{row['weights']['path']}`", *[_f(v, "+.2f") for v in row["errors"]["lesion_value"]]]
                       for row in with_lesions])
    out.append("")
    return out


def global_samples(r: dict) -> list[str]:
    res = r["results"]
    if "skipped" in res:
        return [f"Skipped: {res['skipped']}.", ""]
    organs = list(res["rows"][0]["organs"])
    out = [f"{res['cases']} stage-1 samples per weights folder (default sampler, seeds 0..{res['cases'] - 1}) for the "
           "demographics of as many phantom cases (not in any training cohort). Each cell: median volume ratio "
           "sample / phantom on the global grid · share of samples where the organ is present · median of the organ "
           "channel's largest value as generated (about +1 when the model draws the organ; below 0 it never wins the "
           "argmax without an offset). Labels are decoded with each stage's calibrated offsets where it has them "
           "(column \"label offsets\"; docs/training.md, \"Label calibration\").", ""]
    rows = []
    for row in res["rows"]:
        cells = [f"{_f(o['volume_ratio'])} · {_f(o['present'], '.0%')} · {_f(o['label_range'], '+.1f')}"
                 for o in (row["organs"][k] for k in organs)]
        rows.append([f"`{row['weights']['path']}`", row["step"], f"{_f(row['p_mean'], 'g')} / {_f(row['p_std'], 'g')}",
                     f"`{row['sampler']}` x {row['steps']}", "yes" if row.get("calibrated") else "no", *cells])
    out += _table(["weights", "step", "training log-sigma mean / std", "sampler", "label offsets", *organs], rows)
    if all("suv_ratio" in o for row in res["rows"] for o in row["organs"].values()):
        out += ["", "Uptake: median over samples of SUVmean inside the sample's organ label / SUVmean inside the "
                "phantom's, on the global grid (stage 1's uptake, before the SR stage).", ""]
        out += _table(["weights", *organs], [[f"`{row['weights']['path']}`",
                                              *(_f(row["organs"][k]["suv_ratio"]) for k in organs)]
                                             for row in res["rows"]])
    les = [(row["weights"]["path"], row["lesions"]) for row in res["rows"] if row.get("lesions")]
    if les:
        ref = les[0][1]["references"]
        out += ["", f"Lesions (connected components of the lesion channel > 0) per case: the phantoms have "
                f"{_f(ref['lesions_per_case'], '.1f')} lesions and {_f(ref['voxels_per_case'], '.1f')} lesion voxels, "
                f"{_f(ref['with_lesions'], '.0%')} of them at least one.", ""]
        out += _table(["weights", "samples with lesions", "lesions per sample", "lesion voxels per sample",
                       "lesion channel's largest value as generated (median)"],
                      [[f"`{path}`", _f(v["samples"]["with_lesions"], ".0%"), _f(v["samples"]["lesions_per_case"], ".1f"),
                        _f(v["samples"]["voxels_per_case"], ".1f"), _f(v.get("label_range"), "+.2f")] for path, v in les])
    out.append("")
    return out


def train_speed(r: dict) -> list[str]:
    res = r["results"]
    native = "has" if res["bf16_native"] else "does **not** have"
    out = [f"This CPU {native} native bf16 kernels, so `synthaug train --precision auto` trains in "
           f"{res['auto_precision']} here.", ""]
    rows = []
    for stage, s in res["stages"].items():
        sec = s["seconds_per_step"]
        rows.append([stage, s["batch_size"], _f(sec["fp32"], ".2f"), _f(sec["bf16"], ".2f"), _f(s["speedup_bf16"], ".2f"),
                     _f(s["mean_loss"]["fp32"], ".4f"), _f(s["mean_loss"]["bf16"], ".4f"), _f(s["mean_abs_loss_difference"], ".4f")])
    out += _table(["stage", "batch", "fp32 s/step", "bf16 s/step", "speed-up", "mean loss fp32", "mean loss bf16",
                   "mean abs. loss difference"], rows)
    steps = next(iter(res["stages"].values()))["steps_timed"]
    out += ["", f"Median of {steps} interleaved steps per precision after one warm-up step; both trainers start from the "
            "same weights and see the same batches and noise, so the losses compare step for step.", ""]
    return out


def memory(r: dict) -> list[str]:
    res = r["results"]
    out = [f"Random-weight SR models, 1 sampler step, patch {res['patch']} overlap {res['overlap']}, "
           f"{res['patch_batch']} patches per network call; each row a fresh process.", ""]
    for device, d in res["devices"].items():
        a = d["analysis"]
        rows = []
        for row in d["rows"]:
            s = a["sizes"][row["label"]]
            cuda = f" / {_f(row.get('cuda_peak_mib'), '.0f')}" if device != "cpu" else ""
            rows.append([row["label"], "×".join(map(str, row["shape"])), f"{row['voxels'] / 1e6:.1f} M", row.get("patches"),
                         _f(row["peak_mib"], ".0f") + cuda, _f(s["peak_ratio"], ".2f"), _f(s["growth_percent"], "+.0f"),
                         _f(s["one_state_copy_mib"], ".0f"), _f(row["seconds"], ".0f")])
        peak_name = "peak RSS / CUDA, MiB" if device != "cpu" else "peak RSS, MiB"
        out += [f"Device `{device}`:", ""]
        out += _table(["size", "output shape", "voxels", "patches", peak_name, "ratio to 1x", "growth, %",
                       "one 15-ch float32 volume, MiB", "seconds"], rows)
        out.append("")
        acc = a.get("acceptance")
        if acc:
            verdict = "**passes**" if acc["passed"] else "**fails**"
            out.append(f"Issue-6 acceptance (peak grows < 25 % for 2x voxels): {verdict} — growth "
                       f"{acc['growth_percent']:+.0f} %.")
            out.append("")
        out += _memory_analysis(a, d)
    return out


def _memory_analysis(a: dict, d: dict) -> list[str]:
    idle, act = a["idle_peak_mib"], a["activations_mib"]
    first = d["rows"][0]
    s1 = a["sizes"][first["label"]]
    one = a.get("activations_one_patch_mib")
    lines = ["Where the memory goes:", "",
             f"- Floor of every process (imports, model): {idle:.0f} MiB peak.",
             f"- Network activations for one call on {d['net'].get('patch_batch', '?')} patches (the `net` probe): "
             f"{act:.0f} MiB above the floor" + (f"; {one:.0f} MiB for one patch per call" if one is not None else "") +
             ". This does not depend on the volume size.",
             f"- One full-volume tensor of the sampler state (15 channels, float32) is {s1['one_state_copy_mib']:.0f} MiB "
             f"at {first['label']}; the sampling peak is {s1['above_net_probe_in_state_copies']:.1f} such volumes above "
             "the network probe's peak."]
    if a.get("state_copies_per_voxel") is not None:
        share = a["bytes_per_voxel"] * first["voxels"] / 2**20
        lines.append(f"- From the smallest to the largest size the peak grows by {a['bytes_per_voxel']:.0f} bytes per "
                     f"output voxel = {a['state_copies_per_voxel']:.1f} full-volume 15-channel float32 tensors alive at "
                     "the peak: the sampler state and its temporaries in `CascadedSampler.sample_sr` (the per-sample "
                     "noise, drawn per generator and then stacked; `x`; the blended output and its normaliser in "
                     "`PatchwiseDenoiser`; the ODE update temporaries; the upsampled low-res volume, "
                     "with the residual added in place, and its copy with the labels hardened).")
        if share < act:
            autopet = a.get("autopet_output_state_gib")
            lines.append(f"- At {first['label']} that volume-proportional part is about {share:.0f} MiB against "
                         f"{act:.0f} MiB of activations, so the peak is set mostly by the patch size, and doubling the "
                         "voxels adds little. It still grows linearly" + (
                             f": at the autopet output (400 x 400 x 326) the volume-proportional part alone would be "
                             f"about {autopet:.1f} GiB." if autopet is not None else "."))
        else:
            lines.append(f"- At {first['label']} that volume-proportional part is about {share:.0f} MiB, more than the "
                         f"{act:.0f} MiB of activations: the peak is dominated by the volume-sized state rather than "
                         "bounded by the patch size. Bounding it needs fewer full-volume copies (in-place updates, "
                         "noise drawn in place, a float16 residual state) or a sampler that walks the volume patch by "
                         "patch over all steps.")
    lines.append("")
    return lines


def _seam_rows(runs: dict) -> list[list[str]]:
    rows = []
    for label, run in runs.items():
        for ch, axes in run["metrics"].items():
            for axis, m in axes.items():
                rows.append([label, run["overlap"], ch, axis, len(m["border_planes"]), _f(m["border"], ".3g"),
                             _f(m["local_interior"], ".3g"), _f(m["ratio_local"], ".3f"), _f(m["ratio_global"], ".3f"),
                             _f(m["overlap_zone_ratio"], ".3f")])
    return rows


_SEAM_HEADER = ["run", "overlap", "channel", "axis", "borders", "border |Δ|", "local |Δ|", "ratio local",
                "ratio global", "overlap zone / rest"]


def _seam_caveat(runs: dict, tol: float) -> list[str]:
    out = []
    control = runs.get("control_overlap_0", {}).get("summary", {})
    if control and all(v["within_tolerance"] for k, v in control.items() if k in ("ct", "pet") and v["within_tolerance"] is not None):
        ct = next(iter(runs["default"]["metrics"]["ct"].values()), {})
        out.append(f"**Caveat:** the overlap-0 control (plain tiling, no blending) is within ±{100 * tol:.0f} % as well, so "
                   "here the metric cannot tell blended from unblended patches: the output is dominated by voxel-to-voxel "
                   f"variation (mean |Δ| {_f(ct.get('interior'), '.0f')} HU in CT between neighbouring planes), which hides "
                   "any seam.")
    no_sr = runs.get("control_no_sr", {}).get("summary", {})
    for ch, s in runs["default"]["summary"].items():
        base = no_sr.get(ch, {}).get("worst_ratio_local")
        if s["within_tolerance"] is False and base is not None:
            line = (f"{ch.upper()}: the interpolated input without any SR stage has a ratio of {_f(base, '.2f')} at the "
                    f"same planes (the SR output: {_f(s['worst_ratio_local'], '.2f')})")
            if abs(base - 1) > tol and abs(s["worst_ratio_local"] - 1) <= abs(base - 1) + tol:
                line += (": the planes cross steep anatomy, which puts the ratio outside the tolerance before any patch "
                         "is sampled; whether patching adds a seam is measured by the residual rows")
            out.append(line + ".")
    return out


def seams(r: dict) -> list[str]:
    res = r["results"]
    tol = res["tolerance"]
    out = [_weights_line(res.get("weights"), res.get("random_weights")) + f" Low-res input: {res.get('lowres')}.", "",
           f"Patch {res['patch']}, SR settings {res['settings'].get('sr_sampler')} {res['settings'].get('sr_steps')} "
           f"step(s). Mean |Δ| across border planes vs planes {res['local_planes'][0]}–{res['local_planes'][1]} voxels "
           f"away (local) and all interior planes (global); tolerance ±{100 * tol:.0f} % on the local ratio.", ""]
    if res.get("shipped_patch") and res["shipped_patch"] != res["patch"]:
        out[-1:-1] = [f"The weights' own SR patch, {res['shipped_patch']}, covers the whole volume (no patch borders); "
                      "this measures the patching that larger grids need.", ""]
    out += _table(_SEAM_HEADER, _seam_rows(res["runs"]))
    out += ["", f"Default settings {'**within**' if res['passed'] else '**not within**'} ±{100 * tol:.0f} % "
            "(local ratio, CT and PET)."]
    out += _seam_caveat(res["runs"], tol)
    if res.get("phantom_input_runs"):
        out += ["", "The same SR weights on an in-distribution input (the phantom of the same demographics resampled "
                "to the global grid, as in training):", ""]
        out += _table(_SEAM_HEADER, _seam_rows(res["phantom_input_runs"]))
        out += ["", f"Default settings {'**within**' if res['passed_phantom_input'] else '**not within**'} "
                f"±{100 * tol:.0f} % (local ratio, CT and PET) on this input."]
        out += _seam_caveat(res["phantom_input_runs"], tol)
    out.append("")
    return out


def refinement(r: dict) -> list[str]:
    res = r["results"]
    if res.get("skipped"):
        return [_weights_line(res.get("weights")), "", f"Skipped: {res['skipped']}.", ""]
    st = res["settings"]
    cut = ", ".join(_f(c, ".3f") for c in res["cutoff_cycles_per_voxel"])
    out = [_weights_line(res.get("weights")), "",
           f"{len(res['cases'])} case(s), global `{st.get('sampler')}` {st.get('steps')} steps, SR `{st.get('sr_sampler')}` "
           f"{st.get('sr_steps')} step(s); the same stage-1 sample is interpolated (trilinear) or refined. High-frequency "
           f"energy: spectral power per voxel above the global grid's Nyquist ({cut} cycles per output voxel).", ""]
    rows = [[i, c["seed"], _f(c["hf_ct"]["interpolated"], ".3g"), _f(c["hf_ct"]["cascade"], ".3g"), _f(c["hf_ct"]["ratio"], ".1f"),
             _f(c["hf_pet"]["interpolated"], ".3g"), _f(c["hf_pet"]["cascade"], ".3g"), _f(c["hf_pet"]["ratio"], ".1f"),
             _f(100 * c["label_voxel_agreement"], ".1f")] for i, c in enumerate(res["cases"])]
    out += _table(["case", "seed", "CT HF, interp. (HU²)", "CT HF, cascade", "ratio", "PET HF, interp. (SUV²)",
                   "PET HF, cascade", "ratio", "label voxels unchanged, %"], rows)
    out += ["", "Organ means, cascade vs interpolated global stage (mean over cases; pp as in the sampler benchmark):", ""]
    po = sorted(res["per_organ"].items(), key=lambda kv: -(kv[1]["suv_own_labels_pp"] or 0))
    out += _table(["organ", "SUV interp.", "SUV cascade", "SUV dev. pp (own labels)", "SUV dev. pp (global labels)",
                   "HU interp.", "HU cascade", "HU dev. pp (own labels)", "HU dev. pp (global labels)",
                   "volume change, %", "truth: volume change, %", "truth: SUV / HU dev. pp (global labels)",
                   "SUV / HU dev. pp (interiors)", "truth: SUV / HU dev. pp (interiors)"],
                  [[name, _f(o["suv_interpolated"]), _f(o["suv_cascade"]), _f(o["suv_own_labels_pp"], ".1f"),
                    _f(o["suv_global_labels_pp"], ".1f"), _f(o["hu_interpolated"], ".0f"), _f(o["hu_cascade"], ".0f"),
                    _f(o["hu_own_labels_pp"], ".1f"), _f(o["hu_global_labels_pp"], ".1f"),
                    _f(o.get("volume_change_percent"), "+.0f"), _f(o.get("truth_volume_change_percent"), "+.0f"),
                    f"{_f(o.get('truth_suv_global_labels_pp'), '.1f')} / {_f(o.get('truth_hu_global_labels_pp'), '.1f')}",
                    f"{_f(o.get('suv_interior_pp'), '.1f')} / {_f(o.get('hu_interior_pp'), '.1f')}",
                    f"{_f(o.get('truth_suv_interior_pp'), '.1f')} / {_f(o.get('truth_hu_interior_pp'), '.1f')}"]
                   for name, o in po])
    out += ["", "Volume change: the cascade's labels vs the interpolated global stage's; \"truth\": the phantom on the "
            "output grid vs the same phantom interpolated from the global grid (what a perfect SR stage would change)."]
    so, sg = res["summary_own_labels"], res["summary_global_labels"]
    out += ["", f"Mean over organs: SUV {_f(so['suv_mean_pp'], '.1f')} pp, HU {_f(so['hu_mean_pp'], '.1f')} pp in each "
            f"output's own labels; {_f(sg['suv_mean_pp'], '.1f')} / {_f(sg['hu_mean_pp'], '.1f')} pp inside the global "
            "stage's labels (intensity change alone)."
            + (f" A perfect SR stage (the phantom on the output grid, inside the labels of the same phantom interpolated "
               f"from the global grid) changes them by {_f(res['summary_global_labels_truth']['suv_mean_pp'], '.1f')} / "
               f"{_f(res['summary_global_labels_truth']['hu_mean_pp'], '.1f')} pp: the column \"truth\" per organ."
               if res.get("summary_global_labels_truth") else ""),
            f"More high-frequency energy: **{'yes' if res['more_high_frequency'] else 'no'}** (mean ratio CT "
            f"{_f(res['hf_ratio_mean']['ct'], '.1f')}, PET {_f(res['hf_ratio_mean']['pet'], '.1f')}); organ means inside the "
            f"global stage's labels within {_f(res['tolerance_pp'], '.0f')} pp: "
            f"**{'yes' if res['organ_means_within_tolerance'] else 'no'}**."
            + (f" Inside the organs' interiors (more than {_f(res['interior_margin_global_voxels'], '.1f')} global voxels "
               f"from their borders, where partial volume at the global grid reaches no voxel): "
               f"{_f(res['summary_interior']['suv_mean_pp'], '.1f')} / {_f(res['summary_interior']['hu_mean_pp'], '.1f')} pp "
               f"(a perfect SR stage: {_f(res['summary_interior_truth']['suv_mean_pp'], '.1f')} / "
               f"{_f(res['summary_interior_truth']['hu_mean_pp'], '.1f')} pp), within {_f(res['tolerance_pp'], '.0f')} pp: "
               f"**{'yes' if res['interior_means_within_tolerance'] else 'no'}**; organs thinner than the margin "
               "(bone, spleen, kidneys, aorta at the demo grids) have no interior."
               if res.get("summary_interior") else ""), ""]
    ph = res.get("phantom_input")
    if ph:
        hf, vt = ph["hf_energy"], ph["vs_truth"]
        out += ["Diagnostic, the SR stage alone on an in-distribution input (the phantom of the same demographics "
                "resampled to the global grid as in training), against that phantom on the output grid:", ""]
        out += _table(["output", "CT HF (HU²)", "PET HF (SUV²)", "organ SUV dev. vs truth, pp", "organ HU dev. vs truth, pp"],
                      [["truth (phantom, output grid)", _f(hf["truth"]["ct"], ".3g"), _f(hf["truth"]["pet"], ".3g"), "0", "0"]]
                      + [[name, _f(hf[key]["ct"], ".3g"), _f(hf[key]["pet"], ".3g"), _f(vt[key]["suv_mean_pp"], ".1f"),
                          _f(vt[key]["hu_mean_pp"], ".1f")]
                         for key, name in (("interpolated", "interpolated low-res"), ("cascade", "SR stage output"))])
        out += ["", f"Read the own-label deviations above against this: the phantom itself, interpolated from the global "
                f"grid, differs from its output-grid version by {_f(vt['interpolated']['suv_mean_pp'], '.1f')} pp SUV and "
                f"{_f(vt['interpolated']['hu_mean_pp'], '.1f')} pp HU in each version's own labels (partial volume at "
                "16 mm): a perfect SR stage would move own-label organ means by about that much. The intensity change "
                "inside fixed labels (global labels) is the drift measure that does not include the change of resolution."]
        out.append("")
    return out


def throughput(r: dict) -> list[str]:
    res = r["results"]
    rows = [["on the fly, phantom", _f(res["on_the_fly_phantom"]["items_per_second"], ".3f")]]
    c = res["on_the_fly_cascade"]
    rows.append(["on the fly, cascade", _f(c["items_per_second"], ".4f") if "items_per_second" in c else f"skipped ({c['skipped']})"])
    rows.append(["from a cache (npy)", _f(res["from_cache"]["items_per_second"], ".1f")])
    rows.append(["real-layout .nii.gz (PETCTCohortDataset)", _f(res["real_layout_nii_gz"]["items_per_second"], ".1f")])
    out = [f"{res['cases']} demo-size cases ({res['grid']['shape']}), items built with `ds[i]` (best of {res['repeats']}).", ""]
    out += _table(["source", "items per second"], rows)
    out += ["", f"Cache vs `.nii.gz`: {res['cache_speedup_vs_nii_gz']:.1f}x.", ""]
    return out


def io(r: dict) -> list[str]:
    res = r["results"]
    rc = res["read_cases_per_second"]
    out = [f"From `benchmarks/bench_io.py` (cases from the {res['source']}); raw case reads, warm page cache.", ""]
    out += _table(["format", "cases per second", "speed-up vs .nii.gz", "bytes per case"],
                  [[k, _f(v, ".1f"), _f(res["read_speedup_vs_nii_gz"].get(k, 1.0), ".1f"), f"{res['bytes_per_case'][k]:,}"]
                   for k, v in rc.items()])
    out.append("")
    dl = res.get("dataloader_cases_per_second") or res.get("dataloader_items_per_second") or {}
    if dl:
        cols = list(dict.fromkeys(k for v in dl.values() for k in v))
        out += ["Training DataLoader mixing real and synthetic cases with `RandSyntheticReplaced` (see "
                "`bench_io.py`), items per second:", ""]
        out += _table(["workers", *(c.replace("_", " ") for c in cols)],
                      [[k.replace("workers_", ""), *(_f(v.get(c), ".1f") for c in cols)] for k, v in dl.items()])
        out.append("")
    return out


def gpu_autopet(r: dict) -> list[str]:
    res = r["results"]
    sp = res["seconds_per_case"]
    out = []
    if not res["device"].startswith("cuda"):
        out += ["**No GPU was lent during this work**: the numbers below are the script's reduced-size check on the CPU "
                f"(scale {res['scale']}), not the autopet-size GPU measurement. On a GPU run "
                "`python benchmarks/gpu_autopet.py` (full size, default settings).", ""]
    out += _table(["device", "scale", "global grid", "output grid", "global s/case", "SR s/case", "cascade s/case",
                   "CUDA peak, MiB (global / SR)", "peak RSS, MiB"],
                  [[res["device_name"], res["scale"], "×".join(map(str, res["global_grid"]["shape"])),
                    "×".join(map(str, res["output_grid"]["shape"])), _f(sp["global"], ".1f"), _f(sp["sr"], ".1f"),
                    _f(sp["cascade"], ".1f"),
                    "–" if not res["cuda_max_memory_allocated_mib"] else
                    f"{res['cuda_max_memory_allocated_mib'].get('global', 0):.0f} / {res['cuda_max_memory_allocated_mib'].get('sr', 0):.0f}",
                    _f(res["peak_rss_mib"], ".0f")]])
    st = res["settings"]
    out += ["", f"Random weights of the production architecture ({res['parameters']['global']:,} + "
            f"{res['parameters']['sr']:,} parameters); global `{st['sampler']}` {st['steps']} steps, SR "
            f"`{st.get('sr_sampler')}` {st.get('sr_steps')} steps, patch {st.get('patch_size')}.", ""]
    return out


def _weights_sha(info: dict | None) -> str:
    stages = [f"{s} {info[s]['sha256']}" for s in ("global", "sr") if info and info.get(s)]
    return "Weights sha256: " + "; ".join(stages) + "." if stages else "Weights: none recorded."


def _mean(block: dict, key: str, fmt: str) -> str:
    return _f((block.get(key) or {}).get("mean"), fmt)


def _minimality_row(name: str, block: dict) -> list[str]:
    return [name, _mean(block, "extent_mm", ".1f"), _mean(block, "mass_pct", ".1f"), _mean(block, "brain_pct", ".1f"),
            _mean(block, "dice_brain", ".3f"), _mean(block, "dice_lungs", ".3f"), _mean(block, "dice_liver", ".3f"),
            str((block.get("extent_mm") or {}).get("n", "–"))]


def _effect_row(name: str, e: dict, fmt: str) -> list[str]:
    return [name, _f(e["within_set_r"], ".3f"), _f(e["within_set_slope"], fmt), _f(e["pooled_r"], ".3f"),
            _f(e["rising_pct"], ".0f")]


def twins(r: dict) -> list[str]:
    res = r["results"]
    d, s1, ph = res["design"], res["stage1"], res["phantom"]
    st = d["stage1_settings"]
    sw = d["sweeps"]
    measured = d.get("people_measured", list(range(len(d["people"]))))
    out = [f"Counterfactual twins (issue 38): **{len(measured)} base people** (people {measured} of the "
           f"{len(d['people'])} drawn by `sample_population({len(d['people'])}, {d['population_seed']})`) with the "
           "diagnosis set to NEGATIVE; person i sampled with seed 1000 + i for every "
           f"twin. Sweeps: weight {sw['weight']} kg, height {sw['height']} cm, age {sw['age']} years (the other fields "
           f"the person's own). The cascade's **stage 1 only** (`stages='global'`, {d['grid']['spacing'][0]:g} mm "
           f"grid, where body size and organ positions are decided), `{st['sampler']}` with **{st['steps']} steps** "
           f"(the weights' default: {((res.get('weights') or {}).get('global') or {}).get('steps')}; fewer keep the run "
           "within the shared CPUs' budget), lesion prior off; the "
           "full-cascade check below uses the weights' own settings. *No-twin*: the same person at 80 kg from a second, "
           "independent seed (5000 + i), so that neighbours are 60@s, 80@s', 100@s. *Phantom*: its twins on the same "
           f"grid and seeds (phantom version {res.get('phantom_version', '?')}).", "", _weights_sha(res.get("weights")), "",
           "**Effectiveness** (each twin set centred on its own mean, then pooled: Pearson r and OLS slope of the "
           "measure on the requested value; pooled r: all cases, uncentred; rising: sets whose measure rises at every "
           "step):", ""]
    rows = [_effect_row("weight -> body mass (kg/kg), twins", s1["weight"]["effectiveness_mass"], ".3f"),
            _effect_row("weight -> body mass, no-twin", s1["no_twin"]["effectiveness_mass"], ".3f"),
            _effect_row("weight -> body mass, phantom", ph["weight"]["effectiveness_mass"], ".3f"),
            _effect_row("height -> body extent (mm/cm), twins", s1["height"]["effectiveness_extent"], ".2f"),
            _effect_row("height -> body extent, phantom", ph["height"]["effectiveness_extent"], ".2f")]
    out += _table(["sweep", "within-set r", "slope", "pooled r", "rising, %"], rows)
    out += ["", "**Minimality** (means over neighbouring pairs; |Δ| of body extent, body mass (%), brain volume (%); "
            "Dice of the masks):", ""]
    rows = [_minimality_row("weight twins, 20 kg apart", s1["weight"]["neighbours"]),
            _minimality_row("no-twin, 20 kg apart (two seeds)", s1["no_twin"]["neighbours"]),
            _minimality_row("same person, two seeds", s1["no_twin"]["same_person_two_seeds"]),
            _minimality_row("height twins (mass should stay)", s1["height"]["neighbours"]),
            _minimality_row("age twins", s1["age"]["neighbours"]),
            _minimality_row("phantom weight twins", ph["weight"]["neighbours"]),
            _minimality_row("phantom, two seeds", ph["no_twin"]["same_person_two_seeds"]),
            _minimality_row("phantom height twins", ph["height"]["neighbours"]),
            _minimality_row("phantom age twins", ph["age"]["neighbours"])]
    out += _table(["pairs", "Δ extent, mm", "Δ mass, %", "Δ brain, %", "Dice brain", "Dice lungs", "Dice liver", "pairs n"],
                  rows)
    out += ["", "**Smoothness** (share of sets whose 60->80 and 80->100 kg changes have the same sign; mean changes "
            "in brackets):", ""]
    rows = []
    for q in ("body_volume_ml", "body_fat_ml", "liver_suv_mean"):
        cells = [q]
        for block in (s1["weight"], s1["no_twin"], ph["weight"]):
            sm = block["smoothness"][q]
            cells.append(f"{_f(sm['same_sign_pct'], '.0f')} % ({_f(sm['mean_change_60_80'], '.3g')}, "
                         f"{_f(sm['mean_change_80_100'], '.3g')})")
        rows.append(cells)
    out += _table(["quantity", "twins", "no-twin", "phantom"], rows)
    return out + [""]


def twins_full(r: dict) -> list[str]:
    res = r["results"]
    f = res["full_cascade"]
    st = f["settings"]
    out = [f"The weight twins (60, 80, 100 kg) of the first {f['people']} of the people above through the whole cascade, with "
           f"the weights' own settings (stage 1 `{st['sampler']}` {st['steps']} steps, SR `{st.get('sr_sampler')}` "
           f"{st.get('sr_steps')} steps, lesion prior off); each final case against its own stage-1 output.", "",
           _weights_sha(res.get("weights")), ""]
    rows = [_effect_row("stage 1 (this run's settings)", f["stage1_mass"], ".3f"),
            _effect_row("final (after SR)", f["final_mass"], ".3f")]
    out += _table(["weight -> body mass", "within-set r", "slope, kg/kg", "pooled r", "rising, %"], rows)
    a = f["final_vs_stage1"]
    out += ["", "Final case vs its own stage-1 output: ratio final / stage 1 of body volume "
            f"{_mean(a, 'body_volume_ml', '.3f')}, extent {_mean(a, 'body_extent_mm', '.3f')}, mass "
            f"{_mean(a, 'body_mass_kg', '.3f')}, brain volume {_mean(a, 'brain_ml', '.3f')}; Dice of the final masks "
            f"with stage 1's (nearest-upsampled): brain {_mean(a, 'dice_brain', '.3f')}, lungs "
            f"{_mean(a, 'dice_lungs', '.3f')}, liver {_mean(a, 'dice_liver', '.3f')}. A twin-to-twin change has the "
            "same sign after SR as in stage 1 in: " + ", ".join(f"{k} {_f(v, '.0f')} %" for k, v in
                                                             f["change_same_sign_pct"].items()) + ".", ""]
    out += _table(["final twins, 20 kg apart", "Δ extent, mm", "Δ mass, %", "Δ brain, %", "Dice brain", "Dice lungs",
                   "Dice liver", "pairs n"], [_minimality_row("final (4 mm)", f["final_neighbours"])])
    sm = f["final_smoothness"]
    out += ["", "Smoothness after SR (same sign 60->80 and 80->100 kg): " +
            ", ".join(f"{k} {_f(v['same_sign_pct'], '.0f')} %" for k, v in sm.items()) + ".", ""]
    return out


RENDER = {"sampler_fidelity": sampler_fidelity, "denoiser": denoiser, "global_samples": global_samples, "speed": speed, "train_speed": train_speed, "memory": memory, "seams": seams,
          "refinement": refinement, "throughput": throughput, "io": io, "gpu_autopet": gpu_autopet,
          "twins": twins, "twins_full": twins_full}
TITLES = {"sampler_fidelity": "Sampler steps vs organ fidelity (global stage)",
          "denoiser": "Global-stage denoising error by noise level",
          "global_samples": "Organ volumes in global-stage samples", "speed": "Seconds per case (CPU, demo preset)",
          "train_speed": "Training step time: fp32 vs bf16 (CPU, demo preset)",
          "memory": "Peak memory of SR sampling vs volume size", "seams": "Seams at SR patch borders",
          "refinement": "SR stage: refinement vs drift",
          "throughput": "Dataset throughput", "io": "Cache vs NIfTI reads", "gpu_autopet": "Cascade at the autopet size",
          "twins": "Counterfactual twins: effectiveness, minimality, smoothness (stage 1)",
          "twins_full": "Counterfactual twins through the full cascade"}


def render(results_dir: Path = RESULTS_DIR) -> str:
    """The markdown of all results in ``results_dir``."""
    found = {name: read_result(name, results_dir) for name in ORDER}
    found = {k: v for k, v in found.items() if v is not None}
    lines = ["# synthaug benchmark results", "",
             "Generated by `python -m benchmarks.report` from `benchmarks/results/*.json` (do not edit by hand); "
             "`python -m benchmarks` runs the benchmarks and regenerates this file. Timings were taken on a shared "
             "machine (the CPUs also ran training), so absolute seconds are pessimistic; compare numbers measured in "
             "the same run, and see each section's load average.", ""]
    machines = {}
    for name, r in found.items():
        m = r["machine"]
        key = (m["cpu"], m["cores"], m["torch"], str(m.get("gpu")))
        machines.setdefault(key, []).append(name)
    for (cpu, cores, torch_v, gpu), names in machines.items():
        gpu_text = "none" if gpu == "None" else gpu
        lines.append(f"Machine: {cpu}, {cores} cores, torch {torch_v}, GPU: {gpu_text} ({', '.join(names)}).")
    lines.append("")
    if not found:
        lines += ["No results yet: run `python -m benchmarks`.", ""]
    for name, r in found.items():
        lines += [f"## {TITLES[name]}", ""]
        lines += _provenance(r)
        lines.append("")
        try:
            lines += RENDER[name](r)
        except (KeyError, TypeError, ValueError) as err:  # an older or partial result file
            lines += [f"(could not render these results: {type(err).__name__}: {err})", ""]
    missing = [n for n in ORDER if n not in found]
    if missing:
        lines += ["## Not run", "", "No results for: " + ", ".join(f"`{n}`" for n in missing) + ".", ""]
    return "\n".join(lines).rstrip() + "\n"


#: The section ``scripts/downstream_report.py`` writes into RESULTS.md from a downstream run folder (its
#: results.json holds more than ``results/downstream.json`` renders); :func:`write` keeps it.
DOWNSTREAM_START, DOWNSTREAM_END = "<!-- downstream:start -->", "<!-- downstream:end -->"


def downstream_section(text: str) -> str:
    """The downstream section of a RESULTS.md text, markers included ("" when it has none)."""
    if DOWNSTREAM_START in text and DOWNSTREAM_END in text:
        return text[text.index(DOWNSTREAM_START): text.index(DOWNSTREAM_END) + len(DOWNSTREAM_END)] + "\n"
    return ""


def write(results_dir: Path = RESULTS_DIR, target: Path | None = None) -> Path:
    """Write RESULTS.md (default: ``benchmarks/RESULTS.md`` for the main results folder), keeping the
    downstream section that ``scripts/downstream_report.py`` wrote into it."""
    from synthaug.core.io import atomic_write_text

    target = target or (RESULTS_MD if Path(results_dir).resolve() == RESULTS_DIR.resolve() else Path(results_dir) / "RESULTS.md")
    kept = downstream_section(target.read_text()) if target.is_file() else ""
    atomic_write_text(target, render(results_dir) + ("\n" + kept if kept else ""))
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="regenerate benchmarks/RESULTS.md from the JSON results")
    p.add_argument("--results", default=str(RESULTS_DIR), help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    print(f"wrote {write(Path(args.results))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
