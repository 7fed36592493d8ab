"""Distributed data-parallel helpers for runs launched with ``torchrun``.

``torchrun --nproc_per_node N script.py`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment. :func:`init_distributed`
reads them and joins the process group (NCCL when CUDA is available, Gloo otherwise); a plain
``python script.py`` run is a world of one and none of this costs anything. The
:class:`~flowzoo.core.training.Trainer` calls these itself, so an entrypoint needs no change to run
under ``torchrun``.

Before the group exists, :func:`rank` and :func:`world_size` read the launcher's environment, so
"only rank 0 prints" works at any point of a script.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "is_distributed",
    "rank",
    "local_rank",
    "world_size",
    "is_main_process",
    "init_distributed",
    "cleanup",
    "barrier",
    "all_gather_object",
    "all_reduce_mean",
    "all_reduce_max",
    "launched_with_torchrun",
]


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def rank() -> int:
    """This process's global rank (0 in a single-process run)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its machine (selects the GPU)."""
    return _env_int("LOCAL_RANK", 0)


def world_size() -> int:
    """Number of processes (1 in a single-process run)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def is_main_process() -> bool:
    """True on rank 0: the process that logs, evaluates and writes checkpoints."""
    return rank() == 0


def launched_with_torchrun() -> bool:
    """True when the environment describes a multi-process launch (``WORLD_SIZE`` > 1)."""
    return _env_int("WORLD_SIZE", 1) > 1 and "RANK" in os.environ


def init_distributed(backend: str | None = None, device: str | torch.device | None = None) -> bool:
    """Join the process group described by the environment; returns True if this call created it.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; default NCCL when ``device`` is CUDA (or, with no
            device, when CUDA is available) and Gloo otherwise.
        device: the device the run trains on; with CUDA, the process binds to ``cuda:LOCAL_RANK``.

    Does nothing (returns False) in a single-process run or when the group already exists.
    """
    if not launched_with_torchrun() or not dist.is_available() or dist.is_initialized():
        return False
    use_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"), init_method="env://")
    return True


def cleanup() -> None:
    """Leave and destroy the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single-process run)."""
    if is_distributed():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, indexed by rank (``[obj]`` in a single-process run)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (a copy; the input is untouched)."""
    value = value.detach().clone()
    if is_distributed():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


def all_reduce_max(value: int) -> int:
    """The largest of every rank's ``value`` (the value itself outside a process group)."""
    if not is_distributed():
        return value
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())
