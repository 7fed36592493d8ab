"""Tests of flowzoo.core.families.rectified_diffusion (Rectified Diffusion, arXiv 2410.07303)."""

import pytest
import torch

from flowzoo.core.data import sample_toy
from flowzoo.core.errors import ConfigError, FlowzooError
from flowzoo.core.analysis import wasserstein2
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.paths import AffinePath, VPScheduler
from flowzoo.core.families import (EpsilonAsVelocity, EpsilonPredictionLoss, RectifiedDiffusionLoss,
                                              ddim_sample, x1_prediction_variance)
from flowzoo.core.fewstep import generate_pairs, rectify
from flowzoo.core.sampling import integrate
from toy_training import fit, moons_pool, pool_batches

SCHED = VPScheduler(0.1, 10.0)  # beta(0) = 0.08: a milder 1/beta at the noise end than the default 0.0066
PATH = AffinePath(SCHED)


def test_eps_as_velocity_matches_conditional_velocity():
    x0, x1, t = torch.randn(6, 3), torch.randn(6, 3), torch.rand(6) * 0.9 + 0.05
    s = PATH.sample(x0, x1, t)
    oracle = lambda x, tt: x0  # noqa: E731  the true noise of this pair
    assert torch.allclose(EpsilonAsVelocity(oracle, PATH)(s.x_t, t), s.dx_t, atol=1e-4)


def test_ddim_is_exact_for_a_point_mass_and_loss_hand_values():
    m = torch.tensor([[1.5, -2.0]])
    exact_eps = lambda x, t: (x - PATH.coefficients(t, x)[1] * m) / PATH.coefficients(t, x)[0]  # noqa: E731
    z = torch.randn(5, 2)
    for steps in (1, 2, 7):
        assert torch.allclose(ddim_sample(exact_eps, z, path=PATH, steps=steps).x, m.expand(5, 2), atol=1e-4)
    assert x1_prediction_variance(exact_eps, z, path=PATH, steps=10) < 1e-8
    batch = {"x0": torch.zeros(4, 2), "x1": torch.ones(4, 2)}
    assert EpsilonPredictionLoss(SCHED)(lambda x, t: torch.ones_like(x), batch)[0].item() == pytest.approx(1.0)
    # pseudo-Huber on x1_hat: a perfect eps gives x1_hat = x1 exactly, loss 0
    assert RectifiedDiffusionLoss(SCHED, loss="pseudo_huber")(lambda x, t: torch.zeros_like(x), batch)[0].item() \
        == pytest.approx(0.0, abs=1e-6)


def test_bad_inputs_raise():
    with pytest.raises(ConfigError):
        RectifiedDiffusionLoss(SCHED)(lambda x, t: x, {"x1": torch.randn(2, 2)})  # pairs needed
    with pytest.raises(ConfigError):
        RectifiedDiffusionLoss(SCHED, loss="l1")
    with pytest.raises(ConfigError):
        RectifiedDiffusionLoss(SCHED, huber_c=0)
    with pytest.raises(ConfigError):
        EpsilonAsVelocity(3)
    with pytest.raises(FlowzooError):
        EpsilonPredictionLoss(SCHED)(lambda x, t: x, {"x1": torch.full((2, 2), float("nan"))})


def _train_eps(steps):
    torch.manual_seed(0)
    net = MLPVelocity(2, hidden=64, depth=2, time_dim=16)
    g = torch.Generator().manual_seed(0)
    return fit(net, EpsilonPredictionLoss(SCHED), steps, pool_batches(moons_pool(), g), generator=g)


def test_rectified_diffusion_makes_the_eps_model_first_order(tmp_path):
    torch.set_num_threads(1)
    base = _train_eps(1000)
    test = sample_toy("moons", 1000, seed=2)
    z = torch.randn(1000, 2, generator=torch.Generator().manual_seed(3))
    w_many = wasserstein2(integrate(EpsilonAsVelocity(base, PATH), z, method="rk4", steps=50).x, test)
    assert w_many < 0.8  # the eps model samples moons (1-step: ~2.6)
    noise = torch.randn(2048, 2, generator=torch.Generator().manual_seed(4))
    store = generate_pairs(EpsilonAsVelocity(base, PATH), noise, out_dir=tmp_path, chunk_size=1024, steps=40,
                           progress=False)
    rect = rectify(base, store, 500, lr=1e-3, objective=RectifiedDiffusionLoss(SCHED))
    pairs = store.tensors()
    shuffled = {"x0": pairs["x0"][torch.randperm(2048, generator=torch.Generator().manual_seed(5))],
                "x1": pairs["x1"]}
    broken = rectify(base, shuffled, 500, lr=1e-3, objective=RectifiedDiffusionLoss(SCHED))
    w = {name: [wasserstein2(ddim_sample(m, z, path=PATH, steps=k).x, test) for k in (1, 2)]
         for name, m in (("base", base), ("rect", rect), ("unpaired", broken))}
    var = {name: x1_prediction_variance(m, z, path=PATH, steps=40)
           for name, m in (("base", base), ("rect", rect), ("unpaired", broken))}
    print(w, var, w_many)
    assert w["rect"][0] < 0.5 * w["base"][0] and w["rect"][1] < 0.7 * w["base"][1]
    assert var["rect"] < 0.1 * var["base"]
    assert var["unpaired"] > 0.5 * var["base"] and w["unpaired"][0] > 2 * w["rect"][0]
