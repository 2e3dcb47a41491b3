"""The benchmarks package: the sampler regression guard, the metrics, the GPU script on a
CPU at reduced size and the report. No timings are asserted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import BENCHMARKS
from benchmarks.__main__ import parse_args
from benchmarks.common import RESULTS_DIR, SHIPPED_WEIGHTS, NetTimer
from benchmarks.memory import analyse
from benchmarks.sampler_fidelity import (
    choose,
    choose_converged,
    cohort_deviation,
    organ_stats,
    paired_deviation,
    steps_for,
)
from benchmarks.seams import border_planes, seam_metric

# --- regression guard -----------------------------------------------------------------------------


def _converged() -> dict:
    """The sampler-fidelity benchmark's per-case choice for the main weights' objective (what the
    sampler's default must be), from the rows it recorded."""
    path = RESULTS_DIR / "sampler_fidelity.json"
    if not path.is_file():
        pytest.skip("benchmarks/results/sampler_fidelity.json absent (run python -m benchmarks --only sampler_fidelity)")
    results = json.loads(path.read_text())["results"]
    objective = (results.get("chosen") or {}).get("objective")
    if objective is None:
        pytest.skip("the fidelity benchmark recorded no main objective")
    converged = choose_converged(results["objectives"][objective]["rows"])
    if not converged:
        pytest.skip("the fidelity benchmark found no setting whose cases are within 1 pp of their converged ODE")
    return {"objective": objective, **converged}


def test_default_global_sampler_is_the_benchmarked_choice():
    from synthaug.model.stages import default_stage_config

    chosen = _converged()
    d = default_stage_config("global", objective=chosen["objective"]).diffusion
    assert (d.sampler, d.steps) == (chosen["sampler"], chosen["steps"]), (
        f"default_stage_config('global') samples with {d.sampler} x {d.steps} but the fidelity benchmark chose "
        f"{chosen['sampler']} x {chosen['steps']} (benchmarks/RESULTS.md)")


def test_shipped_weights_use_the_benchmarked_sampler():
    path = SHIPPED_WEIGHTS / "global.json"
    if not path.is_file():
        pytest.skip("no shipped weights in synthaug/weights")
    chosen = _converged()
    d = json.loads(path.read_text())["diffusion"]
    assert chosen["objective"] == d["objective"], "the fidelity benchmark ran on weights of another objective"
    assert (d["sampler"], d["steps"]) == (chosen["sampler"], chosen["steps"])


# --- sampler fidelity metrics ---------------------------------------------------------------------


def test_organ_stats_inside_generated_labels():
    organs = np.zeros((4, 4, 4), np.uint8)
    organs[:2] = 7  # liver
    organs[2:, :2] = 5  # lungs
    pet = np.where(organs == 7, 3.0, 0.5).astype(np.float32)
    ct = np.where(organs == 5, -800.0, 50.0).astype(np.float32)
    stats = organ_stats({"organs": organs, "pet": pet, "ct": ct})
    assert stats.shape == (11, 2)
    np.testing.assert_allclose(stats[6], [3.0, 50.0])     # label 7 is row 6
    np.testing.assert_allclose(stats[4], [0.5, -800.0])   # label 5
    assert np.isnan(stats[0]).all()                        # no body fat generated


def test_deviations_in_percentage_points():
    ref = np.full((2, 11, 2), np.nan)
    ref[:, 6] = [[2.0, 40.0], [2.0, 60.0]]  # liver SUV 2, HU 40 / 60 (mean 50)
    test = ref.copy()
    test[:, 6, 0] = [2.02, 2.02]            # +1 % SUV
    test[:, 6, 1] = [50.0, 70.0]            # +10 HU = 10 / 1050 of the attenuation
    cohort = cohort_deviation(test, ref)
    assert cohort["suv_mean_pp"] == pytest.approx(1.0)
    assert cohort["hu_mean_pp"] == pytest.approx(100 * 10 / 1050)
    paired = paired_deviation(test, ref)
    assert paired["hu_mean_pp"] == pytest.approx(np.mean([100 * 10 / 1040, 100 * 10 / 1060]))
    # Opposite per-seed errors cancel in the cohort mean but not when paired.
    test[:, 6, 0] = [2.2, 1.8]
    assert cohort_deviation(test, ref)["suv_mean_pp"] == pytest.approx(0.0, abs=1e-9)
    assert paired_deviation(test, ref)["suv_mean_pp"] == pytest.approx(10.0)


def _row(sampler, nfe, suv, hu):
    return {"sampler": sampler, "steps": steps_for(sampler, nfe), "evaluations": nfe,
            "vs_reference": {"suv_mean_pp": suv, "hu_mean_pp": hu}}


def test_choose_smallest_stable_setting():
    rows = [_row("euler", 4, 5.0, 3.0), _row("euler", 8, 0.8, 0.5), _row("euler", 16, 1.5, 0.4),  # not stable
            _row("euler", 32, 0.5, 0.3), _row("dpmpp_2m", 4, 2.0, 2.0), _row("dpmpp_2m", 8, 0.9, 0.9),
            _row("dpmpp_2m", 16, 0.4, 0.2), _row("dpmpp_2m", 32, 0.3, 0.1)]
    got = choose(rows)
    assert (got["sampler"], got["evaluations"]) == ("dpmpp_2m", 8)
    assert "ancestral reference" in got["criterion"]
    assert steps_for("heun", 8) == 4 and steps_for("heun", 4) == 2 and steps_for("euler", 8) == 8


def test_sampler_fidelity_runs_every_objective_and_chooses_for_the_main_weights(tmp_path, monkeypatch):
    """x0 weights are swept and chosen from like edm and flow ones (they once fell through)."""
    from benchmarks import sampler_fidelity
    from benchmarks.common import Context

    for obj in ("x0", "edm"):
        (tmp_path / obj).mkdir()
        (tmp_path / obj / "global.json").write_text(json.dumps({"diffusion": {"objective": obj}}))
        (tmp_path / obj / "global.safetensors").write_bytes(b"")
    swept = []
    monkeypatch.setattr(sampler_fidelity, "run_objective",
                        lambda folder, settings: swept.append(folder.name) or {"chosen": {"sampler": folder.name}})
    out = sampler_fidelity.run(Context(weights=[tmp_path / "x0", tmp_path / "edm"]))
    assert sorted(swept) == ["edm", "x0"]
    assert out["chosen"] == {"objective": "x0", "sampler": "x0"}
    assert out["objectives"]["flow"]["status"] == "no weights"


def test_choose_converged_wants_the_cases_near_their_ode_solutions_from_then_on():
    def row(sampler, nfe, cohort, paired):
        return {**_row(sampler, nfe, cohort, cohort), "vs_ode_reference_paired": {"suv_mean_pp": paired, "hu_mean_pp": 0.2}}

    rows = [row("euler", 4, 0.5, 3.0), row("euler", 8, 0.5, 0.9), row("euler", 16, 0.5, 1.2),  # 8 not stable
            row("euler", 32, 0.5, 0.95), row("dpmpp_2m", 4, 0.5, 3.5), row("dpmpp_2m", 8, 0.5, 1.4),
            row("dpmpp_2m", 16, 0.5, 1.1), row("dpmpp_2m", 32, 0.5, 0.4), row("heun", 31, 0.5, 1.1)]
    assert choose(rows)["evaluations"] == 4  # cohort means settle at once
    got = choose_converged(rows)
    assert (got["sampler"], got["steps"]) == ("dpmpp_2m", 32)  # euler 32 ties on evaluations, further off
    assert got["vs_ode_reference_paired"]["suv_mean_pp"] == 0.4 and "paired" in got["criterion"]
    rows[-2]["vs_ode_reference_paired"]["suv_mean_pp"] = None  # a diverged setting never qualifies
    assert (choose_converged(rows)["sampler"], choose_converged(rows)["steps"]) == ("euler", 32)
    assert choose_converged(rows, threshold=0.1) is None


def test_choose_falls_back_to_the_ode_floor():
    rows = [_row("heun", 3, 6.0, 2.0), _row("heun", 7, 2.5, 1.6), _row("heun", 15, 2.2, 1.5)]
    assert choose(rows) is None or choose(rows)["criterion"] != "within 1 pp of the ancestral reference"
    got = choose(rows, floor={"suv_mean_pp": 2.0, "hu_mean_pp": 1.4})
    assert got["evaluations"] == 7 and "ODE" in got["criterion"]
    assert choose(rows, floor=None) is None


# --- seams ---------------------------------------------------------------------------------------


def test_border_planes_of_the_demo_patching():
    borders, zones = border_planes(256, 64, 8)
    assert borders == [56, 64, 112, 120, 168, 176, 192, 232]
    assert zones == [(56, 64), (112, 120), (168, 176), (192, 232)]
    assert border_planes(128, 128, 8) == ([], [])


def test_seam_metric_sees_a_seam_and_not_smooth_data():
    rng = np.random.default_rng(0)
    shape = (8, 8, 128)
    mask = np.ones(shape, bool)
    smooth = rng.normal(0, 1, shape).cumsum(axis=2)  # a random walk: same |gradient| statistics everywhere
    m = seam_metric(smooth, mask, (8, 8, 64), 8)
    assert abs(m["axis_2"]["ratio_local"] - 1) < 0.3
    seamed = smooth.copy()
    seamed[..., 64:] += 10.0  # a patch that ends at plane 64 with an offset: a seam
    seamed[..., 56:] += 10.0  # and one that starts at plane 56
    m = seam_metric(seamed, mask, (8, 8, 64), 8)
    assert m["axis_2"]["border_planes"] == [56, 64, 120]  # patches [0, 64), [56, 120), [64, 128)
    assert m["axis_2"]["ratio_local"] > 3


# --- memory analysis -----------------------------------------------------------------------------


def test_seam_caveat_blames_the_anatomy_only_when_the_input_has_the_same_ratio():
    from benchmarks.report import _seam_caveat

    def runs(out_ratio, input_ratio):
        summary = lambda r: {"worst_ratio_local": r, "within_tolerance": abs(r - 1) <= 0.1}  # noqa: E731
        return {"default": {"summary": {"pet": summary(out_ratio)}},
                "control_no_sr": {"summary": {"pet": summary(input_ratio)}}}

    assert _seam_caveat(runs(1.05, 1.30), 0.1) == []  # within tolerance: nothing to explain
    for input_ratio in (1.28, 1.58):  # as steep, or steeper, in the input as in the output
        [line] = _seam_caveat(runs(1.31, input_ratio), 0.1)
        assert f"{input_ratio:.2f}" in line and "steep anatomy" in line
    [line] = _seam_caveat(runs(1.31, 1.0), 0.1)  # the input is smooth there: a real seam, no excuse
    assert "1.00" in line and "steep anatomy" not in line
    [line] = _seam_caveat(runs(1.60, 1.20), 0.1)  # much further from 1 than the input
    assert "steep anatomy" not in line


def test_memory_analysis_growth_and_acceptance():
    idle, net = {"peak_mib": 500.0}, {"peak_mib": 1500.0}
    vox = 128 * 128 * 256
    rows = [{"label": "1x", "voxels": vox, "peak_mib": 2000.0, "peak_after_sample_mib": 2000.0},
            {"label": "2x", "voxels": 2 * vox, "peak_mib": 2400.0, "peak_after_sample_mib": 2400.0}]
    a = analyse(rows, idle, net)
    assert a["acceptance"]["growth_percent"] == pytest.approx(20.0) and a["acceptance"]["passed"]
    assert a["bytes_per_voxel"] == pytest.approx(400 * 2**20 / vox)
    assert a["activations_mib"] == 1000.0
    rows[1]["peak_mib"] = rows[1]["peak_after_sample_mib"] = 3000.0
    assert not analyse(rows, idle, net)["acceptance"]["passed"]


# --- entry point, timer, GPU script and report ---------------------------------------------------------


def test_entry_point_checks_names_and_weights(tmp_path, capsys):
    assert parse_args(["--quick", "--only", "speed", "seams"]).only == ["speed", "seams"]
    with pytest.raises(SystemExit):
        parse_args(["--only", "nonsense"])
    with pytest.raises(SystemExit):
        parse_args(["--weights", str(tmp_path)])
    assert "no global.json" in capsys.readouterr().err
    assert set(BENCHMARKS) == {"sampler_fidelity", "denoiser", "global_samples", "speed", "train_speed", "memory", "seams", "refinement", "throughput", "gpu_autopet"}


def test_net_timer_counts_forward_calls():
    net = torch.nn.Linear(3, 3)
    with NetTimer(net) as t:
        net(torch.zeros(1, 3))
        net(torch.zeros(1, 3))
    net(torch.zeros(1, 3))  # hooks removed
    assert t.calls == 2 and t.seconds > 0


def test_global_batch_scaling_times_both_convolution_paths(monkeypatch):
    from benchmarks.speed import global_batch_scaling
    from synthaug.model.nets import NetConfig, build_net

    net = build_net(NetConfig(in_channels=3, out_channels=3, channels=(8, 16), attention_levels=(False, False),
                              mid_attention=False, norm_num_groups=4, num_head_channels=8)).eval()
    onednn_calls = []
    real = torch.mkldnn_convolution
    monkeypatch.setattr(torch, "mkldnn_convolution", lambda *a: onednn_calls.append(a[0].shape[0]) or real(*a))
    out = global_batch_scaling(net, (8, 8, 16), 3, batches=(1, 2), repeats=1)
    assert set(out["seconds_per_sample"]) == set(out["pytorch_choice_seconds_per_sample"]) == {"1", "2"}
    assert out["ratio_to_batch_1"]["1"] == 1.0
    assert out["previous_single_case_over_shipped"] == pytest.approx(
        2 * out["pytorch_choice_seconds_per_sample"]["2"] / out["seconds_per_sample"]["1"])
    wide = sum(max(m.kernel_size) > 1 for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    assert sorted(set(onednn_calls)) == [1, 2] and len(onednn_calls) == 2 * 2 * wide  # forced path only: warm-up + 1


def test_gpu_autopet_script_at_reduced_size_on_cpu(tmp_path):
    from benchmarks import gpu_autopet
    from benchmarks.report import render

    assert gpu_autopet.main(["--scale", "0.125", "--device", "cpu", "--steps", "1", "--sr-steps", "1",
                             "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "gpu_autopet.json").read_text())
    res = r["results"]
    assert r["command"].startswith("python benchmarks/gpu_autopet.py --scale 0.125")
    assert r["machine"]["torch"] == torch.__version__ and r["started"] <= r["finished"]
    assert res["device"] == "cpu" and res["random_weights"]
    assert res["global_grid"]["shape"] == [8, 8, 16]
    # The field of view of the autopet preset is kept.
    from synthaug.core.grid import Grid, get_preset

    np.testing.assert_allclose(Grid.from_dict(res["output_grid"]).fov_mm, get_preset("autopet").output_grid.fov_mm)
    assert res["seconds_per_case"]["cascade"] > 0 and res["peak_rss_mib"] > 0
    assert res["cuda_max_memory_allocated_mib"] is None
    md = render(tmp_path)
    assert "No GPU was lent" in md and "python benchmarks/gpu_autopet.py --scale 0.125" in md


def test_gpu_autopet_rejects_bad_scale(tmp_path):
    from benchmarks import gpu_autopet

    with pytest.raises(SystemExit):
        gpu_autopet.main(["--scale", "1.5", "--out", str(tmp_path)])
    assert not (tmp_path / "gpu_autopet.json").exists()


def test_high_frequency_energy_sees_detail_beyond_the_cutoff_only():
    from benchmarks.refinement import high_frequency_energy

    z = np.arange(64)
    smooth = np.broadcast_to(np.sin(2 * np.pi * 2 * z / 64), (8, 8, 64)).copy()   # 2 cycles / 64 voxels
    fine = np.broadcast_to(np.sin(2 * np.pi * 24 * z / 64), (8, 8, 64)).copy()    # 24 cycles / 64 voxels
    cutoff = (0.5, 0.5, 0.125)  # e.g. a global grid 4x coarser along z
    assert high_frequency_energy(smooth, cutoff) < 1e-20
    # Parseval: a unit sine has mean power 0.5, all of it above the cutoff.
    assert high_frequency_energy(fine, cutoff) == pytest.approx(0.5, rel=1e-9)
    assert high_frequency_energy(smooth + fine, cutoff) == pytest.approx(0.5, rel=1e-9)
    with pytest.raises(ValueError, match="cutoff has 2 values"):
        high_frequency_energy(smooth, (0.5, 0.5))


def test_denoising_errors_span_identity_to_oracle():
    """The denoiser benchmark's measure: 1 for a denoiser that returns its input, 0 for one
    that returns the clean sample, in every channel group."""
    from benchmarks.denoiser import GROUPS, denoising_errors

    x0 = torch.randn(2, 15, 4, 4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cond = torch.zeros(2, 14)
    identity = denoising_errors(lambda x, sigma, cond: x, x0, cond, sigmas=(0.1, 1.0))
    oracle = denoising_errors(lambda x, sigma, cond: x0, x0, cond, sigmas=(0.1, 1.0))
    for g in GROUPS:
        assert identity[g]["ratio"] == pytest.approx([1.0, 1.0], rel=0.35)
        assert oracle[g]["ratio"] == [0.0, 0.0]
    assert identity["all"]["ratio"] == pytest.approx([1.0, 1.0], rel=0.05)
    assert oracle["dice"] == [1.0, 1.0]


def test_organ_dice_scores_the_decoded_labels():
    from benchmarks.denoiser import organ_dice
    from synthaug.model.channels import encode

    organs = np.zeros((4, 4, 8), np.uint8)
    organs[:2] = 7
    organs[2:, :, :4] = 3
    zeros = np.zeros(organs.shape, np.float32)
    truth = torch.from_numpy(encode(zeros, zeros, organs, None))[None]
    assert organ_dice(truth, truth) == 1.0
    shifted = np.roll(organs, 1, axis=0)  # half of each class moves
    est = torch.from_numpy(encode(zeros, zeros, shifted, None))[None]
    assert 0.0 < organ_dice(est, truth) < 1.0
    swapped = np.where(organs == 7, 3, np.where(organs == 3, 0, 7)).astype(np.uint8)
    est = torch.from_numpy(encode(zeros, zeros, swapped, None))[None]
    assert organ_dice(est, truth) == 0.0


def test_organ_volume_stats_of_samples_against_phantoms():
    from benchmarks.global_samples import organ_volume_stats
    from synthaug.model.channels import encode

    organs = np.full((4, 4, 8), 2, np.uint8)
    organs[:2, :2] = 7      # 16 voxels of liver
    organs[3, 3, 7] = 6     # 1 voxel of heart
    zeros = np.zeros(organs.shape, np.float32)
    pet = np.where(organs == 7, 2.0, 1.0).astype(np.float32)
    ref = torch.from_numpy(encode(zeros, pet, organs, None))[None]
    same = organ_volume_stats(ref, ref)
    assert same["liver"] == {"present": 1.0, "volume_ratio": 1.0, "label_range": 1.0, "suv_ratio": 1.0}
    assert same["lungs"]["volume_ratio"] is None  # absent from the phantom: no ratio
    smaller = organs.copy()
    smaller[:2, :2, :4] = 2  # half the liver gone, and the heart
    smaller[3, 3, 7] = 2
    sample = torch.from_numpy(encode(zeros, 0.5 * pet, smaller, None))[None]  # uptake halved
    stats = organ_volume_stats(torch.cat([sample, ref]), torch.cat([ref, ref]))
    assert stats["liver"]["volume_ratio"] == pytest.approx(0.75)  # median of 0.5 and 1
    assert stats["liver"]["suv_ratio"] == pytest.approx(0.75, rel=1e-5)  # median of 0.5 and 1
    assert stats["heart"]["suv_ratio"] == pytest.approx(1.0)  # only the sample that has a heart counts
    assert stats["heart"]["present"] == 0.5 and stats["heart"]["label_range"] == pytest.approx(0.0)


def test_lesion_stats_count_lesions_of_samples_and_phantoms():
    from benchmarks.global_samples import lesion_stats
    from synthaug.model.channels import encode

    zeros = np.zeros((6, 6, 6), np.float32)
    two = np.zeros((6, 6, 6), np.uint8)
    two[0, 0, 0] = 1
    two[3:5, 3:5, 3] = 1  # a second lesion of 4 voxels
    ref = torch.from_numpy(np.stack([encode(zeros, zeros, None, two)] * 2))
    none = torch.from_numpy(np.stack([encode(zeros, zeros, None, np.zeros_like(two)), encode(zeros, zeros, None, two)]))
    stats = lesion_stats(none, ref)
    assert stats["references"] == {"with_lesions": 1.0, "lesions_per_case": 2.0, "voxels_per_case": 5.0}
    assert stats["samples"] == {"with_lesions": 0.5, "lesions_per_case": 1.0, "voxels_per_case": 2.5}


def test_schedule_shares_cover_training_and_sampler():
    from benchmarks.denoiser import schedule_shares
    from synthaug.model.diffusion import DiffusionConfig

    cfg = DiffusionConfig(objective="x0", p_mean=0.0, p_std=1.0, sampler="euler", steps=10, sigma_max=80.0)
    sh = schedule_shares(cfg, sigmas=(0.001, 1.0, 100.0))
    assert sh["train_above"] == pytest.approx([1.0, 0.5, 0.0], abs=1e-5)
    assert sh["sampler_above"][0] == 1.0 and sh["sampler_above"][2] == 0.0
    assert 0.0 < sh["sampler_above"][1] < 1.0


def test_refinement_volume_helpers():
    from benchmarks.refinement import _change, _voxels

    organs = np.array([[0, 1, 1], [2, 11, 11]], dtype=np.uint8)
    counts = _voxels(organs, 11)
    assert counts.shape == (11,) and counts[0] == 2 and counts[1] == 1 and counts[10] == 2 and counts.sum() == 5
    assert _change(np.array([3.0, 3.0]), np.array([2.0, 2.0])) == pytest.approx(50.0)
    assert _change(np.array([1.0]), np.array([0.0])) is None


def test_organ_interiors_keep_only_voxels_far_from_each_border():
    from benchmarks.refinement import organ_interiors

    organs = np.zeros((20, 20, 20), dtype=np.uint8)
    organs[2:18, 2:18, 2:18] = 1   # a 16-voxel cube ...
    organs[8:12, 8:12, 8:12] = 2   # ... around a 4-voxel one
    organs[0:20, 0:20, 19] = 3     # a one-voxel sheet on the volume's edge
    inner = organ_interiors(organs, (2.0, 2.0, 2.0), margin_mm=4.0)
    assert set(np.unique(inner)) == {0, 1}  # the small cube and the sheet are thinner than the margin
    kept = np.argwhere(inner == 1)
    assert kept.min() >= 4 and kept.max() <= 15  # > 2 voxels (4 mm) from the cube's outer border
    # ... and from the inner cube's border (Euclidean distance to the nearest voxel of another label)
    assert not inner[6:14, 8:12, 8:12].any() and not inner[8:12, 8:12, 6:14].any()
    assert inner[4, 4, 4] == 1 and inner[5, 10, 10] == 1


def test_denoiser_lesion_value_tells_a_recovered_lesion_from_an_erased_one():
    from benchmarks.denoiser import denoising_errors
    from synthaug.model.channels import LESION_CHANNEL

    x0 = torch.zeros(2, 15, 4, 4, 8, dtype=torch.float64)
    x0[:, LESION_CHANNEL] = -1.0
    x0[0, LESION_CHANNEL, 1, 1, 1:3] = 1.0
    cond = torch.zeros(2, 14)

    def eraser(x, sigma, cond):
        out = x0.clone()
        out[:, LESION_CHANNEL] = -1.0
        return out

    assert denoising_errors(lambda x, sigma, cond: x0, x0, cond, sigmas=(0.1, 1.0))["lesion_value"] == [1.0, 1.0]
    assert denoising_errors(eraser, x0, cond, sigmas=(0.1,))["lesion_value"] == [-1.0]
    none = x0.clone()
    none[:, LESION_CHANNEL] = -1.0
    assert denoising_errors(lambda x, sigma, cond: none, none, cond, sigmas=(0.1,))["lesion_value"] == [None]


def test_regenerating_results_md_keeps_the_downstream_section(tmp_path):
    """``python -m benchmarks.report`` rewrote RESULTS.md from the benchmark files alone and dropped the
    section that ``scripts/downstream_report.py`` writes from a run folder; it keeps it now."""
    from benchmarks.report import DOWNSTREAM_END, DOWNSTREAM_START, write

    target = tmp_path / "RESULTS.md"
    section = f"{DOWNSTREAM_START}\n## Downstream segmentation\n\n| arm | Dice |\n{DOWNSTREAM_END}"
    target.write_text(f"# old\n\nstale text\n\n{section}\n\nafter\n")
    write(tmp_path, target)
    text = target.read_text()
    assert section in text and "stale text" not in text and "after" not in text
    assert text.startswith("# synthaug benchmark results")
    write(tmp_path, target)  # idempotent
    assert target.read_text() == text
    target.write_text("# no section\n")
    write(tmp_path, target)
    assert DOWNSTREAM_START not in target.read_text()
