"""Tests of flowzoo.core.paths.schedulers: endpoints, closed-form derivatives against finite differences and
autograd, shapes and dtypes, and bad constructor arguments."""

from __future__ import annotations

import math

import pytest
import torch

from flowzoo.core.errors import ConfigError
from flowzoo.core.paths.schedulers import (
    CosineScheduler,
    LinearScheduler,
    LinearVPScheduler,
    PolynomialScheduler,
    Scheduler,
    SchedulerOutput,
    SigmaMinScheduler,
    VPScheduler,
)

F64 = torch.float64
SCHEDULERS = {
    "linear": LinearScheduler(),
    "cosine": CosineScheduler(),
    "vp": VPScheduler(),
    "vp_narrow": VPScheduler(0.5, 5.0),
    "vp_constant_rate": VPScheduler(2.0, 2.0),
    "poly2": PolynomialScheduler(2),
    "poly0.5": PolynomialScheduler(0.5),
    "poly3.5": PolynomialScheduler(3.5),
    "linear_vp": LinearVPScheduler(),
    "sigma_min": SigmaMinScheduler(0.1),
}
# Interior times only: PolynomialScheduler(n < 1) and VPScheduler have a clamped (finite) derivative at an end.
TIMES = [0.03, 0.2, 0.5, 0.77, 0.97]
SHAPES = [(1,), (5,), (3, 4)]


def _t(shape, dtype=F64):
    values = torch.tensor(TIMES, dtype=dtype)
    return values.repeat(math.ceil(math.prod(shape) / len(TIMES)))[:math.prod(shape)].reshape(shape)


@pytest.mark.parametrize("name", ["linear", "cosine", "poly2", "poly0.5", "poly3.5"])
def test_source_at_zero_and_data_at_one(name):
    out = SCHEDULERS[name](torch.tensor([0.0, 1.0], dtype=F64))
    assert out.alpha.tolist() == pytest.approx([1.0, 0.0], abs=1e-12)
    assert out.beta.tolist() == pytest.approx([0.0, 1.0], abs=1e-12)


@pytest.mark.parametrize("beta_min, beta_max", [(0.1, 20.0), (0.5, 5.0), (2.0, 2.0), (0.0, 1.0)])
def test_vp_endpoints_keep_exp_of_minus_half_the_integrated_rate(beta_min, beta_max):
    out = VPScheduler(beta_min, beta_max)(torch.tensor([0.0, 1.0], dtype=F64))
    # B(1) = beta_min + (beta_max - beta_min) / 2, so beta(0) = exp(-B(1)/2); alpha^2 + beta^2 = 1 at both ends.
    data_at_source = math.exp(-(beta_min + beta_max) / 4)
    assert out.beta.tolist() == pytest.approx([data_at_source, 1.0], abs=1e-12)
    assert out.alpha.tolist() == pytest.approx([math.sqrt(1 - data_at_source ** 2), 0.0], abs=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_derivatives_match_central_finite_differences(name, shape):
    scheduler, t, h = SCHEDULERS[name], _t(shape), 1e-6
    out, plus, minus = scheduler(t), scheduler(t + h), scheduler(t - h)
    for value, field in ((out.d_alpha, "alpha"), (out.d_beta, "beta")):
        difference = (getattr(plus, field) - getattr(minus, field)) / (2 * h)
        torch.testing.assert_close(value, difference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_derivatives_match_autograd(name, shape):
    scheduler = SCHEDULERS[name]
    t = _t(shape).requires_grad_(True)
    out = scheduler(t)
    # Each entry depends on its own t only, so the gradient of the sum is the elementwise derivative.
    d_alpha, = torch.autograd.grad(out.alpha.sum(), t, retain_graph=True)
    d_beta, = torch.autograd.grad(out.beta.sum(), t)
    torch.testing.assert_close(out.d_alpha.detach(), d_alpha)
    torch.testing.assert_close(out.d_beta.detach(), d_beta)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_field_has_the_shape_and_dtype_of_t(name, shape, dtype):
    out = SCHEDULERS[name](_t(shape, dtype))
    assert isinstance(out, SchedulerOutput)
    for value in (out.alpha, out.beta, out.d_alpha, out.d_beta):
        assert value.shape == shape and value.dtype == dtype


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_coefficients_are_monotone_source_down_data_up(name):
    out = SCHEDULERS[name](torch.linspace(0, 1, 201, dtype=F64))
    assert bool((out.alpha.diff() <= 1e-12).all()) and bool((out.beta.diff() >= -1e-12).all())
    assert bool((out.d_alpha <= 0).all()) and bool((out.d_beta >= 0).all())


def test_singular_end_derivatives_are_clamped_to_finite_values():
    ends = torch.tensor([0.0, 1.0], dtype=F64)
    vp = VPScheduler()(ends)
    # The exact value is -inf at t = 1; it is taken at diffusion time s = 1e-5 instead.
    s = VPScheduler.min_diffusion_time
    integral, rate = 0.1 * s + 0.5 * 19.9 * s * s, 0.1 + 19.9 * s
    clamped = -0.5 * rate * math.exp(-integral) / math.sqrt(-math.expm1(-integral))
    assert torch.isfinite(vp.d_alpha).all() and vp.d_alpha[1].item() == pytest.approx(clamped, rel=1e-9)
    root = PolynomialScheduler(0.5)(ends)
    assert torch.isfinite(root.d_beta).all()
    assert root.d_beta[0].item() == pytest.approx(0.5 / math.sqrt(1e-6), rel=1e-4)  # n t^(n-1) at t = 1e-6
    assert root.beta[0].item() == 0.0  # the coefficient itself is not clamped


def test_variance_preserving_schedulers_keep_alpha2_plus_beta2_at_one():
    t = torch.linspace(0, 1, 101, dtype=F64)
    for scheduler in (CosineScheduler(), VPScheduler(), VPScheduler(0.5, 5.0)):
        out = scheduler(t)
        torch.testing.assert_close(out.alpha ** 2 + out.beta ** 2, torch.ones_like(t))


def test_polynomial_one_is_linear():
    t = _t((7,))
    linear, poly = LinearScheduler()(t), PolynomialScheduler(1)(t)
    for field in ("alpha", "beta", "d_alpha", "d_beta"):
        torch.testing.assert_close(getattr(poly, field), getattr(linear, field))


def test_repr_names_the_parameters():
    assert repr(VPScheduler(0.5, 5.0)) == "VPScheduler(beta_min=0.5, beta_max=5.0)"
    assert repr(PolynomialScheduler(3)) == "PolynomialScheduler(n=3)"
    assert repr(LinearScheduler()) == "LinearScheduler()"


@pytest.mark.parametrize("args", [(5.0, 1.0), (-0.1, 20.0), (0.0, 0.0), (float("nan"), 1.0), (0.1, float("inf")),
                                  ("0.1", 20.0), (0.1, None)])
def test_vp_refuses_bad_rates(args):
    with pytest.raises(ConfigError, match="beta_min <= beta_max"):
        VPScheduler(*args)


@pytest.mark.parametrize("n", [0, -1.0, float("inf"), float("nan"), True, "2", None])
def test_polynomial_refuses_bad_exponents(n):
    with pytest.raises(ConfigError, match="exponent n"):
        PolynomialScheduler(n)


def test_the_base_class_is_abstract():
    with pytest.raises(NotImplementedError):
        Scheduler()(torch.zeros(2))


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_snr_inverse_inverts_the_signal_to_noise_ratio(name):
    scheduler = SCHEDULERS[name]
    t = torch.linspace(0.01, 0.99, 99, dtype=F64)
    out = scheduler(t)
    torch.testing.assert_close(scheduler.snr_inverse(out.beta / out.alpha), t, rtol=1e-9, atol=1e-9)
    assert scheduler.snr_inverse(torch.tensor([math.inf], dtype=F64)).item() == pytest.approx(1.0, abs=1e-12)


def test_vp_snr_below_its_source_end_maps_to_time_zero():
    # beta(0) > 0 for VP: no time has SNR 0, the inverse clamps to the source end.
    assert VPScheduler().snr_inverse(torch.tensor([0.0, 1e-9], dtype=F64)).tolist() == [0.0, 0.0]


def test_linear_vp_is_variance_preserving_with_a_linear_data_coefficient():
    t = torch.linspace(0, 1, 101, dtype=F64)
    out = LinearVPScheduler()(t)
    torch.testing.assert_close(out.beta, t)
    torch.testing.assert_close(out.alpha ** 2 + out.beta ** 2, torch.ones_like(t))
    assert torch.isfinite(out.d_alpha).all()  # -t / sqrt(1 - t^2) is clamped at t = 1


def test_sigma_min_is_lipman_width_and_zero_is_linear():
    t = _t((9,))
    out = SigmaMinScheduler(0.25)(t)
    torch.testing.assert_close(out.alpha, 1 - 0.75 * t)  # sigma_t = 1 - (1 - sigma_min) t (Lipman et al., Eq. 20)
    assert SigmaMinScheduler(0.25)(torch.ones(1, dtype=F64)).alpha.item() == pytest.approx(0.25)
    linear, zero = LinearScheduler()(t), SigmaMinScheduler(0.0)(t)
    for field in ("alpha", "beta", "d_alpha", "d_beta"):
        torch.testing.assert_close(getattr(zero, field), getattr(linear, field))


@pytest.mark.parametrize("sigma_min", [-0.1, 1.0, 2.0, float("nan"), "0.1", None])
def test_sigma_min_refuses_widths_outside_the_unit_interval(sigma_min):
    with pytest.raises(ConfigError, match="sigma_min"):
        SigmaMinScheduler(sigma_min)


def test_the_base_class_does_not_invert_snr():
    with pytest.raises(NotImplementedError, match="signal-to-noise"):
        Scheduler().snr_inverse(torch.ones(2))
