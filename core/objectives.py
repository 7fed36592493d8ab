r"""Training objectives: ``loss(model, batch) -> (scalar tensor, metrics dict)``.

A batch is a mapping: ``"x1"`` (data, required), ``"x0"`` (source samples; standard Gaussian noise shaped
like x1 when absent), ``"weight"`` (per-sample weights, shape (B,)); every other key is conditioning, a
tensor with the batch first, passed to the model as a keyword argument: ``model(x_t, t, **cond)``.
Each objective owns its time sampler (NVlabs/edm's separation of loss, time distribution and network).

Reductions. A per-sample loss is averaged over the non-batch dimensions, so its scale does not grow with
the data size; the batch loss is :math:`\frac1B\sum_i w_i \ell_i` -- weights are divided by the batch
size, not by their sum, so a zero weight drops its sample and importance weights stay unbiased
(normalise them yourself if you want a fixed effective learning rate).

Example:
    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = lambda x, t: torch.zeros_like(x)
    >>> x1 = torch.ones(8, 2)
    >>> loss, metrics = FlowMatchingLoss()(model, {"x1": x1, "x0": torch.zeros(8, 2)})
    >>> loss.item(), metrics["loss"]  # the target x1 - x0 is 1 everywhere
    (1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from flowzoo.core.batching import (Model, Tensor, call_model, check_time_sampler, couple_batch, drop_conditions,
                                   per_sample_mean, raise_if_batch_not_finite, reduce_weighted, sample_path,
                                   sample_time, unpack_batch)
from flowzoo.core.couplings import Coupling
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.paths import CondOTPath, PathSample, StochasticInterpolant
from flowzoo.core.validation import check_number, check_probability

__all__ = ["FlowMatchingLoss", "InterpolantDriftLoss", "InterpolantDenoiserLoss", "InterpolantScoreLoss"]

class FlowMatchingLoss:
    r"""Conditional flow matching: :math:`E_{t, (x_0, x_1)}\, w\, \|v_\theta(x_t, t, c) - \dot x_t\|^2`.

    Lipman et al. (arXiv 2210.02747, the CFM objective) with the pairing of Tong et al. (OT-CFM, arXiv 2302.00482,
    Alg. 1-3) and the weighting of W-CFM (Calvo-Ordoñez et al., arXiv 2507.22270). Its minimiser is the
    marginal velocity :math:`E[\dot x_t | x_t]`; the minimum is the conditional variance of the target.

    Args:
        path: a path with ``.sample(x0, x1, t) -> PathSample``; default :class:`~flowzoo.core.paths.affine.CondOTPath`
            (target x1 − x0). A :class:`~flowzoo.core.paths.affine.StochasticInterpolant` gives I-CFM with σ > 0.
        coupling: how the batch's (x0, x1) are paired, called as ``coupling(x0, x1, cond0=None, cond1=cond)``
            and returning a ``Pairing`` (see ``flowzoo.core.couplings.minibatch``); None pairs them as they come.
            When the pairing reorders the data (``index1``), the data's conditioning and weights follow it;
            a pairing ``weight`` multiplies the batch weights.
        time_sampler: distribution of t; default :class:`~flowzoo.core.paths.timesamplers.UniformTime`.
        cond_dropout: probability of replacing a sample's conditioning by its null value, for
            classifier-free guidance (Ho & Salimans, arXiv 2207.12598).
        null_cond: mapping conditioning key -> fill value (a number, or a tensor broadcastable to one
            sample's condition) used for dropped samples. Keys absent from it are never dropped (e.g. masks).

    Calling ``loss(model, batch, generator=None)`` returns ``(loss, metrics)``; metrics hold ``loss``,
    ``mse`` (unweighted) and ``weight_mean`` when weights are used, and ``cond_dropped`` with condition dropout.

    Example:
        >>> labels = {"x1": torch.randn(4, 2), "y": torch.tensor([0, 1, 2, 1])}
        >>> objective = FlowMatchingLoss(cond_dropout=0.1, null_cond={"y": 3})
        >>> loss, metrics = objective(lambda x, t, y: torch.zeros_like(x), labels)
        >>> sorted(metrics)
        ['cond_dropped', 'loss']
    """

    def __init__(self, path=None, coupling: Callable | None = None, time_sampler=None,
                 cond_dropout: float = 0.0, null_cond: Mapping[str, object] | None = None):
        self.path = CondOTPath() if path is None else path
        if not callable(getattr(self.path, "sample", None)):
            raise ConfigError(expected("a path with .sample(x0, x1, t)", type(self.path).__name__,
                                       "use e.g. flowzoo.core.paths.affine.CondOTPath()"))
        if coupling is not None and not callable(coupling):
            raise ConfigError(expected("a coupling callable (x0, x1, cond0=None, cond1=None) -> Pairing",
                                       type(coupling).__name__, "use flowzoo.core.couplings.minibatch.get_coupling(name)"))
        self.coupling = coupling
        self.time_sampler = check_time_sampler(time_sampler)
        self.cond_dropout = check_probability(cond_dropout, "cond_dropout", fix="use e.g. 0.1")
        if null_cond is not None and not isinstance(null_cond, Mapping):
            raise ConfigError(expected("null_cond as a mapping key -> fill value", type(null_cond).__name__,
                                       'pass e.g. {"y": num_classes}'))
        self.null_cond = dict(null_cond or {})
        for key, fill in self.null_cond.items():
            if not isinstance(fill, (int, float, bool, Tensor)):
                raise ConfigError(expected(f'null_cond["{key}"] as a number or a tensor', type(fill).__name__,
                                           "pass the value that stands for 'no condition'"))
        if self.cond_dropout > 0 and not self.null_cond:
            raise ConfigError(expected("null_cond naming the fill value of each dropped condition",
                                       f"cond_dropout={cond_dropout} and no null_cond",
                                       'pass e.g. null_cond={"y": num_classes}'))

    def __repr__(self) -> str:
        return (f"FlowMatchingLoss(path={self.path!r}, coupling={self.coupling!r}, "
                f"time_sampler={self.time_sampler!r}, cond_dropout={self.cond_dropout})")

    def __call__(self, model: Model, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        # A coupling reads the data's values, so NaN/Inf must be caught before it pairs them; a Coupling
        # checks x0 and x1 itself, any other callable gets the batch's own scan.
        data = unpack_batch(batch, generator,
                            finite=self.coupling is not None and not isinstance(self.coupling, Coupling))
        if self.coupling is not None:
            data = couple_batch(self.coupling, data)
        n = data.x1.shape[0]
        t = sample_time(self.time_sampler, n, data.x1, generator)
        sample = sample_path(self.path, data.x0, data.x1, t, generator)
        cond, dropped = data.cond, None
        if self.cond_dropout > 0:
            cond, dropped = drop_conditions(cond, self.null_cond, self.cond_dropout, n, data.x1.device, generator)
        prediction = call_model(model, sample.x_t, sample.t, cond)
        if data.weight is None:
            # Every sample has the same size, so the mean of per-sample means is the plain mean: one fused
            # kernel forward and one backward instead of subtract, square and mean (and their three backwards).
            # The ATen op itself: call_model has checked the shapes, so functional.mse_loss's size check and
            # broadcast views would only add Python work to every step.
            loss = torch.ops.aten.mse_loss.default(prediction, sample.dx_t)
            names, values = ["loss"], [loss.detach()]
        else:
            per_sample = per_sample_mean((prediction - sample.dx_t) ** 2)
            loss = reduce_weighted(per_sample, data.weight)
            names = ["loss", "mse", "weight_mean"]
            values = [loss.detach(), per_sample.detach().mean(), data.weight.mean()]
        if dropped is not None:
            names.append("cond_dropped")
            values.append(dropped.to(t.dtype).mean())
        if len(values) == 1:
            metrics = {"loss": values[0].item()}
        else:
            metrics = dict(zip(names, torch.stack([v.to(torch.float64) for v in values]).tolist()))
        if not math.isfinite(metrics["loss"]):
            raise_if_batch_not_finite(batch)
        return loss, metrics


class _InterpolantLoss:
    """Shared batch handling of the stochastic-interpolant losses (drift, denoiser, score).

    Batches follow the module's conventions (``x1``, optional ``x0`` and ``weight``, conditioning passed
    to the model); ``time_clip`` δ restricts t to [δ, 1 − δ] (None: chosen from the gamma, see subclasses).
    """

    def __init__(self, interpolant: StochasticInterpolant, antithetic: bool = True, time_sampler=None,
                 time_clip: float | None = None):
        if not isinstance(interpolant, StochasticInterpolant):
            raise ConfigError(expected("a flowzoo.core.paths.affine.StochasticInterpolant", type(interpolant).__name__,
                                       "use e.g. StochasticInterpolant(LinearScheduler(), BrownianGamma())"))
        self.interpolant = interpolant
        self.antithetic = bool(antithetic)
        self.time_sampler = check_time_sampler(time_sampler)
        clip = self._auto_time_clip() if time_clip is None else time_clip
        self.time_clip = check_number(clip, "time_clip", low=0.0, high=0.5, strict_high=True, fix="use e.g. 1e-3")

    def _auto_time_clip(self) -> float:
        return 0.0

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.interpolant!r}, antithetic={self.antithetic}, "
                f"time_sampler={self.time_sampler!r}, time_clip={self.time_clip})")

    def _per_sample(self, prediction: Tensor, sample: PathSample) -> Tensor:
        raise NotImplementedError

    def __call__(self, model: Model, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        data = unpack_batch(batch, generator)
        n = data.x1.shape[0]
        t = sample_time(self.time_sampler, n, data.x1, generator)
        if self.time_clip > 0:
            t = t.clamp(self.time_clip, 1 - self.time_clip)
        sample = self.interpolant.sample(data.x0, data.x1, t, generator=generator)
        samples = [sample, self.interpolant.antithetic(sample)] if self.antithetic else [sample]
        per_sample = sum(self._per_sample(call_model(model, s.x_t, s.t, data.cond), s) for s in samples)
        per_sample = per_sample / len(samples)
        loss = reduce_weighted(per_sample, data.weight)
        loss_value, t_mean = torch.stack([loss.detach().double(), t.mean().double()]).tolist()
        return loss, {"loss": loss_value, "t_mean": t_mean}


class InterpolantDriftLoss(_InterpolantLoss):
    r"""Drift of a stochastic interpolant: :math:`\tfrac12\|\hat b\|^2 - (\dot I_t + \dot\gamma z)\cdot\hat b`.

    Minimised by :math:`b(t, x) = E[\dot\alpha x_0 + \dot\beta x_1 + \dot\gamma z | x_t = x]`, the
    velocity of the probability-flow ODE (Albergo, Boffi, Vanden-Eijnden, arXiv 2303.08797, §2;
    ``loss_per_sample_b`` in their code, which sums the two antithetic terms where we average them). It
    equals :math:`\tfrac12\|\hat b - \dot x_t\|^2` minus a term free of :math:`\hat b`, so its minimum
    is negative. With ``antithetic`` the loss is the mean of the losses at :math:`x_t^\pm = I_t \pm
    \gamma z` with targets :math:`\dot I_t \pm \dot\gamma z`. t is clipped to [δ, 1 − δ] with δ = 1e-3 when
    γ̇ is infinite at the ends (Brownian γ), else δ = 0 (``time_clip`` overrides).

    Example:
        >>> from flowzoo.core.paths import BrownianGamma, LinearScheduler
        >>> objective = InterpolantDriftLoss(StochasticInterpolant(LinearScheduler(), BrownianGamma()))
        >>> objective.time_clip
        0.001
    """

    def _auto_time_clip(self) -> float:
        return 1e-3 if getattr(self.interpolant.gamma, "singular_derivative", True) else 0.0

    def _per_sample(self, prediction, sample):
        return per_sample_mean(0.5 * prediction ** 2 - prediction * sample.dx_t)


class InterpolantDenoiserLoss(_InterpolantLoss):
    r"""Denoiser of a stochastic interpolant: :math:`\tfrac12\|\hat\eta\|^2 - \hat\eta\cdot z`.

    Minimised by :math:`\eta(t, x) = E[z | x_t = x] = -\gamma(t)\,\nabla\log\rho_t(x)` (the paper's
    denoiser, Albergo et al., arXiv 2303.08797, §2), so the score is :math:`-\eta/\gamma`
    (:meth:`StochasticInterpolant.denoiser_to_score`). Sign: with η = E[z | x_t] the linear term is −η̂·z.
    The authors' code (``loss_per_sample_eta``: ½|η̂|² + η̂·z, with ``SFromEta``: s = η/γ) learns the
    opposite sign, η = +γ s, hence its "+η̂·z". The loss has no 1/γ,
    so t is not clipped by default; clip it when converting to a score. Antithetic: the mean of the losses
    at (x_t^+, z) and (x_t^-, −z).
    """

    def _per_sample(self, prediction, sample):
        return per_sample_mean(0.5 * prediction ** 2 - prediction * sample.z)


class InterpolantScoreLoss(_InterpolantLoss):
    r"""Score of a stochastic interpolant: :math:`\tfrac12\|\hat s\|^2 + \gamma^{-1} z\cdot\hat s`.

    Minimised by :math:`s(t, x) = \nabla\log\rho_t(x) = -E[z | x_t = x]/\gamma(t)` (Albergo et al.,
    arXiv 2303.08797, §2; ``loss_per_sample_s`` in their code). Because of 1/γ, t is clipped to
    [δ, 1 − δ], δ = 1e-3, when γ vanishes at the ends (every γ here but
    :class:`~flowzoo.core.paths.affine.ConstantGamma`); prefer :class:`InterpolantDenoiserLoss` when γ is small.
    Antithetic as for the denoiser.
    """

    def _auto_time_clip(self) -> float:
        return 1e-3 if getattr(self.interpolant.gamma, "vanishes_at_ends", True) else 0.0

    def _per_sample(self, prediction, sample):
        gamma = self.interpolant.gamma(sample.t).gamma
        scaled_z = sample.z / gamma.reshape(-1, *([1] * (sample.z.dim() - 1)))
        return per_sample_mean(0.5 * prediction ** 2 + prediction * scaled_z)

