"""FLAIR and the restoration baselines on a prior whose velocity is exact (per-pixel Gaussians)."""

import pytest
import torch

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.core.fewstep import GaussianOracle
from flowzoo.vision.operators import Operator, build_operator
from flowzoo.vision.restoration import (RESTORE_METHODS, calibrated_weights, dps_restore, flair_restore,
                                        flair_schedule, load_error_table, measure_velocity_error, operator_norm,
                                        projection_restore, pseudo_inverse_restore, save_error_table,
                                        supported_methods)

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def prior():
    """Images whose pixels are N(m, 0.1²) with a checkerboard of means ±0.8: the exact FM velocity is known."""
    i, j = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    mean = (((i // 2 + j // 2) % 2) * 1.6 - 0.8).float()[None]
    oracle = GaussianOracle(mean=mean, std=0.1)
    velocity = lambda x, t: oracle.velocity(x.double(), t.double()).float()
    images = mean + 0.1 * torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(0))
    return velocity, images


def _mse(a, b):
    return float(((a - b) ** 2).mean())


@pytest.mark.parametrize("task", ["inpaint", "sr4"])
def test_every_prior_solver_beats_the_pseudo_inverse_with_an_exact_prior(prior, task):
    velocity, images = prior
    op = build_operator(task, 8, noise_std=0.01)
    y = op.measure(images, generator=torch.Generator().manual_seed(1))
    baseline = _mse(pseudo_inverse_restore(y, op).x, images)
    gen = lambda: torch.Generator().manual_seed(2)
    for restore in (lambda: flair_restore(velocity, y, op, shape=SHAPE, steps=20, generator=gen()),
                    lambda: projection_restore(velocity, y, op, shape=SHAPE, steps=20, generator=gen()),
                    lambda: dps_restore(velocity, y, op, shape=SHAPE, steps=20, generator=gen())):
        out = restore()
        assert out.nfe == 20 and out.x.shape == images.shape
        assert _mse(out.x, images) < 0.5 * baseline


def test_flair_fits_the_measurement_and_its_ablations_run(prior):
    velocity, images = prior
    op = build_operator("inpaint", 8)
    y = op(images)
    for options in ({}, {"dta": False}, {"data_steps": 0, "project_until": 0.0}):
        out = flair_restore(velocity, y, op, shape=SHAPE, steps=10, generator=torch.Generator().manual_seed(0),
                            **options)
        assert torch.isfinite(out.x).all()
    full = flair_restore(velocity, y, op, shape=SHAPE, steps=10, generator=torch.Generator().manual_seed(0))
    assert _mse(op(full.x), y) < 1e-3


def test_flair_never_differentiates_through_the_velocity(prior):
    """The SDS-style regulariser: the model runs without autograd, so a broken version that backprops fails here."""
    velocity, images = prior
    calls = []

    def watched(x, t):
        calls.append(torch.is_grad_enabled() or x.requires_grad)
        return velocity(x, t)
    op = build_operator("sr2", 8)
    flair_restore(watched, op(images[:2]), op, shape=SHAPE, steps=5)
    assert calls and not any(calls)


def test_dta_reuses_the_predicted_noise():
    """With DTA the second step's noise is s·ε̂ + sqrt(1-s²)ξ: a model returning 0 makes ε̂ = x_s, so the states
    of consecutive steps are correlated; without DTA they are not."""
    seen = []

    def zero(x, t):
        seen.append(x.clone())
        return torch.zeros_like(x)
    op = build_operator("sr2", 8)
    y = torch.zeros(256, 1, 4, 4)
    for dta in (True, False):
        seen.clear()
        flair_restore(zero, y, op, shape=SHAPE, steps=3, dta=dta, data_steps=0, project_until=0.0, reg_weight=0.0,
                      generator=torch.Generator().manual_seed(0))
        corr = torch.corrcoef(torch.stack([seen[1].flatten(), seen[2].flatten()]))[0, 1]
        assert (corr > 0.3) if dta else (abs(corr) < 0.1)


def test_crw_table_round_trip_and_weights(prior, tmp_path):
    velocity, images = prior
    times = torch.linspace(0.05, 0.95, 7)
    errors = measure_velocity_error(velocity, images, times, repeats=2)
    assert errors.shape == (7,) and (errors >= 0).all()
    path = save_error_table(tmp_path / "crw.json", times, errors)
    t2, e2 = load_error_table(path)
    assert torch.allclose(t2, times) and torch.allclose(e2, errors, rtol=1e-5)
    w = calibrated_weights(flair_schedule(10), t2, e2)
    assert w.shape == (10,) and (w > 0).all() and abs(float(w.mean()) - 0.5) < 1e-5   # mean 1 times reg_weight
    shifted = calibrated_weights(flair_schedule(10), t2, e2, shift=None)
    assert (shifted >= 0).all() and float(shifted[-1]) == 0.0
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="velocity-error table"):
        load_error_table(tmp_path / "bad.json")


def test_operator_norm_of_the_average_pool():
    assert abs(operator_norm(build_operator("sr2", 8), SHAPE) - 0.25) < 1e-4


def test_bad_input():
    op = build_operator("sr2", 8)
    with pytest.raises(ShapeError, match="one weight per step"):
        flair_restore(lambda x, t: x, torch.zeros(1, 1, 4, 4), op, shape=SHAPE, steps=4, weights=torch.ones(3))
    with pytest.raises(ShapeError, match="prior's images"):
        flair_restore(lambda x, t: x, torch.zeros(1, 1, 4, 4), op, shape=(1, 16, 16), steps=2)
    with pytest.raises(ConfigError):
        flair_schedule(0)


class _BrokenAdjoint(Operator):
    """x ↦ 2x whose "adjoint" forgets the factor 2: every solver must refuse it before it starts."""

    def forward(self, x):
        return 2 * x

    def adjoint(self, y):
        return y

    def pinv(self, y):
        return y / 2


@pytest.mark.parametrize("solver", [flair_restore, dps_restore, projection_restore])
def test_every_solver_checks_the_operators_adjoint_once(solver):
    y = torch.zeros(1, *SHAPE)
    with pytest.raises(ConfigError, match="<A x, y>"):
        solver(lambda x, t: torch.zeros_like(x), y, _BrokenAdjoint(), shape=SHAPE, steps=2)


class _PoolWithoutPinv(Operator):
    """A user's ×2 average pooling with A and A^T only (no pseudo-inverse)."""

    name = "my_sr2"

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 2)

    def adjoint(self, y):
        return torch.nn.functional.interpolate(y, scale_factor=2) / 4


def _counting(velocity, calls):
    def model(x, t):
        calls.append(1)
        return velocity(x, t)
    return model


def test_supported_methods_follow_the_operators_pseudo_inverse():
    assert supported_methods(build_operator("inpaint", 8)) == RESTORE_METHODS
    assert supported_methods(_PoolWithoutPinv()) == ("dps",)


@pytest.mark.parametrize("solver", ["projection", "pinv", "flair"])
def test_methods_that_need_pinv_refuse_an_operator_without_one_before_any_work(prior, solver):
    velocity, images = prior
    op, calls = _PoolWithoutPinv(), []
    model = _counting(velocity, calls)
    run = {"projection": lambda y: projection_restore(model, y, op, shape=SHAPE, steps=3),
           "pinv": lambda y: pseudo_inverse_restore(y, op),
           "flair": lambda y: flair_restore(model, y, op, shape=SHAPE, steps=3)}[solver]
    with pytest.raises(ConfigError, match=r"pseudo-inverse.*my_sr2.*\(dps\)"):
        run(op(images[:2]))
    assert not calls                                                 # refused before the first model evaluation


def test_dps_and_latent_flair_without_encoder_work_without_a_pseudo_inverse(prior):
    """DPS needs only A (and A^T for the check); latent FLAIR without an encoder starts at the origin, no A^+."""
    velocity, images = prior
    op = _PoolWithoutPinv()
    y = op(images)
    out = dps_restore(velocity, y, op, shape=SHAPE, steps=20, generator=torch.Generator().manual_seed(2))
    same = dps_restore(velocity, y, build_operator("sr2", 8), shape=SHAPE, steps=20,
                       generator=torch.Generator().manual_seed(2))
    assert torch.allclose(out.x, same.x, atol=1e-5)                # as with the built-in ×2 pooling, which has A^+
    assert _mse(out.x, images) < 0.015                               # a prior sample that ignores y: 0.02
    latent = flair_restore(velocity, y, op, shape=SHAPE, steps=4, decoder=lambda mu: mu,
                           generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(latent.x).all()


def test_projection_refuses_a_pseudo_inverse_that_is_not_a_right_inverse(prior):
    velocity, images = prior

    class AdjointAsPinv(_PoolWithoutPinv):
        def pinv(self, y):
            return self.adjoint(y)
    with pytest.raises(ConfigError, match="right inverse"):
        projection_restore(velocity, AdjointAsPinv()(images[:1]), AdjointAsPinv(), shape=SHAPE, steps=2)
