"""``scripts/stray_labels.py``: the stray pieces of a constructed organ map, and the cohort summary."""

from __future__ import annotations

import json

import numpy as np
from helpers import load_script

from synthaug.core.labels import ORGAN_IDS

SPACING = (4.0, 4.0, 4.0)


def organ_map() -> np.ndarray:
    organs = np.full((30, 30, 40), ORGAN_IDS["soft_tissue"], dtype=np.uint8)
    organs[2:12, 2:12, 2:12] = ORGAN_IDS["spleen"]
    organs[18:28, 18:28, 25:35] = ORGAN_IDS["heart"]
    organs[18:20, 18:20, 25:27] = ORGAN_IDS["spleen"]  # 8 voxels inside the heart's corner, far from the spleen
    return organs


def test_a_stray_piece_is_listed_with_its_size_gap_and_new_labels():
    script = load_script("stray_labels")
    rows, gained = script.case_pieces(organ_map(), SPACING)
    assert len(rows) == 1
    piece = rows[0]
    assert piece["organ"] == "spleen" and piece["voxels"] == 8 and piece["ml"] == 0.51
    # nearest spleen voxel kept: (11, 11, 11) to (18, 18, 25): sqrt(7^2 + 7^2 + 14^2) voxels of 4 mm
    assert piece["gap_mm"] == round(4.0 * np.sqrt(49 + 49 + 196), 1)
    assert sum(piece["becomes"].values()) == 8 and set(piece["becomes"]) <= {"heart", "soft_tissue"}
    assert gained == piece["becomes"]
    summary = script.summarise({"a": rows, "b": []})
    assert summary["spleen"]["cases_with_pieces"] == 1 and summary["spleen"]["pieces_per_case_max"] == 1
    assert summary["kidneys"] == {"cases_with_pieces": 0}


def test_the_script_writes_the_cohort_record(tmp_path):
    from synthaug.core.case import Case
    from synthaug.core.demographics import Demographics
    from synthaug.core.io import write_case, write_demographics_csv

    script = load_script("stray_labels")
    organs = organ_map()
    case = Case(ct=np.zeros(organs.shape, np.float32), pet=np.ones(organs.shape, np.float32), organs=organs,
                lesions=np.zeros(organs.shape, np.uint8), affine=np.diag([*SPACING, 1.0]),
                demographics=Demographics(50, "F", 165, 60), meta={})
    write_case(tmp_path / "cohort", "c0", case)
    write_demographics_csv(tmp_path / "cohort" / "demographics.csv", {"c0": case.demographics})
    out = tmp_path / "stray.json"
    assert script.main([str(tmp_path / "cohort"), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["n_cases"] == 1 and record["voxels_relabelled_per_case"]["max"] == 8
    assert record["organs"]["spleen"]["pieces"] == 1 and record["rule"]["min_gap_mm"] == 20.0
    assert script.main([str(tmp_path / "missing"), "--out", str(out)]) == 2
