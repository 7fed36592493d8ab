"""Learning-rate schedule: linear warm-up, then cosine decay to a floor.

With base rate :math:`\\eta`, ``W`` warm-up steps, ``T`` total steps and floor ratio :math:`r`, the
rate used for the update with 0-based index ``s`` is

.. math::

    \\eta_s = \\eta \\cdot \\begin{cases}
        (s + 1) / W & s < W \\\\
        r + (1 - r)\\,\\tfrac12\\bigl(1 + \\cos(\\pi p_s)\\bigr),\\quad
        p_s = \\min\\!\\bigl(1, \\tfrac{s - W}{\\max(1, T - W)}\\bigr) & s \\ge W
    \\end{cases}

so the first update already moves (no zero-rate step), the peak :math:`\\eta` is reached at
``s = W - 1`` and held at ``s = W``, and the rate reaches the floor :math:`r\\eta` at ``s = T``, just
after the last update (so no update is wasted at rate 0 when :math:`r = 0`)
(cosine annealing: Loshchilov & Hutter, "SGDR", ICLR 2017, eq. 5; warm-up: Goyal et al. 2017).
``min_lr_ratio = 1`` gives a constant rate after warm-up.

The schedule is a pure function of the step, so resuming needs nothing but the step.

Example:
    >>> schedule = WarmupCosineSchedule(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    >>> schedule.factor(0), schedule.factor(9), schedule.factor(10), schedule.factor(60), schedule.factor(110)
    (0.1, 1.0, 1.0, 0.55, 0.1)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flowzoo.core.errors import ConfigError, expected

__all__ = ["WarmupCosineSchedule", "warmup_cosine_factor"]


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate for the update with 0-based index ``step`` (see module doc)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class WarmupCosineSchedule:
    """Linear warm-up then cosine decay; sets each parameter group's ``lr`` from its ``initial_lr``.

    Args:
        warmup_steps: updates with a linearly rising rate (0: none).
        total_steps: length of the whole run; the cosine ends at its last update.
        min_lr_ratio: the floor, as a fraction of the base rate, in [0, 1].
    """

    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise ConfigError(expected("warmup_steps >= 0 and total_steps >= 1",
                                       f"warmup_steps={self.warmup_steps}, total_steps={self.total_steps}",
                                       "set non-negative step counts"))
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(expected("min_lr_ratio in [0, 1]", self.min_lr_ratio,
                                       "use 0 to decay to zero, 1 for a constant rate"))

    def factor(self, step: int) -> float:
        """Multiplier of the base rate for the update with 0-based index ``step``."""
        return warmup_cosine_factor(step, self.warmup_steps, self.total_steps, self.min_lr_ratio)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's rate for update ``step``; returns the first group's rate."""
        factor = self.factor(step)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor
        return optimizer.param_groups[0]["lr"]
