r"""Classifier-free guidance (CFG) as a velocity-model wrapper, with pluggable guidance schedules.

Ho & Salimans, "Classifier-Free Diffusion Guidance" (arXiv 2207.12598), Eq. 6, written for velocities as in
flow matching (Lipman et al., "Flow Matching Guide and Code", arXiv 2412.06264, §4.2): one network trained with
condition dropout gives both the conditional velocity :math:`v_c = v(x, t \mid c)` and the unconditional one
:math:`v_u = v(x, t \mid \varnothing)`, and sampling follows

.. math::  \tilde v = v_u + w\,(v_c - v_u),

so :math:`w = 0` is unconditional, :math:`w = 1` plain conditional and :math:`w > 1` sharpens towards the
condition. A *schedule* replaces the constant :math:`w` by a per-sample value computed from
:math:`(t, v_c, v_u)`; adaptive rules such as RAAG (Zhu et al., arXiv 2508.03442) are schedules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from torch import nn

from flowzoo.core.validation import (as_time, broadcast_time, check_bool, check_nonnegative, check_number,
                                     check_positive)
from flowzoo.core.errors import ConfigError, ShapeError, expected

__all__ = ["GuidanceSchedule", "ConstantGuidance", "RatioAwareGuidance", "ClassifierFreeGuidance"]

_SCALE_FIX = "pass e.g. scale=3.0 (1.0 = conditional, 0.0 = unconditional)"


class GuidanceSchedule(Protocol):
    """``schedule(t, v_cond, v_uncond) -> w``: a number, a 0-dim tensor or a (B,) tensor of guidance scales."""

    def __call__(self, t: torch.Tensor, v_cond: torch.Tensor, v_uncond: torch.Tensor) -> float | torch.Tensor:
        ...


class ConstantGuidance:
    """The classic schedule: the same scale ``w`` at every time and for every sample."""

    def __init__(self, scale: float):
        self.scale = check_number(scale, "the guidance scale", fix=_SCALE_FIX)

    def __call__(self, t: torch.Tensor, v_cond: torch.Tensor, v_uncond: torch.Tensor) -> float:
        return self.scale

    def __repr__(self) -> str:
        return f"ConstantGuidance(scale={self.scale})"



class RatioAwareGuidance:
    r"""RAAG, ratio-aware adaptive guidance (Zhu et al., arXiv 2508.03442): one scale per sample from the ratio
    of the guidance direction to the unconditional velocity.

    .. math::  \rho = \frac{\|v_c - v_u\|}{\max(\|v_u\|, \varepsilon)}, \qquad
               w(\rho) = 1 + (w_{\max} - 1)\,e^{-\alpha\rho},

    norms taken per sample over all non-batch dimensions. A large ratio (early steps near the noise end, where
    :math:`v_c - v_u` carries the class-mean shift) gives :math:`w \approx 1`; a small ratio later gives
    :math:`w \to w_{\max}`. Use it as ``ClassifierFreeGuidance(model, RatioAwareGuidance(18.0, 12.0), null)``.

    The ratio is computed on velocities (the paper targets flow / velocity models); it does not depend on the
    time convention, so flowzoo's t (0 = noise) needs no mapping, and ``t`` is ignored.

    Squared or not: the ratio's definition is ambiguous between sources -- the ComfyUI port
    (``RAAG_ModelPatch``) uses the plain norm ratio above, secondary summaries of the paper write the squared
    ratio :math:`\rho^2`. Both give the same ordering but a different effective :math:`\alpha` (the paper's
    example ``w_max = 18, alpha = 12`` was tuned for one of them). The default ``squared=False`` implements the
    plain ratio; ``squared=True`` uses :math:`\rho^2` in the exponent.

    Args:
        max_scale: :math:`w_{\max}`, the scale reached as :math:`\rho \to 0`.
        alpha: decay rate :math:`\alpha \ge 0` (0 gives the constant scale ``max_scale``).
        eps: floor on :math:`\|v_u\|` so that a vanishing unconditional velocity gives a large, finite ratio.
        squared: use :math:`\rho^2` instead of :math:`\rho`.

    Example:
        >>> schedule = RatioAwareGuidance(max_scale=5.0, alpha=1.0)
        >>> v_u = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        >>> v_c = torch.tensor([[1.0, 0.0], [1.0, 2.0]])             # ratios 0 and 2
        >>> [round(w, 4) for w in schedule(torch.zeros(2), v_c, v_u).tolist()]
        [5.0, 1.5413]
    """

    def __init__(self, max_scale: float, alpha: float, eps: float = 1e-8, squared: bool = False):
        self.max_scale = check_number(max_scale, "max_scale (a guidance scale)", fix=_SCALE_FIX)
        self.alpha = check_nonnegative(alpha, "alpha", fix="pass e.g. alpha=12.0")
        self.eps = check_positive(eps, "eps", fix="keep the default 1e-8")
        self.squared = check_bool(squared, "squared", fix="pass squared=False or True")

    def ratio(self, v_cond: torch.Tensor, v_uncond: torch.Tensor) -> torch.Tensor:
        """The per-sample ratio :math:`\rho` (B,) (squared when ``squared=True``)."""
        if not isinstance(v_cond, torch.Tensor) or not isinstance(v_uncond, torch.Tensor) \
                or v_cond.shape != v_uncond.shape or v_cond.dim() < 1:
            raise ShapeError(expected("v_cond and v_uncond as tensors of the same shape (B, ...)",
                                      f"{tuple(getattr(v_cond, 'shape', ()))} and "
                                      f"{tuple(getattr(v_uncond, 'shape', ()))}", "pass both velocities"))
        batch = v_cond.shape[0]
        diff = (v_cond - v_uncond).reshape(batch, -1).norm(dim=1)
        rho = diff / v_uncond.reshape(batch, -1).norm(dim=1).clamp_min(self.eps)
        return rho * rho if self.squared else rho

    def __call__(self, t: torch.Tensor, v_cond: torch.Tensor, v_uncond: torch.Tensor) -> torch.Tensor:
        rho = self.ratio(v_cond, v_uncond)
        return 1.0 + (self.max_scale - 1.0) * torch.exp(-self.alpha * rho)

    def __repr__(self) -> str:
        return (f"RatioAwareGuidance(max_scale={self.max_scale}, alpha={self.alpha}, eps={self.eps}, "
                f"squared={self.squared})")



class ClassifierFreeGuidance(nn.Module):
    r"""Wrap a conditional velocity model so that it returns the guided velocity :math:`v_u + w (v_c - v_u)`.

    The wrapper is itself a velocity model (``wrapper(x, t, **cond)``), so it goes straight into
    :func:`~flowzoo.core.sampling.ode.integrate`. The conditional and unconditional passes are batched into **one**
    forward of size 2B: ``x`` and ``t`` are repeated, and every key of ``null_cond`` is replaced in the second
    half by its null value. A null value is a number (e.g. the null class index ``num_classes`` of
    :class:`~flowzoo.core.nets.mlp.MLPVelocity`) or a tensor broadcastable to the condition (e.g. a learned null
    embedding of shape (D,)); it is filled to the condition's shape and dtype. Keys of ``cond`` that are not in
    ``null_cond`` are shared by both halves. A null value ``None`` means "omit this keyword" for the
    unconditional pass, which then cannot be batched and costs a second forward.

    With a constant scale, ``scale == 1`` calls only the conditional model and ``scale == 0`` only the
    unconditional one.

    Args:
        model: the conditional velocity model ``model(x, t, **cond)``, trained with condition dropout to the
            same null values.
        scale: the guidance scale :math:`w`: a number (:class:`ConstantGuidance`), or a
            :class:`GuidanceSchedule` ``(t, v_c, v_u) -> w`` returning a number or one scale per sample (B,),
            the hook for adaptive guidance such as RAAG.
        null_cond: conditioning key -> null value.

    Example:
        >>> import torch
        >>> model = lambda x, t, y: x + y[:, None].float()       # "conditional" toy model; null label 10
        >>> guided = ClassifierFreeGuidance(model, scale=3.0, null_cond={"y": 10})
        >>> x, y = torch.zeros(2, 1), torch.tensor([1, 2])
        >>> guided(x, torch.zeros(2), y=y).flatten().tolist()    # 10 + 3 * (y - 10)
        [-17.0, -14.0]
    """

    def __init__(self, model: Callable[..., torch.Tensor], scale: float | GuidanceSchedule,
                 null_cond: Mapping[str, Any]):
        super().__init__()
        if not callable(model):
            raise ConfigError(expected("a callable velocity model", type(model).__name__, "pass the network"))
        if not isinstance(null_cond, Mapping) or not null_cond or not all(isinstance(k, str) for k in null_cond):
            raise ConfigError(expected("null_cond as a non-empty mapping key -> null value", repr(null_cond),
                                       "pass e.g. null_cond={'y': num_classes}"))
        self.model = model  # registered as a submodule when it is an nn.Module, so .to() / .eval() reach it
        self.schedule: GuidanceSchedule = scale if callable(scale) else ConstantGuidance(scale)
        self.null_cond = dict(null_cond)

    @property
    def scale(self) -> float | None:
        """The constant guidance scale, or ``None`` when a non-constant schedule is used."""
        return self.schedule.scale if isinstance(self.schedule, ConstantGuidance) else None

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, **cond: Any) -> torch.Tensor:
        missing = [k for k in self.null_cond if k not in cond]
        if missing:
            raise ConfigError(expected(f"the conditioning keys {sorted(self.null_cond)}", sorted(cond),
                                       f"pass {missing[0]}=... when calling the guided model"))
        t = as_time(t, x.shape[0], x)
        if self.scale == 1.0:
            return self.model(x, t, **cond)
        uncond = self._null(cond)
        if self.scale == 0.0:
            return self.model(x, t, **uncond)
        v_cond, v_uncond = self._both(x, t, cond, uncond)
        w = self.schedule(t, v_cond, v_uncond)
        return v_uncond + self._broadcast(w, v_cond) * (v_cond - v_uncond)

    def _null(self, cond: Mapping[str, Any]) -> dict[str, Any]:
        uncond = dict(cond)
        for key, null in self.null_cond.items():
            if null is None:
                del uncond[key]
                continue
            value = cond[key]
            if not isinstance(value, torch.Tensor):
                uncond[key] = null
                continue
            null = torch.as_tensor(null, dtype=value.dtype, device=value.device)
            try:
                uncond[key] = null.expand_as(value)
            except RuntimeError:
                raise ShapeError(expected(f"the null value of {key!r} broadcastable to {tuple(value.shape)}",
                                          f"shape {tuple(null.shape)}", "give one null value per feature, or a number"))
        return uncond

    def _both(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, Any],
              uncond: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = x.shape[0]
        if any(null is None for null in self.null_cond.values()):
            return self.model(x, t, **cond), self.model(x, t, **uncond)
        joint = {}
        for key, value in cond.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
                joint[key] = torch.cat([value, uncond[key]])
            elif key in self.null_cond:
                raise ShapeError(expected(f"{key!r} as a tensor with one row per sample ({batch})",
                                          f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}",
                                          "pass one condition per sample"))
            else:
                joint[key] = value  # shared, not batched (e.g. a global context)
        v = self.model(torch.cat([x, x]), torch.cat([t, t]), **joint)
        return v[:batch], v[batch:]

    @staticmethod
    def _broadcast(w: float | torch.Tensor, v: torch.Tensor) -> float | torch.Tensor:
        if not isinstance(w, torch.Tensor) or w.dim() == 0:
            return w
        if w.dim() == 1 and w.shape[0] == v.shape[0]:
            return broadcast_time(w.to(v.dtype), v)
        raise ShapeError(expected(f"the schedule to return a number or one scale per sample ({v.shape[0]},)",
                                  f"shape {tuple(w.shape)}", "return w of shape (B,)"))

    def extra_repr(self) -> str:
        return f"schedule={self.schedule!r}, null_cond={sorted(self.null_cond)}"
