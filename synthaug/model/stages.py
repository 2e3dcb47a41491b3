"""The two stages of the cascade: configs, models and their conditioning.

* **global** — denoises all :data:`~synthaug.model.channels.NUM_CHANNELS` channels on the
  coarse global grid, conditioned on demographics only.
* **sr** — denoises the *residual* between the fine case and the upsampled global
  case (:func:`upsample_region`), patch by patch, conditioned on the upsampled global patch,
  the patch's normalised position in the field of view (3 coordinate channels) and
  the demographics. At sampling time :class:`PatchwiseDenoiser` denoises all
  overlapping patches at every step and blends them with a smooth window, so the
  sampler sees one denoiser for the whole volume (no seams) while memory is set by the
  patch size.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.checkpoint import CheckpointError, load_checkpoint, load_state, save_checkpoint
from ..core.demographics import PopulationRanges
from ..core.grid import Grid, get_preset
from ..core.labels import NUM_ORGAN_CLASSES
from ..phantom.scanner import ScannerModel
from .channels import (
    CT_CHANNEL,
    ENCODING,
    LESION_CHANNEL,
    NUM_CHANNELS,
    ORGAN_CHANNELS,
    PET_CHANNEL,
    Calibration,
    channel_to_ct,
    channel_to_pet,
    ct_to_channel,
    pet_to_channel,
)
from .diffusion import DiffusionConfig, make_precond
from .nets import NetConfig, build_net
from .preprocess import check_rules

STAGES = ("global", "sr")
COORD_CHANNELS = 3
#: How the SR stage brings the global volume onto the output grid (its conditioning, and the base its
#: residual is added to): "trilinear", or "label": CT and PET interpolated within each voxel's own
#: label only (:func:`upsample_region`), so that organ borders do not blur intensities across them;
#: "label_pvc": "label" plus a partial-volume correction of the low-res intensities
#: (:func:`pv_correction`), so that organs keep their own mean up to their border.
UPSAMPLE_MODES = ("trilinear", "label", "label_pvc")


@dataclass(frozen=True)
class StageConfig:
    """Everything needed to rebuild and run one stage (stored as its checkpoint's JSON)."""

    stage: str                                      # "global" or "sr"
    preset: str                                     # resolution preset name (grids below)
    global_grid: Grid                               # grid of stage 1
    output_grid: Grid                               # grid of stage 2 (the output)
    net: NetConfig
    diffusion: DiffusionConfig
    patch_size: tuple[int, int, int] = (64, 64, 64)  # sr: training patch size
    sample_patch_size: tuple[int, int, int] = (128, 128, 64)  # sr: sampling patch size
    sample_overlap: int = 8                         # sr: overlap between sampling patches (voxels)
    cond_aug_max: float = 0.1                       # sr: max std of the noise added to the low-res input
    lesion_rule: str = "majority"                   # how the cohort's lesions reach the global grid (LESION_RULES)
    organ_rule: str = "argmax"                      # how thin organs reach the global grid (ORGAN_RULES)
    upsample: str = "trilinear"                     # sr: how the global volume reaches the output grid (UPSAMPLE_MODES)
    # What synthaug.sampling.calibration fitted on the trained stage (stored flat in the JSON).
    calibration: Calibration = field(default_factory=Calibration)
    encoding: dict = field(default_factory=lambda: dict(ENCODING))
    # The demographics the stage's training cohort spans (JSON "training_population"; metadata: not part
    # of the generator's identity): sampling outside it warns. None (configs written before it) = unknown.
    population: PopulationRanges | None = None
    # The scanner that images this stage's PET when the cascade samples (JSON "scanner"): set when the
    # stage learned the activity without one (a cohort made with ``synthaug phantom --scanner off``).
    # None (the demo weights before it, trained on PET already imaged) = no scanner by default.
    scanner: ScannerModel | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage={self.stage!r}; choose one of {STAGES}")
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        object.__setattr__(self, "sample_patch_size", tuple(int(p) for p in self.sample_patch_size))
        check_rules(self.lesion_rule, self.organ_rule)
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample={self.upsample!r}; choose one of {UPSAMPLE_MODES}")
        if self.scanner is not None and not isinstance(self.scanner, ScannerModel):
            raise ValueError(f"scanner: expected a ScannerModel or None, got {type(self.scanner).__name__}")
        if not isinstance(self.calibration, Calibration):
            raise ValueError(f"calibration: expected a Calibration, got {type(self.calibration).__name__}")
        for name in ("channel_weights", "positive_weights"):
            weights = getattr(self.diffusion, name)
            if weights is not None and len(weights) != self.net.out_channels:
                raise ValueError(f"diffusion.{name} has {len(weights)} entries; "
                                 f"the network has {self.net.out_channels} output channels")
        if self.diffusion.positive_weights is not None and self.stage != "global":
            raise ValueError("diffusion.positive_weights is for the global stage: the SR stage learns a residual, "
                             "whose sign says nothing about the label")
        if any(c >= self.net.out_channels for c in self.diffusion.skip_channels):
            raise ValueError(f"diffusion.skip_channels={list(self.diffusion.skip_channels)}: "
                             f"the network has {self.net.out_channels} output channels")

    def resampling(self, grid: Grid) -> dict:
        """How the training cohort is resampled onto ``grid`` (the global or the output grid)
        for this stage: the keyword arguments of ``preprocess_cohort`` and ``to_grid``."""
        return {"lesion_rule": self.lesion_rule, "organ_rule": self.organ_rule if grid == self.global_grid else "argmax"}

    @property
    def grid(self) -> Grid:
        """The grid this stage's network runs on."""
        return self.global_grid if self.stage == "global" else self.output_grid

    def to_dict(self) -> dict:
        return {
            "format_version": STAGE_FORMAT_VERSION, "stage": self.stage, "preset": self.preset, "global_grid": self.global_grid.to_dict(),
            "output_grid": self.output_grid.to_dict(), "net": self.net.to_dict(), "diffusion": self.diffusion.to_dict(),
            "patch_size": list(self.patch_size), "sample_patch_size": list(self.sample_patch_size),
            "sample_overlap": self.sample_overlap, "cond_aug_max": self.cond_aug_max, "encoding": self.encoding,
            "lesion_rule": self.lesion_rule, "organ_rule": self.organ_rule, "upsample": self.upsample,
            **self.calibration.to_dict(),
            **({"training_population": self.population.to_dict()} if self.population is not None else {}),
            **({"scanner": self.scanner.to_dict()} if self.scanner is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> StageConfig:
        """From the JSON beside the weights, of any format version (:func:`migrate_stage_config`)."""
        d = migrate_stage_config(d)
        try:
            return cls(
                stage=d["stage"], preset=d["preset"], global_grid=Grid.from_dict(d["global_grid"]),
                output_grid=Grid.from_dict(d["output_grid"]), net=NetConfig.from_dict(d["net"]),
                diffusion=DiffusionConfig.from_dict(d["diffusion"]), patch_size=tuple(d["patch_size"]),
                sample_patch_size=tuple(d["sample_patch_size"]), sample_overlap=int(d["sample_overlap"]),
                cond_aug_max=float(d["cond_aug_max"]), encoding=d["encoding"], lesion_rule=d["lesion_rule"],
                organ_rule=d["organ_rule"], upsample=d["upsample"], calibration=Calibration.from_dict(d),
                population=PopulationRanges.from_dict(d["training_population"]) if d.get("training_population") else None,
                scanner=ScannerModel.from_dict(d["scanner"]) if d.get("scanner") else None,
            )
        except (KeyError, TypeError) as err:
            raise CheckpointError(f"stage config is incomplete or malformed: {err}") from None


#: The stage config's JSON format: 1 = written before ``format_version`` existed (fields added over time
#: may be missing), 2 = every field present.
STAGE_FORMAT_VERSION = 2
#: What a format-1 config without a field meant: the behaviour before the field existed.
_FORMAT_1_DEFAULTS = {"patch_size": [64, 64, 64], "sample_patch_size": [128, 128, 64], "sample_overlap": 8,
                      "cond_aug_max": 0.1, "encoding": ENCODING, "lesion_rule": "majority", "organ_rule": "argmax",
                      "upsample": "trilinear"}


def migrate_stage_config(d: dict) -> dict:
    """A stage config's JSON in the current format (:data:`STAGE_FORMAT_VERSION`); older formats get
    the values that reproduce how they were trained and sampled. A newer format is refused."""
    version = d.get("format_version", 1)
    if not isinstance(version, int) or not 1 <= version <= STAGE_FORMAT_VERSION:
        raise CheckpointError(f"stage config format_version={version!r}: this synthaug reads 1-{STAGE_FORMAT_VERSION}; "
                              "upgrade synthaug to read newer weights")
    if version == 1:
        d = {**{k: (dict(v) if isinstance(v, dict) else v) for k, v in _FORMAT_1_DEFAULTS.items()}, **d}
    return {**d, "format_version": STAGE_FORMAT_VERSION}


def default_stage_config(stage: str, preset: str = "demo", objective: str = "x0", **overrides) -> StageConfig:
    """The architecture and objective synthaug uses by default for a stage and preset."""
    p = get_preset(preset)
    if stage == "global":
        net = NetConfig(in_channels=NUM_CHANNELS, out_channels=NUM_CHANNELS, channels=(16, 32, 64),
                        attention_levels=(False, False, True), norm_num_groups=8)
        # dpmpp_2m x 32: chosen by the sampler-fidelity benchmark (benchmarks/RESULTS.md). Training noise levels
        # log-normal around sigma 1.5, wide enough to reach the sampler's start, where a whole-body volume's
        # layout is placed; EDM's image setting rarely draws them (docs/training.md, "Noise levels").
        diff = DiffusionConfig(objective=objective, sigma_data=0.5, sampler="dpmpp_2m", steps=32, p_mean=0.4, p_std=1.6)
    elif stage == "sr":
        net = NetConfig(in_channels=NUM_CHANNELS, out_channels=NUM_CHANNELS,
                        cond_channels=NUM_CHANNELS + COORD_CHANNELS, channels=(16, 32, 48),
                        attention_levels=(False, False, False), mid_attention=False, norm_num_groups=8)
        # The same wide noise levels as stage 1: few-step sampling starts at sigma_max (one Euler step evaluates
        # only there; docs/training.md, "Noise levels"). Equal channel weights (docs/training.md, "SR loss weights").
        diff = DiffusionConfig(objective=objective, sigma_data=0.25, sigma_max=10.0, sampler="heun", steps=3,
                               p_mean=0.4, p_std=1.6)
        # Label-guided upsampling of the partial-volume-corrected global volume (docs/training.md,
        # "Label-guided upsampling" and "Partial-volume correction", with the comparison behind the choice).
        overrides = {"upsample": "label_pvc", **overrides}
    else:
        raise ValueError(f"stage={stage!r}; choose one of {STAGES}")
    # Every lesion reaches the global grid: by majority most phantom lesions vanish at 16 mm
    # (docs/training.md, "Lesions on the global grid").
    cfg = dict(stage=stage, preset=preset, global_grid=p.global_grid, output_grid=p.output_grid, net=net, diffusion=diff,
               lesion_rule="every")
    cfg.update(overrides)
    return StageConfig(**cfg)


def build_stage_model(config: StageConfig) -> torch.nn.Module:
    """The preconditioned denoiser (network + objective) of a stage."""
    return make_precond(build_net(config.net), config.diffusion)


def save_stage(path: str | Path, model: torch.nn.Module, config: StageConfig, extra: dict | None = None) -> str:
    """Save a stage's weights + config; returns the weights' sha256."""
    state = {k: v for k, v in model.state_dict().items()}
    return save_checkpoint(path, state, {**config.to_dict(), **({"info": extra} if extra else {})})


def load_stage(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, StageConfig, dict]:
    """Load ``(model in eval mode, StageConfig, raw JSON)`` from a checkpoint."""
    tensors, raw = load_checkpoint(path)
    config = StageConfig.from_dict(raw)
    if config.encoding.get("version") != ENCODING["version"] or config.encoding.get("channels") != ENCODING["channels"]:
        raise CheckpointError(f"{path}: weights use channel encoding {config.encoding.get('version')}, this synthaug uses {ENCODING['version']}")
    model = build_stage_model(config)
    load_state(model, tensors, where=str(path))
    return model.to(device).eval(), config, raw


# --- SR conditioning -------------------------------------------------------------------


def _axis_coords(n: int, start: int, stop: int, device, dtype) -> torch.Tensor:
    """Normalised [-1, 1] voxel-centre coordinates (align_corners=False convention)."""
    i = torch.arange(start, stop, device=device, dtype=dtype)
    return (2 * i + 1) / n - 1


def region_coords(out_shape, region: tuple[slice, slice, slice], device=None, dtype=torch.float32) -> torch.Tensor:
    """(3, px, py, pz) normalised positions of a region of the output grid."""
    axes = [_axis_coords(n, s.start, s.stop, device, dtype) for n, s in zip(out_shape, region)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def _trilinear_region(lowres: torch.Tensor, out_shape, region: tuple[slice, slice, slice]) -> torch.Tensor:
    """``F.interpolate(lowres, out_shape, mode="trilinear", align_corners=False)`` on a region only."""
    coords = region_coords(out_shape, region, lowres.device, lowres.dtype)
    # grid_sample wants (x=W, y=H, z=D) order for an input laid out as (D, H, W) = (X, Y, Z).
    grid = coords.flip(0).permute(1, 2, 3, 0)[None].expand(lowres.shape[0], -1, -1, -1, -1)
    return F.grid_sample(lowres, grid, mode="bilinear", padding_mode="border", align_corners=False)


def region_labels(x: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) encoded channels -> (B, ...) label per voxel: the organ (argmax), or
    ``NUM_ORGAN_CLASSES`` where the lesion channel is positive."""
    organs = x[:, ORGAN_CHANNELS].argmax(1)
    return torch.where(x[:, LESION_CHANNEL] > 0, NUM_ORGAN_CLASSES, organs)


#: Trilinear weight of same-label neighbours below which a voxel keeps the plain trilinear value.
_MIN_LABEL_WEIGHT = 1e-3


def _axis_taps(n_in: int, n_out: int, sl: slice, device, dtype) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """The two low-res neighbours (index, trilinear weight) of each output position along one axis, as
    ``grid_sample(..., align_corners=False, padding_mode="border")`` uses them."""
    u = (((_axis_coords(n_out, sl.start, sl.stop, device, dtype) + 1) * n_in - 1) / 2).clamp(0, n_in - 1)
    i0 = u.floor().long()
    f = u - i0
    return (i0, 1 - f), ((i0 + 1).clamp(max=n_in - 1), f)


def upsample_region(lowres: torch.Tensor, out_shape, region: tuple[slice, slice, slice],
                    mode: str = "trilinear", pvc: PVCorrection | None = None) -> torch.Tensor:
    """Upsample ``lowres`` (B, C, gx, gy, gz) onto a region of the output grid (both grids
    span the same field of view).

    ``mode="trilinear"`` equals ``F.interpolate(..., mode="trilinear", align_corners=False)``
    restricted to the region. ``mode="label"`` keeps the label channels trilinear and
    interpolates CT and PET within each output voxel's own label (:func:`region_labels` of
    the upsampled channels) only: of its eight trilinear neighbours on the low-res grid, those
    of the same label, with their trilinear weights renormalised (normalised convolution).
    Across an organ border trilinear interpolation mixes both sides; within the label an
    organ keeps its own value up to its border (docs/training.md, "Label-guided
    upsampling"). Voxels with no neighbour of their label keep the trilinear value.
    ``mode="label_pvc"`` interpolates the same way what :func:`pv_correction` leaves of the
    intensities after each label's partial-volume-corrected mean, and adds that mean back;
    ``pvc`` is that correction when already computed for ``lowres`` (it needs the whole volume).
    """
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample mode {mode!r}; choose one of {UPSAMPLE_MODES}")
    up = _trilinear_region(lowres, out_shape, region)
    if mode == "trilinear":
        return up
    ch = [CT_CHANNEL, PET_CHANNEL]
    low_labels, out_labels = region_labels(lowres), region_labels(up)
    intensities = lowres[:, ch]
    if mode == "label_pvc":
        pvc = pv_correction(lowres, out_shape) if pvc is None else pvc
        intensities = intensities - pvc.mixed
    taps = [_axis_taps(n_in, n_out, sl, lowres.device, lowres.dtype)
            for n_in, n_out, sl in zip(lowres.shape[2:], out_shape, region)]
    num = torch.zeros_like(up[:, ch])
    den = torch.zeros_like(up[:, 0])
    for (ix, wx), (iy, wy), (iz, wz) in itertools.product(*taps):
        same = low_labels[:, ix][:, :, iy][:, :, :, iz] == out_labels
        w = same * (wx[:, None, None] * wy[None, :, None] * wz[None, None, :])
        num += w[:, None] * intensities[:, :, ix][:, :, :, iy][:, :, :, :, iz]
        den += w
    use = (den > _MIN_LABEL_WEIGHT)[:, None]
    inside = num / den.clamp_min(_MIN_LABEL_WEIGHT)[:, None]
    if mode == "label_pvc":
        pure = torch.gather(pvc.means, 2, out_labels.flatten(1)[:, None].expand(-1, 2, -1)).view_as(inside)
        inside = inside + pure
    out = up.clone()
    out[:, ch] = torch.where(use, inside, up[:, ch])
    return out


#: Classes of :func:`region_labels`: the organs, then "lesion".
_NUM_REGION_CLASSES = NUM_ORGAN_CLASSES + 1


@dataclass(frozen=True)
class PVCorrection:
    """What :func:`pv_correction` finds for one low-res volume (encoded units)."""

    means: torch.Tensor  # (B, 2, classes): each label's corrected CT and PET
    mixed: torch.Tensor  # (B, 2, gx, gy, gz): those means mixed by each low-res voxel's label fractions


def pv_correction(lowres: torch.Tensor, out_shape, chunk: int = 32) -> PVCorrection:
    """Partial-volume correction of the low-res CT and PET by the geometric transfer matrix.

    On the coarse grid a voxel on an organ border averages the organ with its neighbour, so
    a border organ's voxels all read low (brain against the skull, heart against the lungs).
    With the labels on the output grid (:func:`region_labels` of the trilinear upsampling,
    as :func:`upsample_region` decides them) each low-res voxel's fraction of every label is
    known; the label means that best explain the low-res values as such mixtures (least
    squares, in HU and SUV, where the averaging happened) are the corrected means. Each
    output voxel belongs to the low-res voxel that holds its centre (both grids span the
    same field of view), so any finer grid works: a whole multiple gives equal blocks, any
    other ratio blocks that differ by one voxel per axis.
    """
    b, _, *low = lowres.shape
    if any(o < g for o, g in zip(out_shape, low)):
        raise ValueError(f"label_pvc upsampling needs an output grid {tuple(out_shape)} at least as fine as "
                         f"the low-res grid {tuple(low)}")
    n_low = low[0] * low[1] * low[2]
    counts = torch.zeros(b * _NUM_REGION_CLASSES * n_low, dtype=lowres.dtype, device=lowres.device)
    axes = [((2 * torch.arange(o, device=lowres.device) + 1) * g) // (2 * o) for o, g in zip(out_shape, low)]
    sizes = [torch.bincount(a, minlength=g).to(lowres.dtype) for a, g in zip(axes, low)]
    for z0 in range(0, out_shape[2], chunk):  # the output grid's labels, a slab at a time (memory)
        region = (slice(0, out_shape[0]), slice(0, out_shape[1]), slice(z0, min(out_shape[2], z0 + chunk)))
        labels = region_labels(_trilinear_region(lowres, out_shape, region))          # (B, X, Y, slab)
        block = (axes[0][:, None, None] * low[1] + axes[1][None, :, None]) * low[2] + axes[2][None, None, region[2]]
        key = (torch.arange(b, device=lowres.device)[:, None, None, None] * _NUM_REGION_CLASSES + labels) * n_low + block
        counts += torch.bincount(key.flatten(), minlength=counts.numel()).to(lowres.dtype)
    block_size = sizes[0][:, None, None] * sizes[1][None, :, None] * sizes[2][None, None, :]
    frac = counts.view(b, _NUM_REGION_CLASSES, *low) / block_size
    phys = torch.stack([channel_to_ct(lowres[:, CT_CHANNEL]), channel_to_pet(lowres[:, PET_CHANNEL])], 1)  # HU, SUV
    a = frac.flatten(2)                                             # (B, K, N)
    gram = a @ a.transpose(1, 2)                                    # (B, K, K)
    ridge = 1e-6 * gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)
    gram = gram + ridge[:, None, None] * torch.eye(_NUM_REGION_CLASSES, dtype=a.dtype, device=a.device)
    means = torch.linalg.solve(gram, a @ phys.flatten(2).transpose(1, 2)).transpose(1, 2)  # (B, 2, K)
    # Guard against ill-posed classes: within the physically meaningful range.
    means = torch.stack([means[:, 0].clamp(-1024.0, 3000.0), means[:, 1].clamp(0.0, 2 * float(phys[:, 1].max()))], 1)
    mixed = (means @ a).view(b, 2, *low)
    return PVCorrection(means=_encode_ct_pet(means), mixed=_encode_ct_pet(mixed))


def _encode_ct_pet(v: torch.Tensor) -> torch.Tensor:
    """(B, 2, ...) HU and SUV -> the encoded CT and PET channels."""
    return torch.stack([ct_to_channel(v[:, 0]), pet_to_channel(v[:, 1])], 1)


def upsample(lowres: torch.Tensor, out_shape, mode: str = "trilinear", pvc: PVCorrection | None = None) -> torch.Tensor:
    """:func:`upsample_region` over the whole output grid."""
    return upsample_region(lowres, out_shape, tuple(slice(0, int(n)) for n in out_shape), mode, pvc)


def sr_concat(lowres: torch.Tensor, out_shape, region, mode: str = "trilinear",
              pvc: PVCorrection | None = None) -> torch.Tensor:
    """The SR network's image conditioning for a region: upsampled low-res channels + coordinates."""
    up = upsample_region(lowres, out_shape, region, mode, pvc)
    coords = region_coords(out_shape, region, lowres.device, lowres.dtype)[None].expand(lowres.shape[0], -1, -1, -1, -1)
    return torch.cat([up, coords], dim=1)


def patch_starts(n: int, patch: int, overlap: int) -> list[int]:
    """Start indices of patches of length ``patch`` covering ``n`` voxels with at least ``overlap``."""
    if patch >= n:
        return [0]
    stride = patch - overlap
    starts = list(range(0, n - patch, stride)) + [n - patch]
    return sorted(set(starts))


def _window(patch: int, overlap: int, at_start: bool, at_end: bool, device, dtype) -> torch.Tensor:
    """1D blending weight: 1 in the middle, a cosine ramp over ``overlap`` voxels at inner borders."""
    w = torch.ones(patch, device=device, dtype=dtype)
    if overlap > 0:
        ramp = 0.5 - 0.5 * torch.cos(torch.pi * (torch.arange(overlap, device=device, dtype=dtype) + 0.5) / overlap)
        ramp = ramp.clamp_min(1e-3)
        if not at_start:
            w[:overlap] = ramp
        if not at_end:
            w[-overlap:] = ramp.flip(0)
    return w


def check_patching(out_shape, patch, overlap) -> None:
    """Clear errors for impossible patch settings, before any work."""
    for n, p in zip(out_shape, patch):
        if p > n:
            raise ValueError(f"patch size {tuple(patch)} is larger than the volume {tuple(out_shape)}")
    if any(overlap >= p for p in patch):
        raise ValueError(f"overlap {overlap} must be smaller than the patch size {tuple(patch)}")
    if overlap < 0:
        raise ValueError(f"overlap {overlap} must be >= 0")


class PatchwiseDenoiser:
    """Applies an SR denoiser to a whole volume as overlapping, blended patches.

    Args:
        model: the SR stage's preconditioned denoiser.
        lowres: (B, C, gx, gy, gz) stage-1 output (encoded channels).
        patch: patch size (voxels); overlap: overlap between neighbours; batch_size:
            patches per network call; upsample: the stage's :data:`UPSAMPLE_MODES` entry.
    """

    def __init__(self, model, lowres: torch.Tensor, out_shape, patch, overlap: int, batch_size: int = 4,
                 multiple: int = 1, upsample: str = "trilinear") -> None:
        check_patching(out_shape, patch, overlap)
        for p in patch:
            if p % multiple:
                raise ValueError(f"patch size {tuple(patch)} must be a multiple of {multiple} for this network")
        self.model, self.lowres, self.out_shape = model, lowres, tuple(out_shape)
        self.patch, self.overlap, self.batch_size = tuple(patch), overlap, batch_size
        self.upsample = upsample
        # The same for every patch and step: computed once.
        self.pvc = pv_correction(lowres, self.out_shape) if upsample == "label_pvc" else None
        starts = [patch_starts(n, p, overlap) for n, p in zip(self.out_shape, self.patch)]
        self.regions = [tuple(slice(s, s + p) for s, p in zip(st, self.patch)) for st in itertools.product(*starts)]
        self.edges = [[(s == 0, s + p == n) for s, p, n in zip(st, self.patch, self.out_shape)] for st in itertools.product(*starts)]
        # One patch over the whole volume: its conditioning is the same at every step and holds the
        # upsampled volume the residual is added to, so it is computed once and kept.
        self._whole: torch.Tensor | None = None

    def concat(self, k: int) -> torch.Tensor:
        """The SR network's image conditioning for patch ``k`` (:func:`sr_concat`)."""
        if len(self.regions) > 1:
            return sr_concat(self.lowres, self.out_shape, self.regions[k], self.upsample, self.pvc)
        if self._whole is None:
            self._whole = sr_concat(self.lowres, self.out_shape, self.regions[0], self.upsample, self.pvc)
        return self._whole

    def upsampled(self) -> torch.Tensor:
        """The low-res volume upsampled onto the whole output grid (:func:`upsample`), the base the
        sampled residual is added to."""
        if len(self.regions) == 1:
            return self.concat(0)[:, :self.lowres.shape[1]]
        return upsample(self.lowres, self.out_shape, self.upsample, self.pvc)

    def weight(self, k: int, device, dtype) -> torch.Tensor:
        w = [_window(p, min(self.overlap, p), a, b, device, dtype) for p, (a, b) in zip(self.patch, self.edges[k])]
        return w[0][:, None, None] * w[1][None, :, None] * w[2][None, None, :]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        norm = torch.zeros((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
        b = x.shape[0]
        for start in range(0, len(self.regions), self.batch_size):
            ks = list(range(start, min(start + self.batch_size, len(self.regions))))
            xs = torch.cat([x[(slice(None), slice(None), *self.regions[k])] for k in ks])
            concat = self.concat(ks[0]) if len(ks) == 1 else torch.cat([self.concat(k) for k in ks])
            d = self.model(xs.float(), sigma.repeat(len(ks)).float(), cond.repeat(len(ks), 1), concat.float()).to(x.dtype)
            for j, k in enumerate(ks):
                w = self.weight(k, x.device, x.dtype)
                out[(slice(None), slice(None), *self.regions[k])] += d[j * b:(j + 1) * b] * w
                norm[(slice(None), slice(None), *self.regions[k])] += w
        return out / norm
