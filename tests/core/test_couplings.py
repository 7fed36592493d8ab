"""Couplings: exact OT against POT and brute force, per-condition OT, entropic limits, W-CFM weights."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import ot
import pytest
import torch

from flowzoo.core.couplings import (
    choose_solver,
    data_interaction_rank,
    interaction_rank,
    solve_assignment,
    squared_euclidean_cost,
)
from flowzoo.core.couplings import (
    ConditionalOTCoupling,
    ExactOTCoupling,
    GibbsWeightedCoupling,
    IndependentCoupling,
    Pairing,
    SchrodingerBridgeCoupling,
    SinkhornCoupling,
    get_coupling,
)
from flowzoo.core.errors import (
    ConfigError,
    DTypeError,
    EmptyInputError,
    MissingDependencyError,
    NonFiniteError,
    ShapeError,
)

try:
    import lap  # noqa: F401

    HAVE_LAP = True
except ImportError:
    HAVE_LAP = False

SOLVERS = ["auto", "scipy", "pot", pytest.param("lap", marks=pytest.mark.skipif(not HAVE_LAP, reason="lap missing"))]


def _cost(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Reference cost by broadcasting, in float64."""
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).numpy()


def _pair_cost(p: Pairing) -> float:
    return float((p.x0.double() - p.x1.double()).reshape(len(p.x0), -1).square().sum())


def _emd_total(a: torch.Tensor, b: torch.Tensor) -> float:
    """n · W2² from POT: the total cost of an optimal permutation."""
    m = _cost(a, b)
    n = m.shape[0]
    return float(ot.emd2(np.full(n, 1 / n), np.full(n, 1 / n), m, numItermax=10**7)) * n


def _batches(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) + 1.0


# ----------------------------------------------------------------------------- exact OT


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("n,d", [(8, 2), (17, 2), (32, 5), (64, 2), (64, 40)])
def test_exact_ot_is_an_optimal_permutation(solver, n, d):
    x0, x1 = _batches(n, d, seed=n + d)
    p = ExactOTCoupling(solver=solver)(x0, x1)
    assert torch.equal(p.index0.sort().values, torch.arange(n))  # every source exactly once
    assert torch.equal(p.index1, torch.arange(n))  # x1 kept in its order
    assert torch.equal(p.x0, x0[p.index0]) and torch.equal(p.x1, x1[p.index1])
    total = _pair_cost(p)
    assert total <= _pair_cost(Pairing(x0, x1)) + 1e-9
    assert total == pytest.approx(_emd_total(x0, x1), rel=1e-6)


def test_exact_ot_brute_force_small():
    x0, x1 = _batches(6, 2, seed=3)
    m = _cost(x0, x1)
    best = min(sum(m[i, s[i]] for i in range(6)) for s in itertools.permutations(range(6)))
    assert _pair_cost(ExactOTCoupling()(x0, x1)) == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize("d", [2, 512])
def test_backends_agree_on_cost(d):
    x0, x1 = _batches(96, d, seed=d)
    backends = ("scipy", "pot") + (("lap",) if HAVE_LAP else ())
    costs = {s: _pair_cost(ExactOTCoupling(solver=s)(x0, x1)) for s in backends}
    ref = costs["scipy"]
    for s, c in costs.items():
        assert c == pytest.approx(ref, rel=1e-6), (s, costs)


def test_exact_ot_keeps_every_source_unlike_plan_resampling():
    # torchcfm resamples n pairs from the plan with replacement and keeps ~63% of the sources.
    x0, x1 = _batches(256, 2, seed=0)
    p = ExactOTCoupling()(x0, x1)
    assert p.index0.unique().numel() == 256 and p.index1.unique().numel() == 256


def test_exact_ot_image_shaped_samples_and_float64():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(16, 3, 4, 4, generator=g), torch.randn(16, 3, 4, 4, generator=g)
    p = ExactOTCoupling()(x0, x1)
    assert p.x0.shape == x0.shape
    assert _pair_cost(p) == pytest.approx(_emd_total(x0, x1), rel=1e-6)
    p64 = ExactOTCoupling()(x0.double(), x1.double())
    assert p64.x0.dtype == torch.float64 and _pair_cost(p64) == pytest.approx(_emd_total(x0, x1), rel=1e-9)


@pytest.mark.parametrize("solver", SOLVERS)
def test_rectangular_assignment_matches_brute_force(solver):
    x0, _ = _batches(3, 2, seed=5)
    _, x1 = _batches(6, 2, seed=6)
    p = ExactOTCoupling(solver=solver)(x0, x1)
    m = _cost(x0, x1)
    best = min(sum(m[i, s[i]] for i in range(3)) for s in itertools.permutations(range(6), 3))
    assert _pair_cost(p) == pytest.approx(best, rel=1e-9)
    assert torch.equal(p.index0.sort().values, torch.arange(3))
    assert p.index1.unique().numel() == 3 and bool((p.index1.diff() > 0).all())


def test_exact_ot_does_not_touch_the_global_rng():
    x0, x1 = _batches(64, 2, seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ExactOTCoupling()(x0, x1)
    assert torch.equal(torch.rand(3), expected)


def test_auto_dispatch_follows_the_cost_structure():
    low0, low1 = _batches(256, 2, seed=0)
    mid0, mid1 = _batches(256, 8, seed=0)
    high0, high1 = _batches(256, 256, seed=0)
    assert interaction_rank(squared_euclidean_cost(low0, low1)) < 5
    assert interaction_rank(squared_euclidean_cost(high0, high1)) > 50
    assert choose_solver(squared_euclidean_cost(low0, low1)) == "pot"
    assert choose_solver(squared_euclidean_cost(mid0, mid1)) == "scipy"
    assert choose_solver(squared_euclidean_cost(high0, high1)) == ("lap" if HAVE_LAP else "scipy")
    assert choose_solver(squared_euclidean_cost(low0[:64], low1[:64])) == "scipy"  # tiny: least overhead
    # Two-dimensional data embedded in many dimensions is still low-rank: not the nominal dimension.
    embed = torch.randn(2, 512, generator=torch.Generator().manual_seed(0))
    assert choose_solver(squared_euclidean_cost(low0 @ embed, low1 @ embed)) == "pot"


def test_auto_falls_back_to_scipy_without_lap(monkeypatch):
    import flowzoo.core.couplings.assignment as assignment

    monkeypatch.setattr(assignment, "_lap_available", lambda: False)
    high0, high1 = _batches(256, 256, seed=0)
    assert choose_solver(squared_euclidean_cost(high0, high1)) == "scipy"


def test_explicit_lap_without_the_package_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_lap(name, *args, **kwargs):
        if name == "lap":
            raise ImportError("no lap")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lap)
    with pytest.raises(MissingDependencyError, match="fast-ot"):
        solve_assignment(np.eye(3), solver="lap")


def test_interaction_rank_tracks_the_intrinsic_dimension():
    for d in (1, 4, 16):
        x0, x1 = _batches(512, d, seed=d)
        cost = squared_euclidean_cost(x0, x1)
        # Exact participation ratio of the double-centred cost from its singular values.
        k = cost - cost.mean(1, keepdim=True) - cost.mean(0, keepdim=True) + cost.mean()
        s2 = torch.linalg.svdvals(k) ** 2
        exact = float(s2.sum() ** 2 / (s2**2).sum())
        assert data_interaction_rank(x0, x1) == pytest.approx(exact, rel=1e-6)
        assert interaction_rank(cost, probes=64) == pytest.approx(exact, rel=0.35)
        assert 0.5 * d <= exact <= 1.5 * d + 1


def test_squared_euclidean_cost_is_accurate_far_from_the_origin():
    x0, x1 = _batches(32, 8, seed=2)
    cost = squared_euclidean_cost(x0 + 1e3, x1 + 1e3)
    assert float(cost.min()) >= 0
    np.testing.assert_allclose(cost.double().numpy(), _cost(x0, x1), rtol=1e-4, atol=1e-3)


def test_solve_assignment_validates():
    with pytest.raises(ShapeError):
        solve_assignment(np.zeros((3, 2)))
    with pytest.raises(ConfigError):
        solve_assignment(np.zeros((2, 2)), solver="hungarian")
    assert solve_assignment(np.array([[4.0, 1.0], [1.0, 4.0]]), solver="pot").tolist() == [1, 0]


def test_exact_ot_rejects_more_sources_than_targets():
    x0, x1 = _batches(5, 2, seed=0)
    with pytest.raises(ShapeError, match="n0 <= n1"):
        ExactOTCoupling()(x0, x1[:4])


# ----------------------------------------------------------------------------- conditional OT


def test_conditional_ot_with_labelled_sources_stays_within_conditions():
    x0, x1 = _batches(60, 2, seed=7)
    g = torch.Generator().manual_seed(0)
    y1 = torch.randint(0, 3, (60,), generator=g)
    y0 = y1[torch.randperm(60, generator=g)]  # same counts per label
    p = ConditionalOTCoupling()(x0, x1, cond0=y0, cond1=y1)
    assert torch.equal(y0[p.index0], y1[p.index1])
    assert torch.equal(p.index0.sort().values, torch.arange(60)) and torch.equal(p.index1, torch.arange(60))
    for label in range(3):
        in_group = y1[p.index1] == label
        own = _emd_total(x0[y0 == label], x1[y1 == label])
        assert _pair_cost(Pairing(p.x0[in_group], p.x1[in_group])) == pytest.approx(own, rel=1e-6)
    # The unconditional optimum is cheaper: conditioning really constrained the pairs.
    assert _pair_cost(ExactOTCoupling()(x0, x1)) < _pair_cost(p)


def test_conditional_ot_shared_source_splits_in_proportion():
    x0, _ = _batches(30, 2, seed=1)
    _, x1 = _batches(40, 2, seed=2)
    y1 = torch.tensor([0] * 20 + [1] * 12 + [2] * 8)
    p = ConditionalOTCoupling(generator=torch.Generator().manual_seed(0))(x0, x1, cond1=y1)
    assert torch.equal(p.index0.sort().values, torch.arange(30))
    assert p.index1.unique().numel() == 30
    assert torch.bincount(y1[p.index1]).tolist() == [15, 9, 6]
    for label in range(3):
        rows = y1[p.index1] == label
        own = ExactOTCoupling()(p.x0[rows], x1[y1 == label])
        assert _pair_cost(Pairing(p.x0[rows], p.x1[rows])) == pytest.approx(_pair_cost(own), rel=1e-6)


def test_conditional_ot_vector_conditions_compare_rows():
    x0, x1 = _batches(8, 2, seed=3)
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(4, 1)
    p = ConditionalOTCoupling()(x0, x1, cond0=c, cond1=c.flip(0))
    assert torch.equal(c[p.index0], c.flip(0)[p.index1])


def test_conditioning_mappings_as_the_objectives_pass_them():
    x0, x1 = _batches(12, 2, seed=4)
    y = torch.tensor([0, 1, 2] * 4)
    style = torch.tensor([0.0, 1.0] * 6)[:, None]
    p = ConditionalOTCoupling(generator=torch.Generator().manual_seed(0))(x0, x1, cond1={"y": y, "style": style})
    assert torch.equal(p.index1, torch.arange(12))
    q = ConditionalOTCoupling()(x0, x1, cond0={"y": y.flip(0), "style": style.flip(0)}, cond1={"style": style, "y": y})
    assert torch.equal(y.flip(0)[q.index0], y[q.index1]) and torch.equal(style.flip(0)[q.index0], style[q.index1])
    assert torch.equal(ExactOTCoupling()(x0, x1, cond1={"y": y}).index1, torch.arange(12))
    assert torch.equal(ExactOTCoupling()(x0, x1, cond1={}).index1, torch.arange(12))
    with pytest.raises(ShapeError, match="same keys"):
        ConditionalOTCoupling()(x0, x1, cond0={"y": y}, cond1={"label": y})
    with pytest.raises(DTypeError):
        ExactOTCoupling()(x0, x1, cond1={"y": [0] * 12})


def test_conditional_ot_bad_inputs():
    x0, x1 = _batches(6, 2, seed=0)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    with pytest.raises(ConfigError, match="cond1"):
        ConditionalOTCoupling()(x0, x1)
    with pytest.raises(ShapeError, match="every condition"):
        ConditionalOTCoupling()(x0, x1, cond0=torch.tensor([0, 0, 0, 0, 1, 1]), cond1=y)
    with pytest.raises(ShapeError, match="every condition"):  # a source label absent from the targets
        ConditionalOTCoupling()(x0, x1, cond0=torch.tensor([0, 0, 0, 1, 1, 2]), cond1=y)
    with pytest.raises(ShapeError, match="one row per sample"):
        ConditionalOTCoupling()(x0, x1, cond1=y[:5])
    with pytest.raises(NonFiniteError):
        ConditionalOTCoupling()(x0, x1, cond1=torch.tensor([0.0, 1, 2, 3, 4, float("nan")]))


# ----------------------------------------------------------------------------- entropic


def test_sinkhorn_limits_exact_and_independent():
    x0, x1 = _batches(32, 2, seed=4)
    m = torch.from_numpy(_cost(x0, x1))
    exact = _emd_total(x0, x1) / 32
    sharp = SinkhornCoupling(reg=1e-3, max_iter=20000, tol=1e-6).plan(x0.double(), x1.double())
    assert float((sharp * m).sum()) == pytest.approx(exact, rel=0.02)
    flat = SinkhornCoupling(reg=1e4).plan(x0, x1).double()
    assert float((flat * m).sum()) == pytest.approx(float(m.mean()), rel=1e-3)
    plan = SinkhornCoupling(reg=0.1).plan(x0, x1)
    torch.testing.assert_close(plan.sum(1), torch.full((32,), 1 / 32), rtol=1e-5, atol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((32,), 1 / 32), rtol=1e-3, atol=0)


def test_sinkhorn_sampling_keeps_every_source_and_is_seeded():
    x0, x1 = _batches(64, 3, seed=5)
    a = SinkhornCoupling(reg=0.05, generator=torch.Generator().manual_seed(0))(x0, x1)
    b = SinkhornCoupling(reg=0.05, generator=torch.Generator().manual_seed(0))(x0, x1)
    assert torch.equal(a.index0, torch.arange(64)) and torch.equal(a.x0, x0)
    assert torch.equal(a.index1, b.index1) and torch.equal(a.x1, x1[a.index1])
    # A small reg concentrates the rows: far cheaper than independent pairs.
    assert _pair_cost(a) < 0.5 * _pair_cost(Pairing(x0, x1))


def test_schrodinger_bridge_is_entropic_ot_with_reg_two_sigma_squared():
    x0, x1 = _batches(48, 2, seed=6)
    sb = SchrodingerBridgeCoupling(sigma=0.5, generator=torch.Generator().manual_seed(1))
    p = sb(x0, x1)
    assert torch.equal(p.index0, torch.arange(48))
    ref = SinkhornCoupling(reg=0.5, relative=False).plan(x0, x1)
    torch.testing.assert_close(sb.plan(x0, x1), ref)
    with pytest.raises(ConfigError):
        SchrodingerBridgeCoupling(sigma=0.0)


# ----------------------------------------------------------------------------- Gibbs / W-CFM


def test_gibbs_weights_by_hand():
    x0, x1 = _batches(16, 3, seed=8)
    c = (x0.double() - x1.double()).square().sum(1)
    p = GibbsWeightedCoupling(eps=0.5)(x0, x1)
    torch.testing.assert_close(p.weight, torch.exp(-c / (0.5 * c.mean())).float())
    assert torch.equal(p.x0, x0) and torch.equal(p.x1, x1)
    absolute = GibbsWeightedCoupling(eps=2.0, relative=False)(x0, x1)
    torch.testing.assert_close(absolute.weight, torch.exp(-c / 2.0).float())
    normalized = GibbsWeightedCoupling(eps=0.5, normalize=True)(x0, x1)
    assert float(normalized.weight.mean()) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(normalized.weight / normalized.weight[0], p.weight / p.weight[0])


def test_gibbs_relative_eps_scales_with_the_data():
    x0, x1 = _batches(16, 3, seed=9)
    rel = GibbsWeightedCoupling(eps=1.0)
    torch.testing.assert_close(rel(10 * x0, 10 * x1).weight, rel(x0, x1).weight)
    absolute = GibbsWeightedCoupling(eps=1.0, relative=False)
    assert float(absolute(10 * x0, 10 * x1).weight.max()) < float(absolute(x0, x1).weight.min())


def test_gibbs_underflow_is_reported_and_normalize_is_safe():
    x0, x1 = _batches(8, 3072, seed=10)
    with pytest.warns(RuntimeWarning, match="underflowed"):
        GibbsWeightedCoupling(eps=1e-3, relative=False)(x0, x1)
    w = GibbsWeightedCoupling(eps=1e-3, relative=False, normalize=True)(x0, x1).weight
    assert bool(torch.isfinite(w).all()) and float(w.mean()) == pytest.approx(1.0, rel=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(GibbsWeightedCoupling()(x0, x1).weight.min()) > 0


# ----------------------------------------------------------------------------- registry and validation


def test_get_coupling_names_and_errors():
    for name, cls in [("independent", IndependentCoupling), ("exact_ot", ExactOTCoupling),
                      ("sinkhorn", SinkhornCoupling), ("conditional_ot", ConditionalOTCoupling),
                      ("schrodinger_bridge", SchrodingerBridgeCoupling), ("gibbs", GibbsWeightedCoupling)]:
        assert type(get_coupling(name)) is cls
    assert get_coupling("sinkhorn", reg=0.2).reg == 0.2
    with pytest.raises(ConfigError, match="exact_ot"):
        get_coupling("hungarian")
    with pytest.raises(ConfigError):
        get_coupling("gibbs", sigma=1.0)
    for bad in (lambda: SinkhornCoupling(reg=-1.0), lambda: GibbsWeightedCoupling(eps=float("nan")),
                lambda: ExactOTCoupling(solver="fast")):
        with pytest.raises(ConfigError):
            bad()


def test_independent_and_pairing_defaults():
    x0, x1 = _batches(5, 2, seed=0)
    p = IndependentCoupling()(x0, x1)
    assert torch.equal(p.index0, torch.arange(5)) and p.weight is None and torch.equal(p.x1, x1)


@pytest.mark.parametrize("coupling", [IndependentCoupling(), ExactOTCoupling(), SinkhornCoupling(),
                                      GibbsWeightedCoupling(), SchrodingerBridgeCoupling()])
def test_bad_inputs_raise_flowzoo_errors(coupling):
    x0, x1 = _batches(4, 2, seed=0)
    with pytest.raises(ShapeError):
        coupling(x0, torch.randn(4, 3))
    with pytest.raises(NonFiniteError):
        coupling(x0, x1.clone().fill_(math.nan))
    with pytest.raises(EmptyInputError):
        coupling(x0[:0], x1[:0])
    with pytest.raises(DTypeError):
        coupling(x0.long(), x1)
    with pytest.raises(DTypeError):
        coupling(x0.numpy(), x1)


def test_independent_and_gibbs_need_equal_batches():
    x0, x1 = _batches(4, 2, seed=0)
    for coupling in (IndependentCoupling(), GibbsWeightedCoupling()):
        with pytest.raises(ShapeError, match="same batch size"):
            coupling(x0[:3], x1)
