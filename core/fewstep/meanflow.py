r"""MeanFlow: one-step generation by regressing the average velocity (Geng et al., arXiv 2505.13447).

A flow map :math:`u_\theta(x_s, s, t)` (see :mod:`flowzoo.core.fewstep.flowmap`; state at the start time s, one step
:math:`x_t = x_s + (t - s)u`) is trained on the **MeanFlow identity**, written in flowzoo time:

.. math::  u(x_s, s, t) = v(x_s, s) + (t - s)\,\frac{d}{ds} u(x_s, s, t), \qquad
           \frac{d}{ds} = v\cdot\nabla_x + \partial_s .

*Derivation.* :math:`(t - s)\,u(x_s, s, t) = x_t - x_s` and :math:`x_t = \Phi_{s\to t}(x_s)` does not move when
s slides along the trajectory, so :math:`\frac{d}{ds}[(t - s)u] = -\dot x_s = -v`, i.e.
:math:`-u + (t - s)\,\frac{du}{ds} = -v`. *Mapping to the paper* (t = 1 noise, state at the later time):
:math:`t_{\rm MF} = 1 - s`, :math:`r_{\rm MF} = 1 - t`, :math:`v_{\rm MF} = -v`, :math:`u_{\rm MF} = -u`,
:math:`d/dt_{\rm MF} = -d/ds`; the paper's Eq. 6, :math:`u = v - (t - r)\,du/dt`, becomes the line above.
Checked against the Gaussian oracle (:class:`~flowzoo.core.fewstep.flowmap.GaussianOracle`) in the tests.

The total derivative is a Jacobian-vector product of :math:`(x, s, t) \mapsto u_\theta(x, s, t)` with tangent
**(v, 1, 0)** (py-meanflow ``torch.func.jvp(u_func, (z, t, r), (v, 1, 0))``; here forward-mode dual tensors);
the time gap t − s is formed inside the network, so no (v, 1, ±1) trap. The loss (paper Eq. 9, with the
adaptive weighting of §4.3):

.. math::  \mathcal L = E\, w\,\|u_\theta(x_s, s, t) - \mathrm{sg}(u_{\rm tgt})\|^2,\quad
           u_{\rm tgt} = v + (t - s)\,\frac{du_\theta}{ds},\quad w = \mathrm{sg}\big((\|\Delta\|^2 + c)^{-p}\big),

where v is the conditional velocity :math:`\dot x_s` of the path (x1 − x0 for the linear path), or a teacher's
velocity (MeanFlow distillation, MF-RAE §3.3, arXiv 2511.13019).

**iMF** (``formulation="imf"``; Geng, Lu, Wu, Shechtman, Kolter, He, "Improved Mean Flows: On the Challenges of
Fastforward Generative Models", arXiv 2512.02012, §4; official JAX ``imf.py``). The identity solved for v is a
*compound velocity* built from the flow map alone, regressed onto the conditional velocity (a "v-loss"):

.. math::  V_\theta = u_\theta(x_s, s, t) - (t - s)\,\mathrm{sg}\Big(\frac{du_\theta}{ds}\Big),\quad
           \frac{d}{ds} = v_\theta\cdot\nabla_x + \partial_s,\quad v_\theta = \mathrm{sg}\,u_\theta(x_s, s, s),\quad
           \mathcal L = E\, w\,\|V_\theta - v_c\|^2 .

*Sign in flowzoo time*: the paper writes :math:`V = u + (t - r)\,\mathrm{sg}(du/dt)` (t = 1 noise, state at the
later time); with the mapping above (:math:`u_{\rm MF} = -u`, :math:`d/dt_{\rm MF} = -d/ds`,
:math:`t_{\rm MF} - r_{\rm MF} = t - s`) :math:`V_{\rm MF} = -u + (t - s)\,du/ds = -V_\theta` and its target
:math:`e - x = -v_c`, so the loss is the same and the sign here is **minus**. The change that matters is the
*tangent*: the network's own instantaneous velocity :math:`u_\theta(x_s, s, s)` (the boundary condition
u(x, s, s) = v; the paper's optional auxiliary v-head is not used) instead of the conditional velocity
:math:`v_c`. With :math:`v_c` as tangent, :math:`\|V - v_c\|^2` *is* the MeanFlow loss (same value, same
gradient): there the target's noise :math:`v_c - E[v_c | x_s]` enters multiplied by
:math:`I + (t - s)\,\partial_x u`, here it enters once, as in flow matching. At the exact solution
:math:`V = v(x_s, s)`, the marginal velocity, for every t (tested on the Gaussian oracle).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from flowzoo.core.fewstep import forward_ad
from flowzoo.core.fewstep.target_passes import (functional_model, has_active_dropout, padded_gap_index, rng_state,
                                         set_rng_state, unwrap_parallel)
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.fewstep.flowmap import TwoTimeSampler
from flowzoo.core.validation import check_bool, check_number
from flowzoo.core.batching import (call_flowmap, couple_batch, drop_conditions, per_sample_mean,
                                   raise_if_batch_not_finite, reduce_weighted, sample_path, unpack_batch)
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.paths import CondOTPath

__all__ = ["MeanFlowLoss", "DERIVATIVES", "FORMULATIONS"]

Tensor = torch.Tensor
DERIVATIVES = ("jvp", "finite_difference")
FORMULATIONS = ("meanflow", "imf")


class MeanFlowLoss:
    r"""The MeanFlow objective ``loss(flowmap, batch) -> (loss, metrics)`` (Geng et al., arXiv 2505.13447).

    See the module docstring for the identity, its derivation in flowzoo time and the mapping to the paper.
    Batches follow :class:`~flowzoo.core.objectives.FlowMatchingLoss` (``x1``, optional ``x0``, ``weight``,
    conditioning keys passed to the model); x may have any shape (B, ...). One step:

    1. (x0, x1) paired by ``coupling`` if given; (s, t) from ``time_sampler``; :math:`x_s` and
       :math:`v = \dot x_s` from ``path`` at time s.
    2. MFD: with a ``teacher`` (a velocity model ``teacher(x, t, **cond)``) :math:`v = v_\phi(x_s, s)` replaces
       the conditional velocity in the target *and* the tangent (MF-RAE ``training_losses_mfd``).
    3. CFG baked into the target (paper §4.2; JAX ``guidance_fn``), without gradient:
       :math:`v_g = \omega v + (1 - \omega - \kappa)\,u_\theta(x_s, s, s \mid \varnothing) + \kappa\,u_\theta(x_s, s, s
       \mid c)`; samples whose condition was dropped keep :math:`v`. ``guidance_scale`` is ω, ``guidance_kappa``
       κ; ω = 1, κ = 0 is no guidance. Needs ``cond_dropout > 0`` so that the null branch is trained.
    4. :math:`du/ds` along the tangent :math:`(v_g, 1, 0)` on (x, s, t) -- with ``formulation="imf"`` along
       :math:`(v_\theta, 1, 0)`, :math:`v_\theta = u_\theta(x_s, s, s \mid c)` (no gradient; with guidance the
       model's own *guided* velocity, the field its flow map must integrate) -- exact, by forward-mode AD
       (``derivative="jvp"``), or a central finite difference
       :math:`[u(x + \delta v_g, s + \delta, t) - u(x - \delta v_g, s - \delta, t)]/2\delta` batched in one 2B
       forward, one-sided where s ± δ leaves [0, 1] (MF-RAE, ``fd_delta`` δ = 5e-3).
    5. :math:`u_{\rm tgt} = v_g + (t - s)\,du/ds`, all under ``no_grad`` (the stop-gradient of Eq. 9, on the
       whole target), then :math:`u_{\rm pred}` by a normal forward with gradient, and
       :math:`\ell = \mathrm{mean}(\Delta^2)` per sample, :math:`w = (\ell + c)^{-p}` detached. iMF's residual
       :math:`V_\theta - v_g = u_{\rm pred} - (t - s)\,\mathrm{sg}(du/ds) - v_g` is the same :math:`\Delta`, so
       both formulations share this code; they differ only in the tangent.

    Why the target has its own pass: the JVP runs under ``no_grad`` (no graph for the forward-mode pass), and
    the gradient comes from an ordinary forward. A model may provide its own forward mode,
    ``model.jvp(x, s, t, dx, ds, dt, **cond) -> (u, du)`` (:meth:`MLPFlowMap.jvp`, hand-written, much cheaper
    than generic forward-mode AD for small nets); otherwise dual tensors are used. A separate no-grad target
    pass is also cheaper than one ``torch.func.jvp`` whose primal carries the gradient. The target passes run
    only on the samples with t > s (where s = t the target is v_g), so the flow-matching fraction costs no JVP;
    iMF adds one forward without gradient on those samples (the cost of a step relative to a flow-matching step
    is in the notes of ``benchmarks/results/few_step.json``). Separate passes are also what DDP needs:
    forward-mode AD bypasses DDP's hooks, so the JVP runs on ``model.module`` (unwrapped here) while the
    gradient flows, and is all-reduced, through the normal DDP forward. Autocast is disabled around the target
    (py-meanflow); models with active dropout get the same random state in both passes. Avoid BatchNorm in
    training mode: the target pass sees cloned buffers so running statistics are updated once, by the
    gradient pass, but the batch statistics still differ between passes. Attention kernels without forward-mode
    AD (flash / memory-efficient SDPA) need ``derivative="finite_difference"`` or the math backend.

    Generic models are differentiated under :class:`flowzoo.core.fewstep.forward_ad.LeanForwardAD`: each convolution runs
    twice (PyTorch's own rule runs it three times) and group norm has its closed-form tangent. The derivative pass
    sees the s < t samples padded with s = t ones to a multiple of 8, so cuDNN plans few batch sizes.
    ``python -m benchmarks.meanflow_unet_step`` measures the step on a CIFAR U-Net against a flow-matching step,
    with the JVP, PyTorch's own forward-mode rules, ``torch.func.jvp`` and finite differences
    (``benchmarks/results/meanflow_unet_step.json``, on the core docs page); the finite difference is the
    cheapest. It needs δ small against the period of the network's fastest time feature: with times scaled by
    1000 before a sinusoidal embedding (the diffusion-step habit) δ = 5e-3 spans several periods and the target
    is far from the JVP's, so keep times in [0, 1] there.

    Args:
        path: an affine path with ``.sample``; default :class:`~flowzoo.core.paths.affine.CondOTPath`.
        time_sampler: ``.sample(n, device, generator) -> (s, t)`` with s ≤ t; default :class:`TwoTimeSampler`.
        adaptive_p, adaptive_c: adaptive weight exponent p (0: plain MSE) and offset c (py-meanflow
            ``norm_p``, ``norm_eps``). ℓ is the per-sample *mean* over coordinates (library convention), where
            py-meanflow sums; c is relative to that mean.
        derivative: ``"jvp"`` (exact) or ``"finite_difference"`` (no forward-mode AD needed).
        fd_delta: the finite-difference step δ.
        guidance_scale, guidance_kappa: ω and κ of the guided target.
        cond_dropout, null_cond: condition dropout as in :class:`FlowMatchingLoss`.
        teacher: optional velocity model for MeanFlow distillation (called without gradient).
        formulation: ``"meanflow"`` (tangent = the target velocity v_g) or ``"imf"`` (tangent = the model's
            own velocity u(x, s, s): one more forward without gradient, shared with the guidance pass where
            that needs u(x, s, s | c)). With a teacher, iMF's tangent is still the student's own velocity.
        coupling: how the batch's (x0, x1) are paired, as in :class:`FlowMatchingLoss` (e.g.
            ``flowzoo.core.couplings.minibatch.ExactOTCoupling()``: minibatch OT straightens the paths a one-step map
            must jump along); None keeps the pairs as they come.
        stop_gradient: keep the whole target under ``no_grad`` (Eq. 9's stop-gradient). An ablation switch:
            ``False`` lets the gradient flow through the target too, which moves the loss's stationary point
            away from the true average velocity; leave it on for training.
        lean_forward_ad: differentiate generic models under
            :class:`~flowzoo.core.fewstep.forward_ad.LeanForwardAD` (cheaper convolution and group-norm
            tangents); ``False`` uses PyTorch's own forward-AD rules, e.g. to compare the two. The derivative is
            the same either way.

    Metrics: ``loss``, ``mse`` (unweighted mean of ℓ), ``distinct`` (fraction of s < t), and
    ``cond_dropped`` with condition dropout.

    Example:
        >>> from flowzoo.core.fewstep.flowmap import GaussianOracle
        >>> oracle = GaussianOracle(mean=1.0, std=0.5)            # the exact flow map of N(0,1) -> N(1, 0.25)
        >>> batch = {"x1": oracle.sample((64, 2)), "x0": torch.randn(64, 2, dtype=torch.float64)}
        >>> loss, metrics = MeanFlowLoss(teacher=oracle.velocity)(oracle, batch)
        >>> metrics["mse"] < 1e-20                                 # the exact solution has zero loss
        True
    """

    def __init__(self, path=None, time_sampler=None, adaptive_p: float = 1.0, adaptive_c: float = 1e-3,
                 derivative: str = "jvp", fd_delta: float = 5e-3, guidance_scale: float = 1.0,
                 guidance_kappa: float = 0.0, cond_dropout: float = 0.0, null_cond: Mapping[str, object] | None = None,
                 teacher: Callable[..., Tensor] | None = None, formulation: str = "meanflow",
                 coupling: Callable | None = None, stop_gradient: bool = True, lean_forward_ad: bool = True):
        self.path = CondOTPath() if path is None else path
        # Reuse FlowMatchingLoss's validation, coupling and condition dropout (same batch conventions).
        self._conditioning = FlowMatchingLoss(path=self.path, coupling=coupling, cond_dropout=cond_dropout,
                                              null_cond=null_cond)
        self.time_sampler = TwoTimeSampler() if time_sampler is None else time_sampler
        if not callable(getattr(self.time_sampler, "sample", None)):
            raise ConfigError(expected("a two-time sampler with .sample(n, device, generator) -> (s, t)",
                                       type(self.time_sampler).__name__, "use flowzoo.core.fewstep.flowmap.TwoTimeSampler()"))
        self.adaptive_p = check_number(adaptive_p, "adaptive_p", low=0.0)
        self.adaptive_c = check_number(adaptive_c, "adaptive_c", low=0.0, strict_low=True)
        if derivative not in DERIVATIVES:
            raise ConfigError(expected(f"derivative in {list(DERIVATIVES)}", repr(derivative),
                                       "use 'jvp' (exact) or 'finite_difference'"))
        self.derivative = derivative
        self.fd_delta = check_number(fd_delta, "fd_delta", low=0.0, high=0.5, strict_low=True)
        self.guidance_scale = check_number(guidance_scale, "guidance_scale")
        self.guidance_kappa = check_number(guidance_kappa, "guidance_kappa")
        if self.uses_null_branch and self._conditioning.cond_dropout == 0:
            raise ConfigError(expected("cond_dropout > 0 and null_cond with a guided target whose "
                                       "unconditional weight 1 - omega - kappa is not 0",
                                       f"guidance_scale={guidance_scale}, guidance_kappa={guidance_kappa}, "
                                       f"cond_dropout={cond_dropout}",
                                       "pass e.g. cond_dropout=0.1, null_cond={'y': num_classes}, or "
                                       "guidance_kappa = 1 - guidance_scale for MP1's conditional-only target"))
        if teacher is not None and not callable(teacher):
            raise ConfigError(expected("a callable teacher velocity model(x, t, **cond)", type(teacher).__name__,
                                       "pass the trained flow-matching network"))
        self.teacher = teacher
        if formulation not in FORMULATIONS:
            raise ConfigError(expected(f"formulation in {list(FORMULATIONS)}", repr(formulation),
                                       "use 'meanflow' (Geng et al. 2025) or 'imf' (improved MeanFlow's v-loss)"))
        self.formulation = formulation
        self.stop_gradient = check_bool(stop_gradient, "stop_gradient")
        self.lean_forward_ad = check_bool(lean_forward_ad, "lean_forward_ad")

    @property
    def coupling(self) -> Callable | None:
        return self._conditioning.coupling

    @property
    def cond_dropout(self) -> float:
        return self._conditioning.cond_dropout

    @property
    def null_cond(self) -> dict[str, object]:
        return self._conditioning.null_cond

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0 or self.guidance_kappa != 0.0

    @property
    def uses_null_branch(self) -> bool:
        """Whether the guided target needs the unconditional prediction (weight 1 − ω − κ ≠ 0).

        MP1's released code (LogSSim/MP1; arXiv 2507.10543) uses ω v + (1 − ω) u(x, s, s | c): κ = 1 − ω, no
        null branch and no condition dropout, so it is not classifier-free guidance (see
        :mod:`flowzoo.robotics.mp1`)."""
        return self.guided and abs(1.0 - self.guidance_scale - self.guidance_kappa) > 1e-12

    def __repr__(self) -> str:
        return (f"MeanFlowLoss(path={self.path!r}, time_sampler={self.time_sampler!r}, p={self.adaptive_p}, "
                f"c={self.adaptive_c}, derivative={self.derivative!r}, omega={self.guidance_scale}, "
                f"kappa={self.guidance_kappa}, cond_dropout={self.cond_dropout}, teacher={self.teacher is not None}, "
                f"formulation={self.formulation!r}, coupling={self.coupling!r})")

    # ----------------------------------------------------------------------------------------- pieces

    def _tangent(self, v: Tensor, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Tangent of (x, s, t) for d/ds along the flow: (v, 1, 0)."""
        return v, torch.ones_like(s), torch.zeros_like(t)

    def _combine(self, v: Tensor, du_ds: Tensor, s: Tensor, t: Tensor) -> Tensor:
        """The identity's right-hand side v + (t − s) du/ds."""
        return v + (t - s).reshape(-1, *([1] * (v.dim() - 1))) * du_ds

    def _null(self, cond: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = dict(cond)
        for key, fill in self.null_cond.items():
            value = out[key]
            out[key] = torch.as_tensor(fill, dtype=value.dtype, device=value.device).expand_as(value)
        return out

    def own_velocity(self, model, x: Tensor, s: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        r"""The model's own velocity :math:`v_\theta = u_\theta(x, s, s \mid c)`, iMF's tangent; no gradient."""
        with torch.set_grad_enabled(not self.stop_gradient and torch.is_grad_enabled()):
            return functional_model(model, dict(cond or {}))(x, s, s)

    def guided_velocity(self, model, x: Tensor, s: Tensor, v: Tensor, cond: Mapping[str, Tensor],
                        dropped: Tensor | None, own: Tensor | None = None) -> Tensor:
        r"""The guided velocity :math:`v_g` of step 3 (no gradient); dropped samples keep ``v``.

        ``own``: :math:`u_\theta(x, s, s \mid c)` if already computed (iMF's tangent), which saves a forward."""
        if not self.guided:
            return v
        omega, kappa = self.guidance_scale, self.guidance_kappa
        with torch.no_grad():
            if not self.uses_null_branch:
                v_g = omega * v + kappa * (functional_model(model, cond)(x, s, s) if own is None else own)
            elif kappa != 0.0 and own is not None:
                v_g = omega * v + (1 - omega - kappa) * functional_model(model, self._null(cond))(x, s, s) + kappa * own
            elif kappa != 0.0:
                null = self._null(cond)
                joint = {k: torch.cat([null[k], cond[k]]) for k in cond}
                u = functional_model(model, joint)(torch.cat([x, x]), torch.cat([s, s]), torch.cat([s, s]))
                u_null, u_cond = u.chunk(2)
                v_g = omega * v + (1 - omega - kappa) * u_null + kappa * u_cond
            else:
                v_g = omega * v + (1 - omega) * functional_model(model, self._null(cond))(x, s, s)
        if dropped is not None:
            v_g = torch.where(dropped.reshape(-1, *([1] * (v.dim() - 1))), v, v_g)
        return v_g

    def _derivative(self, model, x: Tensor, s: Tensor, t: Tensor, v: Tensor, cond: Mapping[str, Tensor]) -> Tensor:
        tangent = self._tangent(v, s, t)
        if self.derivative == "jvp":
            # Dual tensors (torch.autograd.forward_ad) rather than torch.func.jvp: same cost here, and models may
            # update buffers in place (cloned by functional_model), which torch.func's transforms refuse.
            inner = unwrap_parallel(model)
            if callable(getattr(inner, "jvp", None)):  # a model's own forward mode, e.g. MLPFlowMap.jvp
                return inner.jvp(x, s, t, *tangent, **cond)[1]
            # Lean rules: convolutions and group norms without generic forward AD's waste.
            return forward_ad.jvp(functional_model(model, cond), (x, s, t), tangent, lean=self.lean_forward_ad)[1]
        # Central difference along the tangent; one-sided where s ± δ would leave [0, 1].
        d_x, d_s, d_t = tangent
        delta = self.fd_delta
        up = torch.where(s + delta <= 1, delta, 0.0).to(s.dtype)
        down = torch.where(s - delta >= 0, delta, 0.0).to(s.dtype)
        shape = (-1, *([1] * (x.dim() - 1)))
        xs = torch.cat([x + up.reshape(shape) * d_x, x - down.reshape(shape) * d_x])
        ss = torch.cat([s + up * d_s, s - down * d_s])
        ts = torch.cat([t + up * d_t, t - down * d_t])
        joint = {k: torch.cat([c, c]) for k, c in cond.items()}
        u_up, u_down = functional_model(model, joint)(xs, ss, ts).chunk(2)
        return (u_up - u_down) / (up + down).reshape(shape)

    def target(self, model, x: Tensor, s: Tensor, t: Tensor, v: Tensor,
               cond: Mapping[str, Tensor] | None = None, tangent: Tensor | None = None) -> Tensor:
        r""":math:`u_{\rm tgt} = v + (t - s)\, du_\theta/ds` along (tangent, 1, 0); tangent ``v`` by default
        (MeanFlow; no guidance), the model's own velocity for iMF. No gradient."""
        cond = dict(cond or {})
        with torch.set_grad_enabled(not self.stop_gradient and torch.is_grad_enabled()), \
                torch.autocast(device_type=x.device.type, enabled=False):
            du_ds = self._derivative(model, x, s, t, v if tangent is None else tangent, cond)
            return self._combine(v, du_ds, s, t)

    def compound_velocity(self, model, x: Tensor, s: Tensor, t: Tensor,
                          cond: Mapping[str, Tensor] | None = None) -> Tensor:
        r"""iMF's :math:`V_\theta = u_\theta(x, s, t) - (t - s)\,\mathrm{sg}(du_\theta/ds)` along the model's own
        velocity (module docstring); gradient only through :math:`u_\theta(x, s, t)`. At the exact flow map it
        is the marginal velocity v(x, s) for every t."""
        cond = dict(cond or {})
        own = self.own_velocity(model, x, s, cond)
        gap_du_ds = self.target(model, x, s, t, torch.zeros_like(x), cond, tangent=own)  # 0 + (t - s) du/ds
        return functional_model(model, cond)(x, s, t) - gap_du_ds

    def _target_on_gaps(self, model, x: Tensor, s: Tensor, t: Tensor, v: Tensor, cond: Mapping[str, Tensor],
                        own: Tensor | None, subset: bool) -> Tensor:
        """The target, with the derivative passes run only where t > s (the (t − s) du/ds term is 0 elsewhere):
        the flow-matching fraction of the batch costs no JVP (``subset=False``: whole batch, for dropout masks)."""
        gap = t > s
        if not subset or bool(gap.all()):
            if self.formulation == "imf" and own is None:
                with torch.autocast(device_type=x.device.type, enabled=False):
                    own = self.own_velocity(model, x, s, cond)
            return self.target(model, x, s, t, v, cond, tangent=own)
        u_target = v.clone()
        index = padded_gap_index(gap)
        if index.numel() > 0:
            x_g, s_g, t_g, cond_g = x[index], s[index], t[index], {k: c[index] for k, c in cond.items()}
            tangent = None
            if self.formulation == "imf":
                with torch.autocast(device_type=x.device.type, enabled=False):
                    tangent = own[index] if own is not None else self.own_velocity(model, x_g, s_g, cond_g)
            u_target[index] = self.target(model, x_g, s_g, t_g, v[index], cond_g, tangent=tangent).to(v.dtype)
        return u_target

    # ----------------------------------------------------------------------------------------- the loss

    def __call__(self, model, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        data = unpack_batch(batch, generator, finite=self.coupling is not None)
        if self.coupling is not None:
            data = couple_batch(self.coupling, data)
        n = data.x1.shape[0]
        s, t = self.time_sampler.sample(n, device=data.x1.device, generator=generator)
        s, t = s.to(data.x1.dtype), t.to(data.x1.dtype)
        sample = sample_path(self.path, data.x0, data.x1, s, generator)
        x, v = sample.x_t, sample.dx_t
        cond, dropped = data.cond, None
        if self.cond_dropout > 0:
            cond, dropped = drop_conditions(cond, self.null_cond, self.cond_dropout, n, data.x1.device, generator)
        if self.teacher is not None:
            with torch.no_grad():
                v = self.teacher(x, s, **cond)
            if not isinstance(v, Tensor) or v.shape != x.shape:
                raise ShapeError(expected(f"the teacher to return a velocity shaped like x {tuple(x.shape)}",
                                          getattr(v, "shape", type(v).__name__), "pass a velocity model"))
        # Active dropout: every pass (own velocity, guidance, target, prediction) draws the same mask.
        rng = rng_state(x) if has_active_dropout(model) else None
        same_mask = (lambda: set_rng_state(x, rng)) if rng is not None else (lambda: None)
        own = None
        if self.formulation == "imf" and (self.guided or rng is not None):
            with torch.autocast(device_type=x.device.type, enabled=False):
                own = self.own_velocity(model, x, s, cond)
            same_mask()
        v = self.guided_velocity(model, x, s, v, cond, dropped, own=own)
        same_mask()
        u_target = self._target_on_gaps(model, x, s, t, v, cond, own, subset=rng is None)
        same_mask()
        u_pred = call_flowmap(model, x, s, t, cond)
        per_sample = per_sample_mean((u_pred - u_target.to(u_pred.dtype)) ** 2)
        weighted = per_sample
        if self.adaptive_p > 0:
            weighted = per_sample / (per_sample.detach() + self.adaptive_c) ** self.adaptive_p
        loss = reduce_weighted(weighted, data.weight)
        values = [loss.detach(), per_sample.detach().mean(), (s < t).to(x.dtype).mean()]
        names = ["loss", "mse", "distinct"]
        if dropped is not None:
            names.append("cond_dropped")
            values.append(dropped.to(x.dtype).mean())
        metrics = dict(zip(names, torch.stack([v.to(torch.float64) for v in values]).tolist()))
        if not math.isfinite(metrics["loss"]):
            raise_if_batch_not_finite(batch)
        return loss, metrics
