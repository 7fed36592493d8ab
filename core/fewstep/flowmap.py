r"""Flow maps (two-time models): a network, a sampler, a two-time training distribution and a Gaussian oracle.

Convention (binding across flowzoo). Time runs from 0 (source / noise) to 1 (data). A flow-map model is
called ``model(x, s, t, **cond)`` with ``x`` the state **at time s**, ``s`` and ``t`` float tensors of shape
(B,), and returns the *average velocity* over [s, t],

.. math::  u(x_s, s, t) = \frac{\Phi_{s\to t}(x_s) - x_s}{t - s} = \frac{1}{t - s}\int_s^t v(x_\tau, \tau)\,d\tau,

so one step is :math:`x_t = x_s + (t - s)\,u(x_s, s, t)` and :math:`u(x, t, t) = v(x, t)`. The signature
:math:`\Phi(x_a, a, b)` is direction-agnostic: the state is always the one at the first time. MeanFlow (Geng et al.,
arXiv 2505.13447) runs time the other way (t = 1 noise) and writes :math:`u(z_t, r, t)` with the state at its
*later* time t; the translation is :math:`s = 1 - t_{\rm MF}`, :math:`t = 1 - r_{\rm MF}`, and its 1-NFE
sampler :math:`z_0 = z_1 - u(z_1, 0, 1)` becomes :math:`x_1 = x_0 + u(x_0, 0, 1)` here.

Example:
    >>> import torch
    >>> oracle = GaussianOracle(mean=2.0, std=0.5)
    >>> x0 = torch.randn(4, 3, dtype=torch.float64)
    >>> out = flowmap_sample(oracle, x0, steps=1)         # one exact jump from noise to data
    >>> torch.allclose(out.x, oracle.flow(x0, 0.0, 1.0)), out.nfe
    (True, 1)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from flowzoo.core.validation import (as_time, broadcast_time, check_number, check_positive, check_positive_int,
                                     check_probability, check_tensor)
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.nets import MLPVelocity, SinusoidalTimeEmbedding
from flowzoo.core.sampling import (Callback, SampleResult, StepRecorder, check_cond, check_end_state, check_output,
                                  resolve_grid)

__all__ = ["MLPFlowMap", "FlowMapAsVelocity", "flowmap_sample", "TwoTimeSampler", "GaussianOracle"]

Tensor = torch.Tensor
FlowMap = Callable[..., Tensor]


class MLPFlowMap(MLPVelocity):
    r"""A two-time MLP :math:`u_\theta(x, s, t, y, c)`: :class:`~flowzoo.core.nets.mlp.MLPVelocity` with a second clock.

    The conditioning vector is the sum of an MLP of the sinusoidal embedding of the start time ``s``, an MLP of
    the sinusoidal embedding of the gap ``t - s`` (MeanFlow conditions on :math:`(t, t - r)`, py-meanflow
    ``u_func``), the class embedding of ``y`` (``num_classes + 1`` rows, the last one the null class of
    classifier-free guidance, :attr:`null_class`) and a linear map of ``c``. The gap is formed *inside* the
    network from (s, t), so a JVP over (x, s, t) with tangent (v, 1, 0) is the total derivative d/ds
    (differentiating over (s, t − s) instead would need tangent (v, 1, −1)).

    ``time_scale`` multiplies both times before the sinusoidal features. It defaults to 100 rather than
    MLPVelocity's 1000: MeanFlow differentiates the network in s, and the fastest features
    :math:`\cos(1000\,s)` make :math:`\partial_s u` large and the target noisy; on 2-D moons 100 gave a clearly
    better one-step sample than 1000, and somewhat better than 10 (a short one-seed check).

    It inherits from :class:`MLPVelocity` only to share the label / condition handling; it is called with
    two times. Wrap it in :class:`FlowMapAsVelocity` to use it where a velocity model is expected.

    Example:
        >>> net = MLPFlowMap(2, hidden=32, depth=2)
        >>> net(torch.randn(5, 2), torch.zeros(5), torch.ones(5)).shape
        torch.Size([5, 2])
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, time_dim: int = 64, num_classes: int = 0,
                 cond_dim: int = 0, activation: str = "silu", time_scale: float = 100.0):
        super().__init__(dim, hidden=hidden, depth=depth, time_dim=time_dim, num_classes=num_classes,
                         cond_dim=cond_dim, activation=activation)
        act = type(self.time_embedding[2])
        time_dim = self.time_embedding[1].in_features
        self.time_embedding[0] = SinusoidalTimeEmbedding(time_dim, scale=time_scale)
        self.gap_embedding = nn.Sequential(SinusoidalTimeEmbedding(time_dim, scale=time_scale),
                                           nn.Linear(time_dim, time_dim), act(), nn.Linear(time_dim, time_dim))

    def forward(self, x: Tensor, s: Tensor | float, t: Tensor | float,  # type: ignore[override]
                y: Tensor | None = None, c: Tensor | None = None) -> Tensor:
        """Average velocity over [s, t] shaped like ``x`` (the state at time ``s``)."""
        check_tensor(x, "x", finite=False)
        batch, shape = x.shape[0], x.shape[1:]
        if math.prod(shape) != self.dim:
            raise ShapeError(expected(f"x of shape (B, {self.dim}) or (B, *shape) with {self.dim} features",
                                      f"shape {tuple(x.shape)}", f"build the net with dim={math.prod(shape)}"))
        s, t = as_time(s, batch, x), as_time(t, batch, x)
        if s.shape != (batch,) or t.shape != (batch,):
            raise ShapeError(expected(f"s and t of shape ({batch},)", f"{tuple(s.shape)} and {tuple(t.shape)}",
                                      "pass one start and one end time per sample"))
        context = self._add_conditions(self.time_embedding(s) + self.gap_embedding(t - s), y, c, batch)
        out = self.body(torch.cat([x.reshape(batch, self.dim), context.to(x.dtype)], dim=1))
        return out.reshape(x.shape)

    def jvp(self, x: Tensor, s: Tensor, t: Tensor, dx: Tensor, ds: Tensor, dt: Tensor, y: Tensor | None = None,
            c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(u, du)``: the output and its derivative along the tangent (dx, ds, dt), forward mode by hand.

        The same numbers as ``torch.func.jvp(net, (x, s, t), (dx, ds, dt))`` (tested), without the per-operation
        overhead of generic forward-mode AD, which dominates for small MLPs on CPU. Activations other than SiLU
        fall back to generic forward-mode AD.
        """
        if not all(isinstance(m, (nn.Linear, nn.SiLU)) for m in self.body):
            from torch.autograd import forward_ad

            with forward_ad.dual_level():
                out = self(*(forward_ad.make_dual(p, d) for p, d in zip((x, s, t), (dx, ds, dt))), y=y, c=c)
                unpacked = forward_ad.unpack_dual(out)
            return unpacked.primal, torch.zeros_like(out) if unpacked.tangent is None else unpacked.tangent
        batch = x.shape[0]
        e_s, de_s = _embedding_jvp(self.time_embedding, s, ds)
        e_g, de_g = _embedding_jvp(self.gap_embedding, t - s, dt - ds)
        context = self._add_conditions(e_s + e_g, y, c, batch)
        h = torch.cat([x.reshape(batch, self.dim), context.to(x.dtype)], dim=1)
        dh = torch.cat([dx.reshape(batch, self.dim), (de_s + de_g).to(x.dtype)], dim=1)
        out, d_out = _sequential_jvp(self.body, h, dh)
        return out.reshape(x.shape), d_out.reshape(x.shape)


def _sequential_jvp(layers: nn.Sequential, h: Tensor, dh: Tensor) -> tuple[Tensor, Tensor]:
    for layer in layers:
        if isinstance(layer, nn.Linear):
            h, dh = layer(h), dh @ layer.weight.t()
        else:  # SiLU: d/dz z·σ(z) = σ(z)(1 + z(1 − σ(z)))
            sig = torch.sigmoid(h)
            h, dh = h * sig, dh * (sig * (1 + h * (1 - sig)))
    return h, dh


def _embedding_jvp(embedding: nn.Sequential, tau: Tensor, dtau: Tensor) -> tuple[Tensor, Tensor]:
    sinusoid = embedding[0]
    rate = sinusoid.scale * sinusoid.frequencies.to(tau.dtype)
    angles = tau[:, None] * rate[None]
    cos, sin = torch.cos(angles), torch.sin(angles)
    feats, d_feats = torch.cat([cos, sin], dim=1), torch.cat([-sin * rate, cos * rate], dim=1) * dtau[:, None]
    if sinusoid.dim % 2:
        feats, d_feats = (torch.cat([f, f.new_zeros(f.shape[0], 1)], dim=1) for f in (feats, d_feats))
    return _sequential_jvp(embedding[1:], feats, d_feats)


class FlowMapAsVelocity(nn.Module):
    r"""View a flow map as a velocity model: :math:`v(x, t) = u(x, t, t)`.

    Every velocity tool (:func:`~flowzoo.core.sampling.ode.integrate`, likelihoods, guidance wrappers, metrics such
    as ``path_straightness``) then works on a flow map's instantaneous velocity.

    Example:
        >>> v = FlowMapAsVelocity(GaussianOracle(mean=1.0, std=1.0))
        >>> v(torch.zeros(2, 1), torch.zeros(2)).flatten().tolist()   # v = m at x = 0 when σ = 1
        [1.0, 1.0]
    """

    def __init__(self, flowmap: FlowMap):
        super().__init__()
        if not callable(flowmap):
            raise ConfigError(expected("a callable flow map model(x, s, t, **cond)", type(flowmap).__name__,
                                       "pass the two-time network"))
        self.flowmap = flowmap

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        t = as_time(t, x.shape[0], x)
        return self.flowmap(x, t, t, **cond)


def flowmap_sample(model: FlowMap, x: Tensor, *, steps: int | None = None,
                   time_grid: Tensor | Sequence[float] | None = None, t0: float = 0.0, t1: float = 1.0,
                   cond: Mapping[str, Any] | None = None, generator: torch.Generator | None = None,
                   callback: Callback | None = None, return_trajectory: bool = False,
                   enable_grad: bool = False) -> SampleResult:
    r"""Jump along a time grid with a flow map.

    .. math::  x_{t_{k+1}} = x_{t_k} + (t_{k+1} - t_k)\,u(x_{t_k}, t_k, t_{k+1})

    One model call per interval (``nfe = len(grid) - 1``). With ``steps=1`` this is MeanFlow's 1-NFE sampler;
    any strictly monotone grid works (e.g. ``[0, 0.5, 1]`` for 2 steps, or a sub-interval ``[0.3, 0.8]``).
    A learned map is trained for s ≤ t only, so use increasing grids for generation; a decreasing grid calls
    the model with s > t (exact for the Gaussian oracle, extrapolation for a network).

    Args:
        model: flow map ``model(x, s, t, **cond)`` returning the average velocity shaped like ``x``.
        x: the state at the first grid time (B, ...), e.g. source noise at t = 0.
        steps: number of uniform intervals from ``t0`` to ``t1`` (default 1 when no ``time_grid`` is given).
        time_grid: explicit grid instead of ``steps``.
        t0, t1: ends of the uniform grid.
        cond: conditioning passed as keyword arguments.
        generator: unused (the jumps are deterministic); accepted so that every sampler has one call shape.
        callback: called after every jump with ``{"i", "t", "t_next", "x"}`` (``x`` at ``t_next``).
        return_trajectory: also return the state at every grid time (start included).
        enable_grad: keep the autograd graph.

    Returns:
        :class:`~flowzoo.core.sampling.result.SampleResult` ``(x, nfe, trajectory, times)``.

    Raises:
        ConfigError: both / bad ``steps`` and ``time_grid``, a non-monotone grid.
        ShapeError, DTypeError, EmptyInputError, NonFiniteError: bad ``x``, a bad model output, NaN at the end.

    Example:
        >>> oracle = GaussianOracle(mean=0.0, std=2.0)
        >>> flowmap_sample(oracle, torch.ones(1, 1, dtype=torch.float64), time_grid=[0.0, 0.5, 1.0]).x.item()
        2.0
    """
    check_tensor(x, "x")
    cond = check_cond(cond)
    grid = resolve_grid(steps, time_grid, x, t0=t0, t1=t1, default_steps=1)
    recorder = StepRecorder(x, grid, callback=callback, return_trajectory=return_trajectory, desc="flowmap_sample")
    sizes = (grid[1:] - grid[:-1]).tolist()
    times = grid[:, None].expand(-1, x.shape[0]).unbind(0)
    with torch.set_grad_enabled(enable_grad):
        for k, h in enumerate(sizes):
            u = model(x, times[k], times[k + 1], **cond)
            if k == 0:
                check_output(u, x, "the flow map model(x, s, t, **cond)")
            x = x.add(u, alpha=h)
            if recorder.active:
                recorder.record(k, x)
    check_end_state(x, "check the model for NaN outputs")
    return SampleResult(x=x, nfe=len(sizes), trajectory=recorder.trajectory(), times=grid)


class TwoTimeSampler:
    r"""Pairs of times (s, t) with 0 ≤ s ≤ t ≤ 1 for flow-map training (MeanFlow's two-time sampler).

    Draw a, b ~ logit-normal(mean, std) (:math:`\sigma(\text{mean} + \text{std}\,\varepsilon)`), sort them
    (s = min, t = max) and, for each sample independently with probability ``1 - distinct_fraction``, set
    t = s: those samples train the boundary u(x, s, s) = v, i.e. plain flow matching. MeanFlow (arXiv
    2505.13447, Table 1; JAX ``data_proportion = 0.75``) uses 25 % distinct pairs and LN(−0.4, 1) in its own
    time (t = 1 noise); ``mean`` here is in flowzoo time, where MeanFlow's −0.4 reads +0.4 (a positive mean
    shifts mass towards the data). The default keeps −0.4 in flowzoo time: on N(0, I) → moons it learned
    better, while checkerboard in ``benchmarks/few_step.py`` clearly favours +0.4
    (:func:`~flowzoo.core.fewstep.presets.meanflow_settings`), so the paper's emphasis is not a universal win at
    this scale. MeanFlow keeps the *state*
    time when r = t, which is s here.
    ``distinct_fraction = 0`` is pure flow matching and cannot learn a one-step map.

    ``interval="uniform_gap"`` draws the distinct pairs differently: the length d = t − s ~ U(0, 1), then
    s ~ U(0, 1 − d) (``mean`` and ``std`` are then unused). Every interval length is equally likely, so the long
    jumps a 1- or 2-step sampler takes are trained far more often than with two sorted draws (P(d > 0.9) = 0.1
    against 0.01 for sorted uniform draws and under 0.001 for sorted LN(0.4, 1) draws). Bootstrapped objectives
    (SplitMeanFlow) learn long intervals from shorter ones, so they need those samples: on 8 Gaussians → moons
    (``benchmarks/few_step.py`` settings) SplitMeanFlow's one-step sample improved over sorted uniform pairs.
    MeanFlow's JVP target is noisier on long intervals started near the source and did worse with it, so MeanFlow
    keeps the logit-normal pairs with independent pairs. On minibatch-OT pairs, whose conditional velocity is
    close to the marginal one, uniform-gap intervals suit MeanFlow too: they beat logit-normal intervals on the
    same pairs (:func:`~flowzoo.core.fewstep.presets.meanflow_ot_settings`).

    ``sample(n, device=None, generator=None) -> (s, t)``, both float32 of shape (n,).

    Example:
        >>> s, t = TwoTimeSampler(distinct_fraction=0.5).sample(1000, generator=torch.Generator().manual_seed(0))
        >>> bool((s <= t).all()), 0.4 < (s < t).float().mean().item() < 0.6
        (True, True)
    """

    INTERVALS = ("logit_normal", "uniform_gap")

    def __init__(self, mean: float = -0.4, std: float = 1.0, distinct_fraction: float = 0.25,
                 interval: str = "logit_normal"):
        check_number(mean, "mean")
        check_positive(std, "std", fix="use e.g. std=1.0")
        check_probability(distinct_fraction, "distinct_fraction", fix="use 0.25 (MeanFlow's ImageNet setting)")
        if interval not in self.INTERVALS:
            raise ConfigError(expected(f"interval in {list(self.INTERVALS)}", repr(interval),
                                       "use 'logit_normal' (MeanFlow) or 'uniform_gap' (every length equally likely)"))
        self.mean, self.std, self.distinct_fraction = float(mean), float(std), float(distinct_fraction)
        self.interval = interval

    def sample(self, n: int, device: torch.device | str | None = None,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        check_positive_int(n, "n", fix="pass the batch size")
        if self.interval == "uniform_gap":
            gap, start = torch.rand(2, n, device=device, generator=generator)
            s = start * (1 - gap)
            t = torch.minimum(s + gap, torch.ones_like(s))
        else:
            pair = torch.sigmoid(self.mean + self.std * torch.randn(2, n, device=device, generator=generator))
            s, t = pair.min(dim=0).values, pair.max(dim=0).values
        distinct = torch.rand(n, device=device, generator=generator) < self.distinct_fraction
        return s, torch.where(distinct, t, s)

    def __repr__(self) -> str:
        extra = "" if self.interval == "logit_normal" else f", interval={self.interval!r}"
        return (f"TwoTimeSampler(mean={self.mean}, std={self.std}, distinct_fraction={self.distinct_fraction}"
                f"{extra})")


class GaussianOracle:
    r"""Closed-form velocity, flow and average velocity for N(0, I) → N(m, σ² I) under the linear path.

    With independent x0 ~ N(0, I), x1 ~ N(m, σ²I) and :math:`x_t = (1 - t)x_0 + t x_1`, the marginal is
    :math:`N(t m, S(t)^2 I)`, :math:`S(t)^2 = (1 - t)^2 + t^2\sigma^2`, and the probability-flow ODE is affine
    per coordinate:

    .. math::
        v(x, t) = m + \frac{S'(t)}{S(t)}(x - t m),\qquad
        \Phi_{s\to t}(x) = t m + \frac{S(t)}{S(s)}(x - s m),\qquad
        u(x, s, t) = m + \frac{(t + s)(1 + \sigma^2) - 2}{S(s)\,(S(s) + S(t))}\,(x - s m),

    the last from :math:`S(t)^2 - S(s)^2 = (t - s)[(t + s)(1 + \sigma^2) - 2]`, so u has no 0/0 at s = t and
    reduces to v there. ``mean`` and ``std`` may be numbers or
    tensors broadcastable to one sample (per-coordinate Gaussians). Calling the oracle, ``oracle(x, s, t)``,
    is :meth:`average_velocity`, so it is itself an exact flow-map model; ``oracle.velocity`` is a velocity model.
    Extra keyword arguments (conditioning) are ignored.

    Example:
        >>> oracle = GaussianOracle(mean=1.0, std=0.5)
        >>> x = torch.tensor([[0.3]], dtype=torch.float64)
        >>> s, t = torch.tensor([0.2], dtype=torch.float64), torch.tensor([0.7], dtype=torch.float64)
        >>> bool(torch.allclose(x + (t - s) * oracle.average_velocity(x, s, t), oracle.flow(x, s, t)))
        True
    """

    def __init__(self, mean: float | Tensor = 0.0, std: float | Tensor = 1.0):
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.std = torch.as_tensor(std, dtype=torch.float64)
        if not bool(torch.isfinite(self.mean).all()) or not bool(torch.isfinite(self.std).all()) \
                or not bool((self.std > 0).all()):
            raise ConfigError(expected("a finite mean and a finite std > 0", f"mean={mean}, std={std}",
                                       "pass e.g. GaussianOracle(mean=2.0, std=0.5)"))

    def __repr__(self) -> str:
        return f"GaussianOracle(mean={self.mean.tolist()}, std={self.std.tolist()})"

    def _params(self, like: Tensor) -> tuple[Tensor, Tensor]:
        return self.mean.to(like.device, like.dtype), self.std.to(like.device, like.dtype)

    def _times(self, x: Tensor, *times: Tensor | float) -> list[Tensor]:
        check_tensor(x, "x")
        return [broadcast_time(as_time(t, x.shape[0], x), x) for t in times]

    def marginal_std(self, t: Tensor, sigma: Tensor) -> Tensor:
        """S(t) = sqrt((1 − t)² + t²σ²), the per-coordinate standard deviation of x_t."""
        return torch.sqrt((1 - t) ** 2 + (t * sigma) ** 2)

    def velocity(self, x: Tensor, t: Tensor | float, **_: Any) -> Tensor:
        """The marginal velocity v(x, t) (a velocity model: ``integrate(oracle.velocity, x0, ...)``)."""
        (t,) = self._times(x, t)
        m, sigma = self._params(x)
        S = self.marginal_std(t, sigma)
        return m + (t * (1 + sigma ** 2) - 1) / S ** 2 * (x - t * m)

    def flow(self, x: Tensor, s: Tensor | float, t: Tensor | float, **_: Any) -> Tensor:
        """The exact flow map Φ_{s→t}(x) for a state x at time s."""
        s, t = self._times(x, s, t)
        m, sigma = self._params(x)
        return t * m + self.marginal_std(t, sigma) / self.marginal_std(s, sigma) * (x - s * m)

    def average_velocity(self, x: Tensor, s: Tensor | float, t: Tensor | float, **_: Any) -> Tensor:
        """The exact average velocity u(x, s, t) = (Φ_{s→t}(x) − x)/(t − s); equals v(x, s) at s = t."""
        s, t = self._times(x, s, t)
        m, sigma = self._params(x)
        S_s, S_t = self.marginal_std(s, sigma), self.marginal_std(t, sigma)
        return m + ((t + s) * (1 + sigma ** 2) - 2) / (S_s * (S_s + S_t)) * (x - s * m)

    __call__ = average_velocity

    def sample(self, shape: Sequence[int], *, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64) -> Tensor:
        """Data samples x1 ~ N(m, σ² I) of the given full shape (batch first)."""
        z = torch.randn(tuple(shape), generator=generator, dtype=dtype)
        m, sigma = self._params(z)
        return m + sigma * z
