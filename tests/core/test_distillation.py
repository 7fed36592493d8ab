"""Tests of flowzoo.core.fewstep.distillation (MDT-dist VM / VD, arXiv 2509.04406) against a Gaussian oracle."""

import copy

import pytest
import torch

from flowzoo.core.data import sample_toy
from flowzoo.core.fewstep import (FlowMapToData, MDTDistillationLoss, VelocityDistillationLoss,
                                       VelocityMatchingLoss, one_step_sample)
from flowzoo.core.errors import ConfigError, FlowzooError
from flowzoo.core.analysis import wasserstein2
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import integrate
from toy_training import fit, moons_pool, pool_batches

MEAN, STD = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), 0.3


def _k(s):  # std of x_s for N(0, I) -> N(MEAN, STD^2 I) on the linear path
    return torch.sqrt((1 - s) ** 2 + s ** 2 * STD ** 2)[:, None]


def oracle_v(x, s):
    dk = (-(1 - s) + s * STD ** 2)[:, None] / _k(s)
    return MEAN + dk / _k(s) * (x - s[:, None] * MEAN)


def oracle_u(x, s):
    """Exact one-jump average velocity: (Phi_{s->1}(x) - x) / (1 - s), Phi affine per dimension."""
    phi = MEAN + STD * (x - s[:, None] * MEAN) / _k(s)
    return (phi - x) / (1 - s)[:, None]


def test_vm_target_is_exact_on_the_gaussian_oracle():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g, dtype=torch.float64)
    s = torch.rand(64, generator=g, dtype=torch.float64) * 0.9
    errors = {}
    for delta in (1e-2, 1e-3, 1e-4):
        vm = VelocityMatchingLoss(oracle_v, delta=delta, normalize_eps=None)
        errors[delta] = (vm.target(oracle_u, x, s, {}) - oracle_u(x, s)).abs().max().item()
    assert errors[1e-4] < 1e-3 and errors[1e-3] < errors[1e-2] / 5  # first order in delta
    # flip the bug on: the repo's sign (u = v - (1 - s) du) is wrong in flowzoo's direction
    v = oracle_v(x, s)
    wrong = 2 * v - VelocityMatchingLoss(oracle_v, delta=1e-4, normalize_eps=None).target(oracle_u, x, s, {})
    assert (wrong - oracle_u(x, s)).abs().max().item() > 0.1
    # exact student => zero loss; the data-side batch convention (x1 data, x0 noise)
    x1 = MEAN + STD * torch.randn(128, 3, generator=g, dtype=torch.float64)
    loss, _ = VelocityMatchingLoss(oracle_v, delta=1e-4, normalize_eps=None)(oracle_u, {"x1": x1}, generator=g)
    assert loss.item() < 1e-6
    # normalisation: du has norm < 1
    vm = VelocityMatchingLoss(oracle_v, delta=1e-3)
    du = (vm.target(oracle_u, x, s, {}) - v) / (1 - s)[:, None]
    assert du.norm(dim=1).max().item() < 1.0


def test_flowmap_adapter_and_one_step_sample():
    flowmap = lambda x, s, t: torch.zeros_like(x) + t[:, None]  # noqa: E731
    student = FlowMapToData(flowmap)
    assert torch.equal(student(torch.zeros(2, 3), torch.zeros(2)), torch.ones(2, 3))
    assert torch.equal(one_step_sample(student, torch.zeros(2, 3)).x, torch.ones(2, 3))


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, x, s):
        return self.theta * x + s[:, None]


def test_vd_gradient_reaches_only_the_generator_output():
    teacher = lambda x, t: -x  # noqa: E731
    student = _Linear()
    vd = VelocityDistillationLoss(teacher, normalize_eps=None)
    batch = {"x1": torch.randn(32, 2)}
    loss, _ = vd(student, batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    # replay the same draws by hand: z, s, noise
    g = torch.Generator().manual_seed(0)
    torch.randn(32, 2, generator=g)  # the batch's (unused) source noise drawn by the batch unpacking
    z = torch.randn(32, 2, generator=g)
    with torch.no_grad():
        u_fake = student(z, torch.zeros(32))
        s = vd.vm.sample_time(32, z, g)
        noise = torch.randn(32, 2, generator=g)
        x_s = noise + s[:, None] * (z + u_fake - noise)
        u = student(x_s, s)
        residual = u - vd.vm.target(student, x_s, s, {}, u_now=u)
    assert loss.item() == pytest.approx(residual.pow(2).mean().item(), rel=1e-5)
    expected_grad = (2 * residual * z).mean()  # d u_fake / d theta = z; no path through x_s or the target
    assert student.theta.grad.item() == pytest.approx(expected_grad.item(), rel=1e-4)


def test_bad_inputs_raise():
    teacher = lambda x, t: x  # noqa: E731
    with pytest.raises(ConfigError):
        VelocityMatchingLoss(teacher, delta=0)
    with pytest.raises(ConfigError):
        VelocityMatchingLoss(teacher, delta=0.7)
    with pytest.raises(ConfigError):
        VelocityMatchingLoss(teacher, teacher_guidance=3.0)  # no null_cond
    with pytest.raises(ConfigError):
        VelocityMatchingLoss("teacher")
    with pytest.raises(ConfigError):
        VelocityDistillationLoss()
    with pytest.raises(ConfigError):
        MDTDistillationLoss(teacher, vd_weight=-1)
    with pytest.raises(FlowzooError):
        VelocityMatchingLoss(teacher)(teacher, {"x1": torch.full((2, 2), float("inf"))})
    with pytest.raises(FlowzooError):
        VelocityMatchingLoss(teacher)(lambda x, t: x[:, :1], {"x1": torch.randn(2, 2)})


def test_guided_conditional_teacher_runs():
    net = MLPVelocity(2, hidden=16, depth=1, time_dim=8, num_classes=3)
    vm = VelocityMatchingLoss(net, teacher_guidance=2.0, null_cond={"y": 3})
    loss, metrics = MDTDistillationLoss(net, teacher_guidance=2.0, null_cond={"y": 3})(
        net, {"x1": torch.randn(8, 2), "y": torch.randint(0, 3, (8,))})
    assert torch.isfinite(loss) and set(metrics) == {"loss", "vm", "vd"}
    both = MDTDistillationLoss(net, teacher_guidance=2.0, vd_teacher_guidance=5.0, null_cond={"y": 3})
    assert both.vm.teacher.scale == 2.0 and both.vd.vm.teacher.scale == 5.0
    assert vm.teacher.scale == 2.0


def _train_teacher(steps):
    torch.manual_seed(0)
    teacher = MLPVelocity(2, hidden=64, depth=2, time_dim=16)
    g = torch.Generator().manual_seed(0)
    data = moons_pool()
    fit(teacher, FlowMatchingLoss(), steps, pool_batches(data, g), generator=g)
    return teacher.requires_grad_(False), data


def _distil(teacher, data, objective, steps):
    student = copy.deepcopy(teacher).train().requires_grad_(True)  # initialised from the teacher (the paper)
    g = torch.Generator().manual_seed(1)
    return fit(student, objective, steps, pool_batches(data, g), lr=1e-3, generator=g)


def test_mdt_distillation_improves_one_step_sampling():
    torch.set_num_threads(1)
    teacher, data = _train_teacher(800)
    test = sample_toy("moons", 1000, seed=2)
    z = torch.randn(1000, 2, generator=torch.Generator().manual_seed(3))
    w_teacher_1 = wasserstein2(integrate(teacher, z, steps=1).x, test)
    w_teacher_50 = wasserstein2(integrate(teacher, z, steps=50).x, test)
    results = {}
    for name, objective in (("vm", VelocityMatchingLoss(teacher, normalize_eps=None)),
                            ("mdt", MDTDistillationLoss(teacher, normalize_eps=None))):
        student = _distil(teacher, data, objective, 600)
        with torch.no_grad():
            results[name] = wasserstein2(one_step_sample(student, z).x, test)
    # flip the bug on: the TRELLIS-direction sign u = v - (1 - s) du, wrong in flowzoo's direction
    class FlippedVM(VelocityMatchingLoss):
        def target(self, student, x_s, s, cond, u_now=None):
            v = self.teacher(x_s, s)
            return 2 * v - super().target(student, x_s, s, cond, u_now)

    student = _distil(teacher, data, FlippedVM(teacher, normalize_eps=None), 600)
    with torch.no_grad():
        results["flipped"] = wasserstein2(one_step_sample(student, z).x, test)
    print(w_teacher_1, w_teacher_50, results)
    assert results["vm"] < 0.6 * w_teacher_1
    assert results["mdt"] < 0.45 * w_teacher_1
    assert results["flipped"] > 0.8 * w_teacher_1


def test_two_time_flow_map_student_and_shared_oracle_agree():
    flowmap = pytest.importorskip("flowzoo.core.fewstep.flowmap")
    oracle = flowmap.GaussianOracle(mean=MEAN, std=STD)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    s = torch.rand(16, generator=g, dtype=torch.float64) * 0.9
    assert torch.allclose(FlowMapToData(oracle)(x, s), oracle_u(x, s), atol=1e-10)  # our oracle = the shared one
    vm = VelocityMatchingLoss(oracle.velocity, delta=1e-4, normalize_eps=None)
    assert torch.allclose(vm.target(FlowMapToData(oracle), x, s, {}), oracle_u(x, s), atol=1e-3)
    student = FlowMapToData(flowmap.MLPFlowMap(3, hidden=16, depth=1, time_dim=8))
    loss, metrics = MDTDistillationLoss(lambda x, t: -x)(student, {"x1": torch.randn(8, 3)})
    loss.backward()
    assert set(metrics) == {"loss", "vm", "vd"} and torch.isfinite(loss)
