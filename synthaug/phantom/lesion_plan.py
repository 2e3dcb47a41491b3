"""The phantom's lesions: the diagnosis-conditioned lesion model (:func:`lesion_plan`: how many
lesions, where, how large, how avid; :data:`~synthaug.phantom.tables.LESION_MODEL`), shared with the
lesion prior (:mod:`synthaug.phantom.lesions`), and their placement in a phantom on its own landmarks
(:func:`node_chains`, :func:`place_lesions`), each lesion's shape and tissue from
:mod:`synthaug.phantom.lesion_paint`.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.demographics import DIAGNOSIS_MIX
from ..core.labels import ORGAN_IDS
from .bodyplan import BodyPlan, Placement, SpineLandmarks
from .lesion_paint import lesion_shape, lesion_tissue
from .node_chains import NODE_CHAINS
from .organs import AortaLandmarks
from .shapes import Vol
from .tables import LESION_DIAMETER_MM, LESION_MODEL, LESION_SUVMAX, TISSUE_IDS, TISSUES
from .torso import TorsoLandmarks

_ALLOWED = {
    "node": ("fat", "soft_tissue", "muscle", "bowel", "lesion"),
    "subcutaneous": ("fat", "muscle", "lesion"),
    "muscle": ("muscle", "fat", "lesion"),
    "lung": ("lung", "soft_tissue", "lesion"),
    "liver": ("liver", "lesion"),
    "spleen": ("spleen", "lesion"),
    "bone": ("trabecular_bone", "cortical_bone", "yellow_marrow", "lesion"),
}


def node_chains(place: Placement, body: BodyPlan, torso: TorsoLandmarks, spine: SpineLandmarks,
                aorta: AortaLandmarks) -> dict[str, list[tuple[float, float, float]]]:
    """Lymph-node chains as polylines in world mm: each point at its level of
    :data:`~synthaug.phantom.node_chains.NODE_CHAINS`, placed across the slice on the phantom's landmarks."""
    b = body
    H = b.H
    zw = place.zw
    k = b.k

    def ysp(s_):
        return float(spine.y(s_))

    def z(chain: str) -> list[float]:
        return [zw(s * H) for s in NODE_CHAINS[chain].levels]

    a20 = float(b.cavity(np.array([0.21]))[0][0])
    ch: dict[str, list[tuple[float, float, float]]] = {}
    zc, zs, za, zh, zi, zg = (z(c) for c in ("cervical", "supraclavicular", "axillary", "hilar", "iliac", "inguinal"))
    for name, sign in (("R", 1), ("L", -1)):
        ch[f"cervical_{name}"] = [(sign * 32 * k, -5.0, zw(b.t_chin + 5)), (sign * 40 * k, -15.0, zc[1])]
        ch[f"supraclavicular_{name}"] = [(sign * 40 * k, 0.0, zs[0]), (sign * 70 * k, -5.0, zs[1])]
        ch[f"axillary_{name}"] = [(sign * (a20 + 12), -10.0, za[0]), (sign * (a20 + 8), 5.0, za[1])]
        ch[f"hilar_{name}"] = [(sign * 42 * k, ysp(0.24) + 40, zh[0]), (sign * 48 * k, ysp(0.26) + 45, zh[1])]
        ch[f"iliac_{name}"] = [(sign * 15.0, ysp(0.41) + 25, zi[0]), (sign * 70 * k, ysp(0.45) + 40, zi[1])]
        ch[f"inguinal_{name}"] = [(sign * (torso.x_hip - 5), -12 + 75 * k, zg[0]), (sign * (torso.x_hip - 15), -12 + 70 * k, zg[1])]
    zm = z("mediastinal")
    ch["mediastinal"] = [(8.0, ysp(0.19) + 35, zm[0]), (5.0, ysp(0.23) + 35, zm[1]), (0.0, ysp(0.25) + 30, zm[2])]
    zp = z("para_aortic")
    ch["para_aortic"] = [(float(aorta.x(0.34)) + 22, float(aorta.y(0.34)), zp[0]),
                         (float(aorta.x(0.40)) + 22, float(aorta.y(0.40)), zp[1])]
    zn = z("mesenteric")
    ch["mesenteric"] = [(-30.0, 20.0 * k, zn[0]), (30.0, 30.0 * k, zn[1])]
    return ch


def lesion_plan(diagnosis: str, rng: np.random.Generator) -> list[tuple[str, float, float]]:
    """(site, diameter_mm, suvmax) for each lesion of a case: the diagnosis-conditioned lesion
    model (:data:`LESION_MODEL`) shared by the phantom and :mod:`synthaug.phantom.lesions`. Sites:
    ``node:<chain>`` (:func:`node_chains`), ``subcutaneous``, ``muscle``, ``lung``,
    ``lung_primary``, ``liver``, ``spleen``, ``bone``."""
    if diagnosis == "NEGATIVE":
        return []
    mdl = LESION_MODEL[diagnosis]
    plan: list[tuple[str, float, float]] = []

    def size(median: float, sdlog: float = 0.45) -> float:
        return float(np.clip(np.exp(rng.normal(math.log(median), sdlog)), *LESION_DIAMETER_MM))

    def suv(median: float, sdlog: float = 0.45) -> float:
        return float(np.clip(np.exp(rng.normal(math.log(median), sdlog)), *LESION_SUVMAX))

    if diagnosis == "LYMPHOMA":
        n = 1 + int(rng.negative_binomial(2, 2.0 / (2.0 + mdl["mean_count"] - 1)))
        chains = ["cervical_R", "cervical_L", "supraclavicular_R", "supraclavicular_L", "axillary_R", "axillary_L",
                  "mediastinal", "hilar_R", "hilar_L", "para_aortic", "mesenteric", "iliac_R", "iliac_L",
                  "inguinal_R", "inguinal_L"]
        w = np.array([2, 2, 1, 1, 1.5, 1.5, 3, 1, 1, 2, 1, 1, 1, 1, 1.0])
        k_ch = 1 + int(rng.binomial(4, 0.4))
        involved = list(rng.choice(len(chains), size=k_ch, replace=False, p=w / w.sum()))
        extranodal = rng.random() < 0.35
        for _ in range(min(n, 35)):
            r = rng.random()
            if extranodal and r < 0.2:
                site = ["spleen", "spleen", "bone", "liver", "lung"][int(rng.integers(5))]
            else:
                site = "node:" + chains[involved[int(rng.integers(len(involved)))]]
            plan.append((site, size(mdl["median_diameter_mm"]), suv(mdl["median_suvmax"])))
    elif diagnosis == "MELANOMA":
        n = 1 + int(rng.negative_binomial(2, 2.0 / (2.0 + mdl["mean_count"] - 1)))
        sites = ["subcutaneous", "node:axillary_R", "node:axillary_L", "node:inguinal_R", "node:inguinal_L",
                 "node:cervical_R", "node:cervical_L", "node:iliac_R", "lung", "liver", "bone", "muscle", "spleen"]
        w = np.array([30, 6, 6, 6, 6, 3, 3, 2, 15, 10, 8, 4, 3.0])
        for _ in range(min(n, 30)):
            site = sites[int(rng.choice(len(sites), p=w / w.sum()))]
            plan.append((site, size(mdl["median_diameter_mm"]), suv(mdl["median_suvmax"])))
    elif diagnosis == "LUNG_CANCER":
        plan.append(("lung_primary", size(30.0, 0.35), suv(11.0, 0.4)))
        for _ in range(int(rng.poisson(2.0))):
            ch = ["mediastinal", "mediastinal", "hilar_R", "hilar_L", "supraclavicular_R", "supraclavicular_L"]
            plan.append(("node:" + ch[int(rng.integers(len(ch)))], size(15.0), suv(mdl["median_suvmax"])))
        if rng.random() < 0.35:
            sites = ["bone", "liver", "lung", "node:para_aortic"]
            w = np.array([0.4, 0.25, 0.25, 0.1])
            for _ in range(1 + int(rng.poisson(1.5))):
                plan.append((sites[int(rng.choice(4, p=w))], size(14.0), suv(7.0)))
    return plan


def draw_diagnosis(rng: np.random.Generator) -> str:
    """A diagnosis drawn from AutoPET's mix (:data:`synthaug.core.demographics.DIAGNOSIS_MIX`), for a
    case whose diagnosis is unknown."""
    names = list(DIAGNOSIS_MIX)
    p = np.array([DIAGNOSIS_MIX[k] for k in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def lesion_contrast(background: float, suvmax: float) -> float:
    """A lesion's peak uptake above its background (SUV): ``suvmax - background``, at least half ``suvmax``."""
    return max(suvmax - background, 0.5 * suvmax)


def lesion_uptake(r2: np.ndarray, background: float, suvmax: float, diameter_mm: float,
                  rng: np.random.Generator) -> np.ndarray:
    """A lesion's uptake above its background (SUV, before the PSF) at normalised radii^2 ``r2``
    (< 1 inside), the phantom's rule: it peaks at ``suvmax`` in the centre and falls by 40 % to the
    rim; lesions of 30 mm and more have a necrotic core in 30 % of cases."""
    contrast = lesion_contrast(background, suvmax)
    prof = 1.0 - 0.4 * np.clip(r2, 0, 1)
    if diameter_mm >= 30 and rng.random() < 0.3:  # necrotic core
        prof = np.where(r2 < 0.2, 0.3, prof)
    return contrast * prof


def place_lesions(vol: Vol, plan: list[tuple[str, float, float]], chains: dict[str, list[tuple[float, float, float]]],
                  sat_mask: np.ndarray, pet: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """Rasterise the planned lesions: nodes on ``chains`` (:func:`node_chains`), subcutaneous ones in
    the subcutaneous fat ``sat_mask``, the others in their organ's tissue; write their uptake into
    ``pet`` and their tissue into ``vol``; return the mask and what was placed."""
    v = vol
    mask = np.zeros(v.shape, np.uint8)
    info: list[dict] = []
    if not plan:
        return mask, info
    cache: dict[str, np.ndarray] = {}

    def voxels(site: str) -> np.ndarray:
        if site not in cache:
            if site == "subcutaneous":
                sel = sat_mask & (v.tis == TISSUE_IDS["fat"])
            elif site == "bone":
                sel = v.tis == TISSUE_IDS["trabecular_bone"]
            else:
                sel = v.tis == TISSUE_IDS[site]
            cache[site] = np.flatnonzero(sel)
        return cache[site]

    world = lambda idx: np.array([v.x[idx[0]], v.y[idx[1]], v.z[idx[2]]])  # noqa: E731
    for site, diam, suvmax in plan:
        kind = site.split(":")[0]
        kind = "lung" if kind == "lung_primary" else kind
        centre = None
        for _ in range(12):
            if site.startswith("node:"):
                pts = np.array(chains[site[5:]])
                u = rng.random() * (len(pts) - 1)
                i0 = min(int(u), len(pts) - 2)
                c = pts[i0] + (u - i0) * (pts[i0 + 1] - pts[i0]) + rng.normal(0, 6.0, 3)
            else:
                idx = voxels("lung" if kind == "lung" else kind)
                if idx.size == 0:
                    break
                picks = rng.integers(idx.size, size=3)
                if site == "lung_primary":  # upper-lobe predominance
                    zs = np.unravel_index(idx[picks], v.shape)[2]
                    pick = idx[picks[int(np.argmax(zs))]] if rng.random() < 0.6 else idx[picks[0]]
                else:
                    pick = idx[picks[0]]
                c = world(np.unravel_index(pick, v.shape)) + rng.uniform(-0.5, 0.5, 3) * np.array(v.spacing)
            ijk = np.rint((c - np.array([v.x[0], v.y[0], v.z[0]])) / np.array(v.spacing)).astype(int)
            if np.any(ijk < 0) or np.any(ijk >= np.array(v.shape)):
                continue
            if TISSUES[v.tis[tuple(ijk)]] in _ALLOWED[kind]:
                centre = c
                break
        if centre is None:
            continue
        sl, r2 = lesion_shape(v, rng, centre, diam)
        ijk = tuple(int(q) for q in ijk)
        if sl is None:
            continue
        allowed = np.isin(v.tis[sl], [TISSUE_IDS[t] for t in _ALLOWED[kind]])
        m = (r2 < 1) & allowed
        if not m.any():  # sub-voxel lesion: keep the voxel that holds its centre
            local = tuple(i - s.start for i, s in zip(ijk, sl))
            if all(0 <= q < r2.shape[a] for a, q in enumerate(local)):
                m[local] = True
                r2 = r2.copy()
                r2[local] = 0.0
        if not m.any():
            continue
        bg = pet[sl][m]
        pet[sl][m] = bg + lesion_uptake(r2[m], float(bg.mean()), suvmax, diam, rng)
        v.tis[sl][m] = TISSUE_IDS[lesion_tissue(kind, rng)]
        if kind in ("node", "subcutaneous", "muscle"):
            orgs = v.org[sl]
            orgs[m & (orgs == ORGAN_IDS["body_fat"])] = ORGAN_IDS["soft_tissue"]
        mask[sl][m] = 1
        info.append({"site": site, "centre_mm": [round(float(q), 1) for q in centre], "diameter_mm": round(diam, 1),
                     "suvmax": round(suvmax, 2), "voxels": int(m.sum())})
    return mask, info
