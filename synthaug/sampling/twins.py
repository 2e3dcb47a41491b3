"""Counterfactual twins: the same synthetic person with one or more demographic fields changed.

:func:`sample_twins` asks any :class:`~synthaug.sampling.generator.CaseGenerator` for one case
per setting of a grid of demographic values, all with the same seed, so that what differs
between the cases is what the varied fields do, not the noise:

- the cascade (:class:`~synthaug.sampling.cascade.CascadedSampler`) derives every random draw
  of a case (stage-1 noise, SR noise, lesion prior) from the case seed alone, so twins share
  all of their noise; the demographics enter only as the conditioning. The lesion prior draws
  the same lesion plan (count, sizes, uptake) for every twin of one diagnosis, placed in each
  twin's own anatomy.
- the phantom (:class:`~synthaug.sampling.generator.PhantomGenerator`) shares the person-level
  draws of its anatomy stream (body-fat and visceral-fat jitter, organ size factors, organ
  position jitter, bladder filling, ...), its tissue values and its noise field; the smooth
  deformation fields it draws afterwards sit on lattices sized by the body, so when height or
  weight changes the body's size their realisation (organ outlines, fat texture) is not the
  same. A varied sex or diagnosis changes which draws are made, and so more of the person.

The grid of settings is the product of the varied fields' values in the order the fields are
given, the last field varying fastest (``itertools.product``): ``{"weight": [60, 80],
"age": [40, 70]}`` gives (60, 40), (60, 70), (80, 40), (80, 70).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ..core.case import Case
from ..core.demographics import DIAGNOSES, RANGES, SEXES, Demographics
from ..core.seeds import check_seed

if TYPE_CHECKING:
    from .generator import CaseGenerator

#: The fields that can vary, named as the ``synthaug sample`` flags, and their Demographics field.
VARY_FIELDS: dict[str, str] = {"age": "age", "height": "height_cm", "weight": "weight_kg", "sex": "sex",
                               "diagnosis": "diagnosis"}
_UNITS = {"age": "years", "height_cm": "cm", "weight_kg": "kg"}


def _field_of(key: object, name: str = "`vary`") -> str:
    """The Demographics field a ``vary`` key names (flag name or field name)."""
    if isinstance(key, str) and key.strip().lower() in VARY_FIELDS:
        return VARY_FIELDS[key.strip().lower()]
    if isinstance(key, str) and key.strip().lower() in VARY_FIELDS.values():
        return key.strip().lower()
    raise ValueError(f"{name}: unknown field {key!r}; fields that can vary: {', '.join(VARY_FIELDS)}")


def _flag_of(field: str) -> str:
    return next(flag for flag, f in VARY_FIELDS.items() if f == field)


def _checked_value(field: str, value: object) -> float | str:
    """``value`` for ``field`` if it is allowed (a number in range, or one of the allowed words)."""
    where = f"`vary`: {_flag_of(field)}"
    if field in RANGES:
        lo, hi = RANGES[field]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{where}: expected a number in [{lo:g}, {hi:g}] {_UNITS[field]}, got {value!r}")
        if not math.isfinite(float(value)) or not lo <= float(value) <= hi:
            raise ValueError(f"{where}={float(value):g} is outside the allowed range [{lo:g}, {hi:g}] {_UNITS[field]}")
        return float(value)
    allowed = SEXES if field == "sex" else DIAGNOSES
    if value not in allowed:
        raise ValueError(f"{where}={value!r} is not allowed; use one of {', '.join(allowed)}")
    return str(value)


def twin_settings(base: Demographics, vary: Mapping[str, Sequence]) -> list[dict[str, object]]:
    """The settings of a twin grid, checked: one ``{field: value}`` per twin, in grid order.

    Args:
        base: the person every twin starts from.
        vary: field -> values; fields named as the ``synthaug sample`` flags (``age``, ``height``,
            ``weight``, ``sex``, ``diagnosis``) or as :class:`Demographics` fields (``height_cm``,
            ``weight_kg``). Values must be known and in the validated range, each at most once.

    Returns:
        A list of dicts keyed by Demographics field names; the product of the values with the
        last field varying fastest.

    Raises:
        ValueError: one line naming the field and the allowed values, before any work.
    """
    if not isinstance(base, Demographics):
        raise ValueError(f"`base`: expected a Demographics, got {type(base).__name__}")
    if not isinstance(vary, Mapping) or not vary:
        raise ValueError("`vary`: give at least one field and its values, e.g. {'weight': [60, 80, 100]}")
    fields: dict[str, list] = {}
    for key, values in vary.items():
        field = _field_of(key)
        if field in fields:
            raise ValueError(f"`vary`: {_flag_of(field)} is given twice")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ValueError(f"`vary`: {_flag_of(field)}: expected a list of values, got {values!r}")
        if not values:
            raise ValueError(f"`vary`: {_flag_of(field)}: no values")
        checked = [_checked_value(field, v) for v in values]
        for i, v in enumerate(checked):
            if v in checked[:i]:
                raise ValueError(f"`vary`: {_flag_of(field)}: the value {v!r} is given twice")
        fields[field] = checked
    return [dict(zip(fields, combo)) for combo in itertools.product(*fields.values())]


def twin_demographics(base: Demographics, vary: Mapping[str, Sequence]) -> list[Demographics]:
    """``base`` with each setting of :func:`twin_settings` applied, in grid order."""
    return [replace(base, **setting) for setting in twin_settings(base, vary)]


def parse_vary(texts: Sequence[str]) -> dict[str, list]:
    """Read ``FIELD=V1,V2,...`` items (e.g. ``weight=60,80,100``) into a ``vary`` mapping.

    Numbers are read for age, height and weight; sex and diagnosis are upper-cased. Ranges are
    checked by :func:`twin_settings`. Raises ``ValueError`` (one line naming `vary`) for an
    item without ``=``, an unknown or repeated field, or an empty value.
    """
    vary: dict[str, list] = {}
    for text in texts:
        key, sep, rest = str(text).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"`vary` {text!r}: expected FIELD=V1,V2,... (e.g. weight=60,80,100) "
                             f"with FIELD one of {', '.join(VARY_FIELDS)}")
        field = _field_of(key, f"`vary` {text!r}")
        flag = _flag_of(field)
        if flag in vary:
            raise ValueError(f"`vary`: {flag} is given twice")
        items = [item.strip() for item in rest.split(",")]
        if not rest.strip():
            raise ValueError(f"`vary` {text!r}: no values")
        if "" in items:
            raise ValueError(f"`vary` {text!r}: empty value in the list")
        if field in RANGES:
            try:
                vary[flag] = [float(item) for item in items]
            except ValueError:
                raise ValueError(f"`vary` {text!r}: {flag} values must be numbers") from None
        else:
            vary[flag] = [item.upper() for item in items]
    return vary


def sample_twins(generator: CaseGenerator, base: Demographics, vary: Mapping[str, Sequence], *, seed: int,
                 progress: bool = False) -> list[Case]:
    """Counterfactual twins: one case per setting of ``vary``, all from the same ``seed``.

    Args:
        generator: any case generator (the cascade, the phantom).
        base: the person the twins start from; the fields not varied stay as they are.
        vary: field -> values (:func:`twin_settings`); the grid is their product, last field fastest.
        seed: the one seed every twin is sampled with (a non-negative integer).
        progress: show the generator's progress bars.

    Returns:
        The cases in grid order, each with ``meta["twin"] = {"base": base as a dict, "varied":
        {field: value}, "index": i, "n": number of twins}`` (Demographics field names).
    """
    check_seed(seed, "`seed`")
    settings = twin_settings(base, vary)
    demos = [replace(base, **setting) for setting in settings]
    cases = generator.sample(demos, seed=[int(seed)] * len(demos), progress=progress)
    for i, (case, setting) in enumerate(zip(cases, settings)):
        case.meta["twin"] = {"base": base.to_dict(), "varied": dict(setting), "index": i, "n": len(settings)}
    return cases


def twin_label(setting: Mapping[str, object]) -> str:
    """A short label of a twin's varied values, e.g. ``weight 80 kg, age 40 y``."""
    unit = {"age": " y", "height_cm": " cm", "weight_kg": " kg"}
    parts = []
    for field, value in setting.items():
        text = f"{value:g}" if isinstance(value, float) else str(value)
        parts.append(f"{_flag_of(field)} {text}{unit.get(field, '')}")
    return ", ".join(parts)
