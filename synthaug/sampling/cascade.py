"""``CascadedSampler``: demographics -> global stage -> upsample -> patch-wise SR stage -> cases."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..core.case import Case
from ..core.checkpoint import CheckpointError
from ..core.demographics import Demographics, OutOfDistributionWarning
from ..core.grid import Grid
from ..core.labels import clean_organ_map
from ..model.channels import decode
from ..model.diffusion import cfg_denoiser, sample
from ..model.stages import PatchwiseDenoiser, StageConfig, check_patching, load_stage
from ..phantom.lesions import LESION_MODES, add_lesions
from ..phantom.scanner import ScannerModel, apply_scanner, get_scanner
from .generator import as_list, per_case_seeds
from .twins import sample_twins

#: Where the shipped demo weights live (inside the installed package).
DEMO_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
GLOBAL_FILE = "global"
SR_FILE = "sr"


def _seed_for_stage(seed: int, stage: int) -> int:
    """Independent, reproducible seeds for the steps of one case (1: global stage, 2: SR stage,
    3: lesion prior, 4: scanner)."""
    return int(np.random.default_rng([seed, stage]).integers(2**62))


def generator_digest(stages: Sequence[tuple[str, StageConfig]]) -> str:
    """What identifies a generator in its cases' metadata and caches: each stage's weights
    (their sha256) and what calibration fitted on them, since a recalibrated stage makes other
    cases from the same weights. A single uncalibrated stage is its weights' sha256."""
    calibrations = [cfg.calibration.to_dict() for _, cfg in stages]
    if len(stages) == 1 and not any(calibrations[0].values()):
        return stages[0][0]
    text = "".join(sha for sha, _ in stages)
    if any(any(c.values()) for c in calibrations):
        text += json.dumps(calibrations, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def warn_outside_training(demos: Sequence[Demographics], configs: Sequence[StageConfig | None],
                          stacklevel: int = 3) -> list[str]:
    """Warn once per line (:class:`~synthaug.core.demographics.OutOfDistributionWarning`) for each
    demographics field outside the training population the stage configs record; returns the lines.
    Weights that record no population (configs written before it) warn about nothing."""
    lines: list[str] = []
    for cfg in configs:
        if cfg is None or cfg.population is None:
            continue
        for d in demos:
            lines += [line for line in cfg.population.outside(d) if line not in lines]
    for line in lines:
        warnings.warn(f"{line}: sampled anyway, the weights learnt nothing there", OutOfDistributionWarning,
                      stacklevel=stacklevel)
    return lines


class CascadedSampler:
    """Generates whole-body PET/CT cases with labels from demographics.

    Args:
        global_model, global_config: the stage-1 denoiser and its config.
        sr_model, sr_config: the stage-2 denoiser and its config, or ``None`` to stop
            after stage 1 (cases on the global grid).
        sha256: identifies the weights and their calibration (recorded in every case's metadata;
            :func:`generator_digest`).
    """

    def __init__(self, global_model, global_config: StageConfig, sr_model=None, sr_config: StageConfig | None = None,
                 sha256: str = "", device: str | torch.device = "cpu") -> None:
        if sr_config is not None:
            for name in ("global_grid", "output_grid"):
                if getattr(global_config, name) != getattr(sr_config, name):
                    raise CheckpointError(f"stage-1 and stage-2 weights disagree on {name}: "
                                          f"{getattr(global_config, name)} vs {getattr(sr_config, name)}")
            if global_config.net.out_channels != sr_config.net.out_channels:
                raise CheckpointError("stage-1 and stage-2 weights disagree on the channels they generate")
            if global_config.encoding != sr_config.encoding:
                raise CheckpointError("stage-1 and stage-2 weights use different channel encodings")
        self.global_model, self.global_config = global_model, global_config
        self.sr_model, self.sr_config = sr_model, sr_config
        self.device = torch.device(device)
        self._sha256 = sha256
        self.steps: int | None = None
        self.sr_steps: int | None = None
        self.guidance: float | None = None
        self.patch_size = sr_config.sample_patch_size if sr_config else None
        self.overlap = sr_config.sample_overlap if sr_config else None
        self.patch_batch = 4
        # The demo networks draw no lesions (docs/training.md, "Lesion channel"): by default the
        # lesion model adds them (synthaug.phantom.lesions), their uptake fitted to real tumours.
        self.lesions = "fitted"
        # The PET as a scanner images it (synthaug.phantom.scanner), the last step. By default what the
        # output stage's weights record: a stage trained on the activity images it with the scanner it
        # names; weights trained on PET already imaged (the phantom's own resolution and noise) name none.
        self.scanner: ScannerModel | None = (sr_config or global_config).scanner
        # Stray pieces of an organ's label far from the organ get their surroundings' label
        # (synthaug.core.labels.clean_organ_map), before lesions are placed on the organs.
        self.clean_labels = True

    # -- construction --
    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, *, device: str | torch.device = "cpu",
                        stages: str = "cascade") -> CascadedSampler:
        """Load weights from a folder holding ``global.{safetensors,json}`` and ``sr.{...}``
        (``path=None``: the shipped demo weights). ``stages="global"`` loads stage 1 only."""
        folder = DEMO_WEIGHTS if path is None else Path(path)
        if folder.is_file() or folder.name.endswith((".json", ".safetensors")):
            folder = folder.parent
        if not folder.is_dir():
            raise FileNotFoundError(f"weights folder not found: {folder}")
        if not (folder / f"{GLOBAL_FILE}.json").is_file():
            raise FileNotFoundError(f"{folder}: no {GLOBAL_FILE}.json / {GLOBAL_FILE}.safetensors (stage-1 weights)")
        g_model, g_cfg, g_raw = load_stage(folder / GLOBAL_FILE, device)
        sr_model = sr_cfg = None
        loaded = [(g_raw["sha256"], g_cfg)]
        if stages == "cascade":
            if not (folder / f"{SR_FILE}.json").is_file():
                raise FileNotFoundError(f"{folder}: no {SR_FILE}.json / {SR_FILE}.safetensors (stage-2 weights); "
                                        "use `stages`='global' to sample stage 1 only")
            sr_model, sr_cfg, sr_raw = load_stage(folder / SR_FILE, device)
            loaded.append((sr_raw["sha256"], sr_cfg))
        elif stages != "global":
            raise ValueError(f"stages={stages!r}; choose 'cascade' or 'global'")
        return cls(g_model, g_cfg, sr_model, sr_cfg, sha256=generator_digest(loaded), device=device)

    # -- CaseGenerator protocol --
    @property
    def output_grid(self) -> Grid:
        return (self.sr_config or self.global_config).grid

    @property
    def sha256(self) -> str:
        return self._sha256

    @property
    def settings(self) -> dict:
        g = self.global_config.diffusion
        s = {"stages": "cascade" if self.sr_model is not None else "global", "preset": self.global_config.preset,
             "sampler": g.sampler, "steps": self.steps or g.steps, "guidance": self.guidance if self.guidance is not None else g.guidance,
             "sigma_min": g.sigma_min, "lesions": self.lesions, "clean_labels": self.clean_labels,
             **({"scanner": self.scanner.to_dict()} if self.scanner is not None else {})}
        if self.sr_config is not None:
            s.update({"sr_sampler": self.sr_config.diffusion.sampler, "sr_steps": self.sr_steps or self.sr_config.diffusion.steps,
                      "patch_size": list(self.patch_size), "overlap": self.overlap})
        return s

    def configure(self, *, steps: int | None = None, sr_steps: int | None = None, guidance: float | None = None,
                  patch_size: Sequence[int] | None = None, overlap: int | None = None, patch_batch: int | None = None,
                  sigma_min: float | None = None, lesions: str | None = None,
                  scanner: ScannerModel | str | None = None, clean_labels: bool | None = None) -> CascadedSampler:
        """Change the sampling settings (checked before any work); returns ``self``.

        ``lesions``: "fitted" (default) adds lesions from the diagnosis-conditioned lesion model
        (:func:`synthaug.phantom.lesions.add_lesions`) to what the networks drew, their uptake fitted to
        real tumours and, when the scanner model is on, painted as activity that it images with the
        rest of the case; "prior" adds them as the sampler did before "fitted" (the phantom's uptake
        rule, blurred by the phantom's PSF and then imaged again by the scanner); "model" keeps only
        what the networks drew.

        ``scanner``: a :class:`~synthaug.phantom.scanner.ScannerModel` or preset name images the PET
        as that scanner would (resolution and count noise, the last step); ``"off"`` turns it off.

        ``clean_labels`` (default on): relabel the stray pieces of organ labels
        (:func:`synthaug.core.labels.clean_organ_map`); off: the organ map as the networks draw it.

        ``sigma_min`` is the stage-1 noise level the sampler jumps to zero from (the
        schedule's end): a larger value returns a smoother, less noisy denoised estimate,
        which suits briefly trained weights.
        """
        if sigma_min is not None:
            diff = self.global_config.diffusion
            if not 0 < sigma_min < diff.sigma_max:
                raise ValueError(f"sigma_min={sigma_min} must be in (0, {diff.sigma_max})")
            self.global_config = replace(self.global_config, diffusion=replace(diff, sigma_min=float(sigma_min)))
        scanner_model = get_scanner(scanner) if scanner is not None else self.scanner
        if lesions is not None and lesions not in LESION_MODES:
            raise ValueError(f"lesions={lesions!r}; choose one of {LESION_MODES}")
        if steps is not None and steps < 1:
            raise ValueError(f"steps={steps} must be >= 1")
        if sr_steps is not None and sr_steps < 1:
            raise ValueError(f"sr_steps={sr_steps} must be >= 1")
        if patch_batch is not None and patch_batch < 1:
            raise ValueError(f"patch_batch={patch_batch} must be >= 1")
        if guidance is not None and not 0 <= guidance <= 20:
            raise ValueError(f"guidance={guidance} must be in [0, 20]")
        if self.sr_config is not None:
            p = tuple(patch_size) if patch_size is not None else self.patch_size
            o = overlap if overlap is not None else self.overlap
            check_patching(self.sr_config.output_grid.shape, p, o)
            self.patch_size, self.overlap = p, o
        self.steps = steps if steps is not None else self.steps
        self.sr_steps = sr_steps if sr_steps is not None else self.sr_steps
        self.guidance = guidance if guidance is not None else self.guidance
        self.patch_batch = patch_batch or self.patch_batch
        self.lesions = lesions or self.lesions
        self.clean_labels = self.clean_labels if clean_labels is None else bool(clean_labels)
        self.scanner = scanner_model
        return self

    # -- sampling --
    def _denoiser(self, model, guidance: float, batched: bool = False) -> Callable:
        return cfg_denoiser(lambda x, sigma, cond, **kw: model(x, sigma, cond, **kw), guidance, batched=batched)

    @torch.no_grad()
    def sample_global(self, demos: list[Demographics], seeds: list[int], progress: bool = False, *,
                      soft_labels: bool = False) -> torch.Tensor:
        """Stage 1: encoded channels on the global grid, (B, C, gx, gy, gz) float64, with the
        label channels hardened by the stage's ``label_bias`` and CT and PET calibrated per organ
        (``ct_shift``, ``pet_gain``) and each organ's per-case HU spread narrowed (``ct_level_scale``;
        ``soft_labels``: all as generated, for :mod:`synthaug.sampling.calibration`)."""
        cfg = self.global_config
        cond = torch.from_numpy(np.stack([d.to_vector() for d in demos])).to(self.device)
        guidance = self.guidance if self.guidance is not None else cfg.diffusion.guidance
        denoiser = self._denoiser(self.global_model, guidance, batched=True)
        x = sample(denoiser, (cfg.net.in_channels, *cfg.global_grid.shape),
                   cfg.diffusion, [_seed_for_stage(s, 1) for s in seeds], extra_args={"cond": cond},
                   steps=self.steps, dtype=torch.float64, device=self.device, disable=not progress)
        return x if soft_labels else cfg.calibration.apply(x)

    @torch.no_grad()
    def sample_sr(self, lowres: torch.Tensor, demos: list[Demographics], seeds: list[int], progress: bool = False, *,
                  soft_labels: bool = False) -> torch.Tensor:
        """Stage 2: encoded channels on the output grid (B, C, X, Y, Z), float32 state (memory),
        labels hardened as in :meth:`sample_global`. ``lowres`` is stage 1's output (hardened:
        the SR stage was trained on exact +1 / -1 label channels)."""
        cfg = self.sr_config
        cond = torch.from_numpy(np.stack([d.to_vector() for d in demos])).to(self.device)
        lowres = lowres.float().to(self.device)
        denoiser = PatchwiseDenoiser(self.sr_model, lowres, cfg.output_grid.shape, self.patch_size, self.overlap,
                                     self.patch_batch, multiple=cfg.net.downsample_factor, upsample=cfg.upsample)
        guidance = self.guidance if self.guidance is not None else cfg.diffusion.guidance
        residual = sample(self._denoiser(denoiser, guidance), (cfg.net.in_channels, *cfg.output_grid.shape), cfg.diffusion,
                          [_seed_for_stage(s, 2) for s in seeds], extra_args={"cond": cond}, steps=self.sr_steps,
                          dtype=torch.float32, device=self.device, disable=not progress)
        x = denoiser.upsampled() + residual
        del residual, denoiser
        return x if soft_labels else cfg.calibration.apply(x)

    def sample(self, demographics: Demographics | Sequence[Demographics], *, seed: int | Sequence[int] = 0,
               progress: bool = False, batch_size: int = 1) -> list[Case]:
        """Generate one case per demographics; case ``i`` depends only on its own seed. Demographics outside
        the weights' training population sample with a warning (:func:`warn_outside_training`)."""
        demos = as_list(demographics)
        seeds = per_case_seeds(len(demos), seed)
        warn_outside_training(demos, (self.global_config, self.sr_config))
        cases: list[Case] = []
        for start in range(0, len(demos), batch_size):
            d, s = demos[start:start + batch_size], seeds[start:start + batch_size]
            x = self.sample_global(d, s, progress)
            grid = self.global_config.global_grid
            if self.sr_model is not None:
                x = self.sample_sr(x, d, s, progress)
                grid = self.sr_config.output_grid
            for j in range(x.shape[0]):
                arrays = decode(x[j])
                if self.clean_labels:
                    arrays["organs"] = clean_organ_map(arrays["organs"], grid.spacing)[0]
                meta = {"source": "synthetic", "seed": s[j], "model_sha256": self.sha256, **self.settings}
                case = Case(ct=arrays["ct"], pet=arrays["pet"], organs=arrays["organs"], lesions=arrays["lesions"],
                            affine=grid.affine, demographics=d[j], meta=meta)
                if self.lesions != "model":
                    # "fitted" paints the lesions' activity when the scanner images the case next, so they
                    # are imaged once; "prior" paints as the sampler did before (blurred, then imaged).
                    fitted = self.lesions == "fitted"
                    case = add_lesions(case, seed=_seed_for_stage(s[j], 3),
                                       prior_uptake="fitted" if fitted else "phantom",
                                       activity=fitted and self.scanner is not None)
                if self.scanner is not None:
                    case.pet = apply_scanner(case.pet, case.spacing, self.scanner, d[j].weight_kg,
                                             rng=np.random.default_rng(_seed_for_stage(s[j], 4)))
                cases.append(case)
        return cases

    def sample_twins(self, base: Demographics, *, vary: Mapping[str, Sequence], seed: int,
                     progress: bool = False) -> list[Case]:
        """Counterfactual twins of ``base``: one case per setting of ``vary`` (e.g.
        ``{"weight": [60, 80, 100]}``), all with the same ``seed`` and so the same noise
        (:func:`synthaug.sampling.twins.sample_twins`)."""
        return sample_twins(self, base, vary, seed=seed, progress=progress)
