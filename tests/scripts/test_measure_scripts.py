"""The measurement scripts behind numbers in the model card: case_differences.py on hand-made folders."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from helpers import load_script

from synthaug.core.case import Case
from synthaug.core.io import write_case


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
