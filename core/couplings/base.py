"""The coupling contract: what a coupling is called with and what it returns.

Every coupling has one call shape, ``coupling(x0, x1, cond0=None, cond1=None) -> Pairing``. This module
holds :class:`Pairing` (the paired batches, the indices that produced them and optional per-pair weights),
the :class:`Coupling` base class that validates the batches and their conditions before calling
``_pair``, and the helpers for conditions (a tensor of labels or a mapping of them). The couplings
themselves live in :mod:`flowzoo.core.couplings.minibatch`, which re-exports :class:`Pairing` and :class:`Coupling`.

Example:
    >>> import torch
    >>> Pairing(torch.zeros(3, 2), torch.ones(3, 2)).index1.tolist()
    [0, 1, 2]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

import torch

from flowzoo.core.validation import check_finite, check_tensor
from flowzoo.core.errors import DTypeError, ShapeError, expected

__all__ = ["Condition", "Pairing", "Coupling", "cond_rows"]


@dataclass
class Pairing:
    """Paired batches: ``x0 == source[index0]``, ``x1 == target[index1]``, optional ``weight`` (B,).

    Indices default to the identity, so ``Pairing(x0, x1)`` is the independent pairing.
    """

    x0: torch.Tensor
    x1: torch.Tensor
    weight: torch.Tensor | None = None
    index0: torch.Tensor | None = None
    index1: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.index0 is None:
            self.index0 = torch.arange(self.x0.shape[0], device=self.x0.device)
        if self.index1 is None:
            self.index1 = torch.arange(self.x1.shape[0], device=self.x1.device)


Condition = Union[torch.Tensor, Mapping[str, torch.Tensor]]


def _check_cond(cond: object, name: str, batch: int, device: torch.device) -> Condition | None:
    """Check a condition: a tensor (B, ...) or a mapping of such tensors (the objectives' conditioning)."""
    if cond is None or (isinstance(cond, Mapping) and not cond):
        return None
    items = cond.items() if isinstance(cond, Mapping) else [(None, cond)]
    for key, value in items:
        label = name if key is None else f"{name}[{key!r}]"
        if not isinstance(value, torch.Tensor):
            raise DTypeError(expected(f"{label} as a tensor of labels (B,) or (B, k), or a mapping of them",
                                      type(value).__name__, f"convert it with torch.as_tensor({label})"))
        if value.dim() == 0 or value.shape[0] != batch:
            raise ShapeError(expected(f"{label} with one row per sample ({batch} rows)",
                                      f"shape {tuple(value.shape)}", "pass the labels of the same batch"))
        if value.device != device:
            raise ShapeError(expected(f"{label} on the samples' device {device}", str(value.device),
                                      f"move it with .to({str(device)!r})"))
    return cond


def cond_rows(cond: Condition, name: str) -> torch.Tensor:
    """Flatten a condition to a float64 matrix (B, K) whose rows compare equal iff the conditions do (how the
    conditional couplings group samples that share a label; NaN/Inf in a float condition raise NonFiniteError)."""
    values = [cond[k] for k in sorted(cond)] if isinstance(cond, Mapping) else [cond]
    for value in values:
        if value.is_floating_point():
            check_finite(value, name)
    return torch.cat([v.reshape(v.shape[0], -1).double() for v in values], dim=1)


class Coupling:
    """Base class: validates the inputs, then calls :meth:`_pair`."""

    #: Whether x0 and x1 must hold the same number of samples.
    same_batch: bool = True

    def __call__(self, x0: torch.Tensor, x1: torch.Tensor, cond0: Condition | None = None,
                 cond1: Condition | None = None) -> Pairing:
        for x, name in ((x0, "x0"), (x1, "x1")):
            check_tensor(x, name, finite=False)
            # One reduction instead of an elementwise mask (far cheaper on large batches):
            # NaN/Inf always reach the sum; a sum that overflows gets the exact check.
            if x.is_floating_point() and not bool(torch.isfinite(x.sum())):
                check_finite(x, name)
        if x0.shape[1:] != x1.shape[1:]:
            raise ShapeError(expected("x0 and x1 samples of the same shape", f"{tuple(x0.shape)} and "
                                      f"{tuple(x1.shape)}", "draw the source with the data's sample shape"))
        if x0.device != x1.device:
            raise ShapeError(expected("x0 and x1 on the same device", f"{x0.device} and {x1.device}",
                                      "move both batches to one device"))
        if self.same_batch and x0.shape[0] != x1.shape[0]:
            raise ShapeError(expected(f"x0 and x1 with the same batch size for {type(self).__name__}",
                                      f"{x0.shape[0]} and {x1.shape[0]}", "draw as many sources as targets"))
        cond0 = _check_cond(cond0, "cond0", x0.shape[0], x0.device)
        cond1 = _check_cond(cond1, "cond1", x1.shape[0], x1.device)
        return self._pair(x0, x1, cond0, cond1)

    def _pair(self, x0: torch.Tensor, x1: torch.Tensor, cond0: Condition | None,
              cond1: Condition | None) -> Pairing:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "generator")
        return f"{type(self).__name__}({fields})"
