"""Parity with facebookresearch/flow_matching's discrete flow matching (skipped when it is not installed)."""

from __future__ import annotations

import pytest
import torch

from discrete_support import chi2_pvalue
from flowzoo.core.discrete import (LinearConvexScheduler, MixtureDiscretePath, PolynomialConvexScheduler,
                                   generalized_kl, step_kernel)

fm = pytest.importorskip("flow_matching")
from flow_matching.loss import MixturePathGeneralizedKL  # noqa: E402
from flow_matching.path import MixtureDiscreteProbPath  # noqa: E402
from flow_matching.path.scheduler import PolynomialConvexScheduler as FMPolynomial  # noqa: E402
from flow_matching.solver import MixtureDiscreteEulerSolver  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("n", [0.5, 1.0, 2.0, 3.0])
def test_scheduler_values_and_derivatives(n):
    t = torch.linspace(0.01, 0.99, 25)
    theirs = FMPolynomial(n)(t)
    ours = PolynomialConvexScheduler(n)(t)
    torch.testing.assert_close(ours.kappa, theirs.alpha_t)
    torch.testing.assert_close(1 - ours.kappa, theirs.sigma_t)
    torch.testing.assert_close(ours.d_kappa, theirs.d_alpha_t)
    torch.testing.assert_close(PolynomialConvexScheduler(n).kappa_inverse(ours.kappa),
                               FMPolynomial(n).kappa_inverse(ours.kappa))


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_path_samples_equal_given_the_same_uniform_draws(source):
    path = MixtureDiscretePath(7, source=source, scheduler=PolynomialConvexScheduler(2.0))
    theirs = MixtureDiscreteProbPath(FMPolynomial(2.0))
    x1 = torch.randint(0, 7, (64, 12), generator=torch.Generator().manual_seed(0))
    x0 = path.source.sample(x1.shape, generator=torch.Generator().manual_seed(1))
    t = torch.rand(64, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    want = theirs.sample(x_0=x0, x_1=x1, t=t).x_t
    torch.manual_seed(3)
    got = path.sample(x1, t, x0=x0).x_t
    assert torch.equal(got, want)


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_generalized_kl_equals_flow_matching(source):
    v = 6
    path = MixtureDiscretePath(v, source=source, scheduler=PolynomialConvexScheduler(1.5), carry_over=False)
    x1 = torch.randint(0, v, (16, 9), generator=torch.Generator().manual_seed(0))
    t = torch.rand(16, generator=torch.Generator().manual_seed(1)) * 0.98
    x_t = path.sample(x1, t, generator=torch.Generator().manual_seed(2)).x_t
    logits = torch.randn(16, 9, v, generator=torch.Generator().manual_seed(3))
    # flow_matching counts the mask as a vocabulary entry: give it zero probability
    padded = torch.cat([logits, torch.full((16, 9, path.num_states - v), -torch.inf)], -1)
    loss = MixturePathGeneralizedKL(MixtureDiscreteProbPath(FMPolynomial(1.5)), reduction="none")
    torch.testing.assert_close(generalized_kl(logits, x1, x_t, t, path), loss(padded, x1, x_t, t))


@pytest.mark.parametrize("source,div_free", [("mask", 0.0), ("mask", 1.5), ("uniform", 0.0), ("uniform", 1.0)])
def test_euler_step_distribution_matches_flow_matching(source, div_free):
    """One step of flow_matching's solver on a fixed posterior, against our step kernel (chi-square).

    The current token has zero posterior mass (the mask, or a token the posterior rules out), where the two
    schemes (theirs: draw x1, then jump to it; ours: jump with the marginal rates) have the same kernel.
    """
    v, n = 5, 30000
    path = MixtureDiscretePath(v, source=source, scheduler=LinearConvexScheduler())
    posterior = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4])
    start = path.source.mask_id if source == "mask" else 0
    full = torch.cat([posterior, torch.zeros(path.num_states - v)])
    solver = MixtureDiscreteEulerSolver(model=lambda x, t: full.expand(*x.shape, path.num_states), path=
                                        MixtureDiscreteProbPath(FMPolynomial(1.0)), vocabulary_size=path.num_states,
                                        source_distribution_p=path.source.probs())
    torch.manual_seed(0)
    states = solver.sample(x_init=torch.full((n, 1), start), step_size=None, div_free=div_free,
                           time_grid=torch.tensor([0.3, 0.5, 1.0]), return_intermediates=True)
    counts = torch.bincount(states[1][:, 0], minlength=path.num_states)
    kernel = step_kernel(posterior[None], torch.tensor([start]), 0.3, 0.2, path, div_free)[0]
    assert chi2_pvalue(counts, kernel) > 1e-3
