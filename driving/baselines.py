"""The baselines of GoalFlow's Table 1 (arXiv 2503.05689; NAVSIM, arXiv 2406.15349): constant velocity, an
ego-state MLP and a TransFuser-like single-trajectory regressor, each with the planner call shape of
:class:`~flowzoo.driving.goalflow.GoalFlowPlanner` (``plan(batch, *, steps, n_samples, variant, generator)``).

* **Constant velocity**: the ego keeps its current speed straight ahead (NAVSIM's ``ConstantVelocityAgent``).
* **Ego MLP** (NAVSIM's ``EgoStatusMLPAgent``): ego state and driving command -> the 8 poses, no scene input.
* **Regressor**: the BEV + ego encoder GoalFlow uses (:class:`~flowzoo.driving.nets.SceneEncoder`), attention
  pooling over the BEV tokens, then an MLP to the 8 poses; TransFuser's planning head without its perception
  losses.

The regressors predict poses scaled as GoalFlow's normalisation scales them (``x/60, y/15, θ``) and train with
an L1 loss (:class:`RegressionLoss`), as TransFuser does. They are deterministic: their ``samples`` hold the
one plan. Flow time is not involved here.

Example:
    >>> import torch
    >>> from flowzoo.driving.data import generate_scenes
    >>> arrays = generate_scenes(2, seed=0)
    >>> ConstantVelocityPlanner().plan(arrays).trajectory.shape
    torch.Size([2, 8, 3])
    >>> loss, metrics = RegressionLoss()(EgoMLP(horizon=8), {"x1": torch.zeros(2, 8, 3),
    ...     "ego_state": torch.zeros(2, 3), "command": torch.zeros(2, dtype=torch.long)})
    >>> sorted(metrics)
    ['l1_m', 'loss']
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from flowzoo.core.validation import check_int
from flowzoo.driving.goalflow import PlanResult, planner_inputs
from flowzoo.driving.nets import EGO_SCALE, SceneEncoder
from flowzoo.driving.scenes import COMMANDS, DT, HORIZON
from flowzoo.driving.vocabulary import SCALE

__all__ = ["POSE_SCALE", "ConstantVelocityPlanner", "EgoMLP", "TrajectoryRegressor", "RegressionLoss",
           "RegressionPlanner"]

POSE_SCALE = (SCALE[0], SCALE[1], 1.0)  # regression targets: x/60, y/15, heading in radians


class ConstantVelocityPlanner:
    """Drive straight ahead at the current speed for ``horizon`` poses ``DT`` apart."""

    def __init__(self, horizon: int = HORIZON, dt: float = DT):
        self.horizon, self.dt = check_int(horizon, "horizon", low=1), float(dt)

    def plan(self, batch: dict[str, Any], *, steps: int | None = None, n_samples: int | None = None,
             variant: str | None = None, generator: torch.Generator | None = None) -> PlanResult:
        speed = planner_inputs(batch)["ego_state"][:, 0].clamp(min=0.0)
        times = self.dt * torch.arange(1, self.horizon + 1, dtype=torch.float32)
        trajectory = torch.zeros(len(speed), self.horizon, 3)
        trajectory[..., 0] = speed[:, None] * times
        return PlanResult(trajectory=trajectory, samples=trajectory[:, None], goal=None, extras={"nfe": 0})


def _head(dim: int, horizon: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, 2 * dim), nn.GELU(),
                         nn.Linear(2 * dim, horizon * 3))


class EgoMLP(nn.Module):
    """Ego state ``(B, 3)`` and command ``(B,)`` -> scaled poses ``(B, horizon, 3)``."""

    uses_scene = False

    def __init__(self, horizon: int = HORIZON, dim: int = 128):
        super().__init__()
        self.horizon = check_int(horizon, "horizon", low=1)
        self.commands = nn.Embedding(len(COMMANDS), dim)
        self.ego = nn.Linear(3, dim)
        self.head = _head(dim, horizon)
        self.register_buffer("ego_scale", torch.tensor(EGO_SCALE), persistent=False)

    def forward(self, *, ego_state: torch.Tensor, command: torch.Tensor, **_: Any) -> torch.Tensor:
        feature = self.ego(ego_state / self.ego_scale) + self.commands(command.long())
        return self.head(torch.relu(feature)).reshape(-1, self.horizon, 3)


class TrajectoryRegressor(nn.Module):
    """BEV raster + ego state + command -> scaled poses ``(B, horizon, 3)`` (TransFuser-like, one trajectory)."""

    uses_scene = True

    def __init__(self, *, channels: int, size: int, horizon: int = HORIZON, dim: int = 64, heads: int = 4):
        super().__init__()
        self.horizon = check_int(horizon, "horizon", low=1)
        self.encoder = SceneEncoder(channels, size, dim)
        self.pool = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.head = _head(2 * dim, horizon)

    def forward(self, *, bev: torch.Tensor, ego_state: torch.Tensor, command: torch.Tensor, **_: Any,
                ) -> torch.Tensor:
        tokens, ego = self.encoder(bev, ego_state, command)
        pooled = self.pool(ego[:, None], tokens, tokens, need_weights=False)[0][:, 0]
        return self.head(torch.cat([pooled, ego], -1)).reshape(-1, self.horizon, 3)


class RegressionLoss:
    """L1 between a regressor's scaled poses and the expert's ``x1`` (B, T, 3), scaled the same way."""

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor],
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        scale = batch["x1"].new_tensor(POSE_SCALE)
        predicted = model(**{k: v for k, v in batch.items() if k in ("bev", "ego_state", "command")})
        loss = (predicted - batch["x1"] / scale).abs().mean()
        with torch.no_grad():
            metres = ((predicted - batch["x1"] / scale)[..., :2] * scale[:2]).norm(dim=-1).mean()
        return loss, {"loss": loss.item(), "l1_m": metres.item()}


class RegressionPlanner:
    """Plans with a trained :class:`EgoMLP` or :class:`TrajectoryRegressor`."""

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        self.horizon = model.horizon

    @torch.no_grad()
    def plan(self, batch: dict[str, Any], *, steps: int | None = None, n_samples: int | None = None,
             variant: str | None = None, generator: torch.Generator | None = None) -> PlanResult:
        inputs = planner_inputs(batch)
        device = next(self.model.parameters()).device
        scaled = self.model(**{k: inputs[k].to(device) for k in ("bev", "ego_state", "command")})
        trajectory = (scaled * scaled.new_tensor(POSE_SCALE)).cpu()
        return PlanResult(trajectory=trajectory, samples=trajectory[:, None], goal=None, extras={"nfe": 1})
