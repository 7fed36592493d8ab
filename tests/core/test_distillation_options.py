"""flowzoo.core.fewstep.distillation: the loss-normalisation option of VM / VD and ConsistencyDistillationLoss
(arXiv 2303.01469, Eq. 7, on MDT-dist's one-jump student)."""

import copy

import pytest
import torch

from flowzoo.core.analysis import wasserstein2
from flowzoo.core.data import sample_toy
from flowzoo.core.errors import ConfigError, FlowzooError
from flowzoo.core.fewstep import (LOSS_NORMALIZATIONS, ConsistencyDistillationLoss, MDTDistillationLoss,
                                  VelocityMatchingLoss, one_step_sample)
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import integrate
from toy_training import fit, moons_pool, pool_batches


def test_teacher_normalisation_divides_by_the_mean_squared_teacher_velocity():
    """By hand: teacher v = 3 everywhere, a student off by 1 per element; VM's target is v (du = 0), so the plain
    loss is 1 and the normalised one 1 / (9 + 0.01)."""
    teacher = lambda x, t: torch.full_like(x, 3.0)  # noqa: E731
    student = lambda x, t: torch.full_like(x, 2.0)  # noqa: E731
    batch = {"x1": torch.randn(8, 4)}
    plain, _ = VelocityMatchingLoss(teacher, normalize_eps=None)(student, batch)
    scaled, _ = VelocityMatchingLoss(teacher, normalize_eps=None, loss_normalization="teacher")(student, batch)
    adaptive, _ = VelocityMatchingLoss(teacher, normalize_eps=None, loss_normalization="adaptive")(student, batch)
    assert plain.item() == pytest.approx(1.0)
    assert scaled.item() == pytest.approx(1.0 / 9.01, rel=1e-5)
    assert adaptive.item() == pytest.approx(1.0 / 1.001, rel=1e-5)


def test_teacher_normalisation_makes_the_loss_scale_free_and_keeps_gradients():
    """Teacher c·a and student c·(b0 + s·b1) (state-free, so the teacher's step does not change with c): the
    plain loss grows as c², the normalised one stays put."""
    a = torch.tensor([1.0, -2.0, 0.5])
    b = torch.nn.Parameter(torch.tensor([[0.5, 0.0, 1.0], [1.0, 1.0, -1.0]]))
    losses = {}
    for how in (None, "teacher"):
        for scale in (1.0, 100.0):
            teacher = lambda x, t, c=scale: c * a.expand_as(x)  # noqa: E731
            student = lambda x, t, c=scale: c * (b[0] + t[:, None] * b[1]).expand_as(x)  # noqa: E731
            vm = VelocityMatchingLoss(teacher, normalize_eps=None, loss_normalization=how)
            losses[how, scale] = vm(student, {"x1": torch.randn(16, 3)}, generator=torch.Generator().manual_seed(2))[0]
    assert losses[None, 100.0].item() == pytest.approx(1e4 * losses[None, 1.0].item(), rel=1e-3)
    assert losses["teacher", 100.0].item() == pytest.approx(losses["teacher", 1.0].item(), rel=0.01)  # c = 0.01
    losses["teacher", 100.0].backward()
    assert b.grad.abs().sum() > 0
    # VD shares the option through the total loss: a finite value, and the metrics of both terms
    net = torch.nn.Linear(3, 3)
    loss, metrics = MDTDistillationLoss(lambda x, t: -x, loss_normalization="teacher")(lambda x, t: net(x),
                                                                                       {"x1": torch.randn(4, 3)})
    assert sorted(metrics) == ["loss", "vd", "vm"]


def test_consistency_loss_vanishes_for_the_exact_student_of_straight_paths():
    teacher = lambda x, t: torch.full_like(x, 2.0)  # noqa: E731  straight paths: the one-jump velocity is 2
    loss, _ = ConsistencyDistillationLoss(teacher)(teacher, {"x1": torch.randn(16, 3)})
    assert loss.item() < 1e-12
    # by hand, for the student u = 0: f(x', s + Δ) = x_s + 2Δ, so the target is 2Δ / (1 - s) per element
    batch = {"x1": torch.randn(16, 3), "x0": torch.randn(16, 3)}
    loss, _ = ConsistencyDistillationLoss(teacher, delta=0.05)(lambda x, t: torch.zeros_like(x), batch,
                                                               generator=torch.Generator().manual_seed(0))
    s = torch.rand(16, generator=torch.Generator().manual_seed(0)) * 0.95
    assert loss.item() == pytest.approx(float(((0.1 / (1 - s)) ** 2).mean()), rel=1e-4)


def test_consistency_distillation_improves_one_step_sampling():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    teacher = MLPVelocity(2, hidden=64, depth=2, time_dim=16)
    g = torch.Generator().manual_seed(0)
    data = moons_pool()
    fit(teacher, FlowMatchingLoss(), 600, pool_batches(data, g), generator=g)
    teacher.requires_grad_(False)
    test = sample_toy("moons", 1000, seed=2)
    z = torch.randn(1000, 2, generator=torch.Generator().manual_seed(3))
    naive = wasserstein2(integrate(teacher, z, steps=1).x, test)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    fit(student, ConsistencyDistillationLoss(teacher), 400, pool_batches(data, g), lr=1e-3, generator=g)
    with torch.no_grad():
        distilled = wasserstein2(one_step_sample(student, z).x, test)
    assert distilled < 0.7 * naive, (distilled, naive)


def test_bad_options_raise():
    teacher = lambda x, t: x  # noqa: E731
    assert LOSS_NORMALIZATIONS == (None, "teacher", "adaptive")
    with pytest.raises(ConfigError, match="loss_normalization"):
        VelocityMatchingLoss(teacher, loss_normalization="per-element")
    with pytest.raises(ConfigError):
        ConsistencyDistillationLoss("teacher")
    with pytest.raises(ConfigError):
        ConsistencyDistillationLoss(teacher, delta=0.0)
    with pytest.raises(ConfigError):
        ConsistencyDistillationLoss(teacher, teacher_guidance=2.0)  # no null_cond
    with pytest.raises(FlowzooError):
        ConsistencyDistillationLoss(teacher)(teacher, {"x1": torch.full((2, 2), float("nan"))})
