"""Validated demographics, the conditioning vector and a population sampler.

A :class:`Demographics` is what the generator is conditioned on. Every field may be
unknown (``None``): real cohorts often lack height or weight, and the conditioning
vector carries a mask so that the model can be trained and sampled without them.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SEXES = ("M", "F")
DIAGNOSES = ("NEGATIVE", "LYMPHOMA", "MELANOMA", "LUNG_CANCER")
RANGES: dict[str, tuple[float, float]] = {
    "age": (0.0, 120.0),
    "height_cm": (50.0, 250.0),
    "weight_kg": (2.0, 400.0),
}

#: Fields that the conditioning mask covers, in vector order.
FIELDS = ("age", "sex", "height_cm", "weight_kg", "diagnosis")
#: Layout of :meth:`Demographics.to_vector`: 5 values (age, sex, height, weight, BMI),
#: 4 diagnosis one-hot entries, then a 5-entry "known" mask over :data:`FIELDS`.
COND_DIM = 5 + len(DIAGNOSES) + len(FIELDS)

# Normalisation of the conditioning values: (value - centre) / scale.
_NORM = {"age": (60.0, 15.0), "height_cm": (170.0, 10.0), "weight_kg": (78.0, 18.0), "bmi": (26.5, 5.0)}

_SEX_SPELLINGS = {
    "m": "M", "male": "M", "man": "M", "mann": "M", "männlich": "M",
    "f": "F", "female": "F", "woman": "F", "w": "F", "frau": "F", "weiblich": "F",
}
_DIAGNOSIS_SPELLINGS = {
    "negative": "NEGATIVE", "neg": "NEGATIVE", "none": "NEGATIVE", "healthy": "NEGATIVE",
    "lymphoma": "LYMPHOMA", "melanoma": "MELANOMA",
    "lung_cancer": "LUNG_CANCER", "lung cancer": "LUNG_CANCER", "lungcancer": "LUNG_CANCER",
    "lung": "LUNG_CANCER", "nsclc": "LUNG_CANCER", "sclc": "LUNG_CANCER",
}
_MISSING = {"", "nan", "na", "n/a", "none", "null", "unknown", "?", "-"}


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in _MISSING


@dataclass(frozen=True)
class Demographics:
    """A person's demographics; any field may be ``None`` (unknown).

    Args:
        age: years, 0-120.
        sex: ``"M"`` or ``"F"``.
        height_cm: 50-250 cm.
        weight_kg: 2-400 kg.
        diagnosis: one of AutoPET's ``NEGATIVE``, ``LYMPHOMA``, ``MELANOMA``,
            ``LUNG_CANCER``, or ``None`` for unknown.
    """

    age: float | None
    sex: str | None
    height_cm: float | None
    weight_kg: float | None
    diagnosis: str | None = None

    def __post_init__(self) -> None:
        for name, (lo, hi) in RANGES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"{name}: expected a number in [{lo:g}, {hi:g}], got {value!r}")
            value = float(value)
            if not math.isfinite(value) or not lo <= value <= hi:
                raise ValueError(f"{name}={value:g} is outside the allowed range [{lo:g}, {hi:g}]")
            object.__setattr__(self, name, value)
        if self.sex is not None and self.sex not in SEXES:
            raise ValueError(f"sex={self.sex!r} is not allowed; use one of {SEXES} (or None for unknown)")
        if self.diagnosis is not None and self.diagnosis not in DIAGNOSES:
            raise ValueError(
                f"diagnosis={self.diagnosis!r} is not allowed; use one of {DIAGNOSES} (or None for unknown)"
            )

    @property
    def bmi(self) -> float | None:
        """Body-mass index in kg/m^2, or ``None`` if height or weight is unknown."""
        if self.height_cm is None or self.weight_kg is None:
            return None
        return self.weight_kg / (self.height_cm / 100.0) ** 2

    @property
    def is_complete(self) -> bool:
        """True when age, sex, height and weight are all known."""
        return None not in (self.age, self.sex, self.height_cm, self.weight_kg)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_vector(self) -> np.ndarray:
        """The normalised conditioning vector (length :data:`COND_DIM`, float32).

        Unknown fields are zero and flagged 0 in the trailing mask, so that a model
        trained with condition dropout treats them as "not given".
        """
        v = np.zeros(COND_DIM, dtype=np.float32)
        known = np.zeros(len(FIELDS), dtype=np.float32)
        if self.age is not None:
            v[0] = (self.age - _NORM["age"][0]) / _NORM["age"][1]
            known[0] = 1
        if self.sex is not None:
            v[1] = 1.0 if self.sex == "M" else -1.0
            known[1] = 1
        if self.height_cm is not None:
            v[2] = (self.height_cm - _NORM["height_cm"][0]) / _NORM["height_cm"][1]
            known[2] = 1
        if self.weight_kg is not None:
            v[3] = (self.weight_kg - _NORM["weight_kg"][0]) / _NORM["weight_kg"][1]
            known[3] = 1
        if self.bmi is not None:
            v[4] = (self.bmi - _NORM["bmi"][0]) / _NORM["bmi"][1]
        if self.diagnosis is not None:
            v[5 + DIAGNOSES.index(self.diagnosis)] = 1.0
            known[4] = 1
        v[5 + len(DIAGNOSES):] = known
        return v

    @classmethod
    def from_mapping(cls, row: Mapping[str, object]) -> Demographics:
        """Parse a CSV row, JSON object or DICOM-like mapping.

        Accepts ``age``/``PatientAge`` (``57``, ``"057Y"``, ``"6M"``), ``sex``/
        ``PatientSex``/``gender`` (M/F/male/female), ``height_cm``/``height``
        (cm, or metres if below 3) / ``PatientSize`` (metres), ``weight_kg``/
        ``weight``/``PatientWeight`` (kg) and ``diagnosis``. Missing or empty
        values become ``None``.
        """
        lowered = {str(k).strip().lower().replace(" ", "_"): v for k, v in row.items()}

        def pick(*names: str) -> object:
            for n in names:
                if n in lowered and not _is_missing(lowered[n]):
                    return lowered[n]
            return None

        age = _parse_age(pick("age", "patientage", "patient_age", "age_years"))
        sex = _parse_sex(pick("sex", "patientsex", "patient_sex", "gender"))
        height_raw = pick("patientsize", "patient_size")
        if height_raw is not None:
            height = _parse_number("PatientSize", height_raw) * 100.0  # DICOM: metres
        else:
            height = _parse_height(pick("height_cm", "height", "size", "body_height"))
        weight = _parse_number("weight_kg", pick("weight_kg", "weight", "patientweight", "patient_weight", "body_weight"))
        diagnosis = _parse_diagnosis(pick("diagnosis", "diag", "dx"))
        return cls(age=age, sex=sex, height_cm=height, weight_kg=weight, diagnosis=diagnosis)


def _parse_number(field: str, value: object) -> float | None:
    if value is None:
        return None
    try:
        return float(str(value).strip().replace(",", "."))
    except ValueError:
        raise ValueError(f"{field}: cannot read {value!r} as a number") from None


def _parse_age(value: object) -> float | None:
    """Years from a number or a DICOM age string (``nnnD/W/M/Y``)."""
    if value is None:
        return None
    text = str(value).strip().upper()
    m = re.fullmatch(r"(\d{1,3})\s*([DWMY])", text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return n / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[unit]
    return _parse_number("age", text)


def _parse_sex(value: object) -> str | None:
    if value is None:
        return None
    key = str(value).strip().lower()
    if key in ("o", "other", "u"):
        return None
    try:
        return _SEX_SPELLINGS[key]
    except KeyError:
        raise ValueError(f"sex: cannot read {value!r}; expected M/F (or male/female)") from None


def _parse_height(value: object) -> float | None:
    h = _parse_number("height_cm", value)
    if h is not None and 0 < h < 3.0:  # given in metres
        h *= 100.0
    return h


def _parse_diagnosis(value: object) -> str | None:
    if value is None:
        return None
    key = str(value).strip().lower()
    if key.upper() in DIAGNOSES:
        return key.upper()
    try:
        return _DIAGNOSIS_SPELLINGS[key]
    except KeyError:
        raise ValueError(f"diagnosis: cannot read {value!r}; expected one of {DIAGNOSES}") from None


def read_demographics_csv(path: str | Path) -> dict[str, Demographics]:
    """Read ``demographics.csv`` (``case_id, age, sex, height_cm, weight_kg, diagnosis``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"demographics file not found: {path}")
    out: dict[str, Demographics] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets often write a BOM
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "case_id" not in [f.strip() for f in reader.fieldnames]:
            raise ValueError(f"{path}: expected a 'case_id' column, found {reader.fieldnames}")
        for row in reader:
            lineno = reader.line_num  # counts blank lines too (enumerate would not)
            row = {k.strip(): v for k, v in row.items() if k is not None}
            case_id = (row.get("case_id") or "").strip()
            if not case_id:
                raise ValueError(f"{path}:{lineno}: empty case_id")
            if case_id in out:
                raise ValueError(f"{path}:{lineno}: duplicate case_id {case_id!r}")
            try:
                out[case_id] = Demographics.from_mapping(row)
            except ValueError as err:
                raise ValueError(f"{path}:{lineno} (case {case_id}): {err}") from None
    return out


DEMOGRAPHICS_COLUMNS = ("case_id", "age", "sex", "height_cm", "weight_kg", "diagnosis")


def demographics_rows(demos: Mapping[str, Demographics]) -> list[dict[str, str]]:
    """Rows for ``demographics.csv``; unknown fields are written as empty cells."""

    def fmt(v: object) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.2f}".rstrip("0").rstrip(".")
        return str(v)

    return [{"case_id": cid, **{k: fmt(getattr(d, k)) for k in DEMOGRAPHICS_COLUMNS[1:]}} for cid, d in demos.items()]


# --- population sampler -----------------------------------------------------------------

#: Diagnosis mix of the AutoPET FDG cohort (1014 studies: 513 negative, 145 lymphoma,
#: 188 melanoma, 168 lung cancer).
DIAGNOSIS_MIX = {"NEGATIVE": 513 / 1014, "LYMPHOMA": 145 / 1014, "MELANOMA": 188 / 1014, "LUNG_CANCER": 168 / 1014}
#: Share of male studies in AutoPET (about 57 %).
MALE_FRACTION = 0.57
#: Age (mean, sd) per diagnosis, years; lymphoma patients are younger, lung cancer older.
AGE_BY_DIAGNOSIS = {"NEGATIVE": (60.0, 14.0), "LYMPHOMA": (48.0, 17.0), "MELANOMA": (61.0, 14.0), "LUNG_CANCER": (66.0, 9.0)}
#: Adult height (mean, sd) in cm by sex (Central-European adults).
HEIGHT_BY_SEX = {"M": (178.0, 7.0), "F": (165.0, 6.5)}
#: log-BMI (mean, sd) by sex; gives a median BMI of about 26.5 (M) / 25.5 (F).
LOG_BMI_BY_SEX = {"M": (math.log(26.5), 0.15), "F": (math.log(25.5), 0.19)}


def sample_population(n: int, seed: int, like: str | Path | Mapping[str, Demographics] | Sequence[Demographics] | None = None) -> list[Demographics]:
    """Draw ``n`` demographics from an adult FDG PET/CT population (AutoPET-like).

    Args:
        n: number of people.
        seed: the same seed gives the same cohort.
        like: a ``demographics.csv`` path, a mapping or a list of
            :class:`Demographics`: draw a cohort matched to it (resample its rows
            with a small jitter of age, height and weight; unknown fields stay unknown).
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    rng = np.random.default_rng(seed)
    if like is not None:
        return _sample_like(n, rng, like)
    out = []
    diagnoses = list(DIAGNOSIS_MIX)
    probs = np.array([DIAGNOSIS_MIX[d] for d in diagnoses])
    for _ in range(n):
        diagnosis = diagnoses[rng.choice(len(diagnoses), p=probs / probs.sum())]
        sex = "M" if rng.random() < MALE_FRACTION else "F"
        mean_age, sd_age = AGE_BY_DIAGNOSIS[diagnosis]
        age = float(np.clip(rng.normal(mean_age, sd_age), 18.0, 92.0))
        h_mean, h_sd = HEIGHT_BY_SEX[sex]
        height = float(np.clip(rng.normal(h_mean - 0.08 * max(age - 50.0, 0.0), h_sd), 140.0, 205.0))
        mu, sd = LOG_BMI_BY_SEX[sex]
        bmi = float(np.clip(np.exp(rng.normal(mu + 0.002 * (age - 55.0), sd)), 15.0, 50.0))
        weight = bmi * (height / 100.0) ** 2
        out.append(Demographics(round(age, 1), sex, round(height, 1), round(weight, 1), diagnosis))
    return out


def _sample_like(n: int, rng: np.random.Generator, like) -> list[Demographics]:
    if isinstance(like, (str, Path)):
        pool = list(read_demographics_csv(like).values())
    elif isinstance(like, Mapping):
        pool = list(like.values())
    else:
        pool = list(like)
    if not pool:
        raise ValueError("like=: the reference cohort is empty")
    out = []
    for _ in range(n):
        ref = pool[int(rng.integers(len(pool)))]
        age = None if ref.age is None else float(np.clip(ref.age + rng.normal(0, 2.0), *RANGES["age"]))
        height = None if ref.height_cm is None else float(np.clip(ref.height_cm + rng.normal(0, 2.0), *RANGES["height_cm"]))
        weight = None if ref.weight_kg is None else float(np.clip(ref.weight_kg * math.exp(rng.normal(0, 0.03)), *RANGES["weight_kg"]))
        out.append(
            Demographics(
                None if age is None else round(age, 1),
                ref.sex,
                None if height is None else round(height, 1),
                None if weight is None else round(weight, 1),
                ref.diagnosis,
            )
        )
    return out


def drop_fields(vectors, drop):
    """Condition dropout on a batch of conditioning vectors (numpy or torch).

    ``drop`` (N, len(FIELDS)) marks fields to treat as unknown: their values and mask
    entries become 0 (and BMI with height or weight), exactly as
    :meth:`Demographics.to_vector` encodes an unknown field.
    """
    out = vectors.clone() if hasattr(vectors, "clone") else vectors.copy()
    value_index = {0: [0], 1: [1], 2: [2, 4], 3: [3, 4], 4: list(range(5, 5 + len(DIAGNOSES)))}
    mask_start = 5 + len(DIAGNOSES)
    for f, cols in value_index.items():
        rows = drop[:, f] > 0
        for c in cols:
            out[rows, c] = 0
        out[rows, mask_start + f] = 0
    return out


# --- the population a generator was trained on --------------------------------------------


class OutOfDistributionWarning(UserWarning):
    """Demographics outside the population a generator was trained on: it still samples, but
    nothing was learnt there (expect less faithful anatomy and uptake)."""


def _outward(lo: float, hi: float) -> tuple[float, float]:
    """A range rounded outwards to 0.1, so that the recorded range holds every value it came from."""
    return math.floor(lo * 10) / 10, math.ceil(hi * 10) / 10


@dataclass(frozen=True)
class PopulationRanges:
    """What a training cohort's demographics span: closed ranges of age (years), height (cm) and
    BMI (kg/m^2) and the diagnoses present (``None``: not recorded), and where they came from."""

    age: tuple[float, float] | None = None
    height_cm: tuple[float, float] | None = None
    bmi: tuple[float, float] | None = None
    diagnoses: tuple[str, ...] | None = None
    source: str = ""        # the cohort these ranges were computed from (command, seed, cases)

    @classmethod
    def of(cls, demos: Sequence[Demographics], source: str = "") -> PopulationRanges:
        """The ranges spanned by a cohort's known values (fields known for nobody stay ``None``)."""
        def span(values: list[float | None]) -> tuple[float, float] | None:
            known = [v for v in values if v is not None]
            return _outward(min(known), max(known)) if known else None

        diagnoses = sorted({d.diagnosis for d in demos if d.diagnosis is not None}, key=DIAGNOSES.index)
        return cls(age=span([d.age for d in demos]), height_cm=span([d.height_cm for d in demos]),
                   bmi=span([d.bmi for d in demos]), diagnoses=tuple(diagnoses) or None, source=source)

    def outside(self, demo: Demographics) -> list[str]:
        """One line per field of ``demo`` outside these ranges (unknown fields are never outside)."""
        lines = []
        units = {"age": "years", "height_cm": "cm", "bmi": "kg/m^2"}
        for name, unit in units.items():
            span, value = getattr(self, name), getattr(demo, name)
            if span is not None and value is not None and not span[0] <= value <= span[1]:
                lines.append(f"{name}={value:.4g} is outside the training population's range "
                             f"[{span[0]:g}, {span[1]:g}] {unit}")
        if self.diagnoses is not None and demo.diagnosis is not None and demo.diagnosis not in self.diagnoses:
            lines.append(f"diagnosis={demo.diagnosis!r} is not among the training population's diagnoses "
                         f"{list(self.diagnoses)}")
        return lines

    def to_dict(self) -> dict:
        return {"age": _as_list(self.age), "height_cm": _as_list(self.height_cm), "bmi": _as_list(self.bmi),
                "diagnosis": _as_list(self.diagnoses), "source": self.source}

    @classmethod
    def from_dict(cls, d: Mapping) -> PopulationRanges:
        def span(key: str) -> tuple[float, float] | None:
            v = d.get(key)
            if v is None:
                return None
            lo, hi = (float(x) for x in v)
            if not lo <= hi:
                raise ValueError(f"training population {key}: range [{lo}, {hi}] is empty")
            return lo, hi

        diagnoses = d.get("diagnosis")
        if diagnoses is not None and any(x not in DIAGNOSES for x in diagnoses):
            raise ValueError(f"training population diagnosis: {diagnoses} has an entry not in {DIAGNOSES}")
        return cls(age=span("age"), height_cm=span("height_cm"), bmi=span("bmi"),
                   diagnoses=None if diagnoses is None else tuple(diagnoses), source=str(d.get("source", "")))


def _as_list(v: tuple | None) -> list | None:
    return None if v is None else list(v)
