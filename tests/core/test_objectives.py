"""Tests of flowzoo.core.objectives: hand computations, Bayes-optimal minima, weights, dropout, bad input."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, FlowzooError, NonFiniteError, ShapeError
from flowzoo.core.objectives import (
    FlowMatchingLoss,
    InterpolantDenoiserLoss,
    InterpolantDriftLoss,
    InterpolantScoreLoss,
)
from flowzoo.core.paths import (
    AffinePath,
    BrownianGamma,
    BSquaredGamma,
    CondOTPath,
    ConstantGamma,
    CosineScheduler,
    LinearScheduler,
    SineSquaredGamma,
    StochasticInterpolant,
)
from flowzoo.core.paths import UniformTime

F64 = torch.float64


class FixedTime:
    """A time sampler that always returns the given times (or one repeated value)."""

    def __init__(self, t):
        self.t = t

    def sample(self, n, device=None, generator=None):
        t = torch.as_tensor(self.t, dtype=torch.float32)
        return (t.expand(n) if t.dim() == 0 else t).clone()


class LinearVelocity(torch.nn.Module):
    """v(x, t) = x W^T + t b, small enough to differentiate by hand."""

    def __init__(self, dim):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(dim, dim, generator=g, dtype=F64))
        self.bias = torch.nn.Parameter(torch.randn(dim, generator=g, dtype=F64))

    def forward(self, x, t):
        return x @ self.weight.T + t[:, None] * self.bias


class Recorder(torch.nn.Module):
    """Returns zeros and remembers what it was called with."""

    def forward(self, x, t, **cond):
        self.x, self.t, self.cond = x, t, cond
        return torch.zeros_like(x)


class Oracle:
    """A model given by a function of (x, t)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x, t):
        return self.fn(x, t)


def _bc(c, x):
    return c.reshape(-1, *([1] * (x.dim() - 1)))


def _pair(b=4, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=F64), torch.randn(b, d, generator=g, dtype=F64)


# ---------------------------------------------------------------------------------------------- hand values

def _hand_per_sample(model, x0, x1, t):
    losses = []
    for i in range(x0.shape[0]):
        x_t = (1 - t[i]) * x0[i] + t[i] * x1[i]
        pred = model.weight @ x_t + t[i] * model.bias
        losses.append(((pred - (x1[i] - x0[i])) ** 2).mean())
    return torch.stack(losses)


def test_flow_matching_loss_equals_hand_computation_and_backpropagates():
    x0, x1 = _pair()
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    model = LinearVelocity(3)
    objective = FlowMatchingLoss(time_sampler=FixedTime(t))
    loss, metrics = objective(model, {"x0": x0, "x1": x1})
    expected = _hand_per_sample(model, x0, x1, t.double()).mean()
    torch.testing.assert_close(loss, expected)
    assert metrics["loss"] == pytest.approx(expected.item())
    loss.backward()
    hand_grad = torch.autograd.grad(expected, model.weight)[0]
    torch.testing.assert_close(model.weight.grad, hand_grad)
    assert model.weight.grad.abs().sum() > 0 and model.bias.grad.abs().sum() > 0


def test_weights_scale_per_sample_losses_and_zero_drops_a_sample():
    x0, x1 = _pair()
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    model = LinearVelocity(3)
    objective = FlowMatchingLoss(time_sampler=FixedTime(t))
    weight = torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=F64)
    loss, metrics = objective(model, {"x0": x0, "x1": x1, "weight": weight})
    per_sample = _hand_per_sample(model, x0, x1, t.double())
    torch.testing.assert_close(loss, (weight * per_sample).sum() / 4)  # sum(w l) / B, not / sum(w)
    assert metrics["weight_mean"] == pytest.approx(0.875)
    x1_changed = x1.clone()
    x1_changed[1] += 100.0
    loss_changed, _ = objective(model, {"x0": x0, "x1": x1_changed, "weight": weight})
    torch.testing.assert_close(loss_changed, loss)
    unit, _ = objective(model, {"x0": x0, "x1": x1, "weight": torch.ones(4, dtype=F64)})
    torch.testing.assert_close(unit, per_sample.mean())


def test_default_source_is_standard_gaussian_and_seeded():
    x1 = torch.zeros(50_000, 2)
    objective = FlowMatchingLoss(time_sampler=FixedTime(0.5))
    loss, _ = objective(Recorder(), {"x1": x1}, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(1.0, abs=0.02)  # target x1 - x0 = -x0, E[x0²] = 1
    again, _ = objective(Recorder(), {"x1": x1}, generator=torch.Generator().manual_seed(0))
    assert again.item() == loss.item()


def test_other_paths_and_any_data_shape():
    x0, x1 = torch.randn(4, 3, 5, 5, dtype=F64), torch.randn(4, 3, 5, 5, dtype=F64)
    recorder = Recorder()
    path = AffinePath(CosineScheduler())
    loss, _ = FlowMatchingLoss(path=path, time_sampler=FixedTime(0.3))(recorder, {"x0": x0, "x1": x1})
    target = path.sample(x0, x1, torch.full((4,), 0.3, dtype=F64)).dx_t
    torch.testing.assert_close(loss, (target ** 2).mean())
    assert recorder.t.dtype == F64 and recorder.x.shape == x0.shape
    # I-CFM with sigma: x_t carries sigma z, the target is still x1 - x0 (gamma constant).
    icfm = FlowMatchingLoss(path=StochasticInterpolant(LinearScheduler(), ConstantGamma(0.5)),
                            time_sampler=FixedTime(0.3))
    loss, _ = icfm(recorder, {"x0": x0, "x1": x1})
    torch.testing.assert_close(loss, ((x1 - x0) ** 2).mean())
    assert not torch.allclose(recorder.x, 0.7 * x0 + 0.3 * x1)


# ------------------------------------------------------------------------------------- coupling and dropout

@dataclass
class FakePairing:
    x0: torch.Tensor
    x1: torch.Tensor
    weight: torch.Tensor | None = None
    index0: torch.Tensor | None = None
    index1: torch.Tensor | None = None


class ReversingCoupling:
    """Pairs x0[i] with x1[B-1-i], reports index1 and per-pair weights, and records its call."""

    def __init__(self, weight=None):
        self.weight = weight

    def __call__(self, x0, x1, cond0=None, cond1=None):
        self.cond0, self.cond1 = cond0, cond1
        index1 = torch.arange(x1.shape[0] - 1, -1, -1)
        return FakePairing(x0, x1[index1], self.weight, torch.arange(x0.shape[0]), index1)


def test_coupling_permutes_conditioning_and_weights_with_the_data():
    x0, x1 = _pair(b=5)
    y = torch.arange(5)
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=F64)
    pair_weight = torch.tensor([0.5, 1.0, 1.0, 1.0, 0.0], dtype=F64)
    coupling = ReversingCoupling(pair_weight)
    recorder = Recorder()
    objective = FlowMatchingLoss(coupling=coupling, time_sampler=FixedTime(0.0))
    loss, metrics = objective(recorder, {"x0": x0, "x1": x1, "y": y, "weight": weight})
    assert coupling.cond0 is None and torch.equal(coupling.cond1["y"], y)
    assert recorder.cond["y"].tolist() == [4, 3, 2, 1, 0]
    torch.testing.assert_close(recorder.x, x0)  # t = 0
    per_sample = ((x1.flip(0) - x0) ** 2).mean(dim=1)
    combined = weight.flip(0) * pair_weight
    torch.testing.assert_close(loss, (combined * per_sample).sum() / 5)
    assert metrics["weight_mean"] == pytest.approx(combined.mean().item())


def test_coupling_without_conditioning_gets_none():
    coupling = ReversingCoupling()
    x0, x1 = _pair()
    FlowMatchingLoss(coupling=coupling)(Recorder(), {"x0": x0, "x1": x1})
    assert coupling.cond1 is None


def test_cond_dropout_one_replaces_every_condition_with_its_null_value():
    b = 6
    batch = {"x1": torch.randn(b, 2), "y": torch.arange(b), "c": torch.randn(b, 5), "mask": torch.ones(b, 2)}
    recorder = Recorder()
    objective = FlowMatchingLoss(cond_dropout=1.0, null_cond={"y": 10, "c": torch.full((5,), -1.0)})
    _, metrics = objective(recorder, batch)
    assert recorder.cond["y"].tolist() == [10] * b and recorder.cond["y"].dtype == torch.long
    assert torch.equal(recorder.cond["c"], torch.full((b, 5), -1.0))
    assert torch.equal(recorder.cond["mask"], batch["mask"])  # not in null_cond: never dropped
    assert metrics["cond_dropped"] == 1.0
    assert torch.equal(batch["y"], torch.arange(b))  # the caller's batch is untouched


def test_cond_dropout_drops_the_same_samples_for_every_key_at_the_given_rate():
    b = 4000
    batch = {"x1": torch.randn(b, 1), "y": torch.arange(b) % 7, "c": torch.ones(b, 3)}
    recorder = Recorder()
    objective = FlowMatchingLoss(cond_dropout=0.25, null_cond={"y": 7, "c": 0.0})
    _, metrics = objective(recorder, batch, generator=torch.Generator().manual_seed(0))
    dropped_y = recorder.cond["y"] == 7
    assert torch.equal(dropped_y, (recorder.cond["c"] == 0).all(dim=1))
    assert dropped_y.float().mean().item() == pytest.approx(0.25, abs=0.03) == metrics["cond_dropped"]
    assert torch.equal(recorder.cond["y"][~dropped_y], batch["y"][~dropped_y])
    _, no_drop = FlowMatchingLoss()(recorder, batch)
    assert torch.equal(recorder.cond["y"], batch["y"]) and "cond_dropped" not in no_drop


# ----------------------------------------------------------------------------------------- Bayes optimum

def test_bayes_optimal_velocity_for_constant_data_has_zero_loss():
    c = torch.tensor([2.0, -1.0, 0.5], dtype=F64)
    x1 = c.expand(512, 3).clone()
    optimal = Oracle(lambda x, t: (c - x) / (1 - t[:, None]))  # x0 = (x - t c)/(1 - t) is known from x_t
    objective = FlowMatchingLoss(time_sampler=UniformTime(0.0, 0.9))
    loss, _ = objective(optimal, {"x1": x1}, generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-20
    worse, _ = objective(Oracle(lambda x, t: c - x), {"x1": x1}, generator=torch.Generator().manual_seed(0))
    assert worse.item() > 0.01


def _gaussian_setup(n=200_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean, std = torch.tensor([1.0, -0.5], dtype=F64), 0.6
    return {"x1": mean + std * torch.randn(n, 2, generator=g, dtype=F64)}, mean, std


def _coefficients(scheduler, gamma, t):
    tt = torch.tensor([t], dtype=F64)
    out = scheduler(tt)
    g = gamma(tt) if gamma is not None else None
    values = [out.alpha, out.beta, out.d_alpha, out.d_beta]
    values += [g.gamma, g.gamma_d_gamma] if g is not None else [torch.zeros(1, dtype=F64)] * 2
    return [v.item() for v in values]


def test_bayes_optimal_velocity_reaches_the_conditional_variance():
    """x1 ~ N(m, s²I), x0 ~ N(0, I), cosine path at t = 0.3: the minimum is Var(dx_t | x_t), per dim."""
    batch, m, s = _gaussian_setup()
    scheduler, t = CosineScheduler(), 0.3
    a, b, da, db, _, _ = _coefficients(scheduler, None, t)
    var_x = a ** 2 + b ** 2 * s ** 2
    gain = (a * da + b * db * s ** 2) / var_x
    optimal = Oracle(lambda x, tt: db * m + gain * (x - b * m))
    minimum = da ** 2 + db ** 2 * s ** 2 - (a * da + b * db * s ** 2) ** 2 / var_x
    objective = FlowMatchingLoss(path=AffinePath(scheduler), time_sampler=FixedTime(t))
    gen = torch.Generator().manual_seed(1)
    loss, _ = objective(optimal, batch, generator=gen)
    assert loss.item() == pytest.approx(minimum, rel=0.02)
    shifted, _ = objective(Oracle(lambda x, tt: optimal(x, tt) + 0.3), batch,
                           generator=torch.Generator().manual_seed(1))
    assert shifted.item() == pytest.approx(loss.item() + 0.09, abs=0.005)  # + bias², up to a sampling cross term


INTERPOLANTS = [(LinearScheduler(), BrownianGamma()), (CosineScheduler(), BSquaredGamma()),
                (LinearScheduler(), SineSquaredGamma())]


@pytest.mark.parametrize("antithetic", [True, False])
@pytest.mark.parametrize("scheduler,gamma", INTERPOLANTS)
def test_interpolant_losses_are_minimal_at_the_true_fields(scheduler, gamma, antithetic):
    batch, m, s = _gaussian_setup(n=100_000)
    t = 0.35
    a, b, da, db, g, ggd = _coefficients(scheduler, gamma, t)
    var_x = a ** 2 + b ** 2 * s ** 2 + g ** 2
    gain = (a * da + b * db * s ** 2 + ggd) / var_x
    fields = {  # true drift, denoiser E[z | x_t] and score, and each loss's theoretical minimum per dim
        InterpolantDriftLoss: (lambda x, tt: db * m + gain * (x - b * m),
                               -0.5 * ((db * m) ** 2).mean().item() - 0.5 * gain ** 2 * var_x),
        InterpolantDenoiserLoss: (lambda x, tt: g * (x - b * m) / var_x, -0.5 * g ** 2 / var_x),
        InterpolantScoreLoss: (lambda x, tt: -(x - b * m) / var_x, -0.5 / var_x),
    }
    si = StochasticInterpolant(scheduler, gamma)
    for loss_cls, (field, minimum) in fields.items():
        objective = loss_cls(si, antithetic=antithetic, time_sampler=FixedTime(t))
        best, metrics = objective(Oracle(field), batch, generator=torch.Generator().manual_seed(2))
        assert best.item() == pytest.approx(minimum, rel=0.03, abs=2e-3), loss_cls.__name__
        assert metrics["loss"] == pytest.approx(best.item())
        perturbed, _ = objective(Oracle(lambda x, tt: 1.2 * field(x, tt) + 0.2), batch,
                                 generator=torch.Generator().manual_seed(2))
        assert perturbed.item() > best.item() + 0.01, loss_cls.__name__


def test_interpolant_losses_backpropagate_and_clip_time():
    x0, x1 = _pair(b=6)
    si = StochasticInterpolant(LinearScheduler(), BrownianGamma())
    ends = FixedTime(torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0, 0.2]))
    for loss_cls in (InterpolantDriftLoss, InterpolantDenoiserLoss, InterpolantScoreLoss):
        model = LinearVelocity(3)
        loss, _ = loss_cls(si, time_sampler=ends)(model, {"x0": x0, "x1": x1})
        assert torch.isfinite(loss)
        loss.backward()
        assert model.weight.grad.abs().sum() > 0
    assert InterpolantDriftLoss(si).time_clip == 1e-3
    assert InterpolantDriftLoss(StochasticInterpolant(LinearScheduler(), BSquaredGamma())).time_clip == 0.0
    assert InterpolantDenoiserLoss(si).time_clip == 0.0
    assert InterpolantScoreLoss(si).time_clip == 1e-3
    assert InterpolantScoreLoss(StochasticInterpolant(LinearScheduler(), ConstantGamma(0.1))).time_clip == 0.0
    recorder = Recorder()
    InterpolantScoreLoss(si, time_sampler=ends, time_clip=0.01)(recorder, {"x1": x1})
    assert recorder.t.min().item() == pytest.approx(0.01) and recorder.t.max().item() == pytest.approx(0.99)


def test_interpolant_loss_hand_value_with_antithetic_pair():
    x0, x1 = _pair(b=3)
    si = StochasticInterpolant(LinearScheduler(), BSquaredGamma())
    model = LinearVelocity(3)
    objective = InterpolantDriftLoss(si, time_sampler=FixedTime(0.25), antithetic=True)
    loss, _ = objective(model, {"x0": x0, "x1": x1}, generator=torch.Generator().manual_seed(5))
    z = torch.randn(3, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    t, gam, dgam = 0.25, 0.25 * 0.75, 1 - 2 * 0.25
    total = 0.0
    for sign in (1.0, -1.0):
        x_t = 0.75 * x0 + 0.25 * x1 + sign * gam * z
        pred = x_t @ model.weight.T + t * model.bias
        total = total + (0.5 * pred ** 2 - pred * (x1 - x0 + sign * dgam * z)).mean() / 2
    torch.testing.assert_close(loss, total)


# --------------------------------------------------------------------------------------------- bad input

def _all_objectives():
    si = StochasticInterpolant(LinearScheduler(), BrownianGamma())
    return [FlowMatchingLoss(), InterpolantDriftLoss(si), InterpolantDenoiserLoss(si), InterpolantScoreLoss(si)]


@pytest.mark.parametrize("objective", _all_objectives(), ids=lambda o: type(o).__name__)
@pytest.mark.parametrize("batch,error,match", [
    ({"x0": torch.randn(4, 2)}, ConfigError, "x1"),
    (torch.randn(4, 2), DTypeError, "mapping"),
    ({"x1": torch.full((4, 2), float("nan"))}, NonFiniteError, "x1"),
    ({"x1": torch.empty(0, 2)}, EmptyInputError, "non-empty"),
    ({"x1": torch.ones(4, 2, dtype=torch.long)}, DTypeError, "floating"),
    ({"x1": torch.randn(4, 2), "x0": torch.randn(4, 3)}, ShapeError, "same shape"),
    ({"x1": torch.randn(4, 2), "weight": torch.ones(3)}, ShapeError, r"\(4,\)"),
    ({"x1": torch.randn(4, 2), "weight": -torch.ones(4)}, ConfigError, "non-negative"),
    ({"x1": torch.randn(4, 2), "y": [0, 1, 2, 3]}, DTypeError, "tensor"),
    ({"x1": torch.randn(4, 2), "y": torch.arange(5)}, ShapeError, "batch size"),
    ({"x1": torch.randn(4, 2), "c": torch.full((4, 3), float("inf"))}, NonFiniteError, "c"),
])
def test_bad_batches_raise_flowzoo_errors(objective, batch, error, match):
    with pytest.raises(error, match=match):
        objective(Recorder(), batch)


def test_model_with_wrong_output_shape_is_reported():
    with pytest.raises(ShapeError, match="shaped like x_t"):
        FlowMatchingLoss()(lambda x, t: x[:, :1], {"x1": torch.randn(4, 2)})
    with pytest.raises(ShapeError, match="shaped like x_t"):
        FlowMatchingLoss()(lambda x, t: x.tolist(), {"x1": torch.randn(4, 2)})


@pytest.mark.parametrize("make", [
    lambda: FlowMatchingLoss(cond_dropout=0.1),
    lambda: FlowMatchingLoss(cond_dropout=1.5, null_cond={"y": 0}),
    lambda: FlowMatchingLoss(null_cond=[("y", 0)]),
    lambda: FlowMatchingLoss(null_cond={"y": "none"}),
    lambda: FlowMatchingLoss(path="linear"),
    lambda: FlowMatchingLoss(coupling="exact_ot"),
    lambda: FlowMatchingLoss(time_sampler="uniform"),
    lambda: InterpolantDriftLoss(CondOTPath()),
    lambda: InterpolantScoreLoss(StochasticInterpolant(LinearScheduler(), BrownianGamma()), time_clip=0.7),
])
def test_bad_configuration_raises_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_null_cond_errors_name_the_problem():
    objective = FlowMatchingLoss(cond_dropout=0.5, null_cond={"label": 3})
    with pytest.raises(ConfigError, match="label"):
        objective(Recorder(), {"x1": torch.randn(4, 2), "y": torch.arange(4)})
    objective = FlowMatchingLoss(cond_dropout=0.5, null_cond={"c": torch.zeros(4)})
    with pytest.raises(ShapeError, match="broadcastable"):
        objective(Recorder(), {"x1": torch.randn(4, 2), "c": torch.randn(4, 3)})
    assert issubclass(ConfigError, FlowzooError)
