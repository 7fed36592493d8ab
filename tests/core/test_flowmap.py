"""Tests of flowzoo.core.fewstep.flowmap: the two-time MLP, the flow-map sampler, the two-time sampler, the Gaussian oracle."""

import pytest
import torch

from flowzoo.core.errors import ConfigError, FlowzooError, NonFiniteError, ShapeError
from flowzoo.core.fewstep import FlowMapAsVelocity, GaussianOracle, MLPFlowMap, TwoTimeSampler, flowmap_sample
from flowzoo.core.sampling import integrate

F64 = torch.float64


@pytest.fixture
def oracle():
    return GaussianOracle(mean=torch.tensor([1.5, -2.0, 0.0]), std=torch.tensor([0.5, 2.0, 1.0]))


def _points(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=F64)
    s = torch.rand(n, generator=g, dtype=F64) * 0.8
    t = s + (1 - s) * torch.rand(n, generator=g, dtype=F64)
    return x, s, t


# ------------------------------------------------------------------------------------------ oracle identities

def test_oracle_flow_solves_its_velocity_ode(oracle):
    x0 = torch.randn(16, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    ode = integrate(oracle.velocity, x0, method="rk4", steps=200).x
    assert torch.allclose(ode, oracle.flow(x0, 0.0, 1.0), atol=1e-8)


def test_oracle_pushes_source_to_data_moments():
    oracle = GaussianOracle(mean=2.0, std=0.5)
    x1 = oracle.flow(torch.randn(200_000, 1, dtype=F64, generator=torch.Generator().manual_seed(0)), 0.0, 1.0)
    assert abs(x1.mean().item() - 2.0) < 0.01 and abs(x1.std().item() - 0.5) < 0.01


def test_oracle_average_velocity_definition_and_boundary(oracle):
    x, s, t = _points()
    u = oracle.average_velocity(x, s, t)
    assert torch.allclose(x + (t - s)[:, None] * u, oracle.flow(x, s, t), atol=1e-12)
    assert torch.allclose(oracle.average_velocity(x, s, s), oracle.velocity(x, s), atol=1e-12)
    assert torch.equal(oracle(x, s, t), u)


def _d_ds(oracle, x, s, t, tangent):
    return torch.func.jvp(lambda a, b, c: oracle.average_velocity(a, b, c), (x, s, t), tangent)[1]


def test_oracle_meanflow_identity_with_jvp(oracle):
    """u = v + (t − s) d/ds u along (v, 1, 0): the sign of the identity in flowzoo time."""
    x, s, t = _points()
    v = oracle.velocity(x, s)
    du = _d_ds(oracle, x, s, t, (v, torch.ones_like(s), torch.zeros_like(t)))
    u = oracle.average_velocity(x, s, t)
    assert torch.allclose(u, v + (t - s)[:, None] * du, atol=1e-6)
    # The paper's sign read literally in our time (u = v − (t − s) du/ds) and the wrong tangents are wrong.
    assert (u - (v - (t - s)[:, None] * du)).abs().max() > 1e-2
    for wrong in [(v, torch.zeros_like(s), torch.zeros_like(t)), (v, torch.ones_like(s), torch.ones_like(t))]:
        bad = _d_ds(oracle, x, s, t, wrong)
        assert (u - (v + (t - s)[:, None] * bad)).abs().max() > 1e-2


def test_oracle_split_identity(oracle):
    x, s, t = _points()
    m = s + 0.37 * (t - s)
    u_sm = oracle.average_velocity(x, s, m)
    x_m = x + (m - s)[:, None] * u_sm
    lhs = (t - s)[:, None] * oracle.average_velocity(x, s, t)
    rhs = (m - s)[:, None] * u_sm + (t - m)[:, None] * oracle.average_velocity(x_m, m, t)
    assert torch.allclose(lhs, rhs, atol=1e-6)
    wrong_state = (m - s)[:, None] * u_sm + (t - m)[:, None] * oracle.average_velocity(x, m, t)
    assert (lhs - wrong_state).abs().max() > 1e-2


def test_oracle_velocity_is_time_derivative_of_flow(oracle):
    x, s, t = _points()
    dflow = torch.func.jvp(lambda b: oracle.flow(x, s, b), (t,), (torch.ones_like(t),))[1]
    assert torch.allclose(dflow, oracle.velocity(oracle.flow(x, s, t), t), atol=1e-10)


# ------------------------------------------------------------------------------------------ sampler

@pytest.mark.parametrize("steps", [1, 2, 7])
def test_flowmap_sample_with_exact_average_velocity_hits_endpoint(oracle, steps):
    x0 = torch.randn(32, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    out = flowmap_sample(oracle, x0, steps=steps, return_trajectory=True)
    assert out.nfe == steps and out.trajectory.shape == (steps + 1, 32, 3)
    assert torch.allclose(out.x, oracle.flow(x0, 0.0, 1.0), atol=1e-10)
    assert torch.allclose(out.trajectory[1], oracle.flow(x0, 0.0, out.times[1].item()), atol=1e-10)


def test_flowmap_sample_on_a_sub_interval_and_uneven_grid(oracle):
    x = torch.randn(8, 3, dtype=F64)
    out = flowmap_sample(oracle, x, time_grid=[0.2, 0.25, 0.6, 0.9])
    assert out.nfe == 3
    assert torch.allclose(out.x, oracle.flow(x, 0.2, 0.9), atol=1e-10)


def test_flowmap_sample_default_is_one_step_and_passes_cond():
    calls = []

    def model(x, s, t, y):
        calls.append((s.clone(), t.clone(), y))
        return torch.ones_like(x)

    out = flowmap_sample(model, torch.zeros(3, 2), cond={"y": torch.arange(3)})
    assert out.nfe == 1 and torch.allclose(out.x, torch.ones(3, 2))
    assert calls[0][0].tolist() == [0.0] * 3 and calls[0][1].tolist() == [1.0] * 3


def test_flowmap_as_velocity_integrates_to_the_flow(oracle):
    x0 = torch.randn(8, 3, dtype=F64)
    out = integrate(FlowMapAsVelocity(oracle), x0, method="rk4", steps=100)
    assert torch.allclose(out.x, oracle.flow(x0, 0.0, 1.0), atol=1e-8)


# ------------------------------------------------------------------------------------------ network

def test_mlp_flowmap_shapes_labels_and_conditions():
    net = MLPFlowMap(6, hidden=32, depth=2, time_dim=16, num_classes=4, cond_dim=3)
    x = torch.randn(5, 2, 3)
    y = torch.tensor([0, 1, 2, 3, net.null_class])
    out = net(x, torch.rand(5), torch.ones(5), y=y, c=torch.randn(5, 3))
    assert out.shape == x.shape
    scalar_times = net(x, 0.0, 1.0, y=y, c=torch.randn(5, 3))
    assert scalar_times.shape == x.shape


def test_mlp_flowmap_depends_on_both_times_and_jvp_runs():
    torch.manual_seed(0)
    net = MLPFlowMap(2, hidden=32, depth=2)
    x, s = torch.randn(4, 2), torch.full((4,), 0.3)
    assert not torch.allclose(net(x, s, s), net(x, s, s + 0.5))
    du = torch.func.jvp(net, (x, s, s + 0.2), (torch.randn(4, 2), torch.ones(4), torch.zeros(4)))[1]
    assert du.shape == x.shape and torch.isfinite(du).all()


@pytest.mark.parametrize("kwargs", [dict(), dict(num_classes=3, time_dim=15), dict(activation="gelu")])
def test_mlp_flowmap_hand_written_jvp_matches_autodiff(kwargs):
    torch.manual_seed(0)
    net = MLPFlowMap(2, hidden=32, depth=3, **kwargs).double()
    g = torch.Generator().manual_seed(1)
    x, dx = torch.randn(7, 2, generator=g, dtype=F64), torch.randn(7, 2, generator=g, dtype=F64)
    s, ds, dt = (torch.rand(7, generator=g, dtype=F64) for _ in range(3))
    t = s + 0.3
    y = torch.randint(0, 4, (7,), generator=g) if "num_classes" in kwargs else None
    u, du = net.jvp(x, s, t, dx, ds, dt, y=y)
    u_ref, du_ref = torch.func.jvp(lambda a, b, c: net(a, b, c, y=y), (x, s, t), (dx, ds, dt))
    assert torch.allclose(u, u_ref, atol=1e-12) and torch.allclose(du, du_ref, atol=1e-10)


# ------------------------------------------------------------------------------------------ two-time sampler

def test_two_time_sampler_ordering_range_and_fraction():
    g = torch.Generator().manual_seed(0)
    s, t = TwoTimeSampler(distinct_fraction=0.25).sample(20_000, generator=g)
    assert s.shape == t.shape == (20_000,) and s.dtype == torch.float32
    assert bool((s <= t).all() and (s >= 0).all() and (t <= 1).all())
    assert abs((s < t).float().mean().item() - 0.25) < 0.015
    s0, t0 = TwoTimeSampler(distinct_fraction=0.0).sample(1000, generator=g)
    assert torch.equal(s0, t0)
    s1, t1 = TwoTimeSampler(distinct_fraction=1.0).sample(1000, generator=g)
    assert bool((s1 < t1).all())


def test_two_time_sampler_mean_and_determinism():
    a = TwoTimeSampler(mean=2.0, distinct_fraction=1.0).sample(5000, generator=torch.Generator().manual_seed(1))
    b = TwoTimeSampler(mean=2.0, distinct_fraction=1.0).sample(5000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].mean() > 0.7  # positive mean: mass towards the data end


def test_two_time_sampler_uniform_gap_spreads_interval_lengths_evenly():
    """interval="uniform_gap": d = t - s ~ U(0, 1) and s ~ U(0, 1 - d), so P(d > a) = 1 - a and E[s] = 1/4."""
    g = torch.Generator().manual_seed(2)
    s, t = TwoTimeSampler(distinct_fraction=1.0, interval="uniform_gap").sample(40_000, generator=g)
    gap = t - s
    assert bool((s >= 0).all() and (t <= 1).all() and (gap > 0).all())
    for a in (0.25, 0.5, 0.9):
        assert abs((gap > a).float().mean().item() - (1 - a)) < 0.01
    assert abs(s.mean().item() - 0.25) < 0.01                          # E[(1 - d) U] = 1/2 * 1/2
    sorted_pairs = TwoTimeSampler(mean=0.0, std=1.0, distinct_fraction=1.0).sample(40_000, generator=g)
    assert (sorted_pairs[1] - sorted_pairs[0] > 0.9).float().mean() < 0.01   # the long jumps the option adds
    s2, t2 = TwoTimeSampler(distinct_fraction=0.5, interval="uniform_gap").sample(20_000, generator=g)
    assert abs((s2 < t2).float().mean().item() - 0.5) < 0.015


# ------------------------------------------------------------------------------------------ bad inputs

@pytest.mark.parametrize("kwargs", [dict(std=0.0), dict(std=-1.0), dict(mean=float("nan")),
                                    dict(distinct_fraction=1.5), dict(mean="a"), dict(interval="sorted")])
def test_two_time_sampler_rejects_bad_config(kwargs):
    with pytest.raises(ConfigError):
        TwoTimeSampler(**kwargs)


def test_bad_inputs_raise_flowzoo_errors(oracle):
    with pytest.raises(ConfigError):
        GaussianOracle(mean=0.0, std=0.0)
    with pytest.raises(ConfigError):
        TwoTimeSampler().sample(0)
    with pytest.raises(ShapeError):
        flowmap_sample(lambda x, s, t: x[:, :1], torch.zeros(3, 2))
    with pytest.raises(ConfigError):
        flowmap_sample(oracle, torch.zeros(3, 3), time_grid=[0.0, 0.5, 0.5, 1.0])
    with pytest.raises(ConfigError):
        flowmap_sample(oracle, torch.zeros(3, 3), steps=2, time_grid=[0.0, 1.0])
    with pytest.raises(NonFiniteError):
        flowmap_sample(oracle, torch.full((3, 3), float("nan")))
    with pytest.raises(NonFiniteError):
        flowmap_sample(lambda x, s, t: x * float("inf"), torch.ones(3, 2))
    with pytest.raises(ShapeError):
        MLPFlowMap(2, hidden=8)(torch.zeros(3, 3), torch.zeros(3), torch.ones(3))
    with pytest.raises(ShapeError):
        MLPFlowMap(2, hidden=8)(torch.zeros(3, 2), torch.zeros(2), torch.ones(3))
    with pytest.raises(FlowzooError):
        MLPFlowMap(2, hidden=8, num_classes=3)(torch.zeros(3, 2), torch.zeros(3), torch.ones(3))
    with pytest.raises(ConfigError):
        FlowMapAsVelocity("not a model")
