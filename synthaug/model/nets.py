"""Denoiser networks: MONAI's 3D ``DiffusionModelUNet`` with demographic conditioning.

Networks know nothing about noise schedules: they map (input, noise embedding,
demographics vector, optional image conditioning) to an output of the same grid.
The demographics vector is embedded by a small MLP and added to the noise-level
embedding, so every residual block sees both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from ..core.demographics import COND_DIM


@dataclass(frozen=True)
class NetConfig:
    """Architecture of a denoiser network (serialised beside its weights)."""

    in_channels: int                                   # channels of the noisy volume
    out_channels: int                                  # channels predicted
    cond_channels: int = 0                             # image conditioning concatenated to the input
    channels: tuple[int, ...] = (16, 32, 64)           # feature channels per resolution level
    num_res_blocks: int = 1                            # residual blocks per level
    attention_levels: tuple[bool, ...] = (False, False, True)  # self-attention per level
    mid_attention: bool = True                         # self-attention in the middle block
    norm_num_groups: int = 8                           # GroupNorm groups
    num_head_channels: int = 16                        # channels per attention head
    cond_dim: int = COND_DIM                           # length of the demographics vector
    extra: dict = field(default_factory=dict)          # free-form notes (ignored by the builder)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "attention_levels", tuple(bool(a) for a in self.attention_levels))
        if len(self.channels) != len(self.attention_levels):
            raise ValueError(f"channels {self.channels} and attention_levels {self.attention_levels} differ in length")
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"every entry of channels {self.channels} must be a multiple of norm_num_groups={self.norm_num_groups}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["attention_levels"] = list(self.attention_levels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def downsample_factor(self) -> int:
        """Spatial sizes must be multiples of this."""
        return 2 ** (len(self.channels) - 1)


class _OneDNNConv3d(nn.Conv3d):
    """``nn.Conv3d`` that samples on the CPU through oneDNN's convolution whatever the batch size.

    For one small 3D volume (batch 1 with few channels x depth x height: the demo global stage's
    deeper levels) PyTorch's kernel choice falls back to a native convolution that is several
    times slower than oneDNN's (``benchmarks/speed.py`` measures both). Applies in float32
    without autograd to kernels larger than one voxel (for 1 x 1 x 1 PyTorch's own choice is
    the faster one on one thread); anything else, and training, takes PyTorch's path. Same
    weights, same state dict; the result agrees with PyTorch's to float rounding.
    """

    onednn = True  # switched off by :func:`onednn_convolutions` (to measure the difference)

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (self.onednn and _HAS_ONEDNN and torch.backends.mkldnn.enabled and not torch.is_grad_enabled()
                and input.device.type == "cpu" and input.dtype == torch.float32 and weight.dtype == torch.float32
                and self.padding_mode == "zeros" and not isinstance(self.padding, str) and max(self.kernel_size) > 1):
            return torch.mkldnn_convolution(input.contiguous(), weight, bias, self.padding, self.stride,
                                            self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


_HAS_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch, "mkldnn_convolution")


@contextmanager
def onednn_convolutions(enabled: bool) -> Iterator[None]:
    """Within the block, sample with (``True``, the default) or without oneDNN forced for the
    networks' 3D convolutions (:class:`_OneDNNConv3d`)."""
    before = _OneDNNConv3d.onednn
    _OneDNNConv3d.onednn = enabled
    try:
        yield
    finally:
        _OneDNNConv3d.onednn = before


class ConditionalUNet(nn.Module):
    """3D U-Net denoiser conditioned on a noise embedding and a demographics vector.

    ``forward(x, t, cond, concat=None)``: ``x`` (N, in_channels, X, Y, Z), ``t`` (N,)
    noise embedding input (any real number; see the objectives), ``cond`` (N, cond_dim),
    ``concat`` (N, cond_channels, X, Y, Z) or ``None``.
    """

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = DiffusionModelUNet(
            spatial_dims=3,
            in_channels=config.in_channels + config.cond_channels,
            out_channels=config.out_channels,
            num_res_blocks=config.num_res_blocks,
            channels=config.channels,
            attention_levels=config.attention_levels,
            norm_num_groups=config.norm_num_groups,
            num_head_channels=config.num_head_channels,
            num_class_embeds=1,  # replaced below by a demographics MLP
        )
        if not config.mid_attention:
            # The middle block's attention is quadratic in the number of bottleneck voxels;
            # fully convolutional networks (the SR stage) drop it to run on any patch size.
            self.unet.middle_block.attention = nn.Identity()
        emb_dim = config.channels[0] * 4
        # The U-Net adds ``class_embedding(class_labels)`` to the time embedding; we feed the
        # demographics vector through an MLP in its place.
        self.unet.class_embedding = nn.Sequential(
            nn.Linear(config.cond_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        for module in self.unet.modules():
            if type(module) is nn.Conv3d:
                module.__class__ = _OneDNNConv3d

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, concat: torch.Tensor | None = None) -> torch.Tensor:
        if concat is not None:
            x = torch.cat([x, concat.to(x.dtype)], dim=1)
        elif self.config.cond_channels:
            raise ValueError(f"this network expects {self.config.cond_channels} conditioning channels")
        return self.unet(x, timesteps=t.to(x.dtype), class_labels=cond.to(x.dtype))


def build_net(config: NetConfig) -> ConditionalUNet:
    """Build the network described by ``config``."""
    return ConditionalUNet(config)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
