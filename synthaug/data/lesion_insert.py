"""MONAI lesion insertion: :class:`RandLesionInsertd` puts FDG-avid lesions into a (real) PET/CT.

The array-level function under it is :func:`synthaug.phantom.lesions.add_lesions` with a
:class:`~synthaug.phantom.lesion_paint.LesionAppearance`; :mod:`synthaug.data.transforms` re-exports
the transform beside the other synthaug transforms. MONAI conventions as there: all randomness through
``self.R`` in ``randomize()`` (``set_random_state`` returns the transform), one draw per dictionary
(a :class:`LesionInsertDraw`) applied by the deterministic :meth:`RandLesionInsertd.insert`, ``D``/``Dict``
aliases, intensity changes on the images only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable
from monai.utils import TransformBackends

from ..core.demographics import DIAGNOSES
from ..core.seeds import MAX_SEED
from ..phantom.lesion_paint import LesionAppearance
from ..phantom.lesions import check_plan

__all__ = ["LesionInsertDraw", "RandLesionInsertD", "RandLesionInsertDict", "RandLesionInsertd"]


@dataclass(frozen=True)
class LesionInsertDraw:
    """One lesion insertion: the seed every lesion draw comes from (``None``: the case is left as it is)
    and the diagnosis asked for (``None``: the case's own, else one drawn from AutoPET's mix)."""

    seed: int | None = None
    diagnosis: str | None = None


def _demographics(d: Mapping, key: str | None):
    from .dataset import demographics_from_item

    return None if key is None or key not in d else demographics_from_item(d[key])


def _to_numpy(value: object, name: str) -> np.ndarray:
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if arr.ndim != 4:
        raise ValueError(f"{name}: expected a channel-first (C, X, Y, Z) array, got shape {arr.shape}")
    return arr


def _like(new: np.ndarray, old: object) -> object:
    """``new`` (C, X, Y, Z) as the type, dtype, device and metadata of ``old``."""
    if isinstance(old, torch.Tensor):
        t = torch.as_tensor(np.ascontiguousarray(new)).to(dtype=old.dtype, device=old.device)
        return MetaTensor(t, meta=dict(old.meta)) if isinstance(old, MetaTensor) else t
    return new.astype(np.asarray(old).dtype, copy=False)


class RandLesionInsertd(Randomizable, MapTransform):
    """With probability ``prob``, insert FDG-avid lesions into a (real) PET/CT with organ labels
    (:func:`synthaug.phantom.lesions.add_lesions`): sites from the organ labels, counts, sizes and
    uptake from the diagnosis (or ``plan``), appearance on the scan's own terms (``appearance``); the
    lesion label gets the new lesions (those it had are kept), the organ labels relabel nodes in fat
    as soft tissue, and only the images get intensity changes.

    Args:
        keys: the image key(s): one channel-first (CT, PET) image, or two keys (CT, then PET), in HU and SUV.
        organs_key: the synthaug organ map (channel-first, one channel); required.
        label_key: the lesion mask (channel-first, one channel); created when the item has none.
        prob: probability of inserting.
        diagnosis: the diagnosis for every case; ``None``: each case's own (``demographics_key``).
        plan: fixed lesions ``(site, diameter_mm, suvmax)`` instead of the diagnosis' draw.
        appearance: a :class:`~synthaug.phantom.lesion_paint.LesionAppearance` (default: the realistic
            settings with the default scanner); ``None`` paints as the phantom does.
        affine: the grid's affine when the images are not ``MetaTensor``\\ s.
        demographics_key: where the case's demographics are (diagnosis, weight, height).
        allow_missing_keys: don't raise if an image key is missing.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, keys: KeysCollection = "image", organs_key: str = "organs", label_key: str = "lesions",
                 prob: float = 1.0, diagnosis: str | None = None, plan: Sequence | None = None,
                 appearance: LesionAppearance | None | str = "default", affine: np.ndarray | None = None,
                 demographics_key: str | None = "demographics", allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) not in (1, 2):
            raise ValueError(f"keys: give one (CT, PET) image key or two keys (CT, PET), got {list(self.keys)}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob={prob} must be in [0, 1]")
        if diagnosis is not None and diagnosis not in DIAGNOSES:
            raise ValueError(f"diagnosis={diagnosis!r} is not allowed; use one of {DIAGNOSES}")
        self.prob, self.diagnosis = float(prob), diagnosis
        self.plan = None if plan is None else check_plan(plan)
        self.appearance = LesionAppearance() if appearance == "default" else appearance
        if self.appearance is not None and not isinstance(self.appearance, LesionAppearance):
            raise ValueError(f"appearance: expected a LesionAppearance, 'default' or None, got {appearance!r}")
        self.organs_key, self.label_key, self.demographics_key = organs_key, label_key, demographics_key
        self.affine = None if affine is None else np.asarray(affine, np.float64)
        self._draw = LesionInsertDraw()
        self.last_lesions: list[dict] = []

    def randomize(self, data: object = None) -> None:
        """Decide whether to insert and draw the seed of every lesion draw (``self.R`` only)."""
        do = self.R.rand() < self.prob
        seed = int(self.R.randint(MAX_SEED))
        self._draw = LesionInsertDraw(seed if do else None, self.diagnosis)

    @property
    def draw(self) -> LesionInsertDraw:
        """The last draw."""
        return self._draw

    def _arrays(self, d: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        keys = list(self.key_iterator(d))
        if len(keys) != len(self.keys):
            raise ValueError(f"keys: {sorted(set(map(str, self.keys)) - set(map(str, keys)))} missing from the item")
        if len(keys) == 1:
            image = _to_numpy(d[keys[0]], str(keys[0]))
            if image.shape[0] != 2:
                raise ValueError(f"{keys[0]}: expected 2 channels (CT, PET), got {image.shape[0]}; a CT-only image "
                                 "cannot take lesions")
            ct, pet = image[0], image[1]
        else:
            ct, pet = (_to_numpy(d[k], str(k))[0] for k in keys)
        if self.organs_key not in d:
            raise ValueError(f"organs_key: {self.organs_key!r} is not in the item; lesion insertion needs organ labels")
        organs = _to_numpy(d[self.organs_key], str(self.organs_key))[0]
        lesions = _to_numpy(d[self.label_key], str(self.label_key))[0] if self.label_key in d else None
        first = d[keys[0]]
        affine = self.affine
        if affine is None:
            if not isinstance(first, MetaTensor):
                raise ValueError("affine: give it, or pass MetaTensors whose affine holds it")
            affine = np.asarray(first.affine, np.float64)
        for name, arr in (("organs", organs), ("lesions", lesions), ("pet", pet)):
            if arr is not None and arr.shape != ct.shape:
                raise ValueError(f"{name}: grid {arr.shape} does not match the image grid {ct.shape}")
        return ct, pet, organs, lesions, affine

    def insert(self, data: Mapping, draw: LesionInsertDraw) -> dict:
        """The deterministic core: ``data`` with ``draw``'s lesions inserted."""
        from ..core.case import Case
        from ..phantom.lesions import add_lesions

        d = dict(data)
        self.last_lesions = []
        if draw.seed is None:
            return d
        ct, pet, organs, lesions, affine = self._arrays(d)
        case = Case(ct=np.asarray(ct, np.float32), pet=np.asarray(pet, np.float32), organs=np.rint(organs).astype(np.uint8),
                    lesions=None if lesions is None else (lesions > 0.5).astype(np.uint8), affine=affine,
                    demographics=_demographics(d, self.demographics_key))
        out = add_lesions(case, seed=draw.seed, diagnosis=draw.diagnosis, plan=self.plan, appearance=self.appearance)
        self.last_lesions = out.meta["lesion_prior"]["lesions"]
        keys = list(self.key_iterator(d))
        if len(keys) == 1:
            d[keys[0]] = _like(np.stack([out.ct, out.pet]), d[keys[0]])
        else:
            d[keys[0]], d[keys[1]] = _like(out.ct[None], d[keys[0]]), _like(out.pet[None], d[keys[1]])
        d[self.organs_key] = _like(out.organs[None], d[self.organs_key])
        like = d.get(self.label_key, d[self.organs_key])
        d[self.label_key] = _like(out.lesions[None], like)
        return d

    def __call__(self, data: Mapping) -> dict:
        self.randomize()
        return self.insert(data, self._draw)


RandLesionInsertD = RandLesionInsertDict = RandLesionInsertd
