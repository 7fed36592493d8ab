r"""Velocity networks on manifolds: tangent projection and manifold-aware input features.

A Riemannian velocity field must be tangent, :math:`v(x, t) \in T_x\mathcal M` (Chen & Lipman, arXiv 2302.03660,
they parameterise it by projecting an ambient network's output, :math:`v = P_x\,\tilde v_\theta`).
:class:`TangentProjected` wraps any ``model(x, t, **cond)`` that way; :class:`ManifoldMLP` is a ready MLP that
reads points through ``manifold.features`` (cos/sin of the angles on the torus, so the field is periodic;
the ambient coordinates elsewhere), conditions on t with the sinusoidal embedding of
:mod:`flowzoo.core.nets.mlp`, and projects its output. Time: 0 = source (base), 1 = data.

Example:
    >>> import torch
    >>> from flowzoo.core.manifolds import Sphere
    >>> net = ManifoldMLP(Sphere(), hidden=16, depth=2)
    >>> x = Sphere().random_base(4)
    >>> v = net(x, torch.rand(4))
    >>> bool((x * v).sum(-1).abs().max() < 1e-6)            # tangent: <x, v> = 0
    True
"""

from __future__ import annotations

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.manifolds.base import Manifold
from flowzoo.core.manifolds.path import check_manifold
from flowzoo.core.nets import ACTIVATIONS, SinusoidalTimeEmbedding
from flowzoo.core.validation import as_time, check_int

__all__ = ["TangentProjected", "ManifoldMLP"]

Tensor = torch.Tensor


class TangentProjected(nn.Module):
    """``manifold.proju(x, model(x, t, **cond))``: any velocity model made tangent to the manifold.

    Args:
        model: a velocity model returning ambient vectors shaped like x.
        manifold: the manifold.

    Example:
        >>> from flowzoo.core.manifolds import Sphere
        >>> wrapped = TangentProjected(lambda x, t: torch.ones_like(x), Sphere())
        >>> wrapped(torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1)).tolist()
        [[1.0, 1.0, 0.0]]
    """

    def __init__(self, model, manifold: Manifold):
        super().__init__()
        if not callable(model):
            raise ConfigError(expected("a callable velocity model", type(model).__name__, "pass model(x, t, **cond)"))
        self.model = model
        self.manifold = check_manifold(manifold)

    def forward(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        return self.manifold.proju(x, self.model(x, t, **cond))


class ManifoldMLP(nn.Module):
    """An MLP velocity field on a manifold: features of x and a time embedding in, a tangent vector out.

    Args:
        manifold: the manifold (fixes the input features and the output shape).
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        time_dim: size of the time embedding.
        activation: a name from :data:`flowzoo.core.nets.ACTIVATIONS`.
        project: project the output onto the tangent space (False returns the raw ambient output, e.g. to wrap it
            yourself).

    Example:
        >>> from flowzoo.core.manifolds import FlatTorus
        >>> ManifoldMLP(FlatTorus(2), hidden=8)(torch.zeros(3, 2), torch.zeros(3)).shape
        torch.Size([3, 2])
    """

    def __init__(self, manifold: Manifold, hidden: int = 128, depth: int = 3, time_dim: int = 32,
                 activation: str = "silu", project: bool = True):
        super().__init__()
        self.manifold = check_manifold(manifold)
        hidden = check_int(hidden, "hidden", low=1, fix="pass e.g. hidden=128")
        depth = check_int(depth, "depth", low=1, fix="pass e.g. depth=3")
        time_dim = check_int(time_dim, "time_dim", low=2, fix="pass e.g. time_dim=32")
        if activation not in ACTIVATIONS:
            raise ConfigError(expected(f"activation in {sorted(ACTIVATIONS)}", repr(activation), "use 'silu'"))
        act = ACTIVATIONS[activation]
        self.project = bool(project)
        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        layers: list[nn.Module] = [nn.Linear(manifold.feature_size + time_dim, hidden), act()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), act()]
        layers.append(nn.Linear(hidden, manifold.ambient_size))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        batch = x.shape[0]
        t = as_time(t, batch, x)
        features = self.manifold.features(x).reshape(batch, -1)
        out = self.body(torch.cat([features, self.time_embedding(t).to(x.dtype)], dim=1)).reshape(x.shape)
        return self.manifold.proju(x, out) if self.project else out
