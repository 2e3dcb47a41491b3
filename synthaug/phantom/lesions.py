"""FDG-avid lesions for any case with organ labels: the phantom's lesion model placed on the case.

The cascade's networks learn lesions from their training data, and a small or briefly trained
global stage draws none (docs/training.md, "Lesion channel"). :func:`add_lesions` gives such a
generator its lesions from the same diagnosis-conditioned model the phantom uses
(:func:`synthaug.phantom.body.lesion_plan`: how many lesions, where, how large, how avid): each
lesion's site is found on the case's own organ labels and body outline, and its uptake, CT and
labels are written with the phantom's rules (PSF, noise, lesion HU), so the lesion mask matches
the images voxel for voxel. The uptake profile is, by default, the one fitted to real tumours
(:meth:`~synthaug.phantom.lesion_paint.LesionAppearance.uptake_profile` of the default appearance:
heterogeneous, with an infiltrative margin and necrotic cores in large lesions; docs/lesions.md),
or the phantom's own rule (``prior_uptake="phantom"``). Every draw comes from the seed.

Sites: lymph-node chains (cervical, supraclavicular, axillary, mediastinal, hilar,
para-aortic, mesenteric, iliac, inguinal) at the phantom's heights below the vertex and at
fractions of the body's width and depth, in fat or soft tissue away from the skin;
subcutaneous fat; muscle / soft tissue; lungs (a primary tumour prefers the upper lobes);
liver; spleen; bone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from scipy import ndimage

from ..core.case import Case
from ..core.demographics import DIAGNOSES
from ..core.labels import ORGAN_IDS
from ..core.seeds import check_seed
from .body import SCAN_END_S, draw_diagnosis, lesion_plan, lesion_uptake
from .lesion_paint import LesionAppearance, lesion_ct, lesion_shape, lesion_tissue, paint_uptake, psf_reach_voxels
from .lesion_plan import lesion_contrast
from .node_chains import NODE_CHAINS, split_node_site
from .scanner import ct_noise_sd, pet_noise_factor, psf_sigma_voxels
from .shapes import Vol
from .tables import CT_HU

#: How a generator's cases get their lesions: "fitted" adds :func:`add_lesions`'s lesions, their
#: uptake fitted to real tumours, to whatever the networks drew; "prior" adds them with the phantom's
#: uptake rule (what the lesion prior painted before "fitted"; caches written then record it);
#: "model" keeps only what the networks drew.
LESION_MODES = ("fitted", "prior", "model")
#: The lesion prior's uptake profiles (:func:`add_lesions` ``prior_uptake``).
PRIOR_UPTAKES = ("fitted", "phantom")
#: The uptake model of ``prior_uptake="fitted"``: the default appearance's profile (its scanner is not
#: used: the prior keeps the phantom's PSF and noise).
_FITTED = LesionAppearance()

_FAT, _SOFT, _BONE = ORGAN_IDS["body_fat"], ORGAN_IDS["soft_tissue"], ORGAN_IDS["bone"]
_LUNGS, _LIVER, _SPLEEN, _AORTA = ORGAN_IDS["lungs"], ORGAN_IDS["liver"], ORGAN_IDS["spleen"], ORGAN_IDS["aorta"]

#: Labels a lesion of each site kind may cover (it takes the shape of the tissue it grows in).
_ALLOWED = {
    "node": (_FAT, _SOFT),
    "subcutaneous": (_FAT, _SOFT),
    "muscle": (_SOFT, _FAT),
    "lung": (_LUNGS, _SOFT),
    "liver": (_LIVER,),
    "spleen": (_SPLEEN,),
    "bone": (_BONE,),
}
#: Where a site's centre is drawn from (its own label).
_CENTRE_LABEL = {"subcutaneous": _FAT, "muscle": _SOFT, "lung": _LUNGS, "liver": _LIVER, "spleen": _SPLEEN,
                 "bone": _BONE}
#: Depth below the skin (mm) that separates subcutaneous fat from the rest of the body.
_SUBCUTANEOUS_MM = 30.0
#: Para-aortic nodes lie this far to the side of the aorta where the slice shows it (at least
#: :data:`_MIN_AORTA_VOXELS` voxels of it); elsewhere the chain's fractions place them.
_PARA_AORTIC_MM = 22.0
_MIN_AORTA_VOXELS = 4
_CENTRE_TRIES = 24
#: The array order the sites are found in (nibabel orientation of R, A, S along axes 0, 1, 2).
_RAS = axcodes2ornt("RAS")


class CaseAnatomy:
    """What the sites are found from: the case's labels, body outline and heights, in world mm."""

    def __init__(self, case: Case, height_cm: float | None) -> None:
        aff = case.affine
        off_diagonal = np.abs(aff[:3, :3] - np.diag(np.diag(aff[:3, :3]))).max()
        if off_diagonal > 1e-3 * min(case.spacing) or np.any(np.diag(aff)[:3] <= 0):
            raise ValueError("add_lesions needs a grid aligned with the RAS axes (after reorientation); "
                             f"this one is oblique: affine {np.round(aff[:3, :3], 4).tolist()}")
        self.organs = np.asarray(case.organs)
        self.grid = SimpleNamespace(shape=self.organs.shape, spacing=case.spacing, affine=aff)
        self.vol = Vol(self.grid)
        self.body = self.organs > 0
        zs = np.flatnonzero(self.body.any(axis=(0, 1)))
        if zs.size == 0:
            raise ValueError("add_lesions: the case has no body (its organ map is all background)")
        # The vertex is the body's top within 30 mm of its centre line (raised arms beside the head reach higher).
        cx = float(np.average(np.arange(self.body.shape[0]), weights=self.body.sum(axis=(1, 2))))
        r = int(np.ceil(30.0 / case.spacing[0]))
        self.cx = int(round(cx))
        mid = self.body[max(self.cx - r, 0): self.cx + r + 1]
        top = np.flatnonzero(mid.any(axis=(0, 1)))
        self.z_vertex = float(self.vol.z[top[-1] if top.size else zs[-1]])
        # Node chains hang from the vertex: where the body reaches the top of the field of view, the
        # vertex is cut off and they cannot be found.
        self.has_vertex = not mid[:, :, -1].any()
        # Without a known height, the body's extent stands in (the phantom's field of view ends at the thighs).
        self.height_mm = 10.0 * height_cm if height_cm else (self.z_vertex - float(self.vol.z[zs[0]])) / SCAN_END_S
        self._flat: dict[int, np.ndarray] = {}
        self._depth: np.ndarray | None = None

    def z_index(self, s: float) -> int:
        """The slice at ``s`` x height below the vertex."""
        return int(np.clip(np.rint((self.z_vertex - s * self.height_mm - self.vol.z[0]) / self.grid.spacing[2]),
                           0, self.organs.shape[2] - 1))

    def chain_point(self, chain: str, s: float, lateral: float, ap: float, side: int) -> np.ndarray | None:
        """World position of a node-chain point; ``None`` where the body is missing there or the
        field of view cuts off the vertex."""
        if not self.has_vertex:
            return None
        k = self.z_index(s)
        if chain == "para_aortic":
            ix, iy = np.nonzero(self.organs[:, :, k] == _AORTA)
            if ix.size >= _MIN_AORTA_VOXELS:
                return np.array([self.vol.x[ix].mean() + _PARA_AORTIC_MM, self.vol.y[iy].mean(), self.vol.z[k]])
        part, n = ndimage.label(self.body[:, :, k])
        centre = np.unique(part[self.cx][part[self.cx] > 0])
        # Raised arms beside the head and neck are parts of their own: the chains follow the part on the centre line.
        ix, iy = np.nonzero(np.isin(part, centre) if n > 1 and centre.size else part > 0)
        if ix.size == 0:
            return None
        x0, x1 = self.vol.x[ix.min()], self.vol.x[ix.max()]
        y0, y1 = self.vol.y[iy.min()], self.vol.y[iy.max()]
        return np.array([(x0 + x1) / 2 + side * lateral * (x1 - x0) / 2, y0 + ap * (y1 - y0), self.vol.z[k]])

    def chain_points(self, site: str) -> np.ndarray | None:
        """The points (world mm, one row each) of a ``node:<chain>[_R|_L]`` site's chain
        (:data:`~synthaug.phantom.node_chains.NODE_CHAINS`); ``None`` where :meth:`chain_point` finds none."""
        chain, side = split_node_site(site)
        c = NODE_CHAINS[chain]
        pts = [self.chain_point(chain, s, lateral, ap, side) for s, (lateral, ap) in zip(c.levels, c.across)]
        return None if any(p is None for p in pts) else np.array(pts)

    def nearest_on_chain(self, site: str, centre) -> np.ndarray | None:
        """The point of a node site's chain nearest to ``centre`` (world mm)."""
        pts = self.chain_points(site)
        if pts is None:
            return None
        c = np.asarray(centre, dtype=float)
        nearest = [a + np.clip(np.dot(c - a, b - a) / max(float(np.dot(b - a, b - a)), 1e-9), 0, 1) * (b - a)
                   for a, b in zip(pts[:-1], pts[1:])]  # on each segment
        return min(nearest, key=lambda p: float(np.linalg.norm(c - p)))

    def voxels(self, label: int) -> np.ndarray:
        if label not in self._flat:
            self._flat[label] = np.flatnonzero(self.organs == label)
        return self._flat[label]

    def depth_mm(self) -> np.ndarray:
        """Distance (mm) of each voxel inside the body to the nearest voxel outside it."""
        if self._depth is None:
            self._depth = ndimage.distance_transform_edt(self.body, sampling=self.grid.spacing).astype(np.float32)
        return self._depth

    def index(self, world: np.ndarray) -> tuple[int, int, int] | None:
        origin = np.array([self.vol.x[0], self.vol.y[0], self.vol.z[0]])
        ijk = np.rint((world - origin) / np.array(self.grid.spacing)).astype(int)
        if np.any(ijk < 0) or np.any(ijk >= np.array(self.organs.shape)):
            return None
        return tuple(int(i) for i in ijk)

    def world(self, ijk) -> np.ndarray:
        return np.array([self.vol.x[ijk[0]], self.vol.y[ijk[1]], self.vol.z[ijk[2]]])


def _accepts(body: CaseAnatomy, kind: str, ijk) -> bool:
    """Whether a lesion of ``kind`` may be centred at voxel ``ijk``."""
    if body.organs[ijk] not in _ALLOWED[kind]:
        return False
    if kind == "subcutaneous":
        return bool(body.depth_mm()[ijk] <= _SUBCUTANEOUS_MM)
    if kind in ("node", "muscle"):  # deeper than the subcutaneous fat
        return bool(body.depth_mm()[ijk] > _SUBCUTANEOUS_MM / 2)
    return True


def _centre(body: CaseAnatomy, site: str, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, tuple] | None:
    """A lesion centre (world mm, voxel) for ``site``, or ``None`` if no try found an allowed voxel."""
    pts = body.chain_points(site) if site.startswith("node:") else None  # the same on every try
    for _ in range(_CENTRE_TRIES):
        if site.startswith("node:"):
            u = rng.random()  # drawn before giving up, so that the lesions after this one draw as before
            if pts is None:
                return None
            u *= len(pts) - 1
            i = min(int(u), len(pts) - 2)
            c = pts[i] + (u - i) * (pts[i + 1] - pts[i]) + rng.normal(0, 8.0, 3)
        else:
            idx = body.voxels(_CENTRE_LABEL[kind])
            if idx.size == 0:
                return None
            picks = rng.integers(idx.size, size=3)
            pick = idx[picks[0]]
            if site == "lung_primary" and rng.random() < 0.6:  # upper-lobe predominance
                zs = np.unravel_index(idx[picks], body.organs.shape)[2]
                pick = idx[picks[int(np.argmax(zs))]]
            c = body.world(np.unravel_index(pick, body.organs.shape)) + rng.uniform(-0.5, 0.5, 3) * body.grid.spacing
        ijk = body.index(c)
        if ijk is not None and _accepts(body, kind, ijk):
            return c, ijk
    return None


def _box(sl, shape, pad: int) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(sl, shape))


#: Site names a lesion plan may use (besides ``node:<chain>``, ``node:<chain>_R`` / ``_L``).
SITES = ("subcutaneous", "muscle", "lung", "lung_primary", "liver", "spleen", "bone")


def check_plan(plan) -> list[tuple[str, float, float]]:
    """``plan`` as a list of ``(site, diameter_mm, suvmax)``, checked (``ValueError`` naming the entry)."""
    out = []
    for i, entry in enumerate(plan):
        try:
            site, diam, suv = entry
            diam, suv = float(diam), float(suv)
        except (TypeError, ValueError):
            raise ValueError(f"plan[{i}]: expected (site, diameter_mm, suvmax), got {entry!r}") from None
        if site not in SITES:
            try:
                split_node_site(site)
            except ValueError:
                raise ValueError(f"plan[{i}]: site {site!r} is not known; use one of {SITES} or node:<chain> "
                                 f"with a chain of {sorted(NODE_CHAINS)}") from None
        if not (0.0 < diam <= 300.0 and 0.0 < suv <= 100.0):
            raise ValueError(f"plan[{i}]: diameter_mm must be in (0, 300] and suvmax in (0, 100], got {diam}, {suv}")
        out.append((str(site), diam, suv))
    return out


def _kind(site: str) -> str:
    kind = site.split(":")[0]
    return "lung" if kind == "lung_primary" else kind


def _paint_prior(body: CaseAnatomy, plan, arrays: SimpleNamespace, weight: float, rng: np.random.Generator,
                 fitted: bool, imaged: bool) -> list[dict]:
    """The lesion prior's painting (the phantom's rules): uptake (the fitted profile, or the phantom's
    when not ``fitted``), with Poisson-like noise blurred by the phantom's PSF when the PET is ``imaged``
    (as the bare activity otherwise), lesion CT with texture and quantum noise. ``arrays`` (ct, pet,
    organs, lesions) change in place."""
    ct, pet, organs, lesions = arrays.ct, arrays.pet, arrays.organs, arrays.lesions
    sig = psf_sigma_voxels(body.grid.spacing)
    pad = int(np.ceil(3 * max(sig))) + 1
    noise_pet, noise_ct = pet_noise_factor(weight, body.grid.spacing), ct_noise_sd(weight)
    info: list[dict] = []
    for site, diam, suvmax in plan:
        kind = _kind(site)
        found = _centre(body, site, kind, rng)
        if found is None:
            continue
        centre, ijk = found
        sl, r2 = lesion_shape(body.vol, rng, centre, diam)
        if sl is None:
            continue
        m = (r2 < 1) & np.isin(body.organs[sl], _ALLOWED[kind])
        local = tuple(i - s.start for i, s in zip(ijk, sl))
        if not m.any() and all(0 <= q < n for q, n in zip(local, m.shape)):
            m[local] = True  # sub-voxel lesion: the voxel that holds its centre
        if not m.any():
            continue
        # PET: uptake above the local background with its Poisson-like noise, then the PSF.
        box = _box(sl, organs.shape, pad)
        inner = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sl, box))
        added = np.zeros(tuple(b.stop - b.start for b in box), np.float32)
        background = float(pet[sl][m].mean())
        if fitted:
            uptake = lesion_contrast(background, suvmax) * _FITTED.uptake_profile(r2, diam, body.grid.spacing, rng)[0][m]
        else:
            uptake = lesion_uptake(r2[m], background, suvmax, diam, rng)
        if imaged:
            added[inner][m] = uptake + noise_pet * np.sqrt(uptake) * rng.standard_normal(uptake.shape)
            added = ndimage.gaussian_filter(added, sig, truncate=3.0, mode="constant")
        else:
            added[inner][m] = uptake
        pet[box] = np.maximum(pet[box] + added, 0.0)
        # CT: the lesion's tissue (sclerotic bone metastases: cortical bone) with texture and noise.
        hu, hu_sd, _ = CT_HU[lesion_tissue(kind, rng)]
        ct[sl][m] = np.clip(hu + hu_sd * rng.standard_normal(int(m.sum())) + noise_ct * rng.standard_normal(int(m.sum())),
                            -1024.0, 3071.0)
        if kind in ("node", "subcutaneous", "muscle"):
            o = organs[sl]
            o[m & (o == _FAT)] = _SOFT
        lesions[sl][m] = 1
        info.append({"site": site, "centre_mm": [round(float(q), 1) for q in centre], "diameter_mm": round(diam, 1),
                     "suvmax": round(suvmax, 2), "voxels": int(m.sum())})
    return info


def _place_real(body: CaseAnatomy, site: str, diam: float, arrays: SimpleNamespace, appearance: LesionAppearance,
                reach: int, rng: np.random.Generator):
    """Where a lesion goes in a real scan: ``(centre, slices of its box, mask, r2)`` over a box that holds the
    lesion and the PSF's reach, or ``None`` when no try finds a place inside the body, on its site's labels,
    out of air, clear of the image border and of the lesions already there (the case's and the new ones:
    the PSF's reach around each lesion holds no other)."""
    kind, shape = _kind(site), body.organs.shape
    for _ in range(appearance.tries):
        found = _centre(body, site, kind, rng)
        if found is None:
            return None
        centre, ijk = found
        sl, r2 = lesion_shape(body.vol, rng, centre, diam)
        if sl is None:
            continue
        labels = body.organs[sl]
        m = (r2 < 1) & np.isin(labels, _ALLOWED[kind]) & appearance.not_air(arrays.ct[sl], labels == _LUNGS)
        local = tuple(i - s.start for i, s in zip(ijk, sl))
        if not m.any() and all(0 <= q < n for q, n in zip(local, m.shape)) and \
                appearance.not_air(arrays.ct[ijk], body.organs[ijk] == _LUNGS):
            m[local] = True  # sub-voxel lesion: the voxel that holds its centre
            r2 = r2.copy()
            r2[local] = 0.0
        if not m.any():
            continue
        hit = ndimage.find_objects(m.astype(np.uint8))[0]
        lo = [s.start + h.start - reach for s, h in zip(sl, hit)]
        hi = [s.start + h.stop + reach for s, h in zip(sl, hit)]
        if min(lo) < 0 or any(b > n for b, n in zip(hi, shape)):
            continue  # the lesion or its blur would cross the image border
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        if arrays.existing[box].any():
            continue  # keep clear of the lesions the case already has
        size = tuple(b - a for a, b in zip(lo, hi))
        full_m, full_r2 = np.zeros(size, bool), np.full(size, 9.0, np.float32)
        src = tuple(slice(max(b.start - s.start, 0), min(b.stop, s.stop) - s.start) for s, b in zip(sl, box))
        dst = tuple(slice(max(s.start - b.start, 0), min(b.stop, s.stop) - b.start) for s, b in zip(sl, box))
        full_m[dst], full_r2[dst] = m[src], r2[src]
        return centre, box, full_m, full_r2
    return None


def _paint_real(body: CaseAnatomy, plan, arrays: SimpleNamespace, weight: float, appearance: LesionAppearance,
                rng: np.random.Generator) -> list[dict]:
    """Lesion insertion into a real scan (:class:`~synthaug.phantom.lesion_paint.LesionAppearance`);
    ``arrays`` (ct, pet, organs, lesions) change in place."""
    spacing = body.grid.spacing
    reach = psf_reach_voxels(appearance, spacing)
    info: list[dict] = []
    for site, diam, suvmax in plan:
        kind = _kind(site)
        placed = _place_real(body, site, diam, arrays, appearance, reach, rng)
        if placed is None:
            continue
        centre, box, m, r2 = placed
        record = paint_uptake(arrays.pet[box], m, r2, suvmax, diam, appearance, spacing, weight, rng)
        tissue = lesion_tissue(kind, rng)
        hu = lesion_ct(arrays.ct[box], m, tissue, kind, body.organs[box], _LIVER, appearance, spacing, rng)
        if kind in ("node", "subcutaneous", "muscle"):
            o = arrays.organs[box]
            o[m & (o == _FAT)] = _SOFT
        arrays.lesions[box][m] = 1
        arrays.existing[box] |= m  # the next lesions keep clear of this one too
        info.append({"site": site, "centre_mm": [round(float(q), 1) for q in centre], "diameter_mm": round(diam, 1),
                     "suvmax": round(suvmax, 2), "voxels": int(m.sum()), "tissue": tissue, "ct_hu": round(hu, 1),
                     **record})
    return info


def add_lesions(case: Case, *, seed: int, diagnosis: str | None = None, rng: np.random.Generator | None = None,
                plan: Sequence[tuple[str, float, float]] | None = None,
                appearance: LesionAppearance | None = None, prior_uptake: str = "fitted",
                activity: bool = False) -> Case:
    """``case`` with lesions from the diagnosis-conditioned lesion model added (a new case; its
    arrays are copies).

    Args:
        case: a case with organ labels (synthaug organ map), CT in HU and PET in SUV.
        seed: every draw (diagnosis if unknown, sites, sizes, uptake, noise) comes from it.
        diagnosis: one of AutoPET's diagnoses; default: the case's demographics' diagnosis, and
            if that is unknown, one drawn from the AutoPET mix. ``NEGATIVE`` adds none.
        rng: draw from this generator instead of one seeded by ``seed`` (with
            :func:`synthaug.phantom.body.lesion_rng`, the plan a phantom of that seed has).
        plan: the lesions to add, ``(site, diameter_mm, suvmax)`` each (sites: :data:`SITES` and
            ``node:<chain>``), instead of drawing them from the diagnosis.
        appearance: ``None`` paints as the phantom does (the lesion prior of generated cases); a
            :class:`~synthaug.phantom.lesion_paint.LesionAppearance` inserts lesions into a real scan
            on its own terms (local background, heterogeneity and necrosis, the scanner's PSF and
            noise, CT per site), never in air, across the image border or over existing lesions.
        prior_uptake: the uptake profile of the lesion prior (``appearance=None``): ``"fitted"`` (the
            default appearance's, fitted to real tumours) or ``"phantom"`` (the phantom's rule, as the
            prior painted before). With an ``appearance`` the appearance's own profile is used.
        activity: the case's PET is activity that a scanner model images next (the cascade with its
            scanner on): the prior paints the lesions' bare activity, without the phantom's PSF and
            noise, so that they are imaged once, as the rest of the case is. Ignored with an ``appearance``.

    Returns:
        The case with the lesions in ``lesions`` (uint8, added to any it had), their uptake in
        ``pet``, their tissue in ``ct``, node lesions in fat relabelled soft tissue in ``organs``
        (as in the phantom), and ``meta["lesion_prior"]``: the diagnosis and one record per
        lesion (site, centre, diameter, planned SUVmax, voxels). A planned lesion for which no
        site is found (say, a liver lesion in a case without a liver) is left out and counted
        in ``meta["lesion_prior"]["not_placed"]``.
    """
    if case.organs is None or case.pet is None:
        raise ValueError("case: add_lesions needs a case with organ labels and PET "
                         f"(organs {'missing' if case.organs is None else 'given'}, "
                         f"pet {'missing' if case.pet is None else 'given'})")
    check_seed(seed)
    if prior_uptake not in PRIOR_UPTAKES:
        raise ValueError(f"prior_uptake={prior_uptake!r}; choose one of {PRIOR_UPTAKES}")
    if appearance is not None and not isinstance(appearance, LesionAppearance):
        raise ValueError(f"appearance: expected a LesionAppearance or None, got {type(appearance).__name__}")
    demo = case.demographics
    diagnosis = diagnosis if diagnosis is not None else (demo.diagnosis if demo is not None else None)
    rng = np.random.default_rng([int(seed), 7]) if rng is None else rng
    drawn = diagnosis is None and plan is None
    if drawn:
        diagnosis = draw_diagnosis(rng)
    if diagnosis is not None and diagnosis not in DIAGNOSES:
        raise ValueError(f"diagnosis={diagnosis!r} is not allowed; use one of {DIAGNOSES}")
    plan = lesion_plan(diagnosis, rng) if plan is None else check_plan(plan)
    weight = demo.weight_kg if demo is not None and demo.weight_kg else 75.0
    original, ornt = case, io_orientation(case.affine)
    case = _reoriented(case, ornt, case.affine @ inv_ornt_aff(ornt, case.shape))  # arrays along R, A, S
    existing = np.zeros(case.shape, bool) if case.lesions is None else case.lesions > 0
    arrays = SimpleNamespace(ct=case.ct.copy(), pet=case.pet.copy(), organs=case.organs.copy(),
                             lesions=existing.astype(np.uint8), existing=existing.copy())
    info: list[dict] = []
    if plan:
        body = CaseAnatomy(case, demo.height_cm if demo is not None else None)
        info = (_paint_prior(body, plan, arrays, weight, rng, prior_uptake == "fitted", not activity)
                if appearance is None
                else _paint_real(body, plan, arrays, weight, appearance, rng))
    meta = dict(case.meta)
    meta["lesion_prior"] = {"diagnosis": diagnosis, "diagnosis_drawn": drawn, "seed": int(seed), "lesions": info,
                            "not_placed": len(plan) - len(info)}
    if appearance is not None:
        meta["lesion_prior"]["scanner"] = appearance.scanner.name
    else:
        meta["lesion_prior"].update(uptake=prior_uptake, imaged=not activity)
    out = replace(case, ct=arrays.ct.astype(np.float32, copy=False), pet=arrays.pet.astype(np.float32, copy=False),
                  organs=arrays.organs, lesions=arrays.lesions, meta=meta)
    return _reoriented(out, ornt_transform(_RAS, ornt), original.affine)  # back to the case's own array order


def _reoriented(case: Case, ornt: np.ndarray, affine: np.ndarray) -> Case:
    """``case`` with its arrays flipped and transposed by the nibabel orientation ``ornt`` and
    ``affine`` as theirs (no copy when ``ornt`` keeps the array order)."""
    if np.array_equal(ornt, _RAS):
        return case

    def turn(a):
        return None if a is None else np.ascontiguousarray(apply_orientation(a, ornt))

    return replace(case, ct=turn(case.ct), pet=turn(case.pet), organs=turn(case.organs), lesions=turn(case.lesions),
                   affine=affine)
