r"""Fine-tuning a flow through its deployed solver: MLE of reconstructions (Li, Ding, Li, Li, arXiv 2510.02081).

A model trained by flow matching is deployed with a coarse solver :math:`\hat\Phi_N` (e.g. 4 Euler steps),
whose error grows with the training error and with the field's Lipschitz constant (their Thm 1). The paper
fine-tunes the model to maximise the likelihood of the *reconstruction* under a Gaussian observation model,
:math:`\log N(x_1; \hat\Phi_N(x_0), \sigma^2 I)`, i.e. to minimise

.. math::  L = E\,\|\hat\Phi_N(x_0) - x_1\|^2 + \lambda\, L_{\text{FM}}(x_0, x_1),

backpropagating through the N solver steps (memory ∝ N; keep N ≤ ~8). Time runs 0 = source → 1 = data.

Pairs must be **coupled**: with independent (x0, x1) the minimiser of the reconstruction term is
:math:`E[x_1]`-like mode averaging, which hurts. The clean choice is the model's own fine-solver coupling
:math:`x_1 = \Phi_{100}(x_0)` (:func:`coupled_pairs`), or reflow pairs. The flow-matching anchor
(:math:`\lambda` = ``anchor_weight``) on the same batch keeps the field close to a flow of the data.

Example:
    >>> import torch
    >>> from flowzoo.core.nets import MLPVelocity
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = MLPVelocity(2, hidden=16, depth=1)
    >>> batch = coupled_pairs(model, torch.randn(8, 2), steps=20)
    >>> loss, metrics = SolverReconstructionLoss(steps=4)(model, batch)
    >>> sorted(metrics)
    ['anchor', 'loss', 'reconstruction']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_nonnegative, check_positive_int
from flowzoo.core.batching import per_sample_mean, reduce_weighted, unpack_batch
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import FIXED_STEP_METHODS, integrate

__all__ = ["coupled_pairs", "SolverReconstructionLoss"]

Tensor = torch.Tensor
Model = Callable[..., Tensor]


def coupled_pairs(model: Model, x0: Tensor, *, steps: int = 100, method: str = "euler",
                  cond: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
    """A batch ``{"x0": x0, "x1": Φ_steps(x0), **cond}`` from a fine solve of ``model`` (no gradients).

    These are the model's own ODE pairs, the clean target for :class:`SolverReconstructionLoss`.
    """
    x1 = integrate(model, x0, method=method, steps=steps, cond=cond).x.detach()
    return {"x0": x0.detach(), "x1": x1, **dict(cond or {})}


class SolverReconstructionLoss:
    r"""Reconstruction through the deployed solver plus a flow-matching anchor (arXiv 2510.02081, §3).

    ``loss(model, batch)`` integrates :math:`\hat x_1 = \hat\Phi_N(x_0)` with ``method`` and ``steps`` *with
    gradients* and returns :math:`\frac1B\sum_i w_i \overline{(\hat x_1 - x_1)^2} + \lambda\,L_{\text{FM}}`
    (mean over data entries, as in :class:`~flowzoo.core.objectives.FlowMatchingLoss`).

    Args:
        steps: the deployed number of solver steps N.
        method: the deployed fixed-step method (``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"``).
        anchor_weight: λ ≥ 0 (0 disables the anchor).
        anchor: the anchoring objective, called on the same batch (default ``FlowMatchingLoss()``).

    The batch must hold ``"x0"`` and ``"x1"`` as coupled pairs (see :func:`coupled_pairs`); a batch without
    ``"x0"`` raises :class:`~flowzoo.core.errors.ConfigError` because fresh noise would be an independent
    pairing, the known failure mode.
    """

    def __init__(self, steps: int = 4, method: str = "euler", anchor_weight: float = 0.1,
                 anchor: Callable | None = None):
        check_positive_int(steps, "steps", fix="pass the deployed steps, e.g. 4")
        if method not in FIXED_STEP_METHODS:
            raise ConfigError(expected(f"a fixed-step method in {list(FIXED_STEP_METHODS)}", repr(method),
                                       "backpropagation needs a fixed grid; use e.g. 'euler'"))
        check_nonnegative(anchor_weight, "anchor_weight", fix="use e.g. 0.1")
        if anchor is not None and not callable(anchor):
            raise ConfigError(expected("a callable anchor objective", type(anchor).__name__,
                                       "use FlowMatchingLoss()"))
        self.steps, self.method, self.anchor_weight = steps, method, float(anchor_weight)
        self.anchor = FlowMatchingLoss() if anchor is None else anchor

    def __call__(self, model: Model, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        if not isinstance(batch, Mapping) or batch.get("x0") is None:
            raise ConfigError(expected('coupled pairs in batch["x0"] and batch["x1"]',
                                       "no x0" if isinstance(batch, Mapping) else type(batch).__name__,
                                       "build the batch with coupled_pairs(model, x0) or from reflow pairs"))
        data = unpack_batch(batch, generator)
        x1_hat = integrate(model, data.x0, method=self.method, steps=self.steps, cond=data.cond or None,
                           enable_grad=True).x
        reconstruction = reduce_weighted(per_sample_mean((x1_hat - data.x1) ** 2), data.weight)
        loss = reconstruction
        metrics = {"reconstruction": float(reconstruction.detach())}
        if self.anchor_weight > 0:
            try:
                anchor_loss, _ = self.anchor(model, batch, generator=generator)
            except TypeError:  # an anchor without the generator keyword
                anchor_loss, _ = self.anchor(model, batch)
            loss = loss + self.anchor_weight * anchor_loss
            metrics["anchor"] = float(anchor_loss.detach())
        metrics["loss"] = float(loss.detach())
        return loss, metrics
