r"""Rectified Diffusion (Wang, Yang, Huang, Wang, Li, arXiv 2410.07303): reflow that keeps the diffusion schedule.

The paper's claim (§3): what makes reflow work is retraining on the **paired** noise–sample coupling produced
by the pretrained ODE sampler, which makes the model *first-order* (its data prediction
:math:`\hat x_1(x_t, t)` is constant along each sampling trajectory, so a 1-step DDIM jump is exact);
straight (linear-interpolant) paths are not needed. So the VP ε-prediction model is retrained on its own
pairs with its own schedule and parameterisation.

Time-convention mapping. Diffusion code (DDPM/SD, G-U-N/Rectified-Diffusion ``train.py``) writes
:math:`x_\tau = \sqrt{\bar a_\tau}\,x_{data} + \sqrt{1 - \bar a_\tau}\,\varepsilon` with τ = 0 at the data.
flowzoo runs t = 1 − τ (t = 0 noise, t = 1 data) and writes the same point as
:math:`x_t = \alpha(t)\,x_0 + \beta(t)\,x_1` with x0 = ε (the noise) and x1 the data, so
:math:`\beta(t) = \sqrt{\bar a_{1-t}}` and :math:`\alpha(t) = \sqrt{1 - \bar a_{1-t}}`; this is
:class:`~flowzoo.core.paths.affine.VPScheduler`. The ε-network is called ``eps_model(x_t, t, **cond)`` with flowzoo
time. Its data prediction ("predicted_origin" in diffusion code) is
:math:`\hat x_1 = (x_t - \alpha\hat\varepsilon)/\beta`.

Example:
    >>> import torch
    >>> loss, m = EpsilonPredictionLoss()(lambda x, t: torch.zeros_like(x), {"x1": torch.randn(4, 2)})
    >>> sorted(m)
    ['loss']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

from flowzoo.core.validation import check_tensor
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.batching import (call_model, check_time_sampler, per_sample_mean, raise_if_batch_not_finite,
                                   reduce_weighted, sample_time, unpack_batch)
from flowzoo.core.paths import AffinePath, VPScheduler
from flowzoo.core.sampling import Callback, SampleResult, StepRecorder, check_cond, check_end_state, resolve_grid

__all__ = ["EpsilonPredictionLoss", "RectifiedDiffusionLoss", "EpsilonAsVelocity", "ddim_sample",
           "x1_prediction_variance"]

Tensor = torch.Tensor


class EpsilonPredictionLoss:
    r"""ε-prediction diffusion loss in flowzoo time: :math:`E\,w\,\|\hat\varepsilon_\theta(x_t, t) - x_0\|^2`.

    :math:`x_t = \alpha(t) x_0 + \beta(t) x_1` with x0 = noise (drawn when the batch has none) — the DDPM
    ε-loss (Ho et al., arXiv 2006.11239, Eq. 14) with τ = 1 − t.

    Args:
        scheduler: the diffusion schedule (default :class:`~flowzoo.core.paths.affine.VPScheduler`).
        time_sampler: distribution of t (default uniform on [0, 1]).
    """

    def __init__(self, scheduler=None, time_sampler=None):
        self.path = AffinePath(VPScheduler() if scheduler is None else scheduler)
        self.time_sampler = check_time_sampler(time_sampler)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, time_sampler={self.time_sampler!r})"

    def _per_sample(self, eps_hat: Tensor, x_t: Tensor, t: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        return per_sample_mean((eps_hat - x0) ** 2)

    def __call__(self, model: Callable[..., Tensor], batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        data = self._unpack(batch, generator)
        t = sample_time(self.time_sampler, data.x1.shape[0], data.x1, generator)
        a, b, _, _ = self.path.coefficients(t, data.x1)
        x_t = a * data.x0 + b * data.x1
        eps_hat = call_model(model, x_t, t, data.cond)
        loss = reduce_weighted(self._per_sample(eps_hat, x_t, t, data.x0, data.x1), data.weight)
        value = loss.item()
        if not math.isfinite(value):
            raise_if_batch_not_finite(batch)
        return loss, {"loss": value}

    def _unpack(self, batch, generator):
        return unpack_batch(batch, generator)


class RectifiedDiffusionLoss(EpsilonPredictionLoss):
    r"""The Rectified Diffusion loss: the ε-loss on **stored pairs** (x0 = the paired noise, x1 = its endpoint).

    ``loss="pseudo_huber"`` reproduces the official ``train.py``: the prediction is converted to data,
    :math:`\hat x_1 = (x_t - \alpha\hat\varepsilon)/\beta`, and penalised by
    :math:`\sqrt{(\hat x_1 - x_1)^2 + c^2} - c` (c = 1e-3, elementwise, so close to L1). ``loss="mse"`` (the
    default here) keeps the plain ε-MSE, which is better conditioned near the noise end where 1/β is large.
    """

    def __init__(self, scheduler=None, time_sampler=None, loss: str = "mse", huber_c: float = 1e-3):
        super().__init__(scheduler, time_sampler)
        if loss not in ("mse", "pseudo_huber"):
            raise ConfigError(expected('loss "mse" or "pseudo_huber"', repr(loss), 'use loss="mse"'))
        if not (isinstance(huber_c, (int, float)) and huber_c > 0 and math.isfinite(huber_c)):
            raise ConfigError(expected("a finite huber_c > 0", repr(huber_c), "use the paper's 1e-3"))
        self.loss, self.huber_c = loss, float(huber_c)

    def _unpack(self, batch, generator):
        if not isinstance(batch, Mapping) or batch.get("x0") is None:
            raise ConfigError(expected('a batch with the paired noise under "x0"', type(batch).__name__,
                                       "rectified diffusion trains on generated pairs (reflow.PairStore)"))
        return unpack_batch(batch, generator)

    def _per_sample(self, eps_hat, x_t, t, x0, x1):
        if self.loss == "mse":
            return per_sample_mean((eps_hat - x0) ** 2)
        a, b, _, _ = self.path.coefficients(t, x1)
        x1_hat = (x_t - a * eps_hat) / b
        c = self.huber_c
        return per_sample_mean(torch.sqrt((x1_hat - x1) ** 2 + c * c) - c)


class EpsilonAsVelocity(torch.nn.Module):
    r"""Wrap an ε-model as a velocity model for :mod:`flowzoo.core.sampling.ode`.

    :math:`v = (\dot\beta x - D\hat\varepsilon)/\beta`.

    This is :meth:`AffinePath.x0_to_velocity` (x0 = noise) with :math:`D = \alpha\dot\beta - \beta\dot\alpha`;
    for the VP schedule β(0) > 0, so it is finite on [0, 1).
    """

    def __init__(self, eps_model: Callable[..., Tensor], path: AffinePath | None = None):
        super().__init__()
        if not callable(eps_model):
            raise ConfigError(expected("a callable eps_model(x, t, **cond)", type(eps_model).__name__, "pass the net"))
        self.eps_model = eps_model
        self.path = AffinePath(VPScheduler()) if path is None else path

    def forward(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        a, b, da, db = self.path.coefficients(t, x)
        return (db * x - (a * db - b * da) * self.eps_model(x, t, **cond)) / b


def _x1_hat(eps_model, path, x, t, cond):
    a, b, _, _ = path.coefficients(t, x)
    eps = eps_model(x, t, **cond)
    return (x - a * eps) / b, eps


@torch.no_grad()
def ddim_sample(eps_model: Callable[..., Tensor], x: Tensor, *, path: AffinePath | None = None,
                steps: int | None = None, time_grid: Tensor | Sequence[float] | None = None,
                cond: Mapping[str, Tensor] | None = None, generator: torch.Generator | None = None,
                callback: Callback | None = None, return_trajectory: bool = False,
                return_x1_predictions: bool = False) -> SampleResult:
    r"""Deterministic DDIM (Song, Meng, Ermon, arXiv 2010.02502, Eq. 12 with σ = 0) in flowzoo time.

    Each step predicts :math:`\hat\varepsilon, \hat x_1` at t and moves to
    :math:`x_{t'} = \alpha(t')\hat\varepsilon + \beta(t')\hat x_1` — exact in one step for a first-order
    model. The last step lands at t = 1 where α = 0, so the result is the final :math:`\hat x_1`.

    Args:
        eps_model: the ε-network ``eps_model(x_t, t, **cond)`` in flowzoo time.
        x: noise at t = 0 (B, ...).
        path: the diffusion path (default VP, :class:`~flowzoo.core.paths.affine.VPScheduler`).
        steps: number of uniform steps on [0, 1] (default 50 when no ``time_grid`` is given).
        time_grid: an explicit increasing grid instead of ``steps``.
        cond: conditioning keyword arguments.
        generator: unused (σ = 0 DDIM is deterministic); accepted so that every sampler has one call shape.
        callback: called after every step with ``{"i", "t", "t_next", "x"}`` (``x`` at ``t_next``).
        return_trajectory: keep the state at every grid time.
        return_x1_predictions: also return the (steps, B, ...) stack of :math:`\hat x_1` predictions as
            ``extras["x1_predictions"]``.

    Returns:
        :class:`~flowzoo.core.sampling.result.SampleResult`, one ε-model call per step.
    """
    x = check_tensor(x, "x")
    path = AffinePath(VPScheduler()) if path is None else path
    cond = check_cond(cond)
    grid = resolve_grid(steps, time_grid, x, default_steps=50)
    recorder = StepRecorder(x, grid, callback=callback, return_trajectory=return_trajectory, desc="ddim_sample")
    times = grid[:, None].expand(-1, x.shape[0]).unbind(0)
    preds = []
    for i in range(len(grid) - 1):
        x1_hat, eps = _x1_hat(eps_model, path, x, times[i], cond)
        if return_x1_predictions:
            preds.append(x1_hat)
        a, b, _, _ = path.coefficients(times[i + 1], x)
        x = a * eps + b * x1_hat
        if recorder.active:
            recorder.record(i, x)
    check_end_state(x, "check the ε-model, and keep the grid inside [0, 1]")
    extras = {"x1_predictions": torch.stack(preds)} if return_x1_predictions else {}
    return SampleResult(x=x, nfe=len(grid) - 1, trajectory=recorder.trajectory(), times=grid, extras=extras)


@torch.no_grad()
def x1_prediction_variance(eps_model: Callable[..., Tensor], x0: Tensor, *, path: AffinePath | None = None,
                           steps: int = 50, cond: Mapping[str, Tensor] | None = None) -> float:
    r""""First-order-ness" (arXiv 2410.07303, §3): the variance of :math:`\hat x_1(x_t, t)` along DDIM trajectories.

    Mean over samples of the per-trajectory variance (summed over dimensions) of the data prediction at the
    grid times; 0 for a perfectly first-order model. The first tenth of the grid is skipped, where 1/β
    amplifies every error.
    """
    preds = ddim_sample(eps_model, x0, path=path, steps=steps, cond=cond, return_x1_predictions=True).extras
    preds = preds["x1_predictions"][steps // 10:].flatten(2)
    return float(preds.var(dim=0).sum(-1).mean())
