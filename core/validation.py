"""Input checks used at the public boundary of flowzoo.core (internal helpers).

Every public function validates its tensors with these helpers, so that a user who passes
the wrong thing gets one of :mod:`flowzoo.core.errors`' exceptions with a readable message
instead of a shape error deep inside torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import math

import torch

from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, NonFiniteError, ShapeError, expected

__all__ = ["check_tensor", "check_same_shape", "check_time", "check_finite", "as_time", "check_number", "check_unit_time",
           "check_pair"]


def check_tensor(
    x: object,
    name: str,
    *,
    min_dim: int = 1,
    floating: bool = True,
    finite: bool = True,
    allow_empty: bool = False,
) -> torch.Tensor:
    """Check that ``x`` is a non-empty, finite, floating tensor with at least ``min_dim`` dims."""
    if not isinstance(x, torch.Tensor):
        raise DTypeError(expected(f"{name} as a torch.Tensor", type(x).__name__,
                                  f"convert it with torch.as_tensor({name})"))
    if x.dim() < min_dim:
        raise ShapeError(expected(f"{name} with at least {min_dim} dimension(s) (batch first)",
                                  f"shape {tuple(x.shape)}", "add a batch dimension, e.g. x[None]"))
    if not allow_empty and (x.numel() == 0 or (x.dim() > 0 and x.shape[0] == 0)):
        raise EmptyInputError(expected(f"a non-empty {name}", f"shape {tuple(x.shape)}",
                                       "pass at least one sample"))
    if floating and not x.is_floating_point():
        raise DTypeError(expected(f"{name} with a floating dtype", x.dtype,
                                  f"call {name}.float()"))
    if finite and x.is_floating_point():
        check_finite(x, name)
    return x


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise :class:`NonFiniteError` if ``x`` holds NaN or Inf."""
    # A sum is finite iff every entry is (barring overflow, rechecked exactly below): one cheap
    # reduction instead of an elementwise mask on the hot path.
    if bool(torch.isfinite(x.sum())):
        return x
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(expected(f"finite values in {name}", f"{bad} NaN/Inf entries",
                                      "check the data pipeline or lower the learning rate"))
    return x


def check_same_shape(a: torch.Tensor, b: torch.Tensor, names: Sequence[str] = ("x0", "x1")) -> None:
    """Raise :class:`ShapeError` unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ShapeError(expected(f"{names[0]} and {names[1]} with the same shape",
                                  f"{tuple(a.shape)} and {tuple(b.shape)}",
                                  "draw the source with the data's shape"))


def as_time(t: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Return ``t`` as a float tensor of shape (batch,) on ``like``'s device and dtype."""
    if not isinstance(t, torch.Tensor):
        t = torch.tensor(float(t))
    t = t.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)
    if t.dim() == 0:
        t = t.expand(batch)
    return t


def check_time(t: object, batch: int, name: str = "t") -> torch.Tensor:
    """Check that ``t`` is a float tensor of shape (batch,) with finite values."""
    t = check_tensor(t, name, min_dim=1)
    if t.dim() != 1 or t.shape[0] != batch:
        raise ShapeError(expected(f"{name} of shape ({batch},), one time per sample",
                                  f"shape {tuple(t.shape)}", f"pass {name} as a 1-D tensor of length {batch}"))
    return t


def broadcast_time(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) time tensor to (B, 1, ..., 1) so that it broadcasts against ``x``."""
    return t.reshape(t.shape[0], *([1] * (x.dim() - 1)))


__all__.append("broadcast_time")


def check_number(value: object, name: str, *, low: float | None = None, high: float | None = None,
                 strict_low: bool = False, fix: str | None = None) -> float:
    """A finite real number within [low, high] (``strict_low``: > low) as a float, or ConfigError saying which."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(expected(f"{name} as a finite number", repr(value), fix or f"pass a float {name}"))
    if (low is not None and (value < low or (strict_low and value == low))) or (high is not None and value > high):
        bounds = f"{'>' if strict_low else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigError(expected(f"{name} {bounds}", value, fix or f"check {name}"))
    return float(value)


def check_unit_time(t: float | torch.Tensor, like: torch.Tensor, name: str = "t") -> torch.Tensor:
    """Validate t (a number, a 0-d tensor or a (B,) tensor in [0, 1]) and return it as (B,) in like's dtype."""
    batch = like.shape[0]
    if not isinstance(t, torch.Tensor) or t.dim() == 0:
        if isinstance(t, torch.Tensor):
            check_tensor(t, name, min_dim=0)
        t = as_time(t, batch, like)
    t = check_time(t, batch, name).to(like.dtype)
    if not bool(((t >= 0) & (t <= 1)).all()):
        raise ConfigError(expected(f"{name} in [0, 1] (0 = source, 1 = data)",
                                   f"values in [{t.min().item():.4g}, {t.max().item():.4g}]",
                                   "rescale the time; flowzoo's time is not 0..999 or 0..1000"))
    return t


def check_pair(a: object, b: object, names: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    a = check_tensor(a, names[0])
    b = check_tensor(b, names[1])
    check_same_shape(a, b, names)
    return a, b
