"""Demographics: validation, the conditioning vector, parsing and the population sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthaug.core.demographics import (
    COND_DIM,
    DIAGNOSES,
    FIELDS,
    Demographics,
    read_demographics_csv,
    sample_population,
)

#: AutoPET FDG cohort (1014 studies), counted from its published metadata; kept here,
#: independent of the module's constants, so that a wrong constant fails the test.
AUTOPET_COUNTS = {"NEGATIVE": 513, "LYMPHOMA": 145, "MELANOMA": 188, "LUNG_CANCER": 168}


def person(**kw) -> Demographics:
    base = {"age": 55.0, "sex": "F", "height_cm": 168.0, "weight_kg": 70.0, "diagnosis": "MELANOMA"}
    base.update(kw)
    return Demographics(**base)


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("age", 0), ("age", 120), ("height_cm", 50), ("height_cm", 250), ("weight_kg", 2), ("weight_kg", 400),
     ("age", np.int64(40)), ("weight_kg", np.float32(81.5))],
)
def test_boundaries_and_numpy_numbers_are_accepted(field, value):
    d = person(**{field: value})
    assert getattr(d, field) == pytest.approx(float(value))
    assert type(getattr(d, field)) is float


@pytest.mark.parametrize(
    ("field", "value"),
    [("age", -3), ("age", 300), ("age", -0.01), ("age", 120.5), ("age", float("nan")), ("age", "57"),
     ("height_cm", 49.9), ("height_cm", 250.1), ("height_cm", float("inf")), ("height_cm", "178"),
     ("weight_kg", 1.9), ("weight_kg", 400.1), ("weight_kg", float("nan")), ("weight_kg", True),
     ("sex", "X"), ("sex", "male"), ("sex", ""), ("diagnosis", "FLU"), ("diagnosis", "lymphoma")],
)
def test_bad_values_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        person(**{field: value})


def test_age_minus_three_names_age_and_range():
    with pytest.raises(ValueError) as info:
        person(age=-3)
    msg = str(info.value)
    assert "age" in msg and "120" in msg


def test_unknown_fields_are_allowed():
    d = Demographics(None, None, None, None, None)
    assert d.age is None and d.sex is None and d.height_cm is None and d.weight_kg is None
    assert not d.is_complete and person(diagnosis=None).is_complete


def test_bmi():
    assert person(height_cm=175.0, weight_kg=70.0).bmi == pytest.approx(70.0 / 1.75**2)
    assert person(height_cm=160.0, weight_kg=90.0).bmi == pytest.approx(90.0 / 1.6**2)
    assert person(height_cm=None).bmi is None
    assert person(weight_kg=None).bmi is None


# --- conditioning vector -------------------------------------------------------------------


def _mask(v: np.ndarray) -> np.ndarray:
    return v[-len(FIELDS):]


def test_vector_layout_of_a_complete_person():
    d = person(age=60.0, sex="M", height_cm=178.0, weight_kg=82.0, diagnosis="LYMPHOMA")
    v = d.to_vector()
    assert v.shape == (COND_DIM,) and v.dtype == np.float32
    assert COND_DIM == 5 + len(DIAGNOSES) + len(FIELDS)
    np.testing.assert_array_equal(_mask(v), np.ones(len(FIELDS)))
    onehot = v[5 : 5 + len(DIAGNOSES)]
    np.testing.assert_array_equal(onehot, np.eye(len(DIAGNOSES))[DIAGNOSES.index("LYMPHOMA")])
    # Normalised: typical adults stay within a few units of zero.
    assert np.all(np.abs(v[:5]) < 3)


def test_vector_entries_move_with_their_field_only():
    base = person(age=50.0, sex="M", height_cm=175.0, weight_kg=80.0).to_vector()
    older = person(age=70.0, sex="M", height_cm=175.0, weight_kg=80.0).to_vector()
    female = person(age=50.0, sex="F", height_cm=175.0, weight_kg=80.0).to_vector()
    taller = person(age=50.0, sex="M", height_cm=190.0, weight_kg=80.0).to_vector()
    heavier = person(age=50.0, sex="M", height_cm=175.0, weight_kg=100.0).to_vector()
    assert older[0] > base[0] and np.array_equal(older[1:], base[1:])
    assert female[1] == -base[1] != 0 and np.array_equal(np.delete(female, 1), np.delete(base, 1))
    assert taller[2] > base[2] and taller[4] < base[4]  # taller at the same weight: lower BMI
    assert heavier[3] > base[3] and heavier[4] > base[4]
    assert np.array_equal(taller[[0, 1, 3]], base[[0, 1, 3]])


def test_vector_of_unknown_fields_is_zero_and_masked():
    v = Demographics(None, None, None, None).to_vector()
    assert v.shape == (COND_DIM,)
    np.testing.assert_array_equal(v, np.zeros(COND_DIM))

    v = Demographics(age=None, sex="F", height_cm=165.0, weight_kg=None, diagnosis=None).to_vector()
    np.testing.assert_array_equal(_mask(v), [0, 1, 1, 0, 0])
    assert v[0] == 0 and v[3] == 0 and v[4] == 0  # age, weight and BMI unknown
    assert v[1] != 0 and v[2] != 0
    np.testing.assert_array_equal(v[5 : 5 + len(DIAGNOSES)], 0)


# --- parsing AutoPET / DICOM-style values ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "years"),
    [("057Y", 57.0), ("006M", 0.5), ("010D", 10 / 365.25), ("052W", 52 / 52.18), ("57", 57.0), (61, 61.0), ("64.5", 64.5)],
)
def test_patient_age(text, years):
    assert Demographics.from_mapping({"PatientAge": text}).age == pytest.approx(years, rel=1e-3)


@pytest.mark.parametrize(("text", "sex"), [("M", "M"), ("F", "F"), ("male", "M"), ("female", "F"), ("Female", "F"), (" m ", "M")])
def test_patient_sex(text, sex):
    assert Demographics.from_mapping({"PatientSex": text}).sex == sex
    assert Demographics.from_mapping({"sex": text}).sex == sex


@pytest.mark.parametrize(
    ("row", "height"),
    [({"PatientSize": "1.78"}, 178.0), ({"PatientSize": 1.62}, 162.0), ({"height": "1.78"}, 178.0),
     ({"height": "178"}, 178.0), ({"height_cm": 165.5}, 165.5), ({"Height": "1,70"}, 170.0)],
)
def test_height_in_metres_or_cm(row, height):
    assert Demographics.from_mapping(row).height_cm == pytest.approx(height)


def test_zero_is_a_value_not_a_missing_one():
    assert Demographics.from_mapping({"age": 0}).age == 0.0
    assert Demographics.from_mapping({"PatientAge": "000D"}).age == 0.0


def test_full_dicom_style_row():
    d = Demographics.from_mapping(
        {"PatientAge": "063Y", "PatientSex": "F", "PatientSize": "1.64", "PatientWeight": "71.5", "diagnosis": "lung cancer"}
    )
    assert d.age == 63 and d.sex == "F" and d.weight_kg == 71.5 and d.diagnosis == "LUNG_CANCER"
    assert d.height_cm == pytest.approx(164.0)


@pytest.mark.parametrize("missing", ["", "  ", "nan", "NaN", "NA", None, float("nan")])
def test_empty_values_become_none(missing):
    d = Demographics.from_mapping(
        {"PatientAge": missing, "PatientSex": missing, "PatientSize": missing, "PatientWeight": missing, "diagnosis": missing}
    )
    assert d == Demographics(None, None, None, None, None)


@pytest.mark.parametrize(
    ("row", "field"),
    [({"PatientAge": "57 years"}, "age"), ({"PatientAge": "057X"}, "age"), ({"PatientAge": "130Y"}, "age"),
     ({"PatientSex": "Q"}, "sex"), ({"PatientWeight": "heavy"}, "weight"), ({"PatientWeight": "0.5"}, "weight"),
     ({"PatientSize": "tall"}, "PatientSize"), ({"PatientSize": "178"}, "height"), ({"height": "x"}, "height"),
     ({"diagnosis": "flu"}, "diagnosis")],
)
def test_malformed_values_name_the_field(row, field):
    with pytest.raises(ValueError, match=field):
        Demographics.from_mapping(row)


# --- demographics.csv ---------------------------------------------------------------------


def test_read_csv_tolerates_extra_columns_and_empty_cells(tmp_path):
    path = tmp_path / "demographics.csv"
    path.write_text(
        "case_id,age,sex,height_cm,weight_kg,diagnosis,scanner,notes\n"
        "a,57,M,178,82,LYMPHOMA,Biograph,ok\n"
        "b,,F,,64.5,,mCT,\n"
    )
    demos = read_demographics_csv(path)
    assert list(demos) == ["a", "b"]
    assert demos["a"] == Demographics(57.0, "M", 178.0, 82.0, "LYMPHOMA")
    assert demos["b"] == Demographics(None, "F", None, 64.5, None)


def test_read_csv_with_byte_order_mark(tmp_path):
    # Spreadsheet programs often save CSV as "UTF-8 with BOM".
    path = tmp_path / "demographics.csv"
    path.write_bytes("case_id,age,sex\na,57,M\n".encode("utf-8-sig"))
    assert read_demographics_csv(path)["a"].age == 57.0


def test_read_csv_without_case_id_column(tmp_path):
    path = tmp_path / "demographics.csv"
    path.write_text("patient,age,sex\na,57,M\n")
    with pytest.raises(ValueError, match="case_id") as info:
        read_demographics_csv(path)
    assert str(path) in str(info.value)


def test_read_csv_bad_row_names_line_and_case(tmp_path):
    path = tmp_path / "demographics.csv"
    path.write_text("case_id,age,sex\na,57,M\nb,61,F\nc,abc,M\n")
    with pytest.raises(ValueError) as info:
        read_demographics_csv(path)
    msg = str(info.value)
    assert ":4" in msg and "case c" in msg and "age" in msg
    # A blank line before the bad row still gives the file's own line number.
    path.write_text("case_id,age,sex\na,57,M\n\nc,61,F\nd,62,Z\n")
    with pytest.raises(ValueError, match=r":5 \(case d\).*sex"):
        read_demographics_csv(path)


def test_read_csv_duplicate_case_id_is_an_error(tmp_path):
    path = tmp_path / "demographics.csv"
    path.write_text("case_id,age,sex\na,57,M\nb,61,F\na,40,F\n")
    with pytest.raises(ValueError, match="duplicate") as info:
        read_demographics_csv(path)
    assert ":4" in str(info.value) and "'a'" in str(info.value)


def test_read_csv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_demographics_csv(tmp_path / "nope.csv")


# --- population sampler ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def population() -> list[Demographics]:
    return sample_population(3000, seed=1234)


def test_population_statistics(population):
    assert len(population) == 3000
    assert all(d.is_complete and d.diagnosis in DIAGNOSES for d in population)
    males = [d for d in population if d.sex == "M"]
    females = [d for d in population if d.sex == "F"]
    assert len(males) / len(population) == pytest.approx(0.57, abs=0.03)
    assert 172 <= np.mean([d.height_cm for d in males]) <= 182
    assert 160 <= np.mean([d.height_cm for d in females]) <= 170
    assert 24 <= np.mean([d.bmi for d in population]) <= 29
    ages = np.array([d.age for d in population])
    assert 50 <= ages.mean() <= 65 and ages.min() >= 18 and ages.max() <= 100


def test_population_diagnosis_mix_matches_autopet(population):
    total = sum(AUTOPET_COUNTS.values())
    for dx, count in AUTOPET_COUNTS.items():
        share = sum(d.diagnosis == dx for d in population) / len(population)
        assert share == pytest.approx(count / total, abs=0.03), dx
    mean_age = {dx: np.mean([d.age for d in population if d.diagnosis == dx]) for dx in DIAGNOSES}
    assert mean_age["LYMPHOMA"] < mean_age["LUNG_CANCER"]


def test_population_is_deterministic_by_seed():
    a = sample_population(50, seed=7)
    assert a == sample_population(50, seed=7)
    assert a != sample_population(50, seed=8)
    assert sample_population(0, seed=7) == []
    with pytest.raises(ValueError, match="n"):
        sample_population(-1, seed=7)


def _reference_csv(path, n=20, seed=99):
    """A 20-person cohort skewed away from the default population (older, mostly female, heavy)."""
    rng = np.random.default_rng(seed)
    lines = ["case_id,age,sex,height_cm,weight_kg,diagnosis"]
    people = []
    for i in range(n):
        sex = "F" if i % 5 else "M"  # 80 % female
        d = Demographics(
            round(float(rng.uniform(70, 85)), 1), sex, round(float(rng.uniform(150, 190)), 1),
            round(float(rng.uniform(90, 130)), 1), "MELANOMA" if i % 2 else "NEGATIVE",
        )
        people.append(d)
        lines.append(f"p{i:02d},{d.age},{d.sex},{d.height_cm},{d.weight_kg},{d.diagnosis}")
    path.write_text("\n".join(lines) + "\n")
    return people


def test_like_matches_a_reference_cohort(tmp_path):
    ref = _reference_csv(tmp_path / "demographics.csv")
    cohort = sample_population(2000, seed=3, like=tmp_path / "demographics.csv")
    assert len(cohort) == 2000
    female_ref = np.mean([d.sex == "F" for d in ref])
    assert np.mean([d.sex == "F" for d in cohort]) == pytest.approx(female_ref, abs=0.04)
    for field, tol in (("age", 1.5), ("height_cm", 2.0), ("weight_kg", 3.0)):
        ref_mean = np.mean([getattr(d, field) for d in ref])
        assert np.mean([getattr(d, field) for d in cohort]) == pytest.approx(ref_mean, abs=tol), field
    assert {d.diagnosis for d in cohort} == {d.diagnosis for d in ref}
    # Every sampled person stays close to someone in the reference.
    ages = np.array([d.age for d in ref])
    assert all(np.min(np.abs(ages - d.age)) < 10 for d in cohort)
    assert sample_population(30, seed=3, like=ref) == sample_population(30, seed=3, like=ref)


def test_like_keeps_missing_fields_missing(tmp_path):
    ref = [Demographics(60.0, "M", None, 80.0, None), Demographics(None, "F", 165.0, None, "LYMPHOMA")]
    cohort = sample_population(200, seed=0, like=ref)
    for d in cohort:
        if d.sex == "M":
            assert d.height_cm is None and d.diagnosis is None and d.age is not None and d.weight_kg is not None
        else:
            assert d.age is None and d.weight_kg is None and d.height_cm is not None
    assert 0.3 < np.mean([d.sex == "M" for d in cohort]) < 0.7
    assert all(d.height_cm is None for d in sample_population(20, seed=1, like=[ref[0]]))
    with pytest.raises(ValueError, match="empty"):
        sample_population(5, seed=0, like=[])


def test_sampled_people_are_valid_and_finite(population):
    for d in population[:200]:
        v = d.to_vector()
        assert np.all(np.isfinite(v)) and not math.isnan(d.bmi)
