"""PopulationRanges: what a training cohort's demographics span, and who falls outside it."""

from __future__ import annotations

import pytest

from synthaug.core.demographics import Demographics, PopulationRanges

COHORT = [Demographics(30, "F", 160, 55, "LYMPHOMA"), Demographics(70.04, "M", 185.5, 95, "NEGATIVE"),
          Demographics(None, None, None, None, None)]


def test_ranges_span_the_cohorts_known_values_rounded_outwards():
    r = PopulationRanges.of(COHORT, source="three people")
    assert r.age == (30.0, 70.1) and r.height_cm == (160.0, 185.5)
    assert r.bmi[0] <= 55 / 1.6 ** 2 and r.bmi[1] >= 95 / 1.855 ** 2
    assert r.diagnoses == ("NEGATIVE", "LYMPHOMA") and r.source == "three people"
    assert all(not r.outside(d) for d in COHORT)


def test_outside_names_the_field_and_the_range():
    r = PopulationRanges.of(COHORT)
    lines = r.outside(Demographics(8, "F", 120, 25, "MELANOMA"))
    assert [line.split("=")[0] for line in lines] == ["age", "height_cm", "bmi", "diagnosis"]
    assert "[30, 70.1]" in lines[0] and "years" in lines[0] and "[160, 185.5] cm" in lines[1]
    assert all("\n" not in line for line in lines)
    assert r.outside(Demographics(50, "M", 170, 200, None)) == [r.outside(Demographics(50, "M", 170, 200))[0]]
    assert r.outside(Demographics(50, "M", 170, 200))[0].startswith("bmi=69.2")


def test_round_trip_and_unrecorded_fields_never_warn():
    r = PopulationRanges.of(COHORT, source="x")
    assert PopulationRanges.from_dict(r.to_dict()) == r
    empty = PopulationRanges.from_dict({})
    assert empty == PopulationRanges() and not empty.outside(Demographics(1, "F", 60, 5, "MELANOMA"))


@pytest.mark.parametrize("bad", [{"age": [50, 10]}, {"diagnosis": ["FLU"]}])
def test_a_malformed_record_is_refused(bad):
    with pytest.raises(ValueError, match="training population"):
        PopulationRanges.from_dict(bad)
