"""The denoiser network's CPU convolution path (synthaug.model.nets)."""

from __future__ import annotations

import pytest
import torch

from synthaug.core.demographics import COND_DIM
from synthaug.model.nets import NetConfig, _OneDNNConv3d, build_net, onednn_convolutions

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    config = NetConfig(in_channels=3, out_channels=3, channels=(8, 16), attention_levels=(False, False),
                       mid_attention=False, norm_num_groups=4, num_head_channels=8)
    return build_net(config).eval()


def _inputs(batch: int = 1):
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, 8, 8, 16, generator=g), torch.full((batch,), 0.7), torch.randn(batch, COND_DIM, generator=g)


def _count_onednn_calls(monkeypatch) -> list[int]:
    calls = []
    real = torch.mkldnn_convolution

    def counted(*args):
        calls.append(args[0].shape[0])
        return real(*args)

    monkeypatch.setattr(torch, "mkldnn_convolution", counted)
    return calls


def test_sampling_takes_onednn_for_one_volume_and_agrees_with_pytorchs_choice(net, monkeypatch):
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(type(m) is _OneDNNConv3d for m in convs)
    wide = sum(max(m.kernel_size) > 1 for m in convs)
    calls = _count_onednn_calls(monkeypatch)
    x, t, cond = _inputs()
    with torch.no_grad():
        forced = net(x, t, cond)
        assert len(calls) == wide and set(calls) == {1}  # every 3x3x3 convolution, none of the 1x1x1
        with onednn_convolutions(False):
            default = net(x, t, cond)
        assert len(calls) == wide  # switched off: PyTorch's own choice
    torch.testing.assert_close(forced, default, rtol=1e-4, atol=1e-5)


def test_training_keeps_pytorchs_path_and_the_state_dict(net, monkeypatch):
    calls = _count_onednn_calls(monkeypatch)
    x, t, cond = _inputs()
    out = net(x, t, cond)  # autograd on: PyTorch's path, gradients as before
    out.sum().backward()
    assert calls == []
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    net.zero_grad(set_to_none=True)
    keys = set(net.state_dict())
    assert any(k.endswith("conv.weight") for k in keys)  # the same names as a plain nn.Conv3d
