"""The cascade: SR conditioning geometry, patch-wise denoising without seams, and the
CascadedSampler's cases (grid, labels, provenance, determinism)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_GLOBAL_GRID, TINY_OUTPUT_GRID, randomised_tiny_weights, tiny_case, tiny_stage_config

from synthaug import cli
from synthaug.core.demographics import Demographics
from synthaug.core.labels import NUM_ORGAN_CLASSES
from synthaug.model.channels import (
    CT_CHANNEL,
    LESION_CHANNEL,
    NUM_CHANNELS,
    PET_CHANNEL,
    channel_to_ct,
    channel_to_pet,
    ct_to_channel,
    encode,
    pet_to_channel,
)
from synthaug.model.nets import NetConfig
from synthaug.model.preprocess import to_grid
from synthaug.model.stages import (
    COORD_CHANNELS,
    PatchwiseDenoiser,
    StageConfig,
    build_stage_model,
    check_patching,
    patch_starts,
    pv_correction,
    region_labels,
    save_stage,
    sr_concat,
    upsample,
    upsample_region,
)
from synthaug.sampling.cascade import CascadedSampler

DEMO = Demographics(age=50, sex="F", height_cm=170, weight_kg=70, diagnosis="NEGATIVE")
OUT = TINY_OUTPUT_GRID.shape


@pytest.fixture(scope="module")
def lowres() -> torch.Tensor:
    """A realistic stage-1 output: the tiny phantom on the global grid, encoded, (1, C, gx, gy, gz)."""
    case = to_grid(tiny_case(DEMO, 0), TINY_GLOBAL_GRID)
    return torch.from_numpy(encode(case.ct, case.pet, case.organs, case.lesions))[None]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A weights folder with randomly initialised tiny global and SR stages."""
    return randomised_tiny_weights(tmp_path_factory.mktemp("weights"))


# --- SR conditioning geometry -----------------------------------------------------------------------


@pytest.mark.parametrize(("low_shape", "out_shape"), [((4, 5, 6), (8, 10, 12)), ((5, 3, 7), (16, 8, 9))])
def test_upsample_region_equals_trilinear_interpolation(low_shape, out_shape):
    low = torch.randn(2, 3, *low_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    full = F.interpolate(low, size=out_shape, mode="trilinear", align_corners=False)
    region = tuple(slice(0, n) for n in out_shape)
    torch.testing.assert_close(upsample_region(low, out_shape, region), full, rtol=1e-10, atol=1e-10)
    sub = (slice(1, 5), slice(2, out_shape[1]), slice(0, 3))
    torch.testing.assert_close(upsample_region(low, out_shape, sub), full[(slice(None), slice(None), *sub)],
                               rtol=1e-10, atol=1e-10)


def _two_organs(shape=(4, 4, 8), split=2, values=((-0.2, -0.6), (0.3, 0.4))) -> torch.Tensor:
    """An encoded low-res volume: organ 7 (CT, PET = values[0]) below z = split, organ 4 (values[1]) above."""
    low = torch.full((1, NUM_CHANNELS, *shape), -1.0, dtype=torch.float64)
    for organ, zs, (ct, pet) in ((7, slice(0, split), values[0]), (4, slice(split, None), values[1])):
        low[0, 2 + organ, :, :, zs] = 1.0
        low[0, CT_CHANNEL, :, :, zs], low[0, PET_CHANNEL, :, :, zs] = ct, pet
    return low


def test_label_upsampling_keeps_each_organ_its_own_intensity():
    """Across an organ border trilinear interpolation blends both organs; label-guided
    upsampling gives every output voxel exactly its own organ's value, labels unchanged."""
    low, out_shape = _two_organs(), (8, 8, 16)
    tri, lab = upsample(low, out_shape, "trilinear"), upsample(low, out_shape, "label")
    labels = region_labels(tri)[0]
    assert set(labels.unique().tolist()) == {4, 7}
    torch.testing.assert_close(lab[:, 2:], tri[:, 2:])  # label channels stay trilinear
    for organ, (ct, pet) in ((7, (-0.2, -0.6)), (4, (0.3, 0.4))):
        inside = labels == organ
        torch.testing.assert_close(lab[0, CT_CHANNEL][inside], torch.full_like(lab[0, CT_CHANNEL][inside], ct))
        torch.testing.assert_close(lab[0, PET_CHANNEL][inside], torch.full_like(lab[0, PET_CHANNEL][inside], pet))
    border = (tri[0, PET_CHANNEL] > -0.59) & (tri[0, PET_CHANNEL] < 0.39)
    assert border.any()  # where trilinear blends, the guided values are one organ's or the other's
    assert set(lab[0, PET_CHANNEL][border].round(decimals=6).unique().tolist()) <= {-0.6, 0.4}


def test_label_upsampling_of_one_label_is_trilinear_and_regions_agree():
    """No-op case: with a single label the guided interpolation is the trilinear one; and a
    region (an SR patch) equals the same part of the whole-volume result."""
    g = torch.Generator().manual_seed(4)
    low = _two_organs()
    low[:, 2:] = -1.0
    low[:, 2 + 2] = 1.0  # organ 2 everywhere
    low[:, :2] = torch.randn(1, 2, 4, 4, 8, generator=g, dtype=torch.float64)
    out_shape = (8, 12, 16)
    torch.testing.assert_close(upsample(low, out_shape, "label"), upsample(low, out_shape, "trilinear"))
    varied = _two_organs() + 0.1 * torch.randn(1, NUM_CHANNELS, 4, 4, 8, generator=g, dtype=torch.float64)
    full = upsample(varied, out_shape, "label")
    sub = (slice(1, 7), slice(3, 12), slice(2, 11))
    torch.testing.assert_close(upsample_region(varied, out_shape, sub, "label"), full[(slice(None), slice(None), *sub)])


def test_label_upsampling_keeps_lesion_uptake_inside_the_lesion():
    low = _two_organs()
    low[0, LESION_CHANNEL, 1:3, 1:3, 5] = 1.0
    low[0, PET_CHANNEL, 1:3, 1:3, 5] = 1.2
    tri, lab = upsample(low, (8, 8, 16), "trilinear"), upsample(low, (8, 8, 16), "label")
    lesion = tri[0, LESION_CHANNEL] > 0
    assert lesion.any()
    torch.testing.assert_close(lab[0, PET_CHANNEL][lesion], torch.full_like(lab[0, PET_CHANNEL][lesion], 1.2))
    assert tri[0, PET_CHANNEL][lesion].min() < 1.0  # trilinear dilutes the lesion's uptake at its border
    outside = ~lesion & (region_labels(tri)[0] == 4)
    torch.testing.assert_close(lab[0, PET_CHANNEL][outside], torch.full_like(lab[0, PET_CHANNEL][outside], 0.4))


def test_label_upsampling_is_a_normalised_convolution_within_each_label():
    """The definition, label by label: trilinear interpolation of (mask, mask * intensity) of
    the low-res voxels of a label, divided, wherever the output voxel carries that label."""
    g = torch.Generator().manual_seed(5)
    low = torch.randn(2, NUM_CHANNELS, 5, 4, 7, generator=g, dtype=torch.float64)  # random labels and lesions
    out_shape, region = (15, 9, 20), (slice(2, 13), slice(0, 9), slice(5, 17))
    tri = upsample_region(low, out_shape, region, "trilinear")
    expected = tri.clone()
    for k in region_labels(tri).unique().tolist():
        inside = (region_labels(low) == k).double()[:, None]
        s = upsample_region(torch.cat([inside, inside * low[:, :2]], 1), out_shape, region, "trilinear")
        use = ((region_labels(tri) == k) & (s[:, 0] > 1e-3))[:, None]
        expected[:, :2] = torch.where(use, s[:, 1:] / s[:, :1].clamp_min(1e-3), expected[:, :2])
    got = upsample_region(low, out_shape, region, "label")
    torch.testing.assert_close(got, expected)
    assert (got - tri).abs().max() > 0.1  # random labels: many voxels differ from trilinear


def _mixed_blocks(out_shape=(24, 24, 32)):
    """A low-res volume whose output-grid truth is piecewise constant on the labels that
    upsampling decides: organ 3 (HU 60, SUV 6) inside organ 1 (HU -100, SUV 0.8), each
    low-res intensity the mean of that truth over the output voxels whose centres it holds.
    Returns (low, out_shape, truth HU, truth SUV)."""
    shape = (6, 6, 8)
    low = torch.full((1, NUM_CHANNELS, *shape), -1.0, dtype=torch.float64)
    low[0, 2 + 1] = 1.0
    low[0, 2 + 1, 2:4, 1:4, 3:6] = -1.0
    low[0, 2 + 3, 2:4, 1:4, 3:6] = 1.0
    labels = region_labels(upsample(low, out_shape, "trilinear"))
    hu = torch.where(labels == 3, 60.0, -100.0).double()
    suv = torch.where(labels == 3, 6.0, 0.8).double()
    cell = np.ix_(*[np.floor((np.arange(o) + 0.5) * g / o).astype(int) for o, g in zip(out_shape, shape)])
    flat = np.ravel_multi_index(tuple(np.broadcast_arrays(*cell)), shape).ravel()
    n = np.bincount(flat, minlength=np.prod(shape))
    for ch, v, to_channel in ((CT_CHANNEL, hu, ct_to_channel), (PET_CHANNEL, suv, pet_to_channel)):
        block_mean = np.bincount(flat, weights=v[0].numpy().ravel(), minlength=np.prod(shape)) / n
        low[0, ch] = to_channel(torch.from_numpy(block_mean.reshape(shape)))
    return low, out_shape, hu[0], suv[0]


def test_pvc_upsampling_restores_a_piecewise_constant_truth_that_label_upsampling_dilutes():
    """Block averaging mixes organ 3 with its surroundings at its border; the partial-volume
    correction finds both organs' own values and gives them back up to the border, where
    plain label-guided upsampling keeps the diluted border voxels."""
    low, out_shape, hu, suv = _mixed_blocks()
    pvc = upsample(low, out_shape, "label_pvc")
    torch.testing.assert_close(channel_to_ct(pvc[0, CT_CHANNEL]), hu, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(channel_to_pet(pvc[0, PET_CHANNEL]), suv, atol=1e-5, rtol=1e-6)
    plain = channel_to_pet(upsample(low, out_shape, "label")[0, PET_CHANNEL])
    organ = region_labels(pvc)[0] == 3
    assert float(plain[organ].mean()) < 5.5  # diluted by more than 8 %
    torch.testing.assert_close(pvc[:, 2:], upsample(low, out_shape, "trilinear")[:, 2:])  # labels untouched
    means = pv_correction(low, out_shape).means[0]
    assert float(channel_to_pet(means[1, 3])) == pytest.approx(6.0, abs=1e-5)
    assert float(channel_to_ct(means[0, 1])) == pytest.approx(-100.0, abs=1e-3)


def test_pvc_upsampling_of_a_region_equals_the_whole_volume_result():
    low, out_shape, _, _ = _mixed_blocks()
    low = low + 0.05 * torch.randn(low.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    full = upsample(low, out_shape, "label_pvc")
    sub = (slice(3, 17), slice(0, 24), slice(5, 30))
    expected = full[(slice(None), slice(None), *sub)]
    torch.testing.assert_close(upsample_region(low, out_shape, sub, "label_pvc"), expected)
    torch.testing.assert_close(upsample_region(low, out_shape, sub, "label_pvc", pv_correction(low, out_shape)), expected)


def test_pvc_upsampling_restores_the_truth_on_a_grid_that_is_no_whole_multiple():
    """Output blocks of unequal size (23/6 and 30/8 voxels per low-res voxel): the correction still finds
    both organs' own values, and the presets with such ratios can use it."""
    low, out_shape, hu, suv = _mixed_blocks((23, 24, 30))
    pvc = upsample(low, out_shape, "label_pvc")
    torch.testing.assert_close(channel_to_ct(pvc[0, CT_CHANNEL]), hu, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(channel_to_pet(pvc[0, PET_CHANNEL]), suv, atol=1e-5, rtol=1e-6)
    sub = (slice(3, 17), slice(0, 24), slice(5, 30))
    torch.testing.assert_close(upsample_region(low, out_shape, sub, "label_pvc"), pvc[(slice(None), slice(None), *sub)])


def test_pvc_upsampling_needs_an_output_grid_at_least_as_fine():
    low, _, _, _ = _mixed_blocks()
    with pytest.raises(ValueError, match=r"at least as fine as the low-res grid \(6, 6, 8\)"):
        upsample(low, (24, 24, 4), "label_pvc")


def test_upsample_mode_is_validated_and_recorded():
    with pytest.raises(ValueError, match="upsample mode 'cubic'"):
        upsample(torch.zeros(1, NUM_CHANNELS, 2, 2, 2), (4, 4, 4), "cubic")
    cfg = tiny_stage_config("sr")
    assert cfg.upsample == "label_pvc"  # new SR configs
    assert StageConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["upsample"], old["format_version"]
    assert StageConfig.from_dict(old).upsample == "trilinear"  # configs from before the field
    with pytest.raises(ValueError, match="upsample='nearest'"):
        tiny_stage_config("sr", upsample="nearest")
    assert tiny_stage_config("sr", upsample="label").upsample == "label"


def test_sr_concat_is_upsampled_channels_plus_coordinates():
    low = torch.randn(1, 2, 4, 4, 8, generator=torch.Generator().manual_seed(1))
    region = (slice(2, 6), slice(0, 8), slice(8, 12))
    c = sr_concat(low, (8, 8, 16), region)
    assert c.shape == (1, 2 + COORD_CHANNELS, 4, 8, 4)
    # Voxel-centre coordinates in [-1, 1] of the whole output grid: x = (2 i + 1) / n - 1.
    torch.testing.assert_close(c[0, 2, :, 0, 0], (2 * torch.arange(2, 6) + 1) / 8 - 1)
    torch.testing.assert_close(c[0, 4, 0, 0, :], (2 * torch.arange(8, 12) + 1) / 16 - 1)


# --- patch-wise denoising -------------------------------------------------------------------------


def test_patch_starts_cover_the_volume_with_the_overlap():
    for n, p, o in [(64, 32, 16), (32, 16, 4), (30, 16, 4), (16, 16, 4), (100, 24, 8)]:
        starts = patch_starts(n, p, o)
        assert starts[0] == 0 and starts[-1] + p == n
        assert all(b - a <= p - o for a, b in zip(starts, starts[1:]))  # at least `o` voxels shared


class Recorder:
    """A stand-in SR model: returns one of its inputs and counts calls."""

    def __init__(self, what: str) -> None:
        self.what, self.calls = what, 0

    def __call__(self, x, sigma, cond, concat):
        self.calls += 1
        assert x.shape[2:] == concat.shape[2:] and sigma.shape == (x.shape[0],) and cond.shape[0] == x.shape[0]
        if self.what == "input":
            return x
        if self.what == "coords":
            return concat[:, -COORD_CHANNELS:]
        return concat[:, : x.shape[1]]  # the upsampled low-res channels


@pytest.mark.parametrize(("patch", "overlap"), [((8, 8, 16), 4), ((12, 10, 14), 3), ((16, 16, 32), 0)])
def test_patchwise_identity_model_reproduces_the_input(patch, overlap):
    out_shape = (16, 16, 32)
    x = torch.randn(2, 3, *out_shape, generator=torch.Generator().manual_seed(2))
    model = Recorder("input")
    den = PatchwiseDenoiser(model, torch.zeros(2, 1, 4, 4, 8), out_shape, patch, overlap, batch_size=3)
    torch.testing.assert_close(den(x, torch.tensor([0.5, 0.5]), torch.zeros(2, 4)), x, rtol=1e-6, atol=1e-6)
    assert model.calls == -(-len(den.regions) // 3)


def test_patchwise_positions_are_global():
    """A model that returns its coordinate channels yields exactly the global coordinate field,
    and one that returns its upsampled channels yields the whole-volume trilinear upsampling."""
    out_shape = (16, 16, 32)
    axes = [(2 * torch.arange(n, dtype=torch.float64) + 1) / n - 1 for n in out_shape]
    expected = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None].float()
    den = PatchwiseDenoiser(Recorder("coords"), torch.zeros(1, 1, 4, 4, 8), out_shape, (8, 8, 16), 4)
    assert len(den.regions) == 3 * 3 * 3
    torch.testing.assert_close(den(torch.zeros(1, 3, *out_shape), torch.tensor([1.0]), torch.zeros(1, 4)), expected,
                               rtol=1e-6, atol=1e-6)
    low = torch.randn(2, 2, 4, 4, 8, generator=torch.Generator().manual_seed(3))  # two different cases
    den = PatchwiseDenoiser(Recorder("lowres"), low, out_shape, (8, 8, 16), 4, batch_size=5)
    torch.testing.assert_close(den(torch.zeros(2, 2, *out_shape), torch.tensor([1.0, 1.0]), torch.zeros(2, 4)),
                               F.interpolate(low, size=out_shape, mode="trilinear", align_corners=False),
                               rtol=1e-5, atol=1e-5)


def test_patchwise_label_upsampling_equals_the_whole_volume_one():
    """Patches see exactly their part of the whole-volume label-guided upsampling, so the
    SR stage's conditioning has no seams at patch borders."""
    out_shape = (16, 16, 32)
    low = _two_organs() + 0.1 * torch.randn(1, NUM_CHANNELS, 4, 4, 8, generator=torch.Generator().manual_seed(6),
                                            dtype=torch.float64)
    low = low.float()
    den = PatchwiseDenoiser(Recorder("lowres"), low, out_shape, (8, 8, 16), 4, batch_size=5, upsample="label")
    got = den(torch.zeros(1, NUM_CHANNELS, *out_shape), torch.tensor([1.0]), torch.zeros(1, 4))
    torch.testing.assert_close(got, upsample(low, out_shape, "label"), rtol=1e-5, atol=1e-5)
    assert (got - upsample(low, out_shape, "trilinear")).abs().max() > 0.1


@pytest.mark.parametrize("patch", [(8, 8, 16), (16, 16, 32)])
def test_upsampled_base_is_the_whole_volume_upsampling_and_one_patch_computes_it_once(patch):
    """The base the residual is added to is the whole-volume upsampling with any patching; one
    patch over the whole volume keeps its conditioning for every step instead of recomputing it."""
    out_shape = (16, 16, 32)
    low = (_two_organs() + 0.1 * torch.randn(1, NUM_CHANNELS, 4, 4, 8, generator=torch.Generator().manual_seed(7),
                                             dtype=torch.float64)).float()
    den = PatchwiseDenoiser(Recorder("lowres"), low, out_shape, patch, 4, upsample="label_pvc")
    torch.testing.assert_close(den.upsampled(), upsample(low, out_shape, "label_pvc"), rtol=1e-5, atol=1e-5)
    x, sigma, cond = torch.zeros(1, NUM_CHANNELS, *out_shape), torch.tensor([1.0]), torch.zeros(1, 4)
    first, second = den(x, sigma, cond), den(x, sigma, cond)
    torch.testing.assert_close(first, second)
    assert (den.concat(0) is den.concat(0)) == (len(den.regions) == 1)


@pytest.mark.parametrize(("patch", "overlap", "match"), [
    ((16, 16, 64), 4, "larger than the volume"),
    ((8, 8, 8), 8, "overlap"),
    ((8, 8, 8), 12, "overlap"),
    ((8, 8, 8), -1, "overlap"),
])
def test_bad_patch_settings_fail_before_any_work(patch, overlap, match):
    model = Recorder("input")
    with pytest.raises(ValueError, match=match):
        PatchwiseDenoiser(model, torch.zeros(1, 1, 4, 4, 8), (16, 16, 32), patch, overlap)
    with pytest.raises(ValueError, match=match):
        check_patching((16, 16, 32), patch, overlap)
    assert model.calls == 0


def test_patch_must_fit_the_network(weights):
    sampler = CascadedSampler.from_pretrained(weights)
    with pytest.raises(ValueError, match="multiple"):
        PatchwiseDenoiser(Recorder("input"), torch.zeros(1, 1, 4, 4, 8), OUT, (15, 16, 16), 4,
                          multiple=sampler.sr_config.net.downsample_factor)
    for bad in ({"patch_size": (64, 64, 64)}, {"overlap": 16}, {"steps": 0}, {"sr_steps": 0}, {"guidance": -1.0}):
        with pytest.raises(ValueError):
            sampler.configure(**bad)
    assert sampler.patch_size == (16, 16, 32) and sampler.overlap == 4  # unchanged by the failed calls


def _seam_ratios(volume: np.ndarray, patch, overlap) -> list[float]:
    """Per axis: mean |intensity step| across the planes where a patch begins or ends, divided
    by the mean |step| across all other planes."""
    ratios = []
    for axis, (n, p) in enumerate(zip(volume.shape[-3:], patch)):
        starts = patch_starts(n, p, overlap)
        borders = {s - 1 for s in starts if s > 0} | {s + p - 1 for s in starts if s + p < n}
        ax = volume.ndim - 3 + axis
        steps = np.abs(np.diff(volume, axis=ax)).mean(axis=tuple(i for i in range(volume.ndim) if i != ax))
        inner = [i for i in range(n - 1) if i not in borders]
        ratios.append(float(steps[sorted(borders)].mean() / steps[inner].mean()))
    return ratios


class VignettingModel:
    """An SR "network" with the typical artefact of a zero-padded CNN: its output fades towards
    the patch edges. Blended patches hide it; hard tiling shows it as seams."""

    def __call__(self, x, sigma, cond, concat):
        fade = F.avg_pool3d(torch.ones_like(x[:, :1]), 5, stride=1, padding=2, count_include_pad=True)
        coords = concat[:, -COORD_CHANNELS:]
        smooth = torch.sin(3 * coords[:, :1]) * torch.cos(2 * coords[:, 2:3]) + 0.2 * concat[:, : x.shape[1]]
        return fade * (0.5 * smooth + 0.5 * F.avg_pool3d(x, 3, stride=1, padding=1))


def _residual(sampler: CascadedSampler, lowres: torch.Tensor) -> np.ndarray:
    x = sampler.sample_sr(lowres.double(), [DEMO], [0], soft_labels=True)  # the network's residual, labels undecided
    return (x - upsample(lowres.float(), OUT, sampler.sr_config.upsample)).numpy()


def test_patchwise_sampling_has_no_seams(weights, lowres):
    """Tiny random SR network, patches (18, 18, 34) with overlap 4 (2 x 2 x 2 patches):
    intensity steps across patch borders are within 10 % of those elsewhere."""
    sampler = CascadedSampler.from_pretrained(weights).configure(sr_steps=3, patch_size=(18, 18, 34), overlap=4,
                                                                 patch_batch=8)
    assert len(PatchwiseDenoiser(None, lowres, OUT, sampler.patch_size, sampler.overlap).regions) == 8
    residual = _residual(sampler, lowres)
    assert residual.std() > 0.05  # the SR stage really adds something
    ratios = _seam_ratios(residual, sampler.patch_size, sampler.overlap)
    assert all(abs(r - 1) < 0.1 for r in ratios), ratios


def test_blending_hides_patch_edge_artefacts(weights, lowres):
    g_cfg, sr_cfg = tiny_stage_config("global"), tiny_stage_config("sr")
    sampler = CascadedSampler(build_stage_model(g_cfg), g_cfg, VignettingModel(), sr_cfg).configure(sr_steps=4)
    assert sampler.patch_size == (16, 16, 32) and sampler.overlap == 4  # 3 x 3 x 3 patches
    blended = _seam_ratios(_residual(sampler, lowres), sampler.patch_size, sampler.overlap)
    assert all(abs(r - 1) < 0.1 for r in blended), blended
    sampler.configure(overlap=0)
    tiled = _seam_ratios(_residual(sampler, lowres), sampler.patch_size, 0)
    assert all(abs(r - 1) > 0.3 for r in tiled), tiled  # the measure does see seams


# --- the sampler's cases -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cascade(weights) -> CascadedSampler:
    return CascadedSampler.from_pretrained(weights).configure(steps=6, sr_steps=3, patch_size=(18, 18, 34), overlap=4,
                                                              patch_batch=8)


def test_the_generator_identity_changes_with_the_calibration_not_only_the_weights(weights, tmp_path):
    """A recalibrated copy of the same weights makes other cases, so its cases and caches must
    not pass for the original's; the same calibration gives the same identity."""
    import shutil

    from synthaug.sampling.cascade import generator_digest

    copy = tmp_path / "copy"
    shutil.copytree(weights, copy)
    original = CascadedSampler.from_pretrained(weights)
    assert CascadedSampler.from_pretrained(copy).sha256 == original.sha256
    raw = json.loads((copy / "global.json").read_text())
    raw["ct_level"], raw["ct_level_scale"] = [0.0] * NUM_ORGAN_CLASSES, [0.5] * NUM_ORGAN_CLASSES
    (copy / "global.json").write_text(json.dumps(raw))
    recalibrated = CascadedSampler.from_pretrained(copy)
    assert recalibrated.sha256 != original.sha256 and len(recalibrated.sha256) == 64
    assert CascadedSampler.from_pretrained(copy, stages="global").sha256 != raw["sha256"]
    assert CascadedSampler.from_pretrained(weights, stages="global").sha256 == raw["sha256"]  # uncalibrated: the weights'
    g_cfg = recalibrated.global_config
    assert generator_digest([("a" * 64, g_cfg)]) == generator_digest([("a" * 64, g_cfg)])
    assert generator_digest([("a" * 64, g_cfg)]) != generator_digest([("a" * 64, replace(g_cfg, calibration=replace(g_cfg.calibration, ct_shift=(1.0,) * NUM_ORGAN_CLASSES)))])


def test_cases_have_the_output_grid_labels_and_provenance(cascade, weights):
    cases = cascade.sample([DEMO, Demographics(30, "M", 190, 90)], seed=[5, 6])
    assert len(cases) == 2
    expected_sha = hashlib.sha256("".join(json.loads((weights / f"{s}.json").read_text())["sha256"]
                                          for s in ("global", "sr")).encode()).hexdigest()
    assert cascade.sha256 == expected_sha
    for case, seed in zip(cases, (5, 6)):
        assert case.shape == OUT and np.allclose(case.affine, TINY_OUTPUT_GRID.affine)
        assert case.spacing == TINY_OUTPUT_GRID.spacing
        assert case.ct.dtype == np.float32 and case.pet.dtype == np.float32
        assert case.organs.dtype == np.uint8 and case.lesions.dtype == np.uint8
        assert case.organs.max() < NUM_CHANNELS - 3 and set(np.unique(case.lesions)) <= {0, 1}
        assert np.isfinite(case.ct).all() and np.isfinite(case.pet).all()
        assert case.meta["model_sha256"] == expected_sha and case.meta["seed"] == seed
        assert case.meta["source"] == "synthetic" and case.meta["sr_steps"] == 3
    assert cases[1].demographics.height_cm == 190


def test_same_seed_same_case_and_per_case_seeds(cascade):
    pair = cascade.sample([DEMO, DEMO], seed=[10, 11])
    alone = cascade.sample(DEMO, seed=11)[0]
    for name in ("ct", "pet", "organs", "lesions"):  # same seed, same case; case i depends only on its own seed
        assert np.array_equal(getattr(pair[1], name), getattr(alone, name)), name
    assert not np.array_equal(pair[0].ct, alone.ct)


def test_lesion_prior_is_added_to_what_the_networks_draw(weights):
    """By default the lesion model adds lesions with the fitted uptake to the networks' case (same seed,
    same lesions); ``lesions="prior"`` paints the same plan with the phantom's uptake rule;
    ``lesions="model"`` keeps the networks' case as it is; the setting is recorded."""
    from synthaug.phantom.lesions import add_lesions
    from synthaug.sampling.cascade import _seed_for_stage

    sampler = CascadedSampler.from_pretrained(weights, stages="global").configure(steps=4)
    demo = replace(DEMO, diagnosis="LYMPHOMA")
    assert sampler.settings["lesions"] == "fitted"
    fitted = sampler.sample(demo, seed=4)[0]
    phantom_rule = sampler.configure(lesions="prior").sample(demo, seed=4)[0]
    model = sampler.configure(lesions="model").sample(demo, seed=4)[0]
    assert model.meta["lesions"] == "model" and "lesion_prior" not in model.meta
    for case, mode, uptake in ((fitted, "fitted", "fitted"), (phantom_rule, "prior", "phantom")):
        assert case.meta["lesions"] == mode and case.meta["lesion_prior"]["diagnosis"] == "LYMPHOMA"
        assert case.meta["lesion_prior"]["uptake"] == uptake
        assert case.lesions.sum() > model.lesions.sum()
        expected = add_lesions(model, seed=_seed_for_stage(4, 3), prior_uptake=uptake)
        for name in ("ct", "pet", "organs", "lesions"):
            assert np.array_equal(getattr(case, name), getattr(expected, name)), name
    assert not np.array_equal(fitted.pet, phantom_rule.pet)
    with pytest.raises(ValueError, match="lesions"):
        sampler.configure(lesions="painted")
    assert sampler.lesions == "model"


def test_with_the_scanner_on_fitted_lesions_are_imaged_once_with_the_case(weights):
    """With a scanner model the fitted prior paints the lesions' activity and the scanner images the case
    once; the "prior" mode paints them blurred and lets the scanner image them again (as before)."""
    from synthaug.phantom.lesions import add_lesions
    from synthaug.phantom.scanner import DEFAULT_SCANNER, apply_scanner
    from synthaug.sampling.cascade import _seed_for_stage

    sampler = CascadedSampler.from_pretrained(weights, stages="global").configure(steps=4)
    demo = replace(DEMO, diagnosis="MELANOMA")
    bare = sampler.configure(lesions="model", scanner="off").sample(demo, seed=2)[0]
    for mode, activity in (("fitted", True), ("prior", False)):
        case = sampler.configure(lesions=mode, scanner="default").sample(demo, seed=2)[0]
        expected = add_lesions(bare, seed=_seed_for_stage(2, 3), prior_uptake="fitted" if mode == "fitted" else "phantom",
                               activity=activity)
        assert case.meta["lesion_prior"]["imaged"] is not activity
        pet = apply_scanner(expected.pet, expected.spacing, DEFAULT_SCANNER, demo.weight_kg,
                            rng=np.random.default_rng(_seed_for_stage(2, 4)))
        assert np.array_equal(case.pet, pet) and np.array_equal(case.lesions, expected.lesions), mode


def test_stray_label_pieces_are_relabelled_by_default_and_only_the_labels_change(weights):
    """By default the sampler gives stray pieces of organ labels the label around them
    (``clean_organ_map`` on the networks' organ map, before lesions are placed); ``clean_labels=False``
    keeps the map as drawn. Images are the same either way; the setting is recorded."""
    from synthaug.core.labels import clean_organ_map, stray_label_pieces

    sampler = CascadedSampler.from_pretrained(weights, stages="global").configure(steps=4, lesions="model")
    assert sampler.settings["clean_labels"] is True
    clean = sampler.sample(DEMO, seed=2)[0]
    raw = sampler.configure(clean_labels=False).sample(DEMO, seed=2)[0]
    assert raw.meta["clean_labels"] is False and clean.meta["clean_labels"] is True
    assert stray_label_pieces(raw.organs, raw.spacing).any()  # random weights draw scattered labels
    assert np.array_equal(clean.organs, clean_organ_map(raw.organs, raw.spacing)[0])
    assert not np.array_equal(clean.organs, raw.organs)
    for name in ("ct", "pet", "lesions"):
        assert np.array_equal(getattr(clean, name), getattr(raw, name)), name
    assert sampler.configure(steps=4).clean_labels is False  # unchanged by a call that does not name it


def test_guidance_zero_is_the_unconditional_model(weights):
    """Classifier-free guidance is wired through the sampler: scale 0 gives the samples of the
    all-unknown condition, and the metadata records the scale used. Guidance evaluates the
    two conditions as one batch of two, where the CPU convolution rounds differently from a
    batch of one: equal to float rounding, not bitwise."""
    sampler = CascadedSampler.from_pretrained(weights, stages="global").configure(steps=4)
    unconditional = sampler.sample(Demographics(None, None, None, None), seed=1)[0]
    conditional = sampler.sample(DEMO, seed=1)[0]
    guided = sampler.configure(guidance=0.0).sample(DEMO, seed=1)[0]
    for name in ("ct", "pet"):  # random weights: values in the thousands, rounding 1e-6 of them
        np.testing.assert_allclose(getattr(guided, name), getattr(unconditional, name), rtol=1e-4, atol=1e-2)
    assert np.abs(conditional.ct - unconditional.ct).max() > 1.0
    assert guided.meta["guidance"] == 0.0 and conditional.meta["guidance"] == 1.0


def test_global_only_sampling(weights):
    sampler = CascadedSampler.from_pretrained(weights, stages="global").configure(steps=6)
    case = sampler.sample(DEMO, seed=0)[0]
    assert case.shape == TINY_GLOBAL_GRID.shape and np.allclose(case.affine, TINY_GLOBAL_GRID.affine)
    assert sampler.output_grid == TINY_GLOBAL_GRID and case.meta["stages"] == "global"


# --- the sample command: bad input fails early, with one line, writing nothing -----------------------


def _sample_cli(capsys, out, *args: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = cli.main(["sample", "--out", str(out), *args])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(("args", "match"), [
    (["--sex", "X", "--age", "50"], "sex"),
    (["--age", "300", "--sex", "M"], "age"),
    (["--height", "20"], "height"),
    (["--age", "50", "--n", "0"], "--n"),
    (["--age", "50", "--steps", "0"], "steps"),
    (["--age", "50", "--patch-size", "64", "64", "64"], "patch size"),
    (["--age", "50", "--overlap", "16"], "overlap"),
])
def test_sample_cli_rejects_bad_input(weights, tmp_path, capsys, args, match):
    out = tmp_path / "out"
    code, err = _sample_cli(capsys, out, "--weights", str(weights), *args)
    assert code == 2 and len(err) == 1 and err[0].startswith("synthaug: error:") and match in err[0], err
    assert not out.exists()


def test_sample_cli_missing_weights_folder(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = _sample_cli(capsys, out, "--weights", str(tmp_path / "no_such_weights"), "--age", "50")
    assert code == 2 and len(err) == 1 and "weights folder not found" in err[0], err
    assert not out.exists()


def test_sample_cli_weights_of_the_wrong_shape(weights, tmp_path, capsys):
    """A weights folder whose global.safetensors holds another architecture's tensors."""
    bad = tmp_path / "bad_weights"
    bad.mkdir()
    g_cfg = tiny_stage_config("global")
    other = tiny_stage_config("global", net=NetConfig.from_dict({**g_cfg.net.to_dict(), "channels": [16, 32]}))
    save_stage(bad / "global", build_stage_model(other), g_cfg)  # config says (8, 16), tensors are (16, 32)
    for name in ("sr.json", "sr.safetensors"):
        (bad / name).write_bytes((weights / name).read_bytes())
    out = tmp_path / "out"
    code, err = _sample_cli(capsys, out, "--weights", str(bad), "--age", "50")
    assert code == 2 and len(err) == 1 and "has shape" in err[0] and "global" in err[0], err
    assert not out.exists()


def test_sample_cli_writes_cases(weights, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["sample", "--out", str(out), "--weights", str(weights), "--stage", "global", "--age", "50",
                     "--sex", "F", "--height", "165", "--weight", "60", "--steps", "4", "--seed", "3",
                     "--diagnosis", "melanoma"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "from the lesion prior (MELANOMA)" in captured.out
    case_dir = out / "sample_00003"
    assert {p.name for p in case_dir.iterdir()} >= {"CTres.nii.gz", "SUV.nii.gz", "SEG.nii.gz", "ORGANS.nii.gz"}
    meta = json.loads((case_dir / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["model_sha256"] == json.loads((weights / "global.json").read_text())["sha256"]
    assert meta["lesions"] == "fitted" and meta["lesion_prior"]["diagnosis"] == "MELANOMA"
    assert meta["lesion_prior"]["uptake"] == "fitted" and meta["clean_labels"] is True
    code = cli.main(["sample", "--out", str(tmp_path / "model"), "--weights", str(weights), "--stage", "global",
                     "--age", "50", "--steps", "4", "--lesions", "model", "--raw-labels"])
    assert code == 0 and "drawn by the networks" in capsys.readouterr().out
    assert json.loads((tmp_path / "model" / "sample_00000" / "meta.json").read_text())["clean_labels"] is False
    # A second run into the same folder refuses to overwrite without --force.
    code, err = _sample_cli(capsys, out, "--weights", str(weights), "--stage", "global", "--age", "50", "--seed", "3")
    assert code == 2 and "--force" in err[0]


def test_sigma_min_is_configurable_and_recorded(weights):
    from synthaug.sampling.cascade import CascadedSampler

    sampler = CascadedSampler.from_pretrained(weights, stages="global")
    assert sampler.configure(sigma_min=0.5).settings["sigma_min"] == 0.5
    with pytest.raises(ValueError, match="sigma_min"):
        sampler.configure(sigma_min=0.0)
