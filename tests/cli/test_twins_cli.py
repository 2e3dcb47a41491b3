"""``synthaug sample --vary``: twins written as cases, a montage and a per-organ table; bad --vary refused."""

from __future__ import annotations

import json

import pytest
from helpers import randomised_tiny_weights

from synthaug import cli
from synthaug.core.demographics import read_demographics_csv

BASE_ARGS = ["--age", "50", "--sex", "F", "--height", "165", "--weight", "70", "--diagnosis", "negative"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return randomised_tiny_weights(tmp_path_factory.mktemp("weights"))


def _run(capsys, *args: str) -> tuple[int, str, list[str]]:
    capsys.readouterr()
    code = cli.main(["sample", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def test_vary_writes_one_case_per_setting_a_montage_and_a_table(weights, tmp_path, capsys):
    out = tmp_path / "twins"
    code, stdout, err = _run(capsys, "--out", str(out), "--weights", str(weights), "--stage", "global", "--steps", "2",
                             *BASE_ARGS, "--seed", "4", "--vary", "weight=60,80", "--vary", "age=40,70")
    assert code == 0, err
    ids = ["twin_00_weight_kg60_age40", "twin_01_weight_kg60_age70", "twin_02_weight_kg80_age40",
           "twin_03_weight_kg80_age70"]
    demos = read_demographics_csv(out / "demographics.csv")
    assert list(demos) == ids
    assert [(d.weight_kg, d.age, d.height_cm, d.sex) for d in demos.values()] == [
        (60, 40, 165, "F"), (60, 70, 165, "F"), (80, 40, 165, "F"), (80, 70, 165, "F")]
    for i, cid in enumerate(ids):
        assert {p.name for p in (out / cid).iterdir()} >= {"CTres.nii.gz", "SUV.nii.gz", "SEG.nii.gz", "ORGANS.nii.gz"}
        meta = json.loads((out / cid / "meta.json").read_text())
        assert meta["seed"] == 4 and meta["twin"]["index"] == i
    assert (out / "twins.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = json.loads((out / "twins.json").read_text())
    assert [t["case_id"] for t in table["twins"]] == ids and table["seed"] == 4
    assert set(table["twins"][0]["organs"]["liver"]) == {"volume_ml", "suv_mean"}
    md = (out / "twins.md").read_text()
    assert "| weight 60 kg, age 40 y |" in md and "| liver |" in md and "SUVmean" in md
    assert "twins.png" in stdout
    # the same run again refuses to overwrite
    code, _, err = _run(capsys, "--out", str(out), "--weights", str(weights), "--stage", "global", *BASE_ARGS,
                        "--vary", "weight=60,80", "--vary", "age=40,70", "--seed", "4")
    assert code == 2 and "--force" in err[0]


@pytest.mark.parametrize(("vary", "match"), [
    (["wieght=60,80"], "unknown field 'wieght'"),
    (["weight=60,500"], "weight=500 is outside the allowed range"),
    (["weight="], "no values"),
    (["weight=60,,80"], "empty value"),
    (["weight60"], "expected FIELD=V1,V2"),
    (["weight=heavy"], "must be numbers"),
    (["weight=60", "weight=80"], "weight is given twice"),
    (["sex=X"], "sex='X' is not allowed"),
])
def test_bad_vary_is_refused_with_one_line(weights, tmp_path, capsys, vary, match):
    out = tmp_path / "out"
    args = [a for v in vary for a in ("--vary", v)]
    code, _, err = _run(capsys, "--out", str(out), "--weights", str(weights), *BASE_ARGS, *args)
    assert code == 2 and len(err) == 1 and err[0].startswith("synthaug: error: --vary") and match in err[0], err
    assert not out.exists()


def test_phantom_needs_vary_and_twins_refuse_n(weights, tmp_path, capsys):
    code, _, err = _run(capsys, "--out", str(tmp_path / "a"), *BASE_ARGS, "--phantom")
    assert code == 2 and "--phantom needs --vary" in err[0]
    code, _, err = _run(capsys, "--out", str(tmp_path / "b"), *BASE_ARGS, "--vary", "weight=60,80", "--n", "3")
    assert code == 2 and "--n=3" in err[0]


def test_phantom_twins_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "phantom"
    code, stdout, err = _run(capsys, "--out", str(out), *BASE_ARGS, "--phantom", "--vary", "height=150,190",
                             "--seed", "2")
    assert code == 0, err
    assert "2 phantom twin(s)" in stdout
    table = json.loads((out / "twins.json").read_text())["twins"]
    assert table[1]["body"]["body_extent_mm"] > table[0]["body"]["body_extent_mm"]
    assert (out / "twins.png").is_file() and (out / "twins.md").is_file()
