"""The generator's channel encoding: invertible intensities, exact labels, numpy == torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthaug.core.labels import NUM_ORGAN_CLASSES
from synthaug.model.channels import (
    CHANNEL_NAMES,
    CT_CHANNEL,
    LESION_CHANNEL,
    NUM_CHANNELS,
    ORGAN_CHANNELS,
    PET_CHANNEL,
    channel_to_ct,
    channel_to_pet,
    ct_to_channel,
    decode,
    encode,
    pet_to_channel,
)

# HU values across every segment, on the knots and far beyond both ends.
HU = np.array([-3000.0, -1024.0, -1000.0, -999.5, -600.0, -200.0, -199.0, 0.0, 40.0, 100.0, 300.0, 301.0, 1500.0,
               3000.0, 3001.0, 5000.0])
SUV = np.array([0.0, 1e-4, 0.3, 1.0, 2.0, 2.5, 10.0, 30.0, 55.5, 100.0])


def _case(seed: int = 0, shape=(6, 5, 7)):
    rng = np.random.default_rng(seed)
    ct = rng.uniform(-1100, 3200, shape).astype(np.float32)
    ct.flat[: HU.size] = HU
    pet = rng.uniform(0, 40, shape).astype(np.float32)
    pet.flat[: SUV.size] = SUV
    organs = rng.integers(0, NUM_ORGAN_CLASSES, shape).astype(np.uint8)
    lesions = (rng.random(shape) < 0.2).astype(np.uint8)
    return ct, pet, organs, lesions


def test_layout():
    assert NUM_CHANNELS == 3 + NUM_ORGAN_CLASSES == len(CHANNEL_NAMES)
    assert (CT_CHANNEL, PET_CHANNEL, ORGAN_CHANNELS.start, LESION_CHANNEL) == (0, 1, 2, NUM_CHANNELS - 1)


def test_ct_round_trip_including_beyond_the_knots():
    for dtype in (np.float32, np.float64):
        y = ct_to_channel(HU.astype(dtype))
        np.testing.assert_allclose(channel_to_ct(y), HU, atol=1e-3, rtol=0)
    y = ct_to_channel(HU)
    assert np.all(np.diff(y) > 0)  # strictly increasing, so invertible
    np.testing.assert_allclose(y[[2, 5, 10, 13]], [-1.0, -0.5, 0.5, 1.5])  # the documented knots
    assert y[0] < -1.0 and y[-1] > 1.5  # extrapolated, not clipped


def test_pet_round_trip_including_zero_and_high_uptake():
    y = pet_to_channel(SUV.astype(np.float32))
    assert y[0] == -1.0 and np.isclose(y[SUV == 30.0][0], 1.0)
    assert np.all(np.diff(y) > 0)
    back = channel_to_pet(y.astype(np.float64))
    np.testing.assert_allclose(back, SUV, rtol=1e-5, atol=1e-6)
    assert back[0] == 0.0
    # Slightly negative SUV (reconstruction noise) stays invertible too.
    np.testing.assert_allclose(channel_to_pet(pet_to_channel(np.array([-0.2, -1e-3]))), [-0.2, -1e-3], rtol=1e-9)


def test_numpy_and_torch_paths_agree():
    for fwd, inv, values in ((ct_to_channel, channel_to_ct, HU), (pet_to_channel, channel_to_pet, SUV)):
        y_np = fwd(values)
        y_t = fwd(torch.from_numpy(values))
        assert isinstance(y_t, torch.Tensor) and y_t.dtype == torch.float64
        np.testing.assert_allclose(y_t.numpy(), y_np, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(inv(torch.from_numpy(y_np)).numpy(), inv(y_np), rtol=1e-12, atol=1e-9)
    hu32 = torch.from_numpy(HU.astype(np.float32))
    np.testing.assert_allclose(ct_to_channel(hu32).numpy(), ct_to_channel(HU.astype(np.float32)), rtol=1e-6, atol=1e-6)


def test_encode_decode_round_trip():
    ct, pet, organs, lesions = _case()
    x = encode(ct, pet, organs, lesions)
    assert x.shape == (NUM_CHANNELS, *ct.shape) and x.dtype == np.float32
    assert set(np.unique(x[ORGAN_CHANNELS])) == {-1.0, 1.0} and set(np.unique(x[LESION_CHANNEL])) == {-1.0, 1.0}
    assert np.all((x[ORGAN_CHANNELS] > 0).sum(0) == 1)  # one-hot
    for given in (x, torch.from_numpy(x)):
        out = decode(given)
        np.testing.assert_allclose(out["ct"], ct, atol=1e-3, rtol=0)
        np.testing.assert_allclose(out["pet"], pet, rtol=1e-5, atol=1e-5)
        assert out["organs"].dtype == np.uint8 and np.array_equal(out["organs"], organs)
        assert out["lesions"].dtype == np.uint8 and np.array_equal(out["lesions"], lesions)


def test_labels_survive_moderate_channel_noise():
    """Decoding is argmax / sign: a generator that is off by less than 1 still yields the exact labels."""
    ct, pet, organs, lesions = _case(1)
    x = encode(ct, pet, organs, lesions)
    noise = np.random.default_rng(2).uniform(-0.45, 0.45, x.shape).astype(np.float32)
    out = decode(x + noise)
    assert np.array_equal(out["organs"], organs) and np.array_equal(out["lesions"], lesions)


def test_unknown_labels_encode_as_zero():
    ct, pet, _, _ = _case(3)
    x = encode(ct, pet, None, None)
    assert np.all(x[ORGAN_CHANNELS] == 0) and np.all(x[LESION_CHANNEL] == 0)


def test_decode_rejects_the_wrong_number_of_channels():
    with pytest.raises(ValueError, match=str(NUM_CHANNELS)):
        decode(np.zeros((NUM_CHANNELS - 1, 2, 2, 2), np.float32))


def test_decode_clips_out_of_range_values_instead_of_overflowing():
    import warnings

    from synthaug.model.channels import NUM_CHANNELS, PET_CHANNEL, decode

    x = np.zeros((NUM_CHANNELS, 2, 2, 2), dtype=np.float32)
    x[PET_CHANNEL] = 500.0  # far outside the data range
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = decode(x)
    assert np.isfinite(out["pet"]).all() and np.isfinite(out["ct"]).all()
    assert out["pet"].max() < 6000
