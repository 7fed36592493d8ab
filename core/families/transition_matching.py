r"""Difference Transition Matching (DTM; Shaul, Singer, Gat, Lipman, "Transition Matching", NeurIPS 2025,
arXiv 2506.23589, §3 "Difference Transition Matching").

Transition matching learns a discrete-time Markov chain :math:`X_0 \to X_1 \to \dots \to X_T` whose kernels
:math:`p_\theta(X_{k+1} \mid X_k)` match those of a supervising process. DTM uses the linear process

.. math::  X_k = (1 - k/T)\,X_0 + (k/T)\,X_T, \qquad k = 0, \dots, T,

(:math:`X_0` noise, :math:`X_T` data -- flowzoo's convention; the paper's linear process is the same with its
own index direction), whose transitions are all driven by one latent, the *difference*
:math:`Y = X_T - X_0`:  :math:`X_{k+1} = X_k + Y/T`. Instead of regressing :math:`E[Y \mid X_k]` (which is the
flow-matching velocity at :math:`t = k/T`, so FM-Euler with T steps is DTM with a point-mass kernel), DTM
learns the whole conditional law :math:`p(Y \mid X_k)` with a small *flow head* trained by flow matching in Y
space (paper Eq. for the DTM loss):

.. math::  \mathcal L = E_{k, X_0, X_T, Y_0, s}\,
           \|h_\theta(Y_s, s;\ f_\theta(X_k, k/T)) - (Y - Y_0)\|^2, \quad Y_s = (1-s)Y_0 + sY,\ Y_0 \sim N(0, I),

where :math:`f_\theta` is the big backbone (run once per outer step) and :math:`h_\theta` the cheap head.
Sampling runs T outer steps; each draws Y by integrating the head ODE :math:`dY/ds = h_\theta(Y, s; f)` from
:math:`Y_0 \sim N(0, I)` with a few Euler steps. Cost is counted in backbone evaluations (T), the head's
evaluations reported separately. As T → ∞ the transition :math:`Y/T` only needs its mean and DTM → FM
(paper appendix "convergence of DTM to flow matching"); at small T the stochastic kernel keeps the target
covariance that deterministic few-step FM shrinks ("Demystifying Transition Matching", arXiv 2512.12465).

Time convention: the backbone receives flowzoo time :math:`t = k/T` in [0, 1) (0 = noise); the head's inner
time s also runs 0 = Gaussian → 1 = Y.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from flowzoo.core.validation import (as_time, broadcast_time, check_int, check_positive_int, check_same_shape,
                                     check_tensor)
from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError, expected
from flowzoo.core.nets import SinusoidalTimeEmbedding
from flowzoo.core.batching import per_sample_weight, reduce_weighted
from flowzoo.core.sampling import Callback, SampleResult, StepRecorder, check_end_state

__all__ = ["DTMModel", "DTMLoss", "dtm_sample"]

Tensor = torch.Tensor


def _mlp(inputs: int, hidden: int, depth: int, outputs: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(inputs, hidden), nn.SiLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(hidden, hidden), nn.SiLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, outputs))


class DTMModel(nn.Module):
    r"""Backbone :math:`f_\theta(X_k, t)` producing features plus a flow head :math:`h_\theta(Y_s, s; f)`.

    Both are MLPs on flattened samples (vectors or small tensors with ``dim`` features). The backbone maps
    ``[x, emb(t)]`` through ``depth`` hidden layers of width ``hidden`` to ``hidden`` features; the head maps
    ``[y_s, emb(s), features]`` through ``head_depth`` layers of width ``head_hidden`` to a velocity in Y space.
    The chain length ``T`` is stored so that training and sampling use the same T (a §19 pitfall).

    Args:
        dim: features per sample.
        T: number of transitions (outer steps).
        hidden: backbone width (and feature size).
        head_hidden: head width.
        depth, head_depth: hidden layers of the backbone and of the head.
        time_dim: size of the sinusoidal time embeddings.

    Example:
        >>> model = DTMModel(2, T=4, hidden=32, head_hidden=16)
        >>> feats = model.features(torch.randn(3, 2), torch.zeros(3))
        >>> model.head(torch.randn(3, 2), torch.rand(3), feats).shape
        torch.Size([3, 2])
    """

    def __init__(self, dim: int, T: int, hidden: int = 256, head_hidden: int = 64, depth: int = 3,
                 head_depth: int = 2, time_dim: int = 32):
        super().__init__()
        self.dim, self.T = check_positive_int(dim, "dim"), check_positive_int(T, "T")
        hidden, head_hidden = check_positive_int(hidden, "hidden"), check_positive_int(head_hidden, "head_hidden")
        depth, head_depth = check_positive_int(depth, "depth"), check_positive_int(head_depth, "head_depth")
        time_dim = check_int(time_dim, "time_dim", low=2, fix="pass e.g. time_dim=4")
        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        self.backbone = nn.Sequential(_mlp(dim + time_dim, hidden, depth - 1, hidden) if depth > 1
                                      else nn.Linear(dim + time_dim, hidden), nn.SiLU())
        self.head_time_embedding = SinusoidalTimeEmbedding(time_dim)
        self.head_net = _mlp(dim + time_dim + hidden, head_hidden, head_depth, dim)

    def _flat(self, x: Tensor, name: str) -> Tensor:
        if x.dim() < 2 or x[0].numel() != self.dim:
            raise ShapeError(expected(f"{name} of shape (B, ...) with {self.dim} features", f"shape {tuple(x.shape)}",
                                      f"build the model with dim={x[0].numel() if x.dim() >= 2 else '...'}"))
        return x.reshape(x.shape[0], self.dim)

    def features(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Backbone features (B, hidden) of the state ``x`` at flowzoo time ``t = k/T``."""
        flat = self._flat(x, "x")
        t = as_time(t, flat.shape[0], flat)
        return self.backbone(torch.cat([flat, self.time_embedding(t).to(flat.dtype)], dim=1))

    def head(self, y_s: Tensor, s: Tensor | float, features: Tensor) -> Tensor:
        """Head velocity in Y space, shaped like ``y_s``; ``s`` in [0, 1] is the head's own time."""
        flat = self._flat(y_s, "y_s")
        s = as_time(s, flat.shape[0], flat)
        out = self.head_net(torch.cat([flat, self.head_time_embedding(s).to(flat.dtype), features], dim=1))
        return out.reshape(y_s.shape)

    def forward(self, x: Tensor, t: Tensor | float, y_s: Tensor, s: Tensor | float) -> Tensor:
        return self.head(y_s, s, self.features(x, t))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, T={self.T}"


class DTMLoss:
    r"""The DTM objective (module docstring): flow matching on :math:`Y = X_T - X_0` given :math:`X_k`.

    Batch conventions of :class:`~flowzoo.core.objectives.FlowMatchingLoss`: ``"x1"`` data (the chain's
    :math:`X_T`), optional ``"x0"`` source (default N(0, I); the chain's :math:`X_0`), optional ``"weight"``
    (B,). ``k`` is uniform on {0, ..., T−1}; ``head_samples`` head draws :math:`(Y_0, s)` share each backbone
    evaluation (the head is cheap, so this lowers the variance of the head's gradient at no backbone cost).

    Example:
        >>> model = DTMModel(2, T=2, hidden=16, head_hidden=8)
        >>> loss, metrics = DTMLoss(T=2)(model, {"x1": torch.randn(8, 2)}, generator=torch.Generator().manual_seed(0))
        >>> sorted(metrics)
        ['loss']
    """

    def __init__(self, T: int, head_samples: int = 1):
        self.T, self.head_samples = check_positive_int(T, "T"), check_positive_int(head_samples, "head_samples")

    def __call__(self, model: DTMModel, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        if getattr(model, "T", self.T) != self.T:
            raise ConfigError(expected(f"a model built with T={self.T}", f"T={model.T}",
                                       "train and sample with the same number of transitions"))
        if not isinstance(batch, Mapping) or "x1" not in batch:
            raise ConfigError(expected('a batch mapping with the data under "x1"', type(batch).__name__,
                                       'pass {"x1": data}'))
        x1 = check_tensor(batch["x1"], 'batch["x1"]', min_dim=2)
        n = x1.shape[0]
        if batch.get("x0") is None:
            x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype).to(x1.device)
        else:
            x0 = check_tensor(batch["x0"], 'batch["x0"]', min_dim=2)
            check_same_shape(x0, x1, ('batch["x0"]', 'batch["x1"]'))
        k = torch.randint(0, self.T, (n,), generator=generator).to(device=x1.device, dtype=x1.dtype)
        t = k / self.T
        x_t = (1 - broadcast_time(t, x1)) * x0 + broadcast_time(t, x1) * x1
        features = model.features(x_t, t)
        m = self.head_samples
        y = (x1 - x0).repeat_interleave(m, dim=0)
        y0 = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        s = torch.rand(n * m, generator=generator, dtype=y.dtype).to(y.device)
        y_s = (1 - broadcast_time(s, y)) * y0 + broadcast_time(s, y) * y
        out = model.head(y_s, s, features.repeat_interleave(m, dim=0))
        per_sample = (out - (y - y0)).pow(2).flatten(1).mean(1).reshape(n, m).mean(1)
        weight = batch.get("weight")
        loss = reduce_weighted(per_sample, None if weight is None else per_sample_weight(weight, n, 'batch["weight"]'))
        if not bool(torch.isfinite(loss)):
            raise NonFiniteError(expected("a finite loss", loss.item(), "lower the learning rate or check the data"))
        return loss, {"loss": loss.item()}

    def __repr__(self) -> str:
        return f"DTMLoss(T={self.T}, head_samples={self.head_samples})"


@torch.no_grad()
def dtm_sample(model: DTMModel, x: Tensor, *, inner_steps: int = 4, generator: torch.Generator | None = None,
               callback: Callback | None = None, return_trajectory: bool = False) -> SampleResult:
    r"""Run the learned chain: for k = 0..T−1, :math:`f = f_\theta(X_k, k/T)`, draw Y by ``inner_steps`` Euler
    steps of :math:`dY/ds = h_\theta(Y, s; f)` from :math:`Y_0 \sim N(0, I)`, then :math:`X_{k+1} = X_k + Y/T`.

    The number of outer steps is the model's ``T`` (training and sampling must use the same chain).

    Args:
        model: a trained :class:`DTMModel` (its ``T`` sets the number of outer steps).
        x: source samples :math:`X_0` (B, ...), N(0, I) as in training.
        inner_steps: Euler steps of the head ODE per transition.
        generator: for the head's Gaussian starts :math:`Y_0` (a seeded generator makes the chain reproducible).
        callback: called after every transition with ``{"i", "t", "t_next", "x"}`` (t = k/T, ``x`` = X_{k+1}).
        return_trajectory: keep :math:`X_0, \dots, X_T`.

    Returns:
        :class:`~flowzoo.core.sampling.result.SampleResult` with ``nfe`` = T backbone evaluations (the cost that
        matters), ``times`` = k/T, and ``extras`` ``{"head_nfe": T · inner_steps, "inner_steps": inner_steps}``.

    Example:
        >>> out = dtm_sample(DTMModel(2, T=3, hidden=16, head_hidden=8), torch.randn(5, 2), inner_steps=2)
        >>> out.x.shape, out.nfe, out.extras["head_nfe"]
        (torch.Size([5, 2]), 3, 6)
    """
    if not isinstance(model, DTMModel):
        raise ConfigError(expected("a DTMModel", type(model).__name__, "build DTMModel(dim, T, ...)"))
    x = check_tensor(x, "x", min_dim=2)
    inner = check_positive_int(inner_steps, "inner_steps")
    T, batch = model.T, x.shape[0]
    times = torch.linspace(0.0, 1.0, T + 1, dtype=x.dtype, device=x.device)
    recorder = StepRecorder(x, times, callback=callback, return_trajectory=return_trajectory, desc="dtm_sample")
    ds = 1.0 / inner
    head_times = [torch.full((batch,), j * ds, dtype=x.dtype, device=x.device) for j in range(inner)]
    for k in range(T):
        features = model.features(x, times[k].expand(batch))
        y = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        for j in range(inner):
            y = y.add(model.head(y, head_times[j], features), alpha=ds)
        x = x.add(y, alpha=1.0 / T)
        if recorder.active:
            recorder.record(k, x)
    check_end_state(x, "check the trained model")
    return SampleResult(x=x, nfe=T, trajectory=recorder.trajectory(), times=times,
                        extras={"head_nfe": T * inner, "inner_steps": inner})
