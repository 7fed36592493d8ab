r"""PFGM++: Poisson-flow generative models with D augmented dimensions (Xu, Liu, Tian, Tong, Tegmark, Jaakkola,
ICML 2023, arXiv 2302.04265; official code Newbeeer/pfgmpp, built on NVlabs/edm).

Data :math:`y \in \mathbb R^N` is embedded in :math:`\mathbb R^{N+D}`; only the norm :math:`r` of the D extra
coordinates matters. The perturbation kernel is (paper Eq. 4)

.. math::  p_r(x \mid y) \propto \frac{1}{(\|x - y\|^2 + r^2)^{(N+D)/2}},

a spherically symmetric heavy-tailed kernel whose radius :math:`R = \|x - y\|` satisfies
:math:`R = r\sqrt{B/(1-B)}`, :math:`B \sim \mathrm{Beta}(N/2, D/2)` (so :math:`R^2/r^2` is Beta-prime).
With the alignment :math:`r = \sigma\sqrt D` (paper §4, "r = σ√D") the kernel tends to
:math:`N(y, \sigma^2 I)` as :math:`D \to \infty` and EDM's hyper-parameters transfer unchanged; for
:math:`D > 2`, :math:`E\|x - y\|^2 = r^2\,\frac{N/2}{D/2 - 1} = N\sigma^2\,\frac{D}{D - 2}`. D = 1 is the
original PFGM. Smaller D gives heavier tails (more robust to step-size, noise injection and quantisation in
the paper's experiments).

Training is EDM's denoiser objective (Karras et al., arXiv 2206.00364, Eq. 2 / Table 1) with the PFGM++
kernel in place of the Gaussian: :math:`\lambda(\sigma)\|D_\theta(y + n, \sigma) - y\|^2`. Sampling is EDM's
Heun ODE in :math:`\sigma`, :math:`dx/d\sigma = (x - D_\theta(x, \sigma))/\sigma` (paper Eq. 8 rewritten with
:math:`r = \sigma\sqrt D`), started from the PFGM++ prior :math:`p_{r_{\max}}`.

**Time convention.** PFGM++ and EDM index noise by :math:`\sigma \in [\sigma_{\min}, \sigma_{\max}]`, large =
noise, and denoisers are called ``model(x, sigma)`` with ``sigma`` of shape (B,). flowzoo's t runs 0 = noise
to 1 = data. For the Gaussian limit (:math:`D \to \infty`), :math:`x_\sigma = y + \sigma n` rescaled as
:math:`x_t = x_\sigma/(1 + \sigma)` is exactly the linear path :math:`x_t = (1-t)n + t y` with

.. math::  t = \frac{1}{1 + \sigma}, \qquad \sigma = \frac{1 - t}{t}, \qquad
           \hat x_1(x_t, t) = D_\theta(x_t / t,\ (1 - t)/t),

and the velocity is :math:`v = (\hat x_1 - x_t)/(1 - t)`. For finite D the noise is not Gaussian, so the map
relates noise *levels* only; the module therefore keeps the σ interface.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from flowzoo.core.validation import broadcast_time, check_int, check_positive, check_positive_int, check_tensor
from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError, expected
from flowzoo.core.batching import per_sample_weight, reduce_weighted
from flowzoo.core.sampling import Callback, SampleResult, StepRecorder, check_cond, check_end_state, check_output

__all__ = ["sample_perturbation", "sample_prior", "sample_radius", "PFGMPPLoss", "EDMPrecond", "edm_sigma_grid",
           "pfgmpp_sample"]

Tensor = torch.Tensor
Denoiser = Callable[..., Tensor]


def _check_dim(D: object) -> int:
    return check_positive_int(D, "D (the augmented dimension)",
                              fix="pass e.g. D=128 (large D -> diffusion, D=1 -> PFGM)")


def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A numpy generator seeded from ``generator`` (or from torch's global RNG), so draws are reproducible."""
    seed = torch.randint(0, 2 ** 62, (1,), generator=generator).item()
    return np.random.default_rng(seed)


def sample_radius(n: int, N: int, D: int, scale: Tensor | float, *, generator: torch.Generator | None = None,
                  clip: float = 1e-3, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> Tensor:
    r"""Radii :math:`R = \text{scale}\cdot\sqrt{B/(1-B)}`, :math:`B \sim \mathrm{Beta}(N/2, D/2)`, shape (n,).

    B is drawn in float64 (numpy, seeded from ``generator``) and clipped to ``[clip, 1 - clip]`` as in the
    official code; the upper clip bounds the heavy tail at small D. The lower clip biases the radius upwards
    when :math:`N/(N + D) \lesssim` ``clip`` (e.g. N = 2 with D in the thousands); pass ``clip=0`` there.
    """
    if not (isinstance(clip, (int, float)) and 0 <= clip < 0.5):
        raise ConfigError(expected("clip in [0, 0.5)", repr(clip), "keep the default 1e-3"))
    beta = _numpy_rng(generator).beta(N / 2.0, D / 2.0, size=n)
    beta = np.clip(beta, clip, 1.0 - clip) if clip > 0 else beta
    ratio = torch.from_numpy(np.sqrt(beta / (1.0 - beta))).to(device=device)
    return (ratio * torch.as_tensor(scale, dtype=torch.float64, device=device)).to(dtype)


def _directions(shape: Sequence[int], generator: torch.Generator | None, dtype: torch.dtype,
                device: torch.device | str | None) -> Tensor:
    """Uniform directions on the unit sphere of the per-sample space (normalised Gaussians)."""
    gauss = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
    return gauss / broadcast_time(gauss.flatten(1).norm(dim=1), gauss)


def sample_perturbation(y: Tensor, sigma: Tensor | float, D: int, generator: torch.Generator | None = None, *,
                        clip: float = 1e-3) -> Tensor:
    r"""Draw :math:`x \sim p_r(\cdot \mid y)` with :math:`r = \sigma\sqrt D` (paper Eq. 4 and §4 alignment).

    :math:`x = y + R\,u` with :math:`R = r\sqrt{B/(1-B)}`, :math:`B \sim \mathrm{Beta}(N/2, D/2)` (float64,
    clipped) and :math:`u` uniform on the unit sphere of :math:`\mathbb R^N`, N = the number of features of
    one sample. :math:`E\|x - y\|^2 = N\sigma^2 D/(D - 2)` for D > 2, → :math:`N\sigma^2` as D → ∞.

    Args:
        y: clean data (B, ...).
        sigma: a number or (B,) noise levels > 0.
        D: augmented dimension.
        generator: for B and the directions.
        clip: see :func:`sample_radius`.

    Example:
        >>> x = sample_perturbation(torch.zeros(4, 3), 0.5, D=64, generator=torch.Generator().manual_seed(0))
        >>> x.shape
        torch.Size([4, 3])
    """
    y = check_tensor(y, "y", min_dim=2)
    D = _check_dim(D)
    sigma = _check_sigma(sigma, y)
    N = math.prod(y.shape[1:])
    radius = sample_radius(y.shape[0], N, D, sigma.double().cpu() * math.sqrt(D), generator=generator, clip=clip,
                           dtype=y.dtype, device=y.device)
    return y + broadcast_time(radius, y) * _directions(y.shape, generator, y.dtype, y.device)


def sample_prior(shape: Sequence[int], sigma_max: float, D: int, generator: torch.Generator | None = None, *,
                 clip: float = 1e-3, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> Tensor:
    r"""Samples of the PFGM++ prior :math:`p_{r_{\max}}` centred at 0, :math:`r_{\max} = \sigma_{\max}\sqrt D`.

    :math:`R = \sqrt{B/(1-B)}\,\sigma_{\max}\sqrt D` with a uniform direction -- the official
    ``rand_beta_prime``. The result is *not* multiplied by :math:`\sigma_{\max}` again (EDM's Gaussian prior
    :math:`\sigma_{\max} n` is; doing both is the classic bug).

    Example:
        >>> sample_prior((5, 2), sigma_max=80.0, D=4, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([5, 2])
    """
    shape = tuple(shape)
    if len(shape) < 2 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ShapeError(expected("shape as (B, ...) with positive sizes", repr(shape), "pass e.g. (512, 2)"))
    D, sigma_max = _check_dim(D), check_positive(sigma_max, "sigma_max", fix="pass e.g. sigma_max=0.5")
    radius = sample_radius(shape[0], math.prod(shape[1:]), D, sigma_max * math.sqrt(D), generator=generator,
                           clip=clip, dtype=dtype, device=device)
    directions = _directions(shape, generator, dtype, device)
    return broadcast_time(radius, directions) * directions


def _check_sigma(sigma: Tensor | float, like: Tensor) -> Tensor:
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.dim() == 0:
        sigma = sigma.expand(like.shape[0])
    if sigma.shape != (like.shape[0],):
        raise ShapeError(expected(f"sigma as a number or of shape ({like.shape[0]},)", f"shape {tuple(sigma.shape)}",
                                  "pass one noise level per sample"))
    if not bool(torch.isfinite(sigma).all()) or bool((sigma <= 0).any()):
        raise ConfigError(expected("finite noise levels sigma > 0", f"range [{sigma.min():.3g}, {sigma.max():.3g}]",
                                   "draw sigma from a positive distribution"))
    return sigma


class EDMPrecond(nn.Module):
    r"""EDM preconditioning (Karras et al., arXiv 2206.00364, Table 1; used unchanged by PFGM++):

    .. math::  D_\theta(x, \sigma) = c_{skip}x + c_{out}F_\theta(c_{in}x, c_{noise}), \quad
               c_{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2},\ c_{out} = \frac{\sigma\sigma_d}
               {\sqrt{\sigma^2 + \sigma_d^2}},\ c_{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}},\
               c_{noise} = \tfrac14\ln\sigma.

    ``net`` is any flowzoo velocity-style network ``net(x, t, **cond)``; it receives :math:`c_{noise}` in the
    time slot (a float, not a flowzoo time in [0, 1]).
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.net, self.sigma_data = net, check_positive(sigma_data, "sigma_data", fix="pass e.g. sigma_data=0.5")

    def forward(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        s = broadcast_time(sigma.to(x.dtype), x)
        total = s * s + self.sigma_data ** 2
        c_skip, c_out, c_in = self.sigma_data ** 2 / total, s * self.sigma_data / total.sqrt(), total.rsqrt()
        return c_skip * x + c_out * self.net(c_in * x, sigma.to(x.dtype).log() / 4, **cond)


class PFGMPPLoss:
    r"""EDM denoiser loss with the PFGM++ kernel (arXiv 2302.04265 §4; official ``training/loss.py``).

    :math:`\ln\sigma \sim N(P_{mean}, P_{std}^2)`, :math:`x = y + n` with :math:`n` from
    :func:`sample_perturbation` (:math:`r = \sigma\sqrt D`), loss
    :math:`\lambda(\sigma)\,\mathrm{mean}\,\|D_\theta(x, \sigma) - y\|^2`,
    :math:`\lambda(\sigma) = (\sigma^2 + \sigma_d^2)/(\sigma\sigma_d)^2`. The denoiser is called
    ``model(x, sigma, **cond)`` with ``sigma`` (B,) -- a noise level, *not* flowzoo's time (see the module
    docstring for :math:`t = 1/(1+\sigma)`); wrap a raw network in :class:`EDMPrecond`.

    The batch follows :class:`~flowzoo.core.objectives.FlowMatchingLoss`: ``"x1"`` (the data y), optional
    ``"weight"`` (B,), other keys are conditioning; ``"x0"`` is not used (the kernel draws its own noise).

    Example:
        >>> loss, metrics = PFGMPPLoss(D=16)(lambda x, s: x, {"x1": torch.zeros(8, 2)},
        ...                                   generator=torch.Generator().manual_seed(0))
        >>> sorted(metrics)
        ['loss', 'sigma_mean']
    """

    def __init__(self, D: int, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5,
                 clip: float = 1e-3):
        self.D = _check_dim(D)
        if not (isinstance(p_mean, (int, float)) and math.isfinite(p_mean)):
            raise ConfigError(expected("p_mean as a finite number", repr(p_mean), "keep the default -1.2"))
        self.p_mean, self.p_std = float(p_mean), check_positive(p_std, "p_std", fix="pass e.g. p_std=0.5")
        self.sigma_data, self.clip = check_positive(sigma_data, "sigma_data", fix="pass e.g. sigma_data=0.5"), clip

    def __call__(self, model: Denoiser, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        if not isinstance(batch, Mapping) or "x1" not in batch:
            raise ConfigError(expected('a batch mapping with the data under "x1"', type(batch).__name__,
                                       'pass {"x1": data}'))
        y = check_tensor(batch["x1"], 'batch["x1"]', min_dim=2)
        n = y.shape[0]
        cond = {k: v for k, v in batch.items() if k not in ("x0", "x1", "weight")}
        sigma = (self.p_mean + self.p_std * torch.randn(n, generator=generator, dtype=y.dtype)).exp().to(y.device)
        x = sample_perturbation(y, sigma, self.D, generator, clip=self.clip)
        out = model(x, sigma, **cond)
        if not isinstance(out, Tensor) or out.shape != y.shape:
            raise ShapeError(expected(f"the denoiser to return a tensor shaped like y {tuple(y.shape)}",
                                      getattr(out, "shape", type(out).__name__), "return D(x, sigma) shaped like x"))
        weight = (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2
        per_sample = weight * (out - y).pow(2).flatten(1).mean(1)
        weight = batch.get("weight")
        loss = reduce_weighted(per_sample, None if weight is None else per_sample_weight(weight, n, 'batch["weight"]'))
        if not bool(torch.isfinite(loss)):
            raise NonFiniteError(expected("a finite loss", loss.item(), "lower the learning rate or check the data"))
        return loss, {"loss": loss.item(), "sigma_mean": sigma.mean().item()}

    def __repr__(self) -> str:
        return f"PFGMPPLoss(D={self.D}, p_mean={self.p_mean}, p_std={self.p_std}, sigma_data={self.sigma_data})"


def edm_sigma_grid(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, *,
                   dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    r"""EDM's decreasing noise levels (Karras et al. Eq. 5) with a final 0: ``steps + 1`` values,

    :math:`\sigma_i = (\sigma_{\max}^{1/\rho} + \tfrac{i}{steps-1}(\sigma_{\min}^{1/\rho} -
    \sigma_{\max}^{1/\rho}))^\rho` for i < steps, :math:`\sigma_{steps} = 0`.

    Example:
        >>> [round(s, 3) for s in edm_sigma_grid(3, 0.002, 80.0).tolist()]
        [80.0, 2.515, 0.002, 0.0]
    """
    check_int(steps, "steps", low=2, fix="pass e.g. steps=18")
    sigma_min = check_positive(sigma_min, "sigma_min", fix="pass e.g. sigma_min=0.5")
    sigma_max = check_positive(sigma_max, "sigma_max", fix="pass e.g. sigma_max=0.5")
    rho = check_positive(rho, "rho", fix="pass e.g. rho=0.5")
    if sigma_min >= sigma_max:
        raise ConfigError(expected("sigma_min < sigma_max", f"{sigma_min} >= {sigma_max}", "swap them"))
    i = torch.arange(steps, dtype=torch.float64)
    grid = (sigma_max ** (1 / rho) + i / (steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([grid, grid.new_zeros(1)]).to(dtype=dtype, device=device)


@torch.no_grad()
def pfgmpp_sample(denoiser: Denoiser, x: Tensor, *, steps: int = 18, sigma_min: float = 0.002,
                  sigma_max: float = 80.0, rho: float = 7.0, cond: Mapping[str, Any] | None = None,
                  generator: torch.Generator | None = None, callback: Callback | None = None,
                  return_trajectory: bool = False) -> SampleResult:
    r"""EDM's deterministic Heun sampler (Karras et al. Alg. 1) from the PFGM++ prior.

    :math:`dx/d\sigma = (x - D_\theta(x, \sigma))/\sigma` over :func:`edm_sigma_grid`; Heun's correction on
    every step but the last (to :math:`\sigma = 0`, Euler). ``2·steps − 1`` denoiser calls.

    The start ``x`` is a draw of the prior :math:`p_{r_{\max}}`: make it with
    ``sample_prior(shape, sigma_max, D, generator)`` using the same ``sigma_max`` and the D used in training
    (the sampler itself does not depend on D once :math:`r = \sigma\sqrt D`).

    Args:
        denoiser: ``denoiser(x, sigma, **cond)`` with ``sigma`` (B,).
        x: the prior sample (B, ...) at :math:`\sigma_{\max}`, e.g. from :func:`sample_prior`.
        steps: number of noise levels (EDM: 18 for CIFAR-10).
        sigma_min, sigma_max, rho: the grid.
        cond: conditioning keyword arguments.
        generator: unused (the sampler is deterministic; the prior draw takes the generator); accepted so that
            every sampler has one call shape.
        callback: called after every step with ``{"i", "t", "t_next", "x", "sigma", "sigma_next"}``; ``t`` is
            flowzoo time :math:`1/(1 + \sigma)` (module docstring), ``sigma`` the noise level.
        return_trajectory: keep the state at every σ.

    Returns:
        :class:`~flowzoo.core.sampling.result.SampleResult`; ``times`` is :math:`t = 1/(1 + \sigma)` on the σ grid
        (increasing from about 0 to 1) and ``extras["sigmas"]`` the σ grid itself (decreasing, ending at 0).

    Example:
        >>> prior = sample_prior((5, 2), sigma_max=80.0, D=4, generator=torch.Generator().manual_seed(0))
        >>> out = pfgmpp_sample(lambda x, sigma: torch.zeros_like(x), prior, steps=4)
        >>> out.x.abs().max().item() < 1e-6, out.nfe, len(out.extras["sigmas"])
        (True, 7, 5)
    """
    x = check_tensor(x, "x", min_dim=2)
    cond = check_cond(cond)
    grid = edm_sigma_grid(steps, sigma_min, sigma_max, rho, dtype=x.dtype, device=x.device)
    times = 1.0 / (1.0 + grid)
    recorder = StepRecorder(x, times, callback=callback, return_trajectory=return_trajectory, desc="pfgmpp_sample")
    batch, nfe = x.shape[0], 0
    sigmas = grid.tolist()
    levels = grid[:, None].expand(-1, batch).unbind(0)

    def velocity(state: Tensor, i: int) -> Tensor:
        out = denoiser(state, levels[i], **cond)
        if nfe == 0:
            check_output(out, state, "the denoiser(x, sigma, **cond)")
        return (state - out) / sigmas[i]

    for i in range(steps):
        h = sigmas[i + 1] - sigmas[i]
        d = velocity(x, i)
        nfe += 1
        x_next = x.add(d, alpha=h)
        if i < steps - 1:
            x_next = x.add(d + velocity(x_next, i + 1), alpha=0.5 * h)
            nfe += 1
        x = x_next
        if recorder.active:
            recorder.record(i, x, sigma=grid[i], sigma_next=grid[i + 1])
    check_end_state(x, "check the denoiser and the D used in training")
    return SampleResult(x=x, nfe=nfe, trajectory=recorder.trajectory(), times=times, extras={"sigmas": grid})
