"""The input checks of flowzoo: one public validation layer for the core and every domain package.

Validate at the public boundary (a constructor, a function's entry), once, and trust the types inside: these
helpers are cheap, but they are meant for arguments, not for every step of a loop. Each failure raises a
:mod:`flowzoo.core.errors` subclass whose message says what was expected, what was received and how to fix it:

* numbers and counts (:func:`check_number`, :func:`check_positive`, :func:`check_nonnegative`,
  :func:`check_probability`, :func:`check_int`, :func:`check_positive_int`, :func:`check_bool`) raise
  :class:`~flowzoo.core.errors.ConfigError`; they reject ``bool`` (``True`` is an ``int`` in Python, but never a
  step count or a scale) and accept numpy scalars;
* :func:`check_count`, the size of a batch to draw, raises :class:`~flowzoo.core.errors.DTypeError` for a
  non-integer and :class:`~flowzoo.core.errors.EmptyInputError` for zero;
* tensors (:func:`check_tensor`, :func:`check_finite`, :func:`check_same_shape`, :func:`check_pair`) raise
  ``DTypeError``, ``ShapeError``, ``EmptyInputError`` or ``NonFiniteError``;
* times (:func:`check_time`, :func:`check_unit_time`, :func:`as_time`, :func:`broadcast_time`) follow the
  library's convention: ``t`` in [0, 1], 0 = source, 1 = data, one time per sample.

Example:
    >>> check_int(8, "steps", low=1)
    8
    >>> check_probability(0.1, "cond_dropout")
    0.1
    >>> check_positive(0.0, "sigma", fix="pass e.g. sigma=0.1")
    Traceback (most recent call last):
        ...
    flowzoo.core.errors.ConfigError: expected sigma as a finite number > 0; received 0.0. Fix: pass e.g. sigma=0.1
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, NonFiniteError, ShapeError, expected

__all__ = ["check_number", "check_positive", "check_nonnegative", "check_probability", "check_int",
           "check_positive_int", "check_count", "check_bool", "check_tensor", "check_finite", "check_same_shape",
           "check_pair", "check_time", "check_unit_time", "as_time", "as_item_time", "broadcast_time",
           "check_class_labels", "check_new_outputs"]


def _text(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def _bounds(low: float | None, high: float | None, strict_low: bool, strict_high: bool) -> str:
    """The admissible range in words: ' > 0', ' <= 1', ' in [0, 1)' or '' (no bound)."""
    if low is not None and high is not None:
        return f" in {'(' if strict_low else '['}{_text(low)}, {_text(high)}{')' if strict_high else ']'}"
    if low is not None:
        return f" {'>' if strict_low else '>='} {_text(low)}"
    if high is not None:
        return f" {'<' if strict_high else '<='} {_text(high)}"
    return ""


def _outside(value: float, low: float | None, high: float | None, strict_low: bool, strict_high: bool) -> bool:
    return ((low is not None and (value < low or (strict_low and value == low)))
            or (high is not None and (value > high or (strict_high and value == high))))


def _as_real(value: object) -> float | None:
    """``value`` as a finite float, or None when it is not a finite real number (bools are not numbers here)."""
    if type(value) is float or type(value) is int:  # the common case first: no ABC look-up
        number = float(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):  # numpy scalars, Fraction
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def _as_int(value: object) -> int | None:
    """``value`` as an int when it is an integer (Python or numpy), else None. Floats are refused even when
    integral (2.0): a float where a count belongs is a mixed-up argument more often than a convenience."""
    if type(value) is int:
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


def check_number(value: object, name: str, *, low: float | None = None, high: float | None = None,
                 strict_low: bool = False, strict_high: bool = False, fix: str | None = None) -> float:
    """``value`` as a float: a finite real number within [low, high] (``strict_low``/``strict_high``: the bound
    itself excluded); None bounds are open. Raises :class:`ConfigError` naming the range otherwise.

    Example:
        >>> check_number(2, "scale", low=0.0)
        2.0
    """
    number = _as_real(value)
    if number is None or _outside(number, low, high, strict_low, strict_high):
        bounds = _bounds(low, high, strict_low, strict_high)
        raise ConfigError(expected(f"{name} as a finite number{bounds}", repr(value),
                                   fix or f"pass a float {name}{bounds}"))
    return number


def check_positive(value: object, name: str, *, fix: str | None = None) -> float:
    """``value`` as a float, a finite number > 0 (a scale, a temperature, a rate)."""
    return check_number(value, name, low=0.0, strict_low=True, fix=fix or f"pass a positive {name}")


def check_nonnegative(value: object, name: str, *, fix: str | None = None) -> float:
    """``value`` as a float, a finite number >= 0 (a weight, where 0 switches a term off)."""
    return check_number(value, name, low=0.0, fix=fix or f"pass {name} >= 0 (0 switches it off)")


def check_probability(value: object, name: str, *, inclusive_low: bool = True, inclusive_high: bool = True,
                      fix: str | None = None) -> float:
    """``value`` as a float in [0, 1]; ``inclusive_low``/``inclusive_high`` False exclude 0 or 1.

    Example:
        >>> check_probability(1.0, "p", inclusive_high=False)
        Traceback (most recent call last):
            ...
        flowzoo.core.errors.ConfigError: expected p as a probability in [0, 1); received 1.0. Fix: pass p in [0, 1)
    """
    number = _as_real(value)
    if number is None or _outside(number, 0.0, 1.0, not inclusive_low, not inclusive_high):
        bounds = _bounds(0, 1, not inclusive_low, not inclusive_high)
        raise ConfigError(expected(f"{name} as a probability{bounds}", repr(value), fix or f"pass {name}{bounds}"))
    return number


def check_int(value: object, name: str, *, low: int | None = None, high: int | None = None,
              fix: str | None = None) -> int:
    """``value`` as an int within [low, high] (None: unbounded). Python and numpy integers pass; ``bool`` and
    every float (2.5, and 2.0 too) raise :class:`ConfigError`.

    Example:
        >>> import numpy as np
        >>> check_int(np.int64(3), "horizon", low=1)
        3
    """
    if type(value) is int and (low is None or value >= low) and (high is None or value <= high):
        return value  # the common case, cheap enough for a per-step call (a sampler's batch size)
    number = _as_int(value)
    if number is None or _outside(number, low, high, False, False):
        bounds = _bounds(low, high, False, False)
        raise ConfigError(expected(f"{name} as an integer{bounds}", repr(value), fix or f"pass an integer {name}{bounds}"))
    return number


def check_positive_int(value: object, name: str, *, fix: str | None = None) -> int:
    """``value`` as an int >= 1 (a size, a number of steps or layers)."""
    return check_int(value, name, low=1, fix=fix)


def check_count(value: object, name: str = "n", *, fix: str | None = None) -> int:
    """The number of samples to draw: an int >= 1. A non-integer raises :class:`DTypeError`, zero or less
    :class:`EmptyInputError` (the batch would be empty)."""
    if type(value) is int and value >= 1:  # called once per training step by the time samplers: stay cheap
        return value
    number = _as_int(value)
    if number is None:
        raise DTypeError(expected(f"the number of samples {name} as an int", type(value).__name__,
                                  fix or "pass e.g. the batch size"))
    if number < 1:
        raise EmptyInputError(expected(f"{name} >= 1 samples", number, "ask for at least one sample"))
    return number


def check_bool(value: object, name: str, *, fix: str | None = None) -> bool:
    """``value`` itself when it is a bool (numpy's too); anything else, 0 and 1 included, raises ConfigError."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(expected(f"{name} as a bool", repr(value), fix or f"pass {name}=True or False"))
    return bool(value)


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
    if not allow_empty and x.numel() == 0:  # an empty batch dimension makes numel() 0 too
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


def as_item_time(t: float | torch.Tensor, like: torch.Tensor, name: str = "t", item: str = "sample") -> torch.Tensor:
    """:func:`as_time` for a network's input ``like`` (batch first), or ShapeError unless one time per ``item``.

    Example:
        >>> as_item_time(0.5, torch.zeros(3, 2)).tolist()
        [0.5, 0.5, 0.5]
    """
    batch = like.shape[0]
    t = as_time(t, batch, like)
    if t.shape != (batch,):
        raise ShapeError(expected(f"{name} as a number or of shape ({batch},)", f"shape {tuple(t.shape)}",
                                  f"pass one {name} per {item}"))
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
    """Check two tensors with :func:`check_tensor` and that they share one shape (e.g. a path's x0 and x1)."""
    a = check_tensor(a, names[0])
    b = check_tensor(b, names[1])
    check_same_shape(a, b, names)
    return a, b


def check_class_labels(y: object, batch: int, num_classes: int) -> torch.Tensor | None:
    """Class labels of a conditional network: None for a net built without classes, else (batch,) integers.

    ``num_classes`` is the number of real classes K; the index K is the null class (classifier-free guidance's
    unconditional label), so labels lie in [0, K]. A net built with ``num_classes=0`` takes no labels.
    """
    if num_classes == 0:
        if y is not None:
            raise ConfigError(expected("no labels (the net was built with num_classes=0)", "y",
                                       "build the net with num_classes=K to condition on labels"))
        return None
    if y is None:
        raise ConfigError(expected(f"labels y (the net was built with num_classes={num_classes})", "y=None",
                                   f"pass y, or y=torch.full((B,), {num_classes}) for unconditional"))
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DTypeError(expected("integer class labels y", getattr(y, "dtype", type(y).__name__),
                                  "pass y as a torch.long tensor"))
    if y.shape != (batch,):
        raise ShapeError(expected(f"y of shape ({batch},)", f"shape {tuple(y.shape)}", "pass one label per sample"))
    if bool(((y < 0) | (y > num_classes)).any()):
        raise ConfigError(expected(f"labels in [0, {num_classes}] ({num_classes} = null class)",
                                   f"range [{int(y.min())}, {int(y.max())}]", "map the labels to 0..K-1"))
    return y


def check_new_outputs(paths: Sequence[object], overwrite: bool, *,
                      fix: str = "choose another --out, or pass --overwrite true to replace it") -> None:
    """Refuse to write over existing files unless the user asked (``overwrite``): a ConfigError naming the first
    path that exists. Command-line entry points call it before any work, so nothing is created on refusal.

    Example:
        >>> check_new_outputs(["/no/such/file.png"], overwrite=False)
    """
    from pathlib import Path

    for path in paths:
        if Path(path).exists() and not overwrite:
            raise ConfigError(expected("an output path that does not exist yet", f"{path} (exists)", fix))

