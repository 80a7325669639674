"""Road pixel scores against plain per-pixel references: MSP, max logit, energy with temperature,
entropy and SML. Each comparison has a control: a perturbed implementation must fail it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from oddspot.road.scores import StandardizedMaxLogit, energy, entropy, max_logit, msp

import references as ref

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(0.0, 3.0, (2, 5, 4, 5))
EXACT = {"rtol": 1e-12, "atol": 1e-12}  # float64 in both
F32 = {"rtol": 1e-6, "atol": 1e-6}

PURE = {  # name -> (implementation, reference of one pixel)
    "msp": (msp, ref.msp),
    "max_logit": (max_logit, ref.max_logit),
    "energy_T1": (lambda x: energy(x, temperature=1.0), lambda p: ref.energy(p, 1.0)),
    "energy_T2.5": (lambda x: energy(x, temperature=2.5), lambda p: ref.energy(p, 2.5)),
    "energy_T0.3": (lambda x: energy(x, temperature=0.3), lambda p: ref.energy(p, 0.3)),
    "entropy": (entropy, ref.entropy),
}


def check_pure(fn, pixel_ref) -> None:
    """float64 numpy in, float64 out, to 1e-12; float32 torch in, float32 torch out, to 1e-6."""
    expected = ref.per_pixel(pixel_ref, LOGITS)
    out = fn(LOGITS)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, expected, **EXACT)
    t = fn(torch.from_numpy(LOGITS.astype(np.float32)))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), expected, **F32)


@pytest.mark.parametrize("name", list(PURE))
def test_pure_score_matches_reference(name):
    check_pure(*PURE[name])


@pytest.mark.parametrize(("name", "perturbed"), [
    ("msp", lambda x: 1.0 - msp(x)),  # the max softmax probability itself: sign of "anomalous" swapped
    ("max_logit", lambda x: -max_logit(x)),  # a swapped sign
    ("energy_T2.5", lambda x: energy(x, temperature=1.0)),  # the temperature ignored
    ("entropy", lambda x: entropy(x) / math.log(2.0)),  # bits instead of nats
])
def test_control_perturbed_pure_score_fails(name, perturbed):
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_pure(perturbed, PURE[name][1])


# --- SML -----------------------------------------------------------------------------------------

FIT = RNG.normal(0.0, 2.0, (3, 4, 6, 6))
FIT[:, 3] -= 2.5  # class 3 is rarely predicted
VALID = RNG.random((3, 6, 6)) < 0.8
TEST = RNG.normal(0.0, 2.0, (2, 4, 5, 5))
RARE = int(np.bincount(FIT.argmax(1)[VALID], minlength=4)[3])  # fitting pixels predicted as class 3


def fit_sml(min_pixels: int, valid: np.ndarray | None = VALID) -> StandardizedMaxLogit:
    sml = StandardizedMaxLogit(4, min_pixels=min_pixels)
    for i in range(FIT.shape[0]):  # streamed image by image
        sml.partial_fit(torch.from_numpy(FIT[i:i + 1]), None if valid is None else torch.from_numpy(valid[i:i + 1]))
    return sml.finalize()


def check_sml(sml: StandardizedMaxLogit, min_pixels: int) -> None:
    means, stds = ref.sml_statistics(FIT, VALID, min_pixels)
    np.testing.assert_allclose(sml.mean.numpy(), means, **F32)
    np.testing.assert_allclose(sml.std.numpy(), stds, **F32)
    expected = ref.per_pixel(lambda p: ref.sml(p, means, stds), TEST)
    np.testing.assert_allclose(sml(torch.from_numpy(TEST)).numpy(), expected, **F32)


def test_the_data_has_a_rare_class():
    assert 2 <= RARE < 10


@pytest.mark.parametrize("min_pixels", [1, RARE, RARE + 1])
def test_sml_matches_reference(min_pixels):
    """At RARE the rare class keeps its own statistics; at RARE + 1 it falls back to all pixels."""
    sml = fit_sml(min_pixels)
    assert (3 in sml.fallback_classes) == (min_pixels > RARE)
    check_sml(sml, min_pixels)


def test_control_sml_fallback_off_by_one_fails():
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_sml(fit_sml(RARE + 1), RARE)


def test_control_sml_ignoring_the_valid_mask_fails():
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_sml(fit_sml(1, valid=None), 1)
