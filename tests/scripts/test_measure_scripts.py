"""The measurement scripts behind numbers in the model card: case_differences.py on hand-made folders."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from helpers import load_script

from synthaug.core.case import Case
from synthaug.core.demographics import Demographics
from synthaug.core.io import write_case, write_demographics_csv


def _case(shift_suv: float = 0.0, flip: bool = False) -> Case:
    shape = (6, 6, 8)
    organs = np.full(shape, 2, np.uint8)
    organs[2:4, 2:4, 2:6] = 7
    if flip:
        organs[0, 0, 0] = 1
    pet = np.ones(shape, np.float32) + shift_suv
    return Case(np.full(shape, 40.0, np.float32), pet, organs, np.zeros(shape, np.uint8), np.diag([4.0, 4.0, 4.0, 1.0]))


def test_case_differences_reports_label_agreement_and_largest_differences(tmp_path, monkeypatch, capsys):
    script = load_script("case_differences")
    for case_id, (a, b) in {"synth_00000": (_case(), _case(0.25)), "synth_00001": (_case(), _case(flip=True))}.items():
        write_case(tmp_path / "a", case_id, a)
        write_case(tmp_path / "b", case_id, b)
    monkeypatch.setattr(sys, "argv", ["case_differences.py", str(tmp_path / "a"), str(tmp_path / "b")])
    script.main()
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("2 of 2 common cases")
    assert f"organ labels at least {100 * (1 - 1 / 288):.4f} % equal" in last and "max |dSUV| 0.25" in last
    monkeypatch.setattr(sys, "argv", ["case_differences.py", str(tmp_path / "a"), str(tmp_path / "nothing")])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SystemExit, match="no case folder is in both"):
        script.main()


def test_the_lesion_appearance_fit_sees_development_crops_only_and_keeps_the_closest(monkeypatch):
    """lesion_insertion_check.py --fit: the crops' roles split by case number, the distance is 0 for equal
    statistics, and of two candidates the one whose lesions are as heterogeneous as the development crops
    wins; the held-out crops (here made far from both) do not enter."""
    from synthaug.core.demographics import Demographics
    from synthaug.core.labels import ORGAN_IDS

    script = load_script("lesion_insertion_check")
    assert [script.crop_role(f"STS_{i:03d}") for i in (1, 2, 3, 4)] == ["test", "development", "test", "development"]
    shape = (48, 48, 48)
    organs = np.full(shape, ORGAN_IDS["soft_tissue"], np.uint8)
    organs[:3], organs[-3:], organs[:, :3], organs[:, -3:], organs[:, :, :3], organs[:, :, -3:] = (0,) * 6
    case = Case(ct=np.where(organs > 0, 0.0, -1000.0).astype(np.float32), pet=np.where(organs > 0, 1.0, 0.0).astype(
        np.float32), organs=organs, lesions=None, affine=np.diag([4.0, 4.0, 4.0, 1.0]),
        demographics=Demographics(age=59, sex="M", height_cm=163, weight_kg=71))
    real = {"volume_ml": 40.0, "edge_width_mm": 9.0, "suv_max": 9.0}
    crops = [{**real, "case": f"STS_{i:03d}", "mean_over_max": 0.42 if i % 2 == 0 else 0.95} for i in range(1, 9)]
    stats = script._stats(crops)
    assert script.fit_distance({**stats, "suv_max_over_planned": {"median": 1.0}}, stats) == 0.0
    monkeypatch.setattr(script, "FIT_GRID", {"heterogeneity_cov": (0.0, 0.6), "margin_mm": ((0.0, 0.0),),
                                             "necrosis": ({},)})
    result = script.fit(case, crops, seed=0)
    assert result["development_crops"]["n"] == 4 and result["development_crops"]["mean_over_max"]["median"] == 0.42
    got = {t["settings"]["heterogeneity_cov"]: t["inserted"]["mean_over_max"]["median"] for t in result["candidates"]}
    assert got[0.6] < got[0.0]  # the field lowers SUVmean / SUVmax
    assert result["best"]["heterogeneity_cov"] == 0.6


def test_body_volume_check_finds_a_deficit_that_grows_for_light_people(tmp_path, capsys):
    """Constructed cohorts: the synthetic bodies are short of the reference's by 20 % at 50 kg, none at 100 kg."""
    script = load_script("body_volume_check")
    people = [Demographics(age=40 + 3 * ((i * 5) % 7), sex="MF"[i % 2], height_cm=150.0 + 5 * ((i * 7) % 9),
                           weight_kg=50.0 + 5 * i,
                           diagnosis="NEGATIVE") for i in range(11)]
    affine = np.diag([10.0, 10.0, 10.0, 1.0])  # 1 ml voxels
    for name, short in (("ref", lambda w: 0.0), ("syn", lambda w: 0.2 * (100.0 - w) / 50.0)):
        ids = []
        for i, d in enumerate(people):
            ct = np.full((20, 20, 40), -1000.0, dtype=np.float32)
            depth = round(20 * (1.0 - short(d.weight_kg)) * d.weight_kg / 50.0)  # slices of 400 ml
            ct[:, :, :depth] = 40.0
            case = Case(ct=ct, pet=np.zeros_like(ct), organs=np.zeros(ct.shape, np.uint8),
                        lesions=np.zeros(ct.shape, np.uint8), affine=affine, demographics=d)
            ids.append(f"case_{i:03d}")
            write_case(tmp_path / name, ids[-1], case)
        write_demographics_csv(tmp_path / name / "demographics.csv", dict(zip(ids, people)))
    out = tmp_path / "body.json"
    assert script.main(["--reference", str(tmp_path / "ref"), "--synthetic", str(tmp_path / "syn"),
                        "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 11 and result["reference_l"]["min"] == pytest.approx(8.0)
    assert result["ratio"]["median"] == pytest.approx(0.9, abs=0.02)
    assert result["pearson_r"]["weight_kg"]["r"] > 0.95  # the deficit shrinks as weight grows
    assert result["pearson_r"]["weight_kg"]["low"] < result["pearson_r"]["weight_kg"]["r"] < 1.0
    assert result["by_weight_third"][0]["mean_ratio"] < result["by_weight_third"][2]["mean_ratio"]
    fit = result["fit"]
    assert fit["per_10_kg"] == pytest.approx(0.04, abs=0.005) and abs(fit["per_10_cm"]) < 0.005
    assert "within 15 %" in capsys.readouterr().out
    people_swapped = people[1:] + people[:1]
    write_demographics_csv(tmp_path / "syn" / "demographics.csv",
                           {f"case_{i:03d}": d for i, d in enumerate(people_swapped)})
    with pytest.raises(SystemExit, match="not .* row by row"):
        script.main(["--reference", str(tmp_path / "ref"), "--synthetic", str(tmp_path / "syn")])
    empty = Case(ct=np.full((4, 4, 4), -1000.0, np.float32), pet=np.zeros((4, 4, 4), np.float32),
                 organs=np.zeros((4, 4, 4), np.uint8), lesions=np.zeros((4, 4, 4), np.uint8), affine=affine,
                 demographics=people[0])
    write_case(tmp_path / "air", "case_000", empty)
    write_demographics_csv(tmp_path / "air" / "demographics.csv", {"case_000": people[0]})
    with pytest.raises(SystemExit, match="case_000: no body"):
        script.body_volume_l(tmp_path / "air")


def test_body_volume_check_on_stage1_samples_of_tiny_weights(tmp_path, capsys, monkeypatch):
    """--stage1 samples the weights' stage 1 for each reference person and measures both on the global grid:
    the reference volumes are the cohort resampled as the stage's training cases are, the seed is per row."""
    from dataclasses import replace

    from helpers import tiny_stage_config, write_tiny_cohort

    from synthaug.core.geometry import body_mask
    from synthaug.core.io import Cohort
    from synthaug.model.preprocess import to_grid
    from synthaug.model.stages import build_stage_model, save_stage
    from synthaug.sampling.cascade import CascadedSampler

    script = load_script("body_volume_check")
    cfg = tiny_stage_config("global")
    save_stage(tmp_path / "w" / "global", build_stage_model(cfg), replace(cfg, diffusion=replace(cfg.diffusion, steps=2)))
    ids = write_tiny_cohort(tmp_path / "ref", heights=(150.0, 185.0, 160.0, 175.0))
    out = tmp_path / "stage1.json"
    args = ["--reference", str(tmp_path / "ref"), "--stage1", str(tmp_path / "w"), "--seed", "5"]
    assert script.main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    cohort, grid = Cohort(tmp_path / "ref"), cfg.global_grid
    expected = [body_mask((c := to_grid(cohort.load(i), grid, **cfg.resampling(grid))).ct, c.organs, c.affine).sum()
                * np.prod(grid.spacing) / 1e6 for i in ids]
    assert [row["reference_l"] for row in result["cases"]] == pytest.approx(expected)
    assert result["n"] == 4 and result["grid"] == "global" and result["seed"] == 5
    women = [row["reference_l"] for row in result["cases"] if row["demographics"]["sex"] == "F"]
    assert result["by_region"]["F"]["whole"]["reference"] == pytest.approx(np.mean(women))
    # an uncalibrated stage: as generated and calibrated are the same bodies
    assert result["uncalibrated"]["ratio"] == result["ratio"]
    assert "stage 1 as generated" in capsys.readouterr().out
    seeds, guidance = [], []
    original = CascadedSampler.sample_global
    monkeypatch.setattr(CascadedSampler, "sample_global",
                        lambda self, demos, s, **kw: seeds.extend(s) or guidance.append(self.guidance)
                        or original(self, demos, s, **kw))
    script.stage1_body_volumes_l(tmp_path / "ref", tmp_path / "w", 6, guidance=1.5)
    assert seeds == [6, 7, 8, 9] and guidance == [1.5] * 4
    assert result["global_sha256"] == json.loads((tmp_path / "w" / "global.json").read_text())["sha256"]
    for bad in (["--guidance", "0"], ["--guidance", "nan"]):
        with pytest.raises(SystemExit, match="--guidance"):
            script.main([*args, *bad])
    with pytest.raises(SystemExit):
        script.main(["--reference", str(tmp_path / "ref"), "--synthetic", str(tmp_path / "ref"), "--guidance", "2"])
    with pytest.raises(SystemExit):
        script.main([*args, "--synthetic", str(tmp_path / "ref")])  # one source of synthetic bodies


def test_body_volume_check_compares_two_results_person_by_person(tmp_path, capsys):
    script = load_script("body_volume_check")
    people = [{"sex": "MF"[i % 2], "height_cm": 150.0 + 3 * i, "weight_kg": 70.0} for i in range(12)]
    base = {"command": "base", "generator_sha256": "a" * 64, "seed": 0, "grid": "global",
            "cases": [{"demographics": d, "reference_l": 50.0, "synthetic_l": 45.0} for d in people]}
    # the women's bodies 10 % of the reference larger, the men's unchanged
    other = {**base, "command": "other", "cases": [{**c, "synthetic_l": c["synthetic_l"] + (5.0 if i % 2 else 0.0)}
                                                  for i, c in enumerate(base["cases"])]}
    paths = []
    for name, data in (("base", base), ("other", other)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(data))
    out = tmp_path / "cmp.json"
    assert script.main(["--compare", str(paths[0]), str(paths[1]), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["all"]["mean"] == pytest.approx(0.05) and result["by_sex"]["F"]["mean"] == pytest.approx(0.1)
    assert result["by_sex"]["M"] == {"n": 6, "mean": 0.0, "low": 0.0, "high": 0.0}
    assert sum(t["n"] for t in result["by_height_third"]) == 12
    assert result["baseline"]["generator_sha256"] == "a" * 64 and result["result"]["command"] == "other"
    assert "F +0.100" in capsys.readouterr().out
    swapped = {**other, "cases": other["cases"][::-1]}
    paths[1].write_text(json.dumps(swapped))
    with pytest.raises(SystemExit, match="not this run's row by row"):
        script.main(["--compare", str(paths[0]), str(paths[1])])
    paths[1].write_text(json.dumps({**other, "seed": 1}))
    with pytest.raises(SystemExit, match="other seeds"):
        script.main(["--compare", str(paths[0]), str(paths[1])])
    paths[1].write_text("[]")
    with pytest.raises(SystemExit, match="not a result of this script"):
        script.main(["--compare", str(paths[0]), str(paths[1])])


def test_body_regions_split_the_volume_along_and_across_the_body():
    """A 10 x 10 x 60 cm torso with two 2 x 2 x 20 cm arms beside its upper third, on a 1 cm grid."""
    script = load_script("body_volume_check")
    mask = np.zeros((20, 12, 70), bool)
    mask[5:15, 1:11, 5:65] = True  # torso, its top at slice 64
    mask[1:3, 4:6, 45:65] = mask[17:19, 4:6, 45:65] = True  # arms: x 1-2 and 17-18, the top 20 cm
    regions = script.body_regions_l(mask, np.diag([10.0, 10.0, 10.0, 1.0]))
    bands = [v for k, v in regions.items() if k.endswith(" cm")]
    assert sum(bands) == pytest.approx(mask.sum() / 1000.0) and regions["whole"] == pytest.approx(mask.sum() / 1000.0)
    assert regions["0-25 cm"] == pytest.approx((25 * 100 + 2 * 4 * 20) / 1000.0)
    assert regions["85- cm"] == 0.0 and regions["length_cm"] == pytest.approx(60.0)
    # body x extent 1..18 (18 cm): the outer fifths are 3 cm wide, x 1-3 and 16-18: the arms, no torso
    assert regions["lateral"] == pytest.approx(2 * 4 * 20 / 1000.0)
    no_arms = mask.copy()
    no_arms[:4] = no_arms[16:] = False
    no_arms[5:15, 1:11, 5:65] = True
    demos = [Demographics(age=50.0, sex="F", height_cm=160.0, weight_kg=60.0, diagnosis="NEGATIVE")]
    summary = script.region_summary(demos, [regions], [script.body_regions_l(no_arms, np.diag([10.0, 10.0, 10.0, 1.0]))])
    assert summary["F"]["0-25 cm"]["difference"] == pytest.approx(-0.16) and "M" not in summary
