"""MONAI dictionary transforms that mix synthetic cases into real training.

* :class:`RandSyntheticReplaced` - with probability ``prob`` replaces the current (real)
  case by a synthetic one whose demographics match the real case's, so that the synthetic
  and real populations agree.
* :class:`RandLesionInsertd` (from :mod:`synthaug.data.lesion_insert`) - inserts FDG-avid lesions
  with exact masks into a real PET/CT with organ labels.
* :class:`RandScannerd` (from :mod:`synthaug.data.scanner_transforms`) - re-images PET as another
  scanner would (resolution and noise).
* :class:`AddSyntheticChanneld` - appends a demographically matched synthetic case's
  channels to the real ones (for paired use), or puts them under new keys.

Both follow MONAI's conventions: all randomness through ``self.R`` inside ``randomize()``
(so ``set_random_state``, ``Compose.set_random_state`` and ``monai.data.utils.worker_init_fn``
seed them), one draw per dictionary applied to every key, ``D``/``Dict`` aliases and
``allow_missing_keys``. The draw is a small :class:`SyntheticDraw`; the deterministic core
(:meth:`RandSyntheticReplaced.replace`, :meth:`AddSyntheticChanneld.add`) applies it.

The synthetic cases come from a :class:`~synthaug.data.dataset.SyntheticPETCTDataset` (a cache
or on the fly; give it the same deterministic preprocessing as the real pipeline through
its ``transform=``) or straight from a :class:`~synthaug.sampling.generator.CaseGenerator`.
Put these transforms after the deterministic (cached) part of a ``CacheDataset`` pipeline:
``CacheDataset`` caches up to the first random transform.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform, Resize
from monai.utils import TransformBackends, ensure_tuple_rep

from ..core.demographics import Demographics, sample_population
from ..core.seeds import MAX_SEED
from ..sampling.generator import CaseGenerator
from .lesion_insert import LesionInsertDraw, RandLesionInsertD, RandLesionInsertd, RandLesionInsertDict
from .scanner_transforms import RandScanner, RandScannerD, RandScannerd, RandScannerDict, ScannerDraw

__all__ = [
    "LesionInsertDraw",
    "RandLesionInsertD",
    "RandLesionInsertDict",
    "RandLesionInsertd",
    "RandScanner",
    "RandScannerD",
    "RandScannerDict",
    "RandScannerd",
    "ScannerDraw",
    "AddSyntheticChannelD",
    "AddSyntheticChannelDict",
    "AddSyntheticChanneld",
    "RandSyntheticReplaceD",
    "RandSyntheticReplaceDict",
    "RandSyntheticReplaced",
    "SyntheticDraw",
    "match_demographics",
]

#: Scales (years, cm, kg) of the demographic distance used for matching.
_MATCH_SCALES = {"age": 10.0, "height_cm": 10.0, "weight_kg": 10.0}


@dataclass(frozen=True)
class SyntheticDraw:
    """The parameters of one synthetic pick: a source ``index``, or a generator ``seed`` with
    the ``demographics`` to generate for."""

    index: int | None = None
    seed: int | None = None
    demographics: Demographics | None = None


def match_demographics(target: Demographics | None, pool: Sequence[Demographics], k: int = 8) -> np.ndarray:
    """Indices of the ``k`` entries of ``pool`` closest to ``target`` (all indices if ``target`` is None).

    Same sex and diagnosis first (when known and present in the pool), then the smallest
    distance over age, height and weight (10 years / 10 cm / 10 kg count as 1; an unknown
    field on one side counts as 1). Deterministic: ties keep pool order.
    """
    n = len(pool)
    if n == 0:
        raise ValueError("the synthetic source is empty")
    idx = np.arange(n)
    if target is None:
        return idx
    for attr in ("sex", "diagnosis"):
        want = getattr(target, attr)
        if want is not None:
            same = idx[[getattr(pool[i], attr) == want for i in idx]]
            if len(same):
                idx = same
    dist = np.zeros(len(idx))
    for attr, scale in _MATCH_SCALES.items():
        t = getattr(target, attr)
        if t is None:
            continue
        vals = np.array([np.nan if getattr(pool[i], attr) is None else getattr(pool[i], attr) for i in idx], float)
        dist += np.where(np.isnan(vals), 1.0, ((vals - t) / scale) ** 2)
    order = np.argsort(dist, kind="stable")
    return idx[order[: max(1, min(k, len(idx)))]]


class _SyntheticSource:
    """Where synthetic items come from: an indexable dataset, or a generator."""

    def __init__(self, source: object, *, label: str, keys: Sequence[Hashable], label_dtype: torch.dtype) -> None:
        if isinstance(source, CaseGenerator) and not isinstance(source, type):
            self.generator, self.dataset = source, None
            self.image_key = keys[0] if keys else "image"
            self.label_key = keys[1] if len(keys) > 1 else "label"
        elif hasattr(source, "__getitem__") and hasattr(source, "__len__"):
            if len(source) == 0:
                raise ValueError("the synthetic source dataset is empty")
            self.generator, self.dataset = None, source
        else:
            raise ValueError(f"source: expected a SyntheticPETCTDataset (or another dataset of items) or a "
                             f"CaseGenerator, got {type(source).__name__}")
        self.label, self.label_dtype = label, label_dtype
        cases = getattr(source, "cases", None)
        self.pool = [c.demographics for c in cases] if cases is not None else None
        self._memo: dict[Demographics | None, np.ndarray] = {}

    def draw(self, R: np.random.RandomState, real: Demographics | None, k: int) -> SyntheticDraw:
        if self.dataset is not None:
            if self.pool is None:
                return SyntheticDraw(index=int(R.randint(len(self.dataset))))
            if real not in self._memo:
                self._memo[real] = match_demographics(real, self.pool, k)
            candidates = self._memo[real]
            return SyntheticDraw(index=int(candidates[R.randint(len(candidates))]))
        seed = int(R.randint(MAX_SEED))
        demo_seed = int(R.randint(MAX_SEED))
        like = [real] if real is not None else None
        return SyntheticDraw(seed=seed, demographics=sample_population(1, demo_seed, like=like)[0])

    def item(self, draw: SyntheticDraw) -> Mapping:
        if self.dataset is not None:
            if draw.index is None:
                raise ValueError("this draw has no index; the source is a dataset")
            item = self.dataset[draw.index]
        else:
            from .dataset import case_to_item

            if draw.seed is None or draw.demographics is None:
                raise ValueError("this draw has no seed/demographics; the source is a generator")
            case = self.generator.sample([draw.demographics], seed=[draw.seed])[0]
            if case.demographics is None:
                case.demographics = draw.demographics
            item = case_to_item(case, case_id=f"synth_seed{draw.seed}", seed=draw.seed, label=self.label,
                                image_key=self.image_key, label_key=self.label_key, label_dtype=self.label_dtype)
        if isinstance(item, list):  # a source transform that returns several samples
            raise ValueError("the synthetic source returned a list of samples; keep its transform deterministic "
                             "and put patch sampling after this transform")
        return item


def _real_demographics(d: Mapping, key: str | None) -> Demographics | None:
    from .dataset import demographics_from_item

    if key is None or key not in d:
        return None
    return demographics_from_item(d[key])


class RandSyntheticReplaced(RandomizableTransform, MapTransform):
    """With probability ``prob``, replace the case by a demographically matched synthetic one.

    The values of ``keys`` (e.g. image and label) are taken from the synthetic item, and
    ``meta_keys`` that the input already has (``case_id``, ``seed``, ``demographics``) are
    updated too; no key is added or removed, so mixed batches still collate.

    Args:
        keys: keys to replace (each must be in the synthetic items).
        source: a :class:`~synthaug.data.dataset.SyntheticPETCTDataset` (cache or on the fly) or
            any dataset of items; or a :class:`~synthaug.sampling.generator.CaseGenerator` (then the
            first key gets the image, the second the label).
        prob: probability of replacing.
        demographics_key: where the real case's demographics are (a dict or
            :class:`Demographics`); without them the synthetic case is drawn at random.
        match_k: pick uniformly among the ``match_k`` best-matching synthetic cases.
        meta_keys: non-tensor keys to copy from the synthetic item when present in the input.
        label: label choice for a generator source (see ``SyntheticPETCTDataset``).
        allow_missing_keys: don't raise if a key is missing from the input.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        keys: KeysCollection,
        source: object,
        prob: float = 0.5,
        demographics_key: str | None = "demographics",
        match_k: int = 8,
        meta_keys: Sequence[str] = ("case_id", "seed", "demographics"),
        label: str = "lesions",
        label_dtype: torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob={prob} must be in [0, 1]")
        if match_k < 1:
            raise ValueError(f"match_k={match_k} must be >= 1")
        self.source = _SyntheticSource(source, label=label, keys=list(self.keys), label_dtype=label_dtype)
        self.demographics_key = demographics_key
        self.match_k = match_k
        self.meta_keys = tuple(meta_keys)
        self._draw: SyntheticDraw | None = None

    def randomize(self, data: Mapping) -> None:
        """Decide whether to replace and which synthetic case to use (``self.R`` only)."""
        super().randomize(None)
        self._draw = None
        if self._do_transform:
            self._draw = self.source.draw(self.R, _real_demographics(data, self.demographics_key), self.match_k)

    def replace(self, data: Mapping, draw: SyntheticDraw) -> dict:
        """The deterministic core: ``data`` with ``keys`` (and present ``meta_keys``) from ``draw``'s case."""
        d = dict(data)
        synth = self.source.item(draw)
        for key in self.key_iterator(d):
            if key not in synth:
                raise KeyError(f"key {key!r} is not in the synthetic items (they have {sorted(map(str, synth))})")
            d[key] = synth[key]
        for key in self.meta_keys:
            if key in d and key in synth:
                d[key] = synth[key]
        return d

    def __call__(self, data: Mapping) -> dict:
        self.randomize(data)
        if not self._do_transform:
            return dict(data)
        return self.replace(data, self._draw)


class AddSyntheticChanneld(Randomizable, MapTransform):
    """Append the channels of a demographically matched synthetic case to each key.

    For every key the synthetic tensor is resized to the input's spatial shape when they
    differ (``mode`` per key: e.g. ``"trilinear"`` for images, ``"nearest"`` for labels)
    and concatenated after the input's channels, or, with ``output_postfix``, stored under
    ``key + output_postfix``. The same synthetic case serves every key.

    Args:
        keys: keys to extend (each must be in the synthetic items).
        source: as for :class:`RandSyntheticReplaced`.
        mode: interpolation mode(s) for resizing, one or one per key.
        output_postfix: ``None`` concatenates channels; a string writes a new key instead.
        demographics_key, match_k, label, label_dtype, allow_missing_keys: as for
            :class:`RandSyntheticReplaced`.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        keys: KeysCollection,
        source: object,
        mode: str | Sequence[str] = "trilinear",
        output_postfix: str | None = None,
        demographics_key: str | None = "demographics",
        match_k: int = 8,
        label: str = "lesions",
        label_dtype: torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if match_k < 1:
            raise ValueError(f"match_k={match_k} must be >= 1")
        if output_postfix == "":
            raise ValueError("output_postfix must be None (concatenate) or a non-empty string")
        self.source = _SyntheticSource(source, label=label, keys=list(self.keys), label_dtype=label_dtype)
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.output_postfix = output_postfix
        self.demographics_key = demographics_key
        self.match_k = match_k
        self._draw: SyntheticDraw | None = None

    def randomize(self, data: Mapping) -> None:
        """Pick the synthetic case (``self.R`` only)."""
        self._draw = self.source.draw(self.R, _real_demographics(data, self.demographics_key), self.match_k)

    def add(self, data: Mapping, draw: SyntheticDraw) -> dict:
        """The deterministic core: ``data`` with ``draw``'s case added to every key."""
        d = dict(data)
        synth = self.source.item(draw)
        for key, mode in self.key_iterator(d, self.mode):
            if key not in synth:
                raise KeyError(f"key {key!r} is not in the synthetic items (they have {sorted(map(str, synth))})")
            real, extra = d[key], synth[key]
            if not isinstance(real, torch.Tensor) or real.ndim < 2:
                raise ValueError(f"{key}: expected a channel-first tensor, got {type(real).__name__}")
            extra = torch.as_tensor(extra)
            if tuple(extra.shape[1:]) != tuple(real.shape[1:]):
                extra = Resize(spatial_size=tuple(real.shape[1:]), mode=mode)(extra)
            extra = torch.as_tensor(extra, dtype=real.dtype, device=real.device)
            if self.output_postfix is None:
                joined = torch.cat([torch.as_tensor(real), extra.as_tensor() if isinstance(extra, MetaTensor) else extra])
                d[key] = MetaTensor(joined, meta=dict(real.meta)) if isinstance(real, MetaTensor) else joined
            else:
                d[f"{key}{self.output_postfix}"] = (MetaTensor(extra, meta=dict(real.meta))
                                                    if isinstance(real, MetaTensor) else extra)
        return d

    def __call__(self, data: Mapping) -> dict:
        self.randomize(data)
        return self.add(data, self._draw)


RandSyntheticReplaceD = RandSyntheticReplaceDict = RandSyntheticReplaced
AddSyntheticChannelD = AddSyntheticChannelDict = AddSyntheticChanneld
