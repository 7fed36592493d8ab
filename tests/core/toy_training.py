"""Shared by the learning tests: a small flow-matching velocity field trained on 8 Gaussians -> moons."""

from __future__ import annotations

import torch

from flowzoo.core.data import sample_toy
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.objectives import FlowMatchingLoss


def train_fm_moons(steps: int = 1500, seed: int = 0, hidden: int = 64, batch: int = 256,
                   lr: float = 2e-3, objective=None) -> torch.nn.Module:
    """Train ``MLPVelocity(2, hidden, 3)`` with I-CFM (or ``objective``) from 8 Gaussians to moons."""
    torch.manual_seed(seed)
    model = MLPVelocity(2, hidden=hidden, depth=3)
    gen = torch.Generator().manual_seed(seed)
    return fit(model, objective or FlowMatchingLoss(), steps, lambda: {
        "x0": sample_toy("8gaussians", batch, generator=gen), "x1": sample_toy("moons", batch, generator=gen)}, lr=lr)


def fit(model: torch.nn.Module, objective, steps: int, next_batch, *, lr: float = 2e-3,
        generator: torch.Generator | None = None) -> torch.nn.Module:
    """Plain Adam loop: ``steps`` updates of ``objective(model, next_batch(), generator=generator)``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss, _ = objective(model, next_batch(), generator=generator)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def moons_pool(size: int = 20000) -> torch.Tensor:
    """A fixed set of moons samples that learning tests draw their batches from."""
    return sample_toy("moons", size, seed=1)


def pool_batches(data: torch.Tensor, generator: torch.Generator, batch: int = 256):
    """``next_batch`` for :func:`fit`: random rows of ``data`` as ``{"x1": ...}`` (Gaussian source)."""
    return lambda: {"x1": data[torch.randint(0, len(data), (batch,), generator=generator)]}
