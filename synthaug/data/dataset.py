"""``SyntheticPETCTDataset``: synthetic PET/CT cases as MONAI-style dictionaries.

Each item is::

    {"image": MetaTensor (2, X, Y, Z)   channel 0 = CT (HU), channel 1 = PET (SUV), with the affine
     "label": MetaTensor (1, X, Y, Z)   lesions (0/1) or the organ map (``label=``)
     "demographics": {"age", "sex", "height_cm", "weight_kg", "diagnosis"}   unknown: nan / ""
     "case_id": "synth_00003", "seed": 3}

so that ``Spacingd``, ``Orientationd``, ``CropForegroundd`` and ``RandCropByPosNegLabeld``
work on it directly. With ``label="both"`` the lesions go to ``label_key`` and the organ
map to ``organ_key`` (two single-channel keys, because lesion and organ labels are used
by different losses and crops).

Two sources give the same items: a :class:`~synthaug.sampling.generator.CaseGenerator` run on the
fly (case ``i`` uses seed ``seed + i``; the generator is built lazily in each worker when
given as a factory or a weights path), or a cache folder written by ``synthaug generate``.
:class:`PETCTCohortDataset` reads a real AutoPET-layout cohort into the same structure.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.case import Case
from ..core.demographics import Demographics
from .cache import PlannedCase, check_manifest_files, load_manifest, plan_cases, read_cache_case

LABEL_CHOICES = ("lesions", "organs", "both")
#: Keys of the ``demographics`` dict of an item.
DEMOGRAPHICS_KEYS = ("age", "sex", "height_cm", "weight_kg", "diagnosis")


def demographics_item(demo: Demographics | None) -> dict:
    """Demographics as a collate-friendly dict: unknown numbers are ``nan``, unknown text ``""``."""
    if demo is None:
        return {"age": math.nan, "sex": "", "height_cm": math.nan, "weight_kg": math.nan, "diagnosis": ""}
    return {
        "age": math.nan if demo.age is None else float(demo.age),
        "sex": demo.sex or "",
        "height_cm": math.nan if demo.height_cm is None else float(demo.height_cm),
        "weight_kg": math.nan if demo.weight_kg is None else float(demo.weight_kg),
        "diagnosis": demo.diagnosis or "",
    }


def demographics_from_item(value: object) -> Demographics | None:
    """Parse an item's ``demographics`` (a :class:`Demographics`, or a dict as made by
    :func:`demographics_item`, or a CSV-like mapping); ``None`` when absent or all unknown."""
    if value is None:
        return None
    if isinstance(value, Demographics):
        demo = value
    elif isinstance(value, Mapping):
        row = {k: (v.item() if isinstance(v, (np.generic, torch.Tensor)) and np.size(v) == 1 else v)
               for k, v in value.items()}
        demo = Demographics.from_mapping(row)
    else:
        raise ValueError(f"demographics: expected a Demographics or a mapping, got {type(value).__name__}")
    if all(getattr(demo, k) is None for k in DEMOGRAPHICS_KEYS):
        return None
    return demo


def case_to_item(
    case: Case,
    *,
    case_id: str,
    seed: int,
    label: str = "lesions",
    image_key: str = "image",
    label_key: str = "label",
    organ_key: str = "organs",
    label_dtype: torch.dtype = torch.float32,
) -> dict:
    """Turn a :class:`~synthaug.core.case.Case` into the item dict (channel-first MetaTensors with the affine)."""
    from monai.data import MetaTensor

    if label not in LABEL_CHOICES:
        raise ValueError(f"label={label!r}; choose one of {LABEL_CHOICES}")
    if case.pet is None:
        raise ValueError(f"case {case_id}: has no PET; the image needs CT and PET")
    affine = torch.as_tensor(np.asarray(case.affine, dtype=np.float64))
    meta = {"filename_or_obj": case_id, "case_id": case_id, "seed": int(seed),
            "source": str(case.meta.get("source", "synthetic"))}
    image = np.stack([np.asarray(case.ct, dtype=np.float32), np.asarray(case.pet, dtype=np.float32)])
    item = {image_key: MetaTensor(torch.from_numpy(image), affine=affine.clone(), meta=dict(meta))}
    wanted = {"lesions": [("lesions", label_key)], "organs": [("organs", label_key)],
              "both": [("lesions", label_key), ("organs", organ_key)]}[label]
    for name, key in wanted:
        arr = getattr(case, name)
        if arr is None:
            raise ValueError(f"case {case_id}: has no {name} labels (label={label!r})")
        tensor = torch.from_numpy(np.ascontiguousarray(arr)[None]).to(label_dtype)
        item[key] = MetaTensor(tensor, affine=affine.clone(), meta=dict(meta))
    item["demographics"] = demographics_item(case.demographics)
    item["case_id"] = case_id
    item["seed"] = int(seed)
    return item


def _default_generator():
    from ..sampling.cascade import CascadedSampler

    return CascadedSampler.from_pretrained()


def _is_generator(obj: object) -> bool:
    from ..sampling.generator import CaseGenerator

    return not isinstance(obj, type) and isinstance(obj, CaseGenerator)


class SyntheticPETCTDataset(Dataset):
    """Synthetic PET/CT cases with labels, on the fly or from a ``synthaug generate`` cache.

    Args:
        n: number of cases (on the fly; default: the length of ``demographics``). From a
            cache: use only the first ``n`` cases (default: all).
        generator: a :class:`~synthaug.sampling.generator.CaseGenerator`, a zero-argument factory
            returning one (built lazily, once per worker process), or a weights folder for
            :meth:`CascadedSampler.from_pretrained`; default: the shipped demo weights.
        demographics: a fixed list (or mapping, or ``demographics.csv`` path) used in order;
            ``None`` draws ``sample_population(n, ...)``.
        like: draw demographics matched to this cohort (its ``demographics.csv``) instead.
        seed: case ``i`` uses seed ``seed + i`` (independent of workers and order).
        source: a cache folder (see :meth:`from_cache`); excludes the on-the-fly arguments.
        label: ``"lesions"``, ``"organs"`` or ``"both"`` (lesions in ``label_key``, organs in
            ``organ_key``).
        image_key, label_key, organ_key: item keys.
        label_dtype: dtype of the label tensors (float32 like MONAI's ``LoadImaged``).
        transform: applied to each item (e.g. a MONAI ``Compose``).
    """

    def __init__(
        self,
        n: int | None = None,
        *,
        generator: object | Callable[[], object] | str | Path | None = None,
        demographics: Sequence[Demographics] | Mapping[str, Demographics] | str | Path | None = None,
        like: str | Path | Mapping[str, Demographics] | Sequence[Demographics] | None = None,
        seed: int = 0,
        source: str | Path | None = None,
        label: str = "lesions",
        image_key: str = "image",
        label_key: str = "label",
        organ_key: str = "organs",
        label_dtype: torch.dtype = torch.float32,
        transform: Callable[[dict], object] | None = None,
    ) -> None:
        if label not in LABEL_CHOICES:
            raise ValueError(f"label={label!r}; choose one of {LABEL_CHOICES}")
        if len({image_key, label_key, organ_key, "demographics", "case_id", "seed"}) != 6:
            raise ValueError(f"keys must differ from each other and from demographics/case_id/seed: "
                             f"image_key={image_key!r}, label_key={label_key!r}, organ_key={organ_key!r}")
        self.label, self.image_key, self.label_key, self.organ_key = label, image_key, label_key, organ_key
        self.label_dtype = label_dtype
        self.transform = transform
        self._generator = None
        self._generator_pid: int | None = None
        self.source = None if source is None else Path(source)
        if self.source is not None:
            if generator is not None or demographics is not None or like is not None:
                raise ValueError("source= (a cache) excludes generator=, demographics= and like=")
            self.manifest = load_manifest(self.source)
            check_manifest_files(self.source, self.manifest)
            entries = sorted(self.manifest["cases"], key=lambda e: e["index"])
            if not entries:
                raise ValueError(f"cache {self.source}: no finished cases in its manifest.json")
            if not self.manifest.get("complete", True):
                warnings.warn(f"cache {self.source} is incomplete ({len(entries)} of {self.manifest.get('n')} cases "
                              "merged); using the finished ones", stacklevel=2)
            if n is not None:
                if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(entries):
                    raise ValueError(f"n={n!r}: the cache {self.source} holds {len(entries)} cases")
                entries = entries[:n]
            self._entries = entries
            self.cases = [PlannedCase(e["index"], e["case_id"], int(e["seed"]), _demo(e)) for e in entries]
            self._factory = None
        else:
            self.manifest, self._entries = None, None
            self.cases = plan_cases(n, seed, demographics=demographics, like=like)
            if generator is None:
                self._factory = _default_generator
            elif isinstance(generator, (str, Path)):
                self._factory = _WeightsFactory(str(generator))
            elif _is_generator(generator):
                self._factory = None
                self._generator = generator
            elif callable(generator):
                self._factory = generator
            else:
                raise ValueError(f"generator: expected a CaseGenerator, a factory or a weights folder, "
                                 f"got {type(generator).__name__}")

    @classmethod
    def from_cache(cls, root: str | Path, **kwargs) -> SyntheticPETCTDataset:
        """The cases of a ``synthaug generate`` cache (same items as on the fly)."""
        return cls(source=root, **kwargs)

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def generator(self):
        """The case generator (built on first use in each process when given as a factory)."""
        if self._factory is not None and (self._generator is None or self._generator_pid != os.getpid()):
            self._generator = self._factory()
            self._generator_pid = os.getpid()
            if not _is_generator(self._generator):
                raise ValueError(f"generator factory returned {type(self._generator).__name__}, not a CaseGenerator")
        return self._generator

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self._factory is not None:  # rebuilt in the worker; weights are not pickled
            state["_generator"] = None
            state["_generator_pid"] = None
        return state

    def load_case(self, index: int) -> Case:
        """Case ``index`` as a :class:`~synthaug.core.case.Case` (no transform)."""
        planned = self.cases[self._check_index(index)]
        if self._entries is not None:
            return read_cache_case(self.source, self._entries[self._check_index(index)])
        case = self.generator.sample([planned.demographics], seed=[planned.seed])[0]
        case.meta.setdefault("case_id", planned.case_id)
        if case.demographics is None:
            case.demographics = planned.demographics
        return case

    def __getitem__(self, index: int) -> object:
        index = self._check_index(index)
        planned = self.cases[index]
        item = case_to_item(self.load_case(index), case_id=planned.case_id, seed=planned.seed, label=self.label,
                            image_key=self.image_key, label_key=self.label_key, organ_key=self.organ_key,
                            label_dtype=self.label_dtype)
        return self.transform(item) if self.transform is not None else item

    def _check_index(self, index: int) -> int:
        if isinstance(index, (np.integer, torch.Tensor)):
            index = int(index)
        if not isinstance(index, int):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        n = len(self.cases)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} cases")
        return index % n

    @property
    def item_keys(self) -> tuple[str, ...]:
        """The keys of every item (before ``transform``)."""
        labels = (self.label_key, self.organ_key) if self.label == "both" else (self.label_key,)
        return (self.image_key, *labels, "demographics", "case_id", "seed")


class _WeightsFactory:
    """Picklable factory: ``CascadedSampler.from_pretrained(path)``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self):
        from ..sampling.cascade import CascadedSampler

        return CascadedSampler.from_pretrained(self.path)


def _demo(entry: dict) -> Demographics:
    d = entry.get("demographics") or {}
    return Demographics(*(d.get(k) for k in DEMOGRAPHICS_KEYS))


class PETCTCohortDataset(Dataset):
    """A real cohort in the AutoPET layout (or a cache), as the same items as
    :class:`SyntheticPETCTDataset` (``seed`` is ``-1`` for real cases).

    Args:
        root: the cohort folder (``<case>/CTres.nii.gz, SUV.nii.gz, SEG.nii.gz``, optional
            ``ORGANS.nii.gz``, ``demographics.csv``), or a ``synthaug generate`` cache.
        label, image_key, label_key, organ_key, label_dtype, transform: as for
            :class:`SyntheticPETCTDataset`.
    """

    def __init__(self, root: str | Path, *, label: str = "lesions", image_key: str = "image",
                 label_key: str = "label", organ_key: str = "organs", label_dtype: torch.dtype = torch.float32,
                 transform: Callable[[dict], object] | None = None) -> None:
        from ..core.io import Cohort
        from .cache import is_cache, open_cache_as_cohort

        if label not in LABEL_CHOICES:
            raise ValueError(f"label={label!r}; choose one of {LABEL_CHOICES}")
        self.cohort = open_cache_as_cohort(root) if is_cache(root) else Cohort(root, require_demographics=False)
        if label in ("organs", "both") and not self.cohort.has_organs:
            raise ValueError(f"{root}: label={label!r} needs ORGANS.nii.gz in every case (real AutoPET has none)")
        self.label, self.image_key, self.label_key, self.organ_key = label, image_key, label_key, organ_key
        self.label_dtype, self.transform = label_dtype, transform

    def __len__(self) -> int:
        return len(self.cohort)

    def __getitem__(self, index: int) -> object:
        case_id = self.cohort.case_ids[index]
        case = self.cohort.load(case_id, require_lesions=self.label != "organs")
        seed = -1 if case.meta.get("source", "real") == "real" else int(case.meta.get("seed", -1))
        item = case_to_item(case, case_id=case_id, seed=seed, label=self.label, image_key=self.image_key,
                            label_key=self.label_key, organ_key=self.organ_key, label_dtype=self.label_dtype)
        return self.transform(item) if self.transform is not None else item
