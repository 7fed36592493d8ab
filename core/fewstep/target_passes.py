"""How MeanFlow's target passes call a model (:mod:`flowzoo.core.fewstep.meanflow`): the module inside a DDP wrapper, a
functional view with cloned buffers, the same dropout masks in every pass, and the indices a derivative pass runs on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

__all__ = ["unwrap_parallel", "functional_model", "has_active_dropout", "padded_gap_index", "rng_state",
           "set_rng_state"]

Tensor = torch.Tensor


def unwrap_parallel(model: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """The module inside DistributedDataParallel / DataParallel: forward-mode AD must not go through their hooks."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def functional_model(model: Callable[..., Tensor],
                     cond: Mapping[str, Tensor]) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``(x, s, t) -> u`` over the model; modules get cloned buffers so a second pass cannot alter the real ones."""
    model = unwrap_parallel(model)
    if isinstance(model, nn.Module):
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        if buffers:
            params = dict(model.named_parameters())
            return lambda x, s, t: torch.func.functional_call(model, (params, buffers), (x, s, t), dict(cond))
    return lambda x, s, t: model(x, s, t, **cond)


def has_active_dropout(model: object) -> bool:
    return isinstance(model, nn.Module) and any(
        isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0 for m in model.modules())


def padded_gap_index(gap: Tensor, multiple: int = 8) -> Tensor:
    """Indices of the samples with t > s, padded with s = t samples (whose target is v whatever du/ds is) to a
    multiple of ``multiple``: the derivative pass then sees few distinct batch sizes, and cuDNN, which plans its
    convolutions per shape, re-plans rarely (a plan for each of up to B sizes made the first steps slow)."""
    inside = gap.nonzero()[:, 0]
    wanted = min(gap.numel(), -(-inside.numel() // multiple) * multiple)
    if wanted > inside.numel():
        inside = torch.cat([inside, (~gap).nonzero()[:wanted - inside.numel(), 0]])
    return inside


def rng_state(like: Tensor) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(like.device) if like.device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def set_rng_state(like: Tensor, state: tuple[Tensor, Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], like.device)
