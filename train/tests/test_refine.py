"""The refinement pass's eta (`midms.refine_eta`, our own models since model v1.8): the authors'
stochastic pass (eta 1) unless a config sets it; at 0 the pass is deterministic. The Rust sampler's
twin is checked by the parity tests on the shipped model's trainer fixture."""
import pytest
import torch

from train.config import default_config
from train.midm import MIDM


def refined(model, seed_step_noise):
    torch.manual_seed(0)
    x0 = torch.randn(1, 3, 8, 8)
    q = torch.randn(1, 3, 8, 8)
    g = torch.Generator().manual_seed(seed_step_noise)

    def randn(like, key, j=None):
        return q if key == "refine.q_noise" else torch.randn(like.shape, generator=g)

    with torch.no_grad():
        return model.refine(x0, 20, 16, randn)


def test_refine_eta_zero_makes_the_pass_deterministic_and_one_is_the_default():
    cfg = default_config()
    torch.manual_seed(1)
    stochastic = MIDM(cfg).eval()
    assert stochastic.refine_eta == 1.0, "the authors' refinement unless the config says otherwise"
    assert (refined(stochastic, 1) - refined(stochastic, 2)).abs().max() > 1e-3
    cfg["midms"]["refine_eta"] = 0.0
    torch.manual_seed(1)
    deterministic = MIDM(cfg).eval()
    assert torch.equal(refined(deterministic, 1), refined(deterministic, 2)), "no step noise at eta 0"
    for bad in (-0.1, 1.5):
        cfg["midms"]["refine_eta"] = bad
        with pytest.raises(ValueError, match="refine_eta"):
            MIDM(cfg)
