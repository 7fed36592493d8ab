r"""MDT-dist: marginal-data transport distillation (Zhou et al., arXiv 2509.04406; code Zanue/MDT-dist).

The student is a one-jump map to data, :math:`u_\theta(x_s, s)`, with

.. math::  \hat x_1 = x_s + (1 - s)\,u_\theta(x_s, s),

i.e. a flow map :math:`u(x_s, s, t)` with t fixed to 1 (MeanFlow's average velocity with r = data end).
API: the student is a **single-time** model ``student(x, s, **cond) -> u`` (so an
:class:`~flowzoo.core.nets.mlp.MLPVelocity` copy of the teacher is a valid initialisation, as in the paper);
wrap a two-time flow map with :class:`FlowMapToData` (it calls ``flowmap(x, s, ones)``).

Time-convention mapping. MDT-dist (TRELLIS) puts data at τ = 0 and noise at τ = 1 and jumps
:math:`x_0 = x_\tau - \tau u(x_\tau, \tau)`. With s = 1 − τ and u_ours = −u_theirs this is the jump above.

Velocity Matching (VM) target, derived in our convention. Along the teacher ODE :math:`\dot x_s = v(x_s, s)`
the endpoint :math:`\Phi(x_s, s) = x_s + (1 - s) u(x_s, s)` is constant, so
:math:`0 = \tfrac{d}{ds}\Phi = v - u + (1 - s)\tfrac{d}{ds}u`, i.e.

.. math::  u(x_s, s) = v(x_s, s) + (1 - s)\,\tfrac{d}{ds} u(x_s, s), \qquad \tfrac{d}{ds} = v\cdot\nabla_x + \partial_s,

the MeanFlow identity with t = 1 (the repo's ``u_tgt = v − t·du/dt`` under τ = 1 − s, u → −u). The total
derivative is a finite difference along one teacher Euler step s → s' = s + Δ (the repo's ``discrete``
mode, Δ = 0.01), computed without gradient and normalised :math:`du \leftarrow du/(\|du\| + \epsilon)` per
sample (``d_norm``, ε = 0.1; ``normalize_eps=None`` keeps the raw difference, which makes the target exact as
Δ → 0 for an exact student — see the tests' Gaussian oracle). Loss :math:`\|u_\theta - u_{tgt}\|^2`.

Velocity Distillation (VD): a one-step fake sample :math:`\hat x_1 = z + u_\theta(z, 0)`, re-noised to
:math:`\hat x_s = (1 - s) z' + s\,\mathrm{sg}(\hat x_1)`; the VM residual :math:`r = u_\theta(\hat x_s) - u_{tgt}`
is computed there without gradient and the loss :math:`\|r + u_{fake} - \mathrm{sg}(u_{fake})\|^2` sends the
gradient 2r to the generator output only (DMD-like, arXiv 2311.18828).

Loss normalisation (an option, off by default as in the official code, which uses the plain squared error):
``loss_normalization="teacher"`` divides each sample's VM / VD squared error by
:math:`\mathrm{sg}(\overline{v_T^2}) + c` (the mean squared teacher velocity at that sample, c = 0.01), so that
samples and stages whose velocities differ in scale weigh alike; ``"adaptive"`` divides it by
:math:`\mathrm{sg}(\ell) + c` (c = 10⁻³), MeanFlow's adaptive loss weighting with p = 1 (arXiv 2505.13447).

Consistency distillation (:class:`ConsistencyDistillationLoss`, Song et al., arXiv 2303.01469, Eq. 7) is the
baseline MDT-dist compares against, on the same one-jump student: :math:`f(x, s) = x + (1 - s) u(x, s)` (so
f(x, 1) = x), one teacher Euler step :math:`x' = x_s + \Delta v_T(x_s, s)` and the target
:math:`\mathrm{sg} f(x', s + \Delta)`, written in velocity units as
:math:`\|u(x_s, s) - (\mathrm{sg} f(x', s + \Delta) - x_s) / (1 - s)\|^2` with the stop-gradient student as
its own target network (iCT, arXiv 2310.14189); s ~ U[0, 1 − Δ].

Example:
    >>> import torch
    >>> teacher = lambda x, t: torch.ones_like(x)           # straight paths: u = v exactly
    >>> loss, m = VelocityMatchingLoss(teacher, normalize_eps=None)(teacher, {"x1": torch.randn(8, 2)})
    >>> round(loss.item(), 6)
    0.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from flowzoo.core.validation import broadcast_time, check_nonnegative, check_number, check_positive, check_tensor
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.sampling import (Callback, ClassifierFreeGuidance, SampleResult, StepRecorder, check_cond,
                                  check_end_state)
from flowzoo.core.batching import (call_model, check_time_sampler, per_sample_mean, raise_if_batch_not_finite,
                                   reduce_weighted, sample_time, unpack_batch)
from flowzoo.core.paths import LogitNormalTime

__all__ = ["LOSS_NORMALIZATIONS", "FlowMapToData", "VelocityMatchingLoss", "VelocityDistillationLoss",
           "MDTDistillationLoss", "ConsistencyDistillationLoss", "one_step_sample"]

Tensor = torch.Tensor
LOSS_NORMALIZATIONS = (None, "teacher", "adaptive")
_NORMALIZATION_EPS = {"teacher": 1e-2, "adaptive": 1e-3}


def _normalized_per_sample(squared: Tensor, teacher_velocity: Tensor | None, how: str | None) -> Tensor:
    """Per-sample mean of ``squared``, divided by the stop-gradient scale ``how`` names (module docstring)."""
    loss = per_sample_mean(squared)
    if how == "teacher":
        return loss / (per_sample_mean(teacher_velocity.detach() ** 2) + _NORMALIZATION_EPS[how])
    if how == "adaptive":
        return loss / (loss.detach() + _NORMALIZATION_EPS[how])
    return loss


class FlowMapToData(torch.nn.Module):
    """Present a two-time flow map ``u(x, s, t)`` as the one-jump student ``u(x, s) = u(x, s, 1)``."""

    def __init__(self, flowmap: Callable[..., Tensor]):
        super().__init__()
        if not callable(flowmap):
            raise ConfigError(expected("a callable flow map u(x, s, t)", type(flowmap).__name__, "pass the net"))
        self.flowmap = flowmap

    def forward(self, x: Tensor, s: Tensor, **cond) -> Tensor:
        return self.flowmap(x, s, torch.ones_like(s), **cond)


def one_step_sample(student: Callable[..., Tensor], x: Tensor, *, cond: Mapping[str, Tensor] | None = None,
                    generator: torch.Generator | None = None, callback: Callback | None = None,
                    return_trajectory: bool = False, enable_grad: bool = False) -> SampleResult:
    """The student's one-step sample :math:`x_1 = z + u_\\theta(z, 0)` from noise ``x`` = z at t = 0.

    Args:
        student: the one-jump student ``student(x, s, **cond)`` (module docstring).
        x: noise z at t = 0 (B, ...).
        cond: conditioning keyword arguments.
        generator: unused (one deterministic jump); accepted so that every sampler has one call shape.
        callback: called once with ``{"i": 0, "t": 0, "t_next": 1, "x"}`` (``x`` the sample).
        return_trajectory: also return ``[z, x_1]`` stacked.
        enable_grad: keep the autograd graph.

    Returns:
        :class:`~flowzoo.core.sampling.result.SampleResult` with ``nfe = 1``.

    Example:
        >>> one_step_sample(lambda x, s: torch.ones_like(x), torch.zeros(2, 3)).x.tolist()
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    x = check_tensor(x, "x")
    cond = check_cond(cond)
    grid = torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device)
    recorder = StepRecorder(x, grid, callback=callback, return_trajectory=return_trajectory)
    with torch.set_grad_enabled(enable_grad):
        x1 = x + call_model(student, x, grid[0].expand(x.shape[0]), cond)
    recorder.record(0, x1)
    check_end_state(x1, "check the student for NaN outputs")
    return SampleResult(x=x1, nfe=1, trajectory=recorder.trajectory(), times=grid)


def _guided_teacher(teacher: Callable[..., Tensor], teacher_guidance: float | None,
                    null_cond: Mapping[str, object] | None) -> Callable[..., Tensor]:
    """The teacher velocity the students match: checked callable, wrapped in classifier-free guidance when asked."""
    if not callable(teacher):
        raise ConfigError(expected("a callable teacher velocity model", type(teacher).__name__, "pass the net"))
    if teacher_guidance is None:
        return teacher
    if not null_cond:
        raise ConfigError(expected("null_cond with teacher_guidance", repr(null_cond),
                                   'pass e.g. null_cond={"y": num_classes}'))
    return ClassifierFreeGuidance(teacher, teacher_guidance, null_cond)


class VelocityMatchingLoss:
    r"""MDT-dist Velocity Matching: :math:`\|u_\theta(x_s, s) - [v_T + (1 - s)\,du/ds]\|^2` (see module docstring).

    Args:
        teacher: the teacher velocity model ``teacher(x, t, **cond)`` (frozen; called without gradient).
        delta: the finite-difference step Δ (s is drawn in [0, 1 − Δ]).
        normalize_eps: ε of :math:`du/(\|du\| + ε)`; None disables the normalisation.
        teacher_guidance: CFG scale w' of the teacher (MDT's ``(1 + w) v_c − w v_u`` is w' = 1 + w); needs
            ``null_cond``. None: the teacher is used as given.
        null_cond: conditioning key → null value for the guided teacher.
        time_sampler: distribution of s; default logit-normal(−1, 1), MDT's logit-normal(1, 1) in τ = 1 − s
            (biased towards the noise end).
        loss_normalization: None (the official plain squared error), ``"teacher"`` or ``"adaptive"`` (module
            docstring); VD built on this loss uses the same.

    The batch follows FlowMatchingLoss: ``x1`` data, optional ``x0`` noise, ``weight``, conditioning.

    Example:
        >>> teacher = lambda x, t: -x
        >>> loss, m = VelocityMatchingLoss(teacher, loss_normalization="teacher")(teacher, {"x1": torch.randn(4, 3)})
        >>> loss.dim(), sorted(m)
        (0, ['loss'])
    """

    def __init__(self, teacher: Callable[..., Tensor], delta: float = 0.01, normalize_eps: float | None = 0.1,
                 teacher_guidance: float | None = None, null_cond: Mapping[str, object] | None = None,
                 time_sampler=None, loss_normalization: str | None = None):
        self.teacher = _guided_teacher(teacher, teacher_guidance, null_cond)
        advice = "see the class docstring for typical values"
        self.delta = check_number(delta, "delta", low=0.0, high=0.5, strict_low=True, strict_high=True, fix=advice)
        self.normalize_eps = None if normalize_eps is None else check_positive(normalize_eps, "normalize_eps",
                                                                              fix=advice)
        self.time_sampler = check_time_sampler(LogitNormalTime(-1.0, 1.0) if time_sampler is None else time_sampler)
        if loss_normalization not in LOSS_NORMALIZATIONS:
            raise ConfigError(expected(f"loss_normalization in {LOSS_NORMALIZATIONS}", repr(loss_normalization),
                                       "pass None (the paper's plain squared error) or one of the others"))
        self.loss_normalization = loss_normalization

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(delta={self.delta}, normalize_eps={self.normalize_eps}, "
                f"time_sampler={self.time_sampler!r}, loss_normalization={self.loss_normalization!r})")

    def sample_time(self, n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
        return sample_time(self.time_sampler, n, like, generator).clamp(0.0, 1.0 - self.delta)

    @torch.no_grad()
    def target(self, student: Callable[..., Tensor], x_s: Tensor, s: Tensor, cond: Mapping[str, Tensor],
               u_now: Tensor | None = None) -> Tensor:
        r"""The VM target :math:`v_T(x_s, s) + (1 - s)\,du` at (x_s, s), without gradient."""
        v = call_model(self.teacher, x_s, s, cond)
        s_next = s + self.delta
        x_next = x_s + self.delta * v
        if u_now is None:
            u_now = call_model(student, x_s, s, cond)
        du = (call_model(student, x_next, s_next, cond) - u_now.detach()) / self.delta
        if self.normalize_eps is not None:
            norm = du.flatten(1).norm(dim=1)
            du = du / broadcast_time(norm + self.normalize_eps, du)
        return v + broadcast_time(1 - s, du) * du

    def per_sample(self, squared: Tensor, x_s: Tensor, s: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
        """Each sample's loss from the elementwise squared error at (x_s, s): its mean, normalised as configured
        (``"teacher"`` evaluates the teacher at (x_s, s) once more, without gradient)."""
        velocity = None
        if self.loss_normalization == "teacher":
            with torch.no_grad():
                velocity = call_model(self.teacher, x_s, s, cond)
        return _normalized_per_sample(squared, velocity, self.loss_normalization)

    def __call__(self, student: Callable[..., Tensor], batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        data = unpack_batch(batch, generator)
        n = data.x1.shape[0]
        s = self.sample_time(n, data.x1, generator)
        x_s = data.x0 + broadcast_time(s, data.x1) * (data.x1 - data.x0)
        u = call_model(student, x_s, s, data.cond)
        u_tgt = self.target(student, x_s, s, data.cond, u_now=u)
        loss = reduce_weighted(self.per_sample((u - u_tgt) ** 2, x_s, s, data.cond), data.weight)
        value = loss.item()
        if not math.isfinite(value):
            raise_if_batch_not_finite(batch)
        return loss, {"loss": value}


class VelocityDistillationLoss:
    r"""MDT-dist Velocity Distillation: :math:`\|r + u_{fake} - \mathrm{sg}(u_{fake})\|^2` at re-noised fake samples.

    ``vm`` supplies the teacher, Δ, normalisation and time sampler (a :class:`VelocityMatchingLoss`, or built
    from ``teacher`` and ``**vm_kwargs``). Only the batch's size and conditioning are used (``x1`` sets the
    shape); the fake samples come from the student itself. The loss value equals mean ‖r‖²; its gradient
    reaches the parameters only through :math:`u_\theta(z, 0)` (with ``loss_normalization``, the value is the
    normalised one).
    """

    def __init__(self, teacher: Callable[..., Tensor] | None = None, *, vm: VelocityMatchingLoss | None = None,
                 **vm_kwargs):
        if (teacher is None) == (vm is None):
            raise ConfigError(expected("exactly one of teacher and vm", f"teacher={teacher!r}, vm={vm!r}",
                                       "pass the teacher model"))
        self.vm = vm if vm is not None else VelocityMatchingLoss(teacher, **vm_kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vm={self.vm!r})"

    def __call__(self, student, batch, *, generator: torch.Generator | None = None):
        data = unpack_batch(batch, generator)
        x1 = data.x1
        n = x1.shape[0]
        z = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        u_fake = call_model(student, z, torch.zeros(n, dtype=x1.dtype, device=x1.device), data.cond)
        fake = (z + u_fake).detach()
        s = self.vm.sample_time(n, x1, generator)
        noise = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        x_s = noise + broadcast_time(s, x1) * (fake - noise)
        with torch.no_grad():
            u = call_model(student, x_s, s, data.cond)
            residual = u - self.vm.target(student, x_s, s, data.cond, u_now=u)
        squared = (residual + u_fake - u_fake.detach()) ** 2
        loss = reduce_weighted(self.vm.per_sample(squared, x_s, s, data.cond), data.weight)
        value = loss.item()
        if not math.isfinite(value):
            raise_if_batch_not_finite(batch)
        return loss, {"loss": value}


class MDTDistillationLoss:
    r"""The MDT-dist total :math:`\lambda_{VM} L_{VM} + \lambda_{VD} L_{VD}` (both 1 in the official configs).

    ``**vm_kwargs`` configure the VM term (and VD, which shares it); ``vd_teacher_guidance`` gives VD its own
    teacher CFG scale (needs ``null_cond`` in ``vm_kwargs``).
    Metrics: ``loss``, ``vm``, ``vd``.

    Example:
        >>> teacher = lambda x, t: -x
        >>> loss, m = MDTDistillationLoss(teacher)(teacher, {"x1": torch.randn(4, 3)})
        >>> sorted(m)
        ['loss', 'vd', 'vm']
    """

    def __init__(self, teacher: Callable[..., Tensor], vm_weight: float = 1.0, vd_weight: float = 1.0,
                 vd_teacher_guidance: float | None = None, **vm_kwargs):
        for name, w in (("vm_weight", vm_weight), ("vd_weight", vd_weight)):
            check_nonnegative(w, name, fix="use 1.0")
        self.vm = VelocityMatchingLoss(teacher, **vm_kwargs)
        if vd_teacher_guidance is None:
            self.vd = VelocityDistillationLoss(vm=self.vm)
        else:  # the official configs guide the teacher harder in VD (w = 100) than in VM (w = 40)
            self.vd = VelocityDistillationLoss(teacher, **{**vm_kwargs, "teacher_guidance": vd_teacher_guidance})
        self.vm_weight, self.vd_weight = float(vm_weight), float(vd_weight)

    def __call__(self, student, batch, *, generator: torch.Generator | None = None):
        vm_loss, vm_metrics = self.vm(student, batch, generator=generator)
        vd_loss, vd_metrics = self.vd(student, batch, generator=generator)
        loss = self.vm_weight * vm_loss + self.vd_weight * vd_loss
        return loss, {"loss": loss.item(), "vm": vm_metrics["loss"], "vd": vd_metrics["loss"]}


class ConsistencyDistillationLoss:
    r"""Consistency distillation (arXiv 2303.01469, Eq. 7) of a velocity teacher into a one-jump student.

    The student is the MDT-dist one-jump model ``student(x, s, **cond) -> u`` (module docstring); the loss is
    :math:`\|u(x_s, s) - (\mathrm{sg} f(x', s + \Delta) - x_s) / (1 - s)\|^2` with
    :math:`x' = x_s + \Delta v_T(x_s, s)` and :math:`f(x, s) = x + (1 - s) u(x, s)`.

    Args:
        teacher: the teacher velocity model ``teacher(x, t, **cond)`` (frozen; called without gradient).
        delta: the teacher's Euler step Δ (s is drawn uniformly in [0, 1 − Δ]).
        teacher_guidance: CFG scale of the teacher; needs ``null_cond``. None: the teacher as given.
        null_cond: conditioning key → null value for the guided teacher.

    Example:
        >>> teacher = lambda x, t: torch.ones_like(x)       # straight paths: u = v is the consistent student
        >>> loss, m = ConsistencyDistillationLoss(teacher)(teacher, {"x1": torch.randn(8, 2)})
        >>> round(loss.item(), 6)
        0.0
    """

    def __init__(self, teacher: Callable[..., Tensor], delta: float = 0.05, teacher_guidance: float | None = None,
                 null_cond: Mapping[str, object] | None = None):
        self.teacher = _guided_teacher(teacher, teacher_guidance, null_cond)
        self.delta = check_number(delta, "delta", low=0.0, high=0.5, strict_low=True, strict_high=True,
                                  fix="use a small step, e.g. delta=0.05")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(delta={self.delta})"

    def __call__(self, student: Callable[..., Tensor], batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        data = unpack_batch(batch, generator)
        n = data.x1.shape[0]
        s = torch.rand(n, generator=generator, dtype=data.x1.dtype, device=data.x1.device) * (1 - self.delta)
        x_s = data.x0 + broadcast_time(s, data.x1) * (data.x1 - data.x0)
        with torch.no_grad():
            x_next = x_s + self.delta * call_model(self.teacher, x_s, s, data.cond)
            s_next = s + self.delta
            f_next = x_next + broadcast_time(1 - s_next, x_s) * call_model(student, x_next, s_next, data.cond)
            target = (f_next - x_s) / broadcast_time(1 - s, x_s)
        u = call_model(student, x_s, s, data.cond)
        loss = reduce_weighted(per_sample_mean((u - target) ** 2), data.weight)
        value = loss.item()
        if not math.isfinite(value):
            raise_if_batch_not_finite(batch)
        return loss, {"loss": value}
