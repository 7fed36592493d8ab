"""Shared by the learning tests: a small flow-matching velocity field trained on 8 Gaussians -> moons."""

from __future__ import annotations

import torch

from flowzoo.core.data import sample_toy
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.objectives import FlowMatchingLoss


def train_fm_moons(steps: int = 1500, seed: int = 0, hidden: int = 64, batch: int = 256,
                   lr: float = 2e-3) -> torch.nn.Module:
    """Train ``MLPVelocity(2, hidden, 3)`` with I-CFM from 8 Gaussians to moons; returns it in eval mode."""
    torch.manual_seed(seed)
    model = MLPVelocity(2, hidden=hidden, depth=3)
    objective, opt = FlowMatchingLoss(), torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pair = {"x0": sample_toy("8gaussians", batch, generator=gen), "x1": sample_toy("moons", batch, generator=gen)}
        loss, _ = objective(model, pair)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
