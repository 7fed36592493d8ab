r"""SplitMeanFlow: few-step flow maps from interval-splitting consistency, without a JVP.

Guo et al., "SplitMeanFlow: Interval Splitting Consistency in Few-Step Generative Modeling" (arXiv 2507.16884,
Algorithm 1). A flow map ``u(x_s, s, t)`` is the average velocity over [s, t] with the state at the time you
step FROM, so one step is :math:`x_t = x_s + (t - s)\,u(x_s, s, t)`. For s < m < t the semigroup of the ODE
flow gives the **interval-splitting identity** (the paper's Eq. 5 in flowzoo time)

.. math::  (t - s)\,u(x_s, s, t) = (m - s)\,u(x_s, s, m) + (t - m)\,u(x_m, m, t),
           \qquad x_m = x_s + (m - s)\,u(x_s, s, m),

whose limit m → t is the MeanFlow identity. Training regresses :math:`u_\theta(x_s, s, t)` on the stop-gradient
right-hand side divided by (t − s), and anchors the solution with the boundary (flow-matching) condition
:math:`u_\theta(x_s, s, s) = v`; without that term any interval-additive u (e.g. u ≡ 0) satisfies the
identity and nothing ties the map to the data.

Time convention. The paper follows MeanFlow (noise at τ = 1, data at τ = 0, jumps r < s < t from t down to r,
``z_s = z_t − (t − s) u(z_t, s, t)``). With flowzoo time t_fz = 1 − τ the paper's (t, s, r) become our
(s, m, t), its u is minus ours (its v = ε − x, ours x1 − x0), and its "state z_t at the later time t" is our
state at the EARLIER time s -- the time the jump starts from. Porting the paper's step order literally while
keeping flowzoo time (evaluating u(x_s, m, t) first, stepping back to m) feeds a state at the wrong time; the
tests in ``tests/core/test_splitmeanflow.py`` show that this bug leaves a non-zero loss even for the exact map.

Two training choices beyond the paper's Algorithm 1 (both options of :class:`SplitMeanFlowLoss`, off by default):

* **Boundary times from the flow-matching distribution** (``boundary_time_sampler``). The boundary term is
  plain flow matching, :math:`u_\theta(x_s, s, s) = \dot x_s`, and every split target is built from the
  map the boundary anchors. Giving boundary samples the start time s of the drawn pair ties them to the
  interval sampler: with uniform interval lengths (``TwoTimeSampler(interval="uniform_gap")``) s has density
  :math:`-\log s`, so the velocity near the data (s → 1), where the thin structure of the target is
  decided, is rarely trained. Drawing the boundary time from its own sampler (``UniformTime()``, as
  :class:`~flowzoo.core.objectives.FlowMatchingLoss` does) decouples the two.
* **Adaptive weights on the split samples only** (``adaptive_p``, ``adaptive_c``): per-sample weights
  :math:`w = \mathrm{sg}\big((\ell + c)^{-p}\big)`, ℓ the sample's squared error (MeanFlow, Geng et al.,
  arXiv 2505.13447, §4.3; p = 0.5 turns the squared error into the ℓ2 norm of the residual, a pseudo-Huber
  loss as in improved consistency training). Why it helps here: the boundary residual never vanishes (its
  target :math:`\dot x_s` carries the path's conditional variance, an irreducible loss floor),
  while the split residual shrinks towards 0 as the map becomes self-consistent. Under a squared loss the split
  gradients shrink with the residual and drown in the boundary term's noise; with p = 0.5 their scale stays
  fixed, so the long-interval map keeps improving. The weight does not move the solution: a split target
  depends on (x_s, s, t, λ) and the network alone and is the same for every λ at the exact map, so that
  regression is noise-free at its solution and any per-sample loss has the exact map as its minimiser. The
  boundary samples keep weight 1: there only the squared loss has the conditional *mean* (the marginal
  velocity) as its minimiser, and a robust weight would learn a biased field.

Together they clearly improve the one-step samples in ``benchmarks/few_step.py``'s 2-D setting (uniform-gap
intervals), and without them one checkerboard seed diverged; with a 3×512 MLP and 12000 steps (the benchmark's
moons setting) the one-step sample comes close to flow matching's 100-step one (``python -m benchmarks.few_step
--methods splitmeanflow``, ``benchmarks/results/few_step.json``; the settings are
:func:`~flowzoo.core.fewstep.presets.splitmeanflow_settings`).

Example:
    >>> import torch
    >>> zero_map = lambda x, s, t: torch.zeros_like(x)
    >>> batch = {"x1": torch.ones(8, 2), "x0": torch.zeros(8, 2)}
    >>> loss, metrics = SplitMeanFlowLoss(boundary_fraction=0.0)(zero_map, batch)
    >>> loss.item()  # u ≡ 0 satisfies the split identity: the boundary term is what anchors the map
    0.0
    >>> SplitMeanFlowLoss(boundary_fraction=1.0)(zero_map, batch)[0].item()  # target x1 - x0 = 1
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from flowzoo.core.validation import broadcast_time, check_number, check_probability
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.batching import (call_flowmap, check_time_sampler, drop_conditions, per_sample_mean,
                                   raise_if_batch_not_finite, reduce_weighted, sample_path, sample_time, unpack_batch)
from flowzoo.core.objectives import FlowMatchingLoss

__all__ = ["SplitMeanFlowLoss", "interval_split_target"]

Tensor = torch.Tensor
FlowMap = Callable[..., Tensor]


def interval_split_target(model: FlowMap, x_s: Tensor, s: Tensor, t: Tensor, lam: Tensor,
                          cond: Mapping[str, Tensor] | None = None) -> Tensor:
    r"""The right-hand side of the interval-splitting identity, divided by (t − s).

    With :math:`m = s + \lambda (t - s)`:
    :math:`u_1 = u(x_s, s, m)`, :math:`x_m = x_s + (m - s) u_1`, :math:`u_2 = u(x_m, m, t)` and the target
    :math:`\lambda u_1 + (1 - \lambda) u_2` -- each piece weighted by the length of its sub-interval and each
    state at the time its piece steps from. (Guo et al., arXiv 2507.16884, Eq. 5 and Alg. 1, mapped to flowzoo
    time as in the module docstring; there λ measures the LATER piece, here the earlier.) Two model calls;
    the caller decides about gradients (the loss runs it under ``torch.no_grad``).

    Args:
        model: a flow map ``model(x, s, t, **cond)``.
        x_s: states at time s, shape (B, ...).
        s, t: start and end times, shape (B,), s <= t.
        lam: split fractions in [0, 1], shape (B,).
        cond: conditioning passed to both calls.

    Example:
        >>> straight = lambda x, s, t: torch.ones_like(x)  # every average velocity is 1
        >>> out = interval_split_target(straight, torch.zeros(3, 2), torch.zeros(3), torch.ones(3), torch.rand(3))
        >>> out.tolist()
        [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    """
    cond = dict(cond or {})
    m = s + lam * (t - s)
    u1 = call_flowmap(model, x_s, s, m, cond)
    x_m = x_s + broadcast_time(m - s, x_s) * u1
    u2 = call_flowmap(model, x_m, m, t, cond)
    lam_b = broadcast_time(lam, x_s)
    return lam_b * u1 + (1 - lam_b) * u2


class SplitMeanFlowLoss:
    r"""SplitMeanFlow objective: interval-splitting consistency plus the flow-matching boundary condition.

    Per sample (Guo et al., arXiv 2507.16884, Algorithm 1, in flowzoo time): draw s <= t (two draws of
    ``time_sampler``, sorted) and x_s from ``path`` at time s. With probability ``boundary_fraction`` the sample
    is a boundary sample: t := s and the target is the velocity v -- the conditional velocity ``dx_t``
    (x1 − x0 on the default CondOT path) or, with ``teacher``, the teacher's ``teacher(x_s, s, **cond)``
    (SplitMeanFlow distillation). Otherwise λ ~ U(0, 1), m = s + λ(t − s), and the target is
    :func:`interval_split_target` (two calls without gradient). The loss is

    .. math::  \frac1B\sum_i w_i\,\mathrm{mean}\big(u_\theta(x_{s_i}, s_i, t_i) - \mathrm{sg}(\mathrm{target}_i)\big)^2,

    one gradient call on the whole batch; no JVP, so any backbone and attention kernel works.

    Args:
        path: path with ``.sample(x0, x1, t)``; default :class:`~flowzoo.core.paths.affine.CondOTPath`.
        time_sampler: one-time sampler (``.sample(n, device, generator)``) drawn twice per sample and sorted
            into (s, t); default :class:`~flowzoo.core.paths.timesamplers.UniformTime`. A two-time sampler whose
            ``sample`` returns ``(s, t)`` (:class:`~flowzoo.core.fewstep.flowmap.TwoTimeSampler`) is used as is; its
            s = t samples become boundary samples on top of ``boundary_fraction`` (pass
            ``distinct_fraction=1.0`` to let ``boundary_fraction`` alone decide). For 1- and 2-step sampling,
            ``TwoTimeSampler(distinct_fraction=1.0, interval="uniform_gap")`` trains the long intervals those
            samplers jump across ten times more often than two sorted uniform draws (P(t − s > 0.9) = 0.1 vs
            0.01); the target of a long interval is bootstrapped from shorter ones, so it converges faster
            (a better one-step sample on 8 Gaussians → moons in ``benchmarks/few_step.py``'s setting).
        boundary_fraction: probability per sample of the boundary (flow-matching) term, in [0, 1]; the
            unofficial ports use 0.5. 0 leaves the map unanchored (see the module docstring).
        boundary_time_sampler: one-time sampler (``.sample(n, device, generator)``) of the boundary samples'
            time; None (default, the ports' behaviour) keeps the start time s of the drawn pair.
            ``UniformTime()`` trains the boundary exactly like flow matching, independently of the interval
            sampler (module docstring). On 8 Gaussians → moons (``benchmarks/few_step.py``'s setting, with
            uniform-gap intervals) it brought the flow map's own 100-step Euler samples to flow matching's
            quality and improved its one-step samples.
        adaptive_p, adaptive_c: adaptive weight :math:`(\ell + c)^{-p}` (detached) of the split samples; the
            boundary samples keep weight 1 (module docstring). p = 0 (default) is the plain squared loss. In the
            same moons setting p = 0.5 gave the best one-step samples of p in {0, 0.25, 0.5, 0.75, 1}; applying
            it to the boundary samples too, or rescaling the weights to mean 1 over the split samples (robustness
            without the larger gradient scale), made them worse.
        teacher: optional velocity model ``teacher(x, t, **cond)`` giving the boundary target (distillation).
        cond_dropout, null_cond: condition dropout for classifier-free guidance, as in
            :class:`~flowzoo.core.objectives.FlowMatchingLoss`; the teacher sees the same (dropped) conditions.

    Calling ``loss(model, batch, generator=None)`` with ``model(x, s, t, **cond)`` returns ``(loss, metrics)``;
    metrics hold ``loss``, ``boundary_mse`` / ``split_mse`` (unweighted means over the samples of each kind,
    NaN when there were none), ``boundary_fraction`` (realised), ``mse`` and ``weight_mean`` with weights,
    ``split_weight_mean`` (mean adaptive weight of the split samples) with ``adaptive_p > 0``, and
    ``cond_dropped`` with condition dropout.

    Example:
        >>> objective = SplitMeanFlowLoss(boundary_fraction=0.5)
        >>> loss, metrics = objective(lambda x, s, t: torch.zeros_like(x), {"x1": torch.randn(16, 2)})
        >>> sorted(metrics)
        ['boundary_fraction', 'boundary_mse', 'loss', 'split_mse']
    """

    def __init__(self, path=None, time_sampler=None, boundary_fraction: float = 0.5,
                 teacher: Callable[..., Tensor] | None = None, cond_dropout: float = 0.0,
                 null_cond: Mapping[str, object] | None = None, boundary_time_sampler=None,
                 adaptive_p: float = 0.0, adaptive_c: float = 1e-3):
        # FlowMatchingLoss validates path, time sampler and condition dropout the same way; reuse it.
        self._fm = FlowMatchingLoss(path=path, time_sampler=time_sampler,
                                    cond_dropout=cond_dropout, null_cond=null_cond)
        self.path, self.time_sampler = self._fm.path, self._fm.time_sampler
        self.cond_dropout, self.null_cond = self._fm.cond_dropout, self._fm.null_cond
        self.boundary_fraction = check_probability(
            boundary_fraction, "boundary_fraction", fix="use e.g. 0.5 (the share of flow-matching samples u(x, s, s) = v)")
        if teacher is not None and not callable(teacher):
            raise ConfigError(expected("teacher as a velocity model teacher(x, t, **cond) or None",
                                       type(teacher).__name__, "pass a trained velocity network"))
        self.teacher = teacher
        self.boundary_time_sampler = (None if boundary_time_sampler is None
                                      else check_time_sampler(boundary_time_sampler))
        self.adaptive_p = check_number(adaptive_p, "adaptive_p", low=0.0, fix="use 0 (plain squared loss) or 0.5")
        self.adaptive_c = check_number(adaptive_c, "adaptive_c", low=0.0, strict_low=True, fix="use e.g. 1e-3")

    def __repr__(self) -> str:
        teacher = None if self.teacher is None else type(self.teacher).__name__
        return (f"SplitMeanFlowLoss(path={self.path!r}, time_sampler={self.time_sampler!r}, "
                f"boundary_fraction={self.boundary_fraction}, teacher={teacher}, cond_dropout={self.cond_dropout}, "
                f"boundary_time_sampler={self.boundary_time_sampler!r}, adaptive_p={self.adaptive_p}, "
                f"adaptive_c={self.adaptive_c})")

    def _sample_times(self, n: int, like: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        a = self.time_sampler.sample(n, device=like.device, generator=generator)
        if isinstance(a, tuple):  # a two-time sampler (flowzoo.core.fewstep.flowmap.TwoTimeSampler) gives (s, t)
            s, t = (v.to(like.dtype) for v in a)
            return torch.minimum(s, t), torch.maximum(s, t)
        b = self.time_sampler.sample(n, device=like.device, generator=generator)
        a, b = a.to(like.dtype), b.to(like.dtype)
        return torch.minimum(a, b), torch.maximum(a, b)

    def _split_target(self, model: FlowMap, x_s: Tensor, s: Tensor, t: Tensor, lam: Tensor,
                      cond: Mapping[str, Tensor]) -> Tensor:
        """The split target (a hook: the tests override it to switch known bugs on)."""
        return interval_split_target(model, x_s, s, t, lam, cond)

    def _adaptive_weights(self, squared_error: Tensor, boundary: Tensor) -> Tensor:
        """(ℓ + c)^(−p) on the split samples, 1 on the boundary samples (a hook, like ``_split_target``)."""
        return torch.where(boundary, torch.ones_like(squared_error),
                           (squared_error + self.adaptive_c) ** -self.adaptive_p)

    def __call__(self, model: FlowMap, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        data = unpack_batch(batch, generator, finite=True)
        n, like = data.x1.shape[0], data.x1
        s, t = self._sample_times(n, like, generator)
        boundary = (torch.rand(n, generator=generator, device=like.device) < self.boundary_fraction) | (s == t)
        lam = torch.rand(n, generator=generator, device=like.device).to(like.dtype)
        if self.boundary_time_sampler is not None:  # drawn only when set: the default keeps its random stream
            s = torch.where(boundary, sample_time(self.boundary_time_sampler, n, like, generator), s)
        t = torch.where(boundary, s, t)
        sample = sample_path(self.path, data.x0, data.x1, s, generator)
        x_s = sample.x_t
        cond, dropped = data.cond, None
        if self.cond_dropout > 0:
            cond, dropped = drop_conditions(cond, self.null_cond, self.cond_dropout, n, like.device, generator)

        with torch.no_grad():
            target = sample.dx_t.detach().clone()
            if self.teacher is not None and bool(boundary.any()):
                idx = boundary.nonzero().squeeze(1)
                sub = {k: v[idx] for k, v in cond.items()}
                v_teacher = self.teacher(x_s[idx], s[idx], **sub)
                if not isinstance(v_teacher, Tensor) or v_teacher.shape != x_s[idx].shape:
                    raise ShapeError(expected("the teacher to return a velocity shaped like x",
                                              getattr(v_teacher, "shape", type(v_teacher).__name__),
                                              "pass a velocity model teacher(x, t, **cond)"))
                target[idx] = v_teacher.to(target.dtype)
            if not bool(boundary.all()):
                idx = (~boundary).nonzero().squeeze(1)
                sub = {k: v[idx] for k, v in cond.items()}
                target[idx] = self._split_target(model, x_s[idx], s[idx], t[idx], lam[idx], sub).to(target.dtype)

        prediction = call_flowmap(model, x_s, s, t, cond)
        per_sample = per_sample_mean((prediction - target) ** 2)
        detached = per_sample.detach()
        is_b = boundary.to(detached.dtype)
        n_b = is_b.sum()
        adaptive = self._adaptive_weights(detached, boundary) if self.adaptive_p > 0 else None
        loss = reduce_weighted(per_sample if adaptive is None else adaptive * per_sample, data.weight)
        values = {"loss": loss.detach(),
                  "boundary_mse": (detached * is_b).sum() / n_b if n_b > 0 else torch.tensor(math.nan),
                  "split_mse": (detached * (1 - is_b)).sum() / (n - n_b) if n_b < n else torch.tensor(math.nan),
                  "boundary_fraction": n_b / n}
        if data.weight is not None:
            values["mse"] = detached.mean()
            values["weight_mean"] = data.weight.mean()
        if adaptive is not None:
            values["split_weight_mean"] = ((adaptive * (1 - is_b)).sum() / (n - n_b) if n_b < n
                                           else torch.tensor(math.nan))
        if dropped is not None:
            values["cond_dropped"] = dropped.to(detached.dtype).mean()
        stacked = torch.stack([v.to(device="cpu", dtype=torch.float64) for v in values.values()]).tolist()
        metrics = dict(zip(values, stacked))
        if not math.isfinite(metrics["loss"]):
            raise_if_batch_not_finite(batch)
        return loss, metrics
