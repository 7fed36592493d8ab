r"""FlowTurbo (Zhao, Shi, Yu, Zhou, Lu, NeurIPS 2024, arXiv 2409.18128): cheaper late-stage sampling steps.

On a uniform grid :math:`t_0 = 0 < \dots < t_N = 1` with :math:`N = N_H + N_P + N_R` and :math:`h = 1/N`
(t = 0 source → t = 1 data, as in SiT which FlowTurbo builds on):

1. :math:`N_H` **Heun steps** with the predictor (2 predictor calls each).
2. :math:`N_P` **pseudo-corrector steps** (paper §3.2, Eq. 8): a Heun step whose first velocity is *reused*
   from the previous step's second evaluation, which was taken at the predicted point
   :math:`\tilde x_i` instead of :math:`x_i`:

   .. math::  \tilde x_{i+1} = x_i + h\,d_i,\quad d_{i+1} = v(\tilde x_{i+1}, t_{i+1}),\quad
              x_{i+1} = x_i + \tfrac h2 (d_i + d_{i+1}),

   1 predictor call per step (the first one needs one extra call when there is nothing to reuse). When v does
   not depend on x this is exactly Heun.
3. :math:`N_R` **refiner steps** (paper §3.1, Eq. 6-7): the same Heun form with both velocities from a small
   velocity refiner :math:`r_\phi(x, t, v_{\text{prev}})` that predicts the *change* of velocity:
   :math:`d_i = v + r_\phi(x_i, t_i, v)`, :math:`\tilde x = x_i + h d_i`,
   :math:`d_{i+1} = d_i + r_\phi(\tilde x, t_{i+1}, d_i)`, :math:`x_{i+1} = x_i + \tfrac h2(d_i + d_{i+1})`,
   carrying :math:`v \leftarrow d_{i+1}`. (The official ``VelocityRefinerBlock`` feeds the carried v, not
   :math:`d_i`, to the second call and carries :math:`d_i`; we feed :math:`d_i`, which is exactly the pair
   the refiner is trained on: a velocity at x and the point x + dt·v.)

The refiner is trained by :class:`RefinerLoss` (``transport.training_losses`` in shiml20/FlowTurbo) and is only
valid for steps :math:`h \le` ``max_dt``; use it late in sampling, where the velocity changes slowly.

Example:
    >>> import torch
    >>> field = lambda x, t: -x
    >>> out = flowturbo_sample(field, torch.ones(3, 2), heun_steps=1, pseudo_steps=4, refiner_steps=0)
    >>> out.nfe, out.extras["refiner_calls"]
    (6, 0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from flowzoo.core.validation import as_time, check_int, check_number, check_tensor
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.nets import SinusoidalTimeEmbedding
from flowzoo.core.batching import call_model, per_sample_mean, reduce_weighted, sample_path, unpack_batch
from flowzoo.core.paths import CondOTPath
from flowzoo.core.sampling import Callback, SampleResult, StepRecorder, check_cond, check_end_state, uniform_grid

__all__ = ["pseudo_corrector_step", "refiner_step", "VelocityRefiner", "RefinerLoss", "flowturbo_sample"]

Tensor = torch.Tensor
Model = Callable[..., Tensor]


def pseudo_corrector_step(model: Model, x: Tensor, t: Tensor, t_next: Tensor, d: Tensor,
                          cond: Mapping[str, Any] | None = None) -> tuple[Tensor, Tensor, int]:
    r"""One pseudo-corrector step (FlowTurbo Eq. 8): Heun with a reused first velocity ``d``, 1 model call.

    Args:
        model: velocity model; x: state at ``t``; t, t_next: scalar times.
        d: the velocity to reuse, normally the previous step's evaluation at its predicted point.

    Returns:
        ``(x_next, d_next, 1)``; pass ``d_next`` as ``d`` of the next step.
    """
    h = t_next - t
    x_pred = x + h * d
    d_next = call_model(model, x_pred, as_time(t_next, x.shape[0], x), dict(cond or {}))
    return x + 0.5 * h * (d + d_next), d_next, 1


def refiner_step(refiner: Model, x: Tensor, t: Tensor, t_next: Tensor, v: Tensor,
                 cond: Mapping[str, Any] | None = None) -> tuple[Tensor, Tensor, int]:
    r"""One refiner step (FlowTurbo Eq. 7 with the Heun form): 2 refiner calls, 0 predictor calls.

    Returns ``(x_next, d_next, 2)``: ``d_next`` is the velocity at the predicted point, to carry on.
    """
    cond = dict(cond or {})
    h = t_next - t
    d = v + refiner(x, as_time(t, x.shape[0], x), v, **cond)
    x_pred = x + h * d
    d_next = d + refiner(x_pred, as_time(t_next, x.shape[0], x), d, **cond)
    return x + 0.5 * h * (d + d_next), d_next, 2


class VelocityRefiner(nn.Module):
    r"""A small MLP :math:`r_\phi(x, t, v_{\text{prev}}) \to \Delta v` (FlowTurbo's velocity refiner, §3.1).

    Input ``[x, v_prev, emb(t)]`` (data flattened), output shaped like x. The last layer starts at zero, so an
    untrained refiner returns :math:`\Delta v = 0` and refiner steps are "reuse the last velocity". Size it at
    about 1/20 of the predictor's FLOPs (the paper: 1 DiT block vs 28); :meth:`flops` counts its multiply-adds.

    Args:
        dim: number of data entries per sample (e.g. 2 for 2-D points).
        hidden: width; depth: number of hidden layers; time_dim: size of the sinusoidal time features.

    Example:
        >>> r = VelocityRefiner(2, hidden=16)
        >>> r(torch.randn(4, 2), torch.rand(4), torch.randn(4, 2)).abs().max().item()
        0.0
    """

    def __init__(self, dim: int, hidden: int = 32, depth: int = 2, time_dim: int = 16):
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth), ("time_dim", time_dim)):
            check_int(value, name, low=2 if name == "time_dim" else 1, fix=f"pass e.g. {name}=32")
        self.dim = dim
        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        layers: list[nn.Module] = []
        width = 2 * dim + time_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        out = nn.Linear(width, dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)

    def flops(self) -> int:
        """Multiply-adds per sample of the linear layers."""
        return sum(m.in_features * m.out_features for m in self.net if isinstance(m, nn.Linear))

    def forward(self, x: Tensor, t: Tensor | float, v: Tensor) -> Tensor:
        check_tensor(x, "x")
        if not isinstance(v, Tensor) or v.shape != x.shape:
            raise ShapeError(expected(f"v_prev shaped like x {tuple(x.shape)}", tuple(getattr(v, "shape", ())),
                                      "pass the previous velocity"))
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ShapeError(expected(f"{self.dim} entries per sample", flat.shape[1], "set dim to x[0].numel()"))
        t = as_time(t, x.shape[0], x)
        features = torch.cat([flat, v.reshape(x.shape[0], -1), self.time_embedding(t).to(flat.dtype)], dim=1)
        return self.net(features).reshape(x.shape)


class RefinerLoss:
    r"""FlowTurbo's refiner objective (``training_losses`` in shiml20/FlowTurbo; paper §3.1, Eq. 6).

    Per batch a single :math:`dt \sim U(0, \text{max\_dt})`; per sample t from ``time_sampler`` rescaled to
    :math:`[0, 1 - dt]` (so t + dt stays in [0, 1]); :math:`x_t` on the path; :math:`v_T = v_{\text{teacher}}(x_t, t)`;
    :math:`x' = x_t + dt\, v_T`; loss
    :math:`\|v_T + r_\phi(x', t + dt, v_T) - v_{\text{teacher}}(x', t + dt)\|^2`. The teacher runs without
    gradients. Call it as ``loss(refiner, batch)`` with the batch conventions of
    :class:`~flowzoo.core.objectives.FlowMatchingLoss`; conditioning goes to teacher and refiner.

    Args:
        teacher: the frozen velocity predictor.
        max_dt: the largest time offset trained on (paper 0.12); refiner steps must not exceed it.
        path: the probability path (default :class:`~flowzoo.core.paths.affine.CondOTPath`).
        time_sampler: distribution of t (default uniform).
    """

    def __init__(self, teacher: Model, max_dt: float = 0.12, path=None, time_sampler=None):
        if not callable(teacher):
            raise ConfigError(expected("a callable teacher", type(teacher).__name__, "pass the predictor"))
        check_number(max_dt, "max_dt", low=0.0, high=1.0, strict_low=True, strict_high=True, fix="use the paper's 0.12")
        from flowzoo.core.batching import check_time_sampler

        self.teacher, self.max_dt = teacher, float(max_dt)
        self.path = CondOTPath() if path is None else path
        self.time_sampler = check_time_sampler(time_sampler)

    def __call__(self, refiner: Model, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        data = unpack_batch(batch, generator)
        x1, n = data.x1, data.x1.shape[0]
        dt = float(torch.rand((), generator=generator)) * self.max_dt
        t = self.time_sampler.sample(n, device=x1.device, generator=generator).to(x1.dtype) * (1.0 - dt)
        x_t = sample_path(self.path, data.x0, x1, t, generator).x_t
        with torch.no_grad():
            v_t = call_model(self.teacher, x_t, t, data.cond)
            x_next = x_t + dt * v_t
            target = call_model(self.teacher, x_next, t + dt, data.cond)
        prediction = v_t + refiner(x_next, t + dt, v_t, **data.cond)
        loss = reduce_weighted(per_sample_mean((prediction - target) ** 2), data.weight)
        return loss, {"loss": float(loss.detach()), "dt": dt}


def flowturbo_sample(predictor: Model, x: Tensor, *, heun_steps: int, pseudo_steps: int, refiner_steps: int,
                     refiner: Model | None = None, cond: Mapping[str, Any] | None = None,
                     generator: torch.Generator | None = None, callback: Callback | None = None,
                     return_trajectory: bool = False) -> SampleResult:
    r"""FlowTurbo's sampler: N_H Heun, then N_P pseudo-corrector, then N_R refiner steps on a uniform grid.

    Predictor calls: :math:`2N_H + N_P`, plus 1 when :math:`N_H = 0` and a pseudo-corrector or refiner step
    needs a first velocity; refiner calls: :math:`2N_R`. Runs without gradients.

    Args:
        predictor: the velocity model ``predictor(x, t, **cond)``.
        x: source samples at t = 0 (B, ...).
        heun_steps, pseudo_steps, refiner_steps: :math:`N_H, N_P, N_R` (the grid has their sum of steps).
        refiner: a trained :class:`VelocityRefiner`, needed when ``refiner_steps > 0``.
        cond: conditioning keyword arguments, passed to predictor and refiner.
        generator: unused (the sampler is deterministic); accepted so that every sampler has one call shape.
        callback: called after every step with ``{"i", "t", "t_next", "x"}`` (``x`` at ``t_next``).
        return_trajectory: keep the state at every grid time.

    Returns:
        :class:`~flowzoo.core.sampling.result.SampleResult`: ``nfe`` counts predictor calls only;
        ``extras["stage_nfe"]`` splits them by stage, ``{"heun": ..., "pseudo": ..., "refiner": ...}`` (the
        one call that computes a first velocity to reuse counts towards the stage that needed it), and
        ``extras["refiner_calls"]`` counts the (much cheaper) refiner calls.

    Raises:
        ConfigError: negative or all-zero step counts, or refiner steps without a refiner.
    """
    heun_steps = check_int(heun_steps, "heun_steps", low=0, fix="pass e.g. heun_steps=2")
    pseudo_steps = check_int(pseudo_steps, "pseudo_steps", low=0, fix="pass e.g. pseudo_steps=2")
    refiner_steps = check_int(refiner_steps, "refiner_steps", low=0, fix="pass e.g. refiner_steps=2")
    total = heun_steps + pseudo_steps + refiner_steps
    if total == 0:
        raise ConfigError(expected("at least one step", "heun_steps = pseudo_steps = refiner_steps = 0",
                                   "pass e.g. heun_steps=1, pseudo_steps=5"))
    if refiner_steps and refiner is None:
        raise ConfigError(expected("a refiner for refiner_steps > 0", "refiner=None",
                                   "train a VelocityRefiner with RefinerLoss, or set refiner_steps=0"))
    x = check_tensor(x, "x")
    cond = check_cond(cond)
    grid = uniform_grid(total, dtype=x.dtype, device=x.device)
    recorder = StepRecorder(x, grid, callback=callback, return_trajectory=return_trajectory,
                            desc="flowturbo_sample")
    stage_nfe = {"heun": 0, "pseudo": 0, "refiner": 0}
    refiner_calls = 0
    d: Tensor | None = None
    with torch.no_grad():
        for i in range(total):
            t, t_next = grid[i], grid[i + 1]
            stage = "heun" if i < heun_steps else "pseudo" if i < heun_steps + pseudo_steps else "refiner"
            if stage != "heun" and d is None:  # nothing to reuse yet
                d = call_model(predictor, x, as_time(t, x.shape[0], x), cond)
                stage_nfe[stage] += 1
            if stage == "heun":
                h = t_next - t
                k1 = call_model(predictor, x, as_time(t, x.shape[0], x), cond)
                d = call_model(predictor, x + h * k1, as_time(t_next, x.shape[0], x), cond)
                x = x + 0.5 * h * (k1 + d)
                stage_nfe["heun"] += 2
            elif stage == "pseudo":
                x, d, calls = pseudo_corrector_step(predictor, x, t, t_next, d, cond)
                stage_nfe["pseudo"] += calls
            else:
                x, d, calls = refiner_step(refiner, x, t, t_next, d, cond)
                refiner_calls += calls
            if recorder.active:
                recorder.record(i, x)
    check_end_state(x, "check the predictor and refiner")
    return SampleResult(x=x, nfe=sum(stage_nfe.values()), trajectory=recorder.trajectory(), times=grid,
                        extras={"stage_nfe": stage_nfe, "refiner_calls": refiner_calls})
