r"""FlowTurbo's velocity refiner for images: a small class-conditional conv net :math:`r_\phi(x, t, v_{\text{prev}})`.

FlowTurbo (Zhao, Shi, Yu, Zhou, Lu, NeurIPS 2024, arXiv 2409.18128, §3.1, Eq. 6-7) observes that late in sampling
the predictor's velocity changes slowly, so a model about 1/20 of its cost can predict the *change*:
:math:`v(x_{t+\Delta}, t+\Delta) \approx v_{\text{prev}} + r_\phi(x_{t+\Delta}, t+\Delta, v_{\text{prev}})`. The
paper's refiner is one DiT block on SiT's latents; on pixels this module uses a few 3x3 convolutions over
:math:`[x, v_{\text{prev}}]` with FiLM from the time and the class (its own null class for unconditional runs),
and a last layer that starts at zero, so an untrained refiner returns :math:`\Delta v = 0` and a refiner step
then reuses the last velocity (the pseudo-corrector's reuse without its predictor call).

It is trained by the core's :class:`~flowzoo.core.fewstep.RefinerLoss` against a frozen flow-matching run
(``python -m flowzoo.vision.train refiner --teacher RUN``) and sampled by the core's
:func:`~flowzoo.core.fewstep.flowturbo_sample` (``flowzoo vision sample --sampler flowturbo --refiner RUN``).
Time runs from 0 (noise) to 1 (data) as in SiT and FlowTurbo, so no mapping is needed. Rationale: the core's
refiner is a flat MLP, whose cost grows with the square of the pixel count; convolutions keep it a small,
fixed share of the U-Net's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.fewstep import RefinerLoss
from flowzoo.core.nets import SinusoidalTimeEmbedding
from flowzoo.core.validation import as_time, check_int, check_tensor

__all__ = ["ImageRefiner", "conv_macs", "refiner_velocity_error", "check_refiner_run"]

Tensor = torch.Tensor


class ImageRefiner(nn.Module):
    r"""A conv velocity refiner :math:`r_\phi(x, t, v_{\text{prev}}, y) \to \Delta v` for images shaped ``shape``.

    ``depth`` 3x3 convolutions of ``width`` channels over ``concat(x, v_prev)``, each followed by FiLM
    (scale and shift from the sinusoidal time embedding plus a class embedding) and SiLU, then a zero-initialised
    3x3 convolution back to the image channels. ``num_classes`` > 0 takes ``y`` in ``[0, num_classes]`` (the last
    is the null class, also used when ``y`` is omitted).

    Args:
        shape: image shape (C, H, W) it refines.
        width: hidden channels; depth: hidden convolutions; num_classes: classes of ``y`` (0: unconditional).

    Example:
        >>> r = ImageRefiner((1, 8, 8), width=8, num_classes=10)
        >>> x = torch.randn(2, 1, 8, 8)
        >>> r(x, torch.rand(2), torch.randn_like(x), y=torch.tensor([3, 10])).abs().max().item()
        0.0
    """

    def __init__(self, shape: Sequence[int], width: int = 16, depth: int = 2, num_classes: int = 0,
                 time_dim: int = 32):
        super().__init__()
        if len(tuple(shape)) != 3:
            raise ShapeError(expected("an image shape (C, H, W)", tuple(shape), "pass e.g. (1, 28, 28)"))
        self.shape = tuple(check_int(int(v), "shape", low=1) for v in shape)
        self.width = check_int(width, "width", low=1, fix="pass e.g. width=16")
        self.depth = check_int(depth, "depth", low=1, fix="pass e.g. depth=2")
        self.num_classes = check_int(num_classes, "num_classes", low=0)
        channels = self.shape[0]
        self.time_embedding = nn.Sequential(SinusoidalTimeEmbedding(time_dim), nn.Linear(time_dim, 2 * width))
        self.class_embedding = nn.Embedding(self.num_classes + 1, 2 * width * depth)
        self.film = nn.ModuleList(nn.Linear(2 * width, 2 * width) for _ in range(depth))
        self.convs = nn.ModuleList(nn.Conv2d(2 * channels if i == 0 else width, width, 3, padding=1)
                                   for i in range(depth))
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        nn.init.zeros_(self.class_embedding.weight)

    def _check(self, x: object, v: object) -> Tensor:
        x = check_tensor(x, "x")
        if tuple(x.shape[1:]) != self.shape:
            raise ShapeError(expected(f"images shaped {self.shape} (the refiner's run)", tuple(x.shape[1:]),
                                      "use a refiner trained on the same image shape as the predictor"))
        if not isinstance(v, Tensor) or v.shape != x.shape:
            raise ShapeError(expected(f"v_prev shaped like x {tuple(x.shape)}", tuple(getattr(v, "shape", ())),
                                      "pass the previous velocity"))
        return x

    def forward(self, x: Tensor, t: Tensor | float, v: Tensor, y: Tensor | None = None) -> Tensor:
        x = self._check(x, v)
        t = as_time(t, x.shape[0], x)
        if y is None:
            y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
        time = self.time_embedding(t.to(x.dtype))
        classes = self.class_embedding(y.long().clamp(0, self.num_classes)).chunk(self.depth, dim=1)
        h = torch.cat([x, v], dim=1)
        for conv, film, by_class in zip(self.convs, self.film, classes):
            scale, shift = (film(torch.nn.functional.silu(time)) + by_class).chunk(2, dim=1)
            h = torch.nn.functional.silu(conv(h) * (1 + scale[:, :, None, None]) + shift[:, :, None, None])
        return self.out(h)


def conv_macs(model: nn.Module, *args, **kwargs) -> int:
    """Multiply-adds per sample of the convolutions and linear layers of one ``model(*args, **kwargs)`` call.

    Example:
        >>> r = ImageRefiner((1, 8, 8), width=8, depth=1)
        >>> x = torch.zeros(1, 1, 8, 8)
        >>> conv_macs(r, x, torch.zeros(1), x) == 64 * 9 * (2 * 8 + 8) + 32 * 16 + 16 * 16
        True
    """
    total = 0

    def count(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += per_output * output[0].numel()
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features * (output.numel() // output.shape[-1]
                                                                  // output.shape[0])

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return int(total)


def refiner_velocity_error(refiner: nn.Module, teacher: nn.Module, images: Tensor, labels: Tensor | None = None, *,
                           max_dt: float = 0.12, seed: int = 0, draws: int = 8) -> dict[str, float]:
    r"""Held-out error of the refined velocity against the teacher's, and of reusing the last velocity.

    On ``images`` (held out) with seeded noise, times and offsets drawn as :class:`~flowzoo.core.fewstep.RefinerLoss`
    draws them (one offset dt per draw, so ``draws`` draws average over offsets): ``refined`` is the mean of
    :math:`\|v_T + r_\phi(x', t+dt, v_T) - v(x', t+dt)\|^2` per entry, ``reused`` the same with :math:`r_\phi = 0`
    (what a zero refiner gives), ``ratio`` their quotient (below 1: the refiner helps).

    Example:
        >>> teacher = lambda x, t, **c: -x
        >>> r = ImageRefiner((1, 4, 4), width=4)
        >>> errors = refiner_velocity_error(r, teacher, torch.randn(6, 1, 4, 4))
        >>> errors["ratio"]
        1.0
    """
    check_int(draws, "draws", low=1)
    batch = {"x1": images} if labels is None else {"x1": images, "y": labels}
    zero = lambda x, t, v, **cond: torch.zeros_like(x)  # noqa: E731
    loss = RefinerLoss(teacher, max_dt=max_dt)
    refined_error = reused_error = 0.0
    with torch.no_grad():
        for draw in range(draws):
            refined_error += float(loss(refiner, batch, generator=torch.Generator().manual_seed(seed + draw))[0])
            reused_error += float(loss(zero, batch, generator=torch.Generator().manual_seed(seed + draw))[0])
    refined_error, reused_error = refined_error / draws, reused_error / draws
    return {"refined": refined_error, "reused": reused_error,
            "ratio": refined_error / reused_error if reused_error > 0 else 1.0}


def check_refiner_run(refiner_run, predictor_run, *, steps: int, refiner_steps: int, name: str = "--refiner") -> float:
    """Refuse a refiner run that cannot refine ``predictor_run``'s velocity on this grid; returns its ``max_dt``.

    Both are :class:`~flowzoo.vision.train.TrainedImageModel`; the refiner must come from ``train refiner``, share
    the predictor's image shape and conditioning, and the FlowTurbo grid (``steps - 1 + refiner_steps`` uniform
    intervals: one Heun, ``steps - 2`` pseudo-corrector and ``refiner_steps`` refiner steps) must keep every step
    within the offsets it was trained on (``--refiner_max_dt``).
    """
    fix = "pass --refiner RUN of `python -m flowzoo.vision.train refiner --teacher` on this predictor's data"
    if not isinstance(refiner_run.model, ImageRefiner):
        raise ConfigError(expected(f"{name}: a refiner run", f"a run of method {refiner_run.config.method} "
                                   f"({refiner_run.checkpoint})", fix))
    if tuple(refiner_run.shape) != tuple(predictor_run.shape):
        raise ShapeError(expected(f"{name}: a refiner of images shaped {tuple(predictor_run.shape)} (the predictor's)",
                                  f"{refiner_run.checkpoint} refines {tuple(refiner_run.shape)}", fix))
    if refiner_run.class_cond != predictor_run.class_cond:
        raise ConfigError(expected(f"{name}: a refiner with class_cond={predictor_run.class_cond} like the predictor",
                                   f"class_cond={refiner_run.class_cond}", fix))
    max_dt = float(refiner_run.config.refiner_max_dt)
    step = 1.0 / (steps - 1 + refiner_steps)
    if step > max_dt + 1e-9:
        least = math.ceil(1.0 / max_dt - 1e-9) - steps + 1
        raise ConfigError(expected(f"FlowTurbo steps of at most the refiner's max_dt {max_dt:g}",
                                   f"1/(steps - 1 + refiner_steps) = {step:.3g}",
                                   f"pass --refiner_steps {least} or more, or train the refiner with a larger "
                                   "--refiner_max_dt"))
    return max_dt
