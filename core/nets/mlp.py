r"""Small reusable backbones: a sinusoidal time embedding and an MLP velocity network.

Both follow the velocity-model convention ``net(x, t, **cond)`` with t in [0, 1] (0 = source, 1 = data) as a
(B,) float tensor (a Python number or 0-dim tensor is broadcast to the batch).
"""

from __future__ import annotations

import math
import torch
from torch import nn

from flowzoo.core.validation import as_time, check_class_labels, check_int, check_tensor
from flowzoo.core.errors import ConfigError, ShapeError, expected

__all__ = ["SinusoidalTimeEmbedding", "MLPVelocity", "ACTIVATIONS"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
}
"""Activation names accepted by :class:`MLPVelocity`."""


class SinusoidalTimeEmbedding(nn.Module):
    r"""Transformer-style sinusoidal features of a time t in [0, 1] (Vaswani et al. 2017; DDPM, Ho et al. 2020).

    .. math::  \mathrm{emb}(t) = [\cos(\tau\omega_0), \dots, \cos(\tau\omega_{k-1}),
               \sin(\tau\omega_0), \dots, \sin(\tau\omega_{k-1})],
               \quad \omega_j = P^{-j/k}, \quad \tau = \text{scale}\cdot t,

    with :math:`k = \lfloor \text{dim}/2 \rfloor` and :math:`P` = ``max_period``; an odd ``dim`` gets one zero
    column. Times in [0, 1] are multiplied by ``scale`` (default 1000, the range of the discrete diffusion
    timesteps the frequencies were designed for) so that the fastest frequencies resolve small time
    differences; with ``scale = 1`` most features would be nearly constant over [0, 1].

    Example:
        >>> emb = SinusoidalTimeEmbedding(8)
        >>> emb(torch.tensor([0.0, 0.5])).shape
        torch.Size([2, 8])
    """

    def __init__(self, dim: int, max_period: float = 10000.0, scale: float = 1000.0):
        super().__init__()
        self.dim = check_int(dim, "dim", low=2, fix="pass e.g. dim=64")
        if not (max_period > 1 and math.isfinite(max_period)) or not (scale > 0 and math.isfinite(scale)):
            raise ConfigError(expected("max_period > 1 and scale > 0, both finite",
                                       f"max_period={max_period}, scale={scale}", "keep the defaults 10000 and 1000"))
        self.max_period, self.scale = float(max_period), float(scale)
        half = self.dim // 2
        frequencies = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Map times (B,) to features (B, dim) in t's floating dtype (float32 for integer input)."""
        t = torch.as_tensor(t)
        if t.dim() == 0:
            t = t[None]
        if t.dim() != 1:
            raise ShapeError(expected("t of shape (B,)", f"shape {tuple(t.shape)}", "pass one time per sample"))
        dtype = t.dtype if t.is_floating_point() else torch.float32
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        # torch.outer multiplies exactly as (scale t)[:, None] * ω[None] does, without the two views.
        angles = torch.outer(self.scale * t.to(self.frequencies.device, compute), self.frequencies.to(compute))
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
        if self.dim % 2:
            features = torch.cat([features, features.new_zeros(features.shape[0], 1)], dim=1)
        return features.to(dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period:g}, scale={self.scale:g}"


class MLPVelocity(nn.Module):
    r"""An MLP velocity field :math:`v_\theta(x, t, y, c)` for vectors or small flattened tensors.

    The input ``x`` of shape (B, dim) or (B, \*shape) with ``prod(shape) == dim`` is flattened, concatenated
    with a conditioning vector of size ``time_dim``, passed through ``depth`` hidden layers of width
    ``hidden`` and reshaped back to ``x``'s shape. The conditioning vector is the sum of

    * an MLP of the :class:`SinusoidalTimeEmbedding` of t,
    * a class embedding of ``y`` (when ``num_classes > 0``); the table has ``num_classes + 1`` rows, the last
      index (``y == num_classes``, :attr:`null_class`) being the "no label" of classifier-free guidance,
    * a linear map of the continuous condition ``c`` of shape (B, cond_dim) (when ``cond_dim > 0``).

    Args:
        dim: number of features of one sample (the product of its shape).
        hidden: width of the hidden layers.
        depth: number of hidden layers (>= 1).
        time_dim: size of the time / conditioning embedding.
        num_classes: number of class labels (0: unconditional on labels).
        cond_dim: size of the continuous condition (0: none).
        activation: one of :data:`ACTIVATIONS`.

    Example:
        >>> net = MLPVelocity(2, hidden=32, depth=2, num_classes=3)
        >>> net(torch.randn(5, 2), torch.rand(5), y=torch.tensor([0, 1, 2, 3, 3])).shape
        torch.Size([5, 2])
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, time_dim: int = 64, num_classes: int = 0,
                 cond_dim: int = 0, activation: str = "silu"):
        super().__init__()
        self.dim = check_int(dim, "dim", low=1, fix="pass e.g. dim=64")
        hidden = check_int(hidden, "hidden", low=1, fix="pass e.g. hidden=64")
        depth = check_int(depth, "depth", low=1, fix="pass e.g. depth=64")
        time_dim = check_int(time_dim, "time_dim", low=2, fix="pass e.g. time_dim=64")
        self.num_classes = check_int(num_classes, "num_classes", low=0, fix="pass e.g. num_classes=64")
        self.cond_dim = check_int(cond_dim, "cond_dim", low=0, fix="pass e.g. cond_dim=64")
        if activation not in ACTIVATIONS:
            raise ConfigError(expected(f"activation in {sorted(ACTIVATIONS)}", repr(activation), "use 'silu'"))
        act = ACTIVATIONS[activation]
        self.time_embedding = nn.Sequential(SinusoidalTimeEmbedding(time_dim), nn.Linear(time_dim, time_dim), act(),
                                            nn.Linear(time_dim, time_dim))
        self.label_embedding = nn.Embedding(self.num_classes + 1, time_dim) if self.num_classes else None
        self.cond_projection = nn.Linear(self.cond_dim, time_dim) if self.cond_dim else None
        layers: list[nn.Module] = [nn.Linear(self.dim + time_dim, hidden), act()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), act()]
        layers.append(nn.Linear(hidden, self.dim))
        self.body = nn.Sequential(*layers)

    @property
    def null_class(self) -> int:
        """The label index meaning "unconditional" (``num_classes``), for condition dropout and CFG."""
        return self.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor | None = None,
                c: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity shaped like ``x``; ``y``: (B,) integer labels in [0, num_classes]; ``c``: (B, cond_dim)."""
        # No NaN check here: it would synchronise with the GPU on every training step.
        check_tensor(x, "x", finite=False)
        batch, shape = x.shape[0], x.shape[1:]
        if math.prod(shape) != self.dim:
            raise ShapeError(expected(f"x of shape (B, {self.dim}) or (B, *shape) with {self.dim} features",
                                      f"shape {tuple(x.shape)}", f"build the net with dim={math.prod(shape)}"))
        t = as_time(t, batch, x)
        if t.shape != (batch,):
            raise ShapeError(expected(f"t of shape ({batch},)", f"shape {tuple(t.shape)}", "pass one time per sample"))
        context = self._add_conditions(self.time_embedding(t), y, c, batch)
        out = self.body(torch.cat([x.reshape(batch, self.dim), context.to(x.dtype)], dim=1))
        return out.reshape(x.shape)

    def _add_conditions(self, context: torch.Tensor, y: torch.Tensor | None, c: torch.Tensor | None,
                        batch: int) -> torch.Tensor:
        # An absent condition comes back as the number 0.0; skipping it saves a "+ 0" kernel forward and its
        # add node backward on the hot path (the values are the same).
        for extra in (self._labels(y, batch), self._continuous(c, batch)):
            if isinstance(extra, torch.Tensor):
                context = context + extra
        return context

    def _labels(self, y: torch.Tensor | None, batch: int) -> torch.Tensor | float:
        labels = check_class_labels(y, batch, self.num_classes)
        return 0.0 if labels is None else self.label_embedding(labels)

    def _continuous(self, c: torch.Tensor | None, batch: int) -> torch.Tensor | float:
        if self.cond_projection is None:
            if c is not None:
                raise ConfigError(expected("no condition c (the net was built with cond_dim=0)", "c",
                                           "build MLPVelocity(..., cond_dim=D) to condition on c"))
            return 0.0
        if c is None:
            raise ConfigError(expected(f"a condition c of shape (B, {self.cond_dim})", "c=None", "pass c"))
        check_tensor(c, "c", finite=False)
        if c.shape != (batch, self.cond_dim):
            raise ShapeError(expected(f"c of shape ({batch}, {self.cond_dim})", f"shape {tuple(c.shape)}",
                                      "pass one condition vector per sample"))
        return self.cond_projection(c.to(self.cond_projection.weight.dtype))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_classes={self.num_classes}, cond_dim={self.cond_dim}"

