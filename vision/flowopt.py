r"""FlowOpt: zero-order optimisation of the initial noise through a whole sampling process, for inversion and editing.

Ronai, Kulikov, Michaeli, arXiv 2510.22010. Treat the sampler :math:`f(z) = \mathrm{ODESolve}_{0 \to 1}(z)` (here
Euler with ``steps`` steps, optionally conditioned) as a black box and iterate, without gradients,

.. math:: z_{k+1} = z_k - \eta\,(f(z_k) - y^\star),

which is gradient descent on :math:`\tfrac12\|f(z) - y^\star\|^2` with the Jacobian :math:`J_f` replaced by the
identity. Linearising, the error obeys :math:`e_{k+1} \approx (I - \eta J_f)e_k`, which contracts when
:math:`|1 - \eta\lambda_i| < 1` for every eigenvalue of :math:`J_f`; for a symmetric positive-definite Jacobian the
bound is :math:`\eta < 2/\lambda_{\max}(J_f)`. :func:`estimate_step_bound` estimates :math:`\lambda_{\max}` by power
iteration on finite differences :math:`(f(z + \delta w) - f(z))/\delta` (no autograd), as the paper suggests.

* **Inversion**: :math:`y^\star` is a real image; :math:`z_0` comes from the naive reversal of the ODE
  (:func:`reverse_ode`, Euler from t = 1 back to t = 0), the baseline FlowOpt improves on.
* **Editing**: the same iteration with :math:`f` sampled under the *target* condition (another class) while
  :math:`y^\star` stays the source image, so the edit keeps the source's structure (:func:`flowopt_edit`).
* **Baseline at equal NFE**: :func:`backprop_invert` runs gradient descent with the true gradient
  :math:`J_f^\top(f(z) - y^\star)` through the solver (one backward per iteration, counted as one more pass).

**Time convention.** The paper's flows (SD3, FLUX) run from noise at t = 1 to data at t = 0; flowzoo samples from
noise at t = 0 to data at t = 1, so its :math:`f` integrates t from 0 to 1 and the reversal from 1 to 0. The
update itself does not involve time.

Example:
    >>> import torch
    >>> model = lambda x, t: torch.ones_like(x)         # f(z) = z + 1: exactly invertible
    >>> target = torch.zeros(1, 1, 2, 2)
    >>> out = flowopt_invert(model, target, steps=4, iterations=3, step_size=1.0)
    >>> float(out.extras["errors"][-1]) < 1e-6
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.sampling import SampleResult
from flowzoo.core.validation import check_int, check_positive, check_tensor

__all__ = ["sample_ode", "reverse_ode", "estimate_step_bound", "flowopt_invert", "flowopt_edit", "backprop_invert"]

Tensor = torch.Tensor
Model = Callable[..., Tensor]


def _euler(model: Model, x: Tensor, steps: int, cond: Mapping[str, Tensor] | None, forward: bool) -> Tensor:
    grid = torch.linspace(0.0, 1.0, check_int(steps, "steps", low=1) + 1).tolist()
    if not forward:
        grid = grid[::-1]
    for a, b in zip(grid[:-1], grid[1:]):
        x = x + (b - a) * model(x, torch.full((x.shape[0],), a, device=x.device), **dict(cond or {}))
    return x


def sample_ode(model: Model, z: Tensor, *, steps: int, cond: Mapping[str, Tensor] | None = None) -> Tensor:
    """:math:`f(z)`: Euler from noise at t = 0 to data at t = 1 (``steps`` model evaluations), no gradients."""
    with torch.no_grad():
        return _euler(model, z, steps, cond, forward=True)


def reverse_ode(model: Model, image: Tensor, *, steps: int, cond: Mapping[str, Tensor] | None = None) -> Tensor:
    """Naive inversion: Euler from the image at t = 1 back to t = 0 (each step uses the velocity at its start)."""
    with torch.no_grad():
        return _euler(model, image, steps, cond, forward=False)


def _residual_norm(out: Tensor, target: Tensor) -> Tensor:
    return (out - target).flatten(1).norm(dim=1)


def estimate_step_bound(model: Model, z: Tensor, *, steps: int, cond: Mapping[str, Tensor] | None = None,
                        iterations: int = 10, delta: float = 1e-2, seed: int = 0) -> tuple[float, float]:
    r"""``(λ̂_max, 2/λ̂_max)``: the largest eigenvalue of :math:`J_f` at ``z`` by power iteration on finite
    differences, and the step-size bound it implies (every image of the batch shares one estimate)."""
    check_positive(delta, "delta")
    base = sample_ode(model, z, steps=steps, cond=cond)
    w = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed)).to(z)
    w = w / w.norm()
    value = 1.0
    for _ in range(check_int(iterations, "iterations", low=1)):
        jw = (sample_ode(model, z + delta * w, steps=steps, cond=cond) - base) / delta
        value = float((w * jw).sum())                              # Rayleigh quotient, sign kept
        norm = float(jw.norm())
        if norm == 0:
            break
        w = jw / norm
    if value <= 0:
        raise ConfigError(expected("a sampler whose Jacobian has a positive leading eigenvalue (FlowOpt's premise)",
                                   f"estimated λ_max = {value:.3g}", "use gradient-based inversion (backprop_invert)"))
    return value, 2.0 / value


def _iterate(model: Model, target: Tensor, z: Tensor, *, steps: int, iterations: int, step_size: float,
             cond: Mapping[str, Tensor] | None, tolerance: float) -> SampleResult:
    check_positive(step_size, "step_size")
    errors, out = [], sample_ode(model, z, steps=steps, cond=cond)
    errors.append(_residual_norm(out, target))
    for _ in range(check_int(iterations, "iterations", low=0)):
        if float(errors[-1].max()) <= tolerance:
            break
        z = z - step_size * (out - target)
        out = sample_ode(model, z, steps=steps, cond=cond)
        errors.append(_residual_norm(out, target))
    return SampleResult(x=out, nfe=steps * len(errors), extras={"z": z, "errors": torch.stack(errors)})


def flowopt_invert(model: Model, image: Tensor, *, steps: int = 10, iterations: int = 20, step_size: float = 0.5,
                   cond: Mapping[str, Tensor] | None = None, init: Tensor | None = None,
                   tolerance: float = 0.0) -> SampleResult:
    r"""Invert ``image`` (B, C, H, W): find z with :math:`f(z) \approx` image. Starts from :func:`reverse_ode`
    unless ``init`` is given. Returns ``x = f(z)``, ``extras["z"]`` and ``extras["errors"]`` ((iterations + 1, B):
    :math:`\|f(z_k) - y^\star\|` per image); ``nfe`` counts every evaluation, the reversal's included."""
    image = check_tensor(image, "image", min_dim=2)
    z = reverse_ode(model, image, steps=steps, cond=cond) if init is None else init
    out = _iterate(model, image, z, steps=steps, iterations=iterations, step_size=step_size, cond=cond,
                   tolerance=tolerance)
    return SampleResult(x=out.x, nfe=out.nfe + (steps if init is None else 0), extras=out.extras)


def flowopt_edit(model: Model, image: Tensor, *, source_cond: Mapping[str, Tensor], target_cond: Mapping[str, Tensor],
                 steps: int = 10, iterations: int = 8, step_size: float = 0.5) -> SampleResult:
    """Edit ``image`` towards ``target_cond``: invert it under ``source_cond``, then iterate with the target's
    sampler while the target stays the source image (FlowOpt's editing objective)."""
    z = reverse_ode(model, check_tensor(image, "image", min_dim=2), steps=steps, cond=source_cond)
    out = _iterate(model, image, z, steps=steps, iterations=iterations, step_size=step_size, cond=target_cond,
                   tolerance=0.0)
    return SampleResult(x=out.x, nfe=out.nfe + steps, extras=out.extras)


def backprop_invert(model: Model, image: Tensor, *, steps: int = 10, iterations: int = 10, lr: float = 0.5,
                    cond: Mapping[str, Tensor] | None = None, init: Tensor | None = None) -> SampleResult:
    r"""Gradient descent on :math:`\tfrac12\|f(z) - y^\star\|^2` through the Euler solver (Adam-free plain steps of
    size ``lr`` on the per-image loss): the baseline at equal NFE (a backward pass counts as one more pass)."""
    image = check_tensor(image, "image", min_dim=2)
    z = (reverse_ode(model, image, steps=steps, cond=cond) if init is None else init).detach()
    errors = []
    for _ in range(check_int(iterations, "iterations", low=1)):
        z.requires_grad_(True)
        out = _euler(model, z, steps, cond, forward=True)
        errors.append(_residual_norm(out.detach(), image))
        (grad,) = torch.autograd.grad(0.5 * ((out - image) ** 2).sum(), z)
        z = (z - check_positive(lr, "lr") * grad).detach()
    out = sample_ode(model, z, steps=steps, cond=cond)
    errors.append(_residual_norm(out, image))
    return SampleResult(x=out, nfe=steps * (2 * iterations + 1) + (steps if init is None else 0),
                        extras={"z": z, "errors": torch.stack(errors)})
