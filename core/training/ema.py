"""Exponential moving average (EMA) of a model's parameters.

After every optimiser update the shadow copy moves towards the trained weights,

.. math::  \\bar\\theta \\leftarrow \\mu\\,\\bar\\theta + (1 - \\mu)\\,\\theta ,

with decay :math:`\\mu \\in (0, 1)` (Polyak & Juditsky 1992; used for sampling in every modern flow and
diffusion model, e.g. Karras et al., EDM, 2022). Buffers (e.g. normalisation statistics) are copied,
not averaged. The shadow is a full module (:attr:`EMA.module`), so it can be evaluated directly.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> ema = EMA(net, decay=0.9)
    >>> with torch.no_grad():
    ...     _ = net.weight.add_(1.0)
    >>> before = ema.module.weight.clone()
    >>> ema.update(net)
    >>> torch.allclose(ema.module.weight, 0.9 * before + 0.1 * net.weight)
    True
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, expected

__all__ = ["EMA", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the module inside a DistributedDataParallel / DataParallel / compiled wrapper."""
    wrappers: tuple[type, ...] = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while True:
        if isinstance(model, wrappers):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # torch.compile's wrapper
        else:
            return model


class EMA:
    """A shadow copy of ``model`` updated as ``shadow = decay * shadow + (1 - decay) * param``.

    With ``step`` given to :meth:`update`, the decay warms up as ``min(decay, (1 + step) / (10 + step))``
    (the TensorFlow / timm convention), so that a short run's EMA is not stuck at the initial weights:
    with a constant 0.999 the shadow still holds 90 % of the random initialisation after 100 updates.

    Args:
        model: the trained module (wrappers such as DDP are unwrapped).
        decay: the EMA decay :math:`\\mu` in (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(expected("an EMA decay in (0, 1)", decay, "use e.g. 0.999, or 0 in the config to disable EMA"))
        self.decay = float(decay)
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """Move the shadow towards ``model``'s weights; ``step`` (0-based update index) enables the warm-up."""
        decay = self.decay if step is None else min(self.decay, (1.0 + step) / (10.0 + step))
        source = unwrap_model(model)
        shadow_params = dict(self.module.named_parameters())
        for name, param in source.named_parameters():
            target = shadow_params[name]
            if param.dtype.is_floating_point:
                target.lerp_(param.detach(), 1.0 - decay)
            else:
                target.copy_(param)
        shadow_buffers = dict(self.module.named_buffers())
        for name, buffer in source.named_buffers():
            shadow_buffers[name].copy_(buffer)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The shadow module's state dict."""
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore the shadow weights (strict)."""
        self.module.load_state_dict(state)
