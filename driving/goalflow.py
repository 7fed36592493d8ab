r"""GoalFlow: goal-driven flow matching for multimodal trajectories (Xing et al., CVPR 2025, arXiv 2503.05689).

Read top to bottom, as the paper does:

1. **Goal scorer** (§3.2). Each goal point :math:`g_i` of the vocabulary (k-means of training end poses,
   :mod:`flowzoo.driving.vocabulary`) gets a distance score and a drivable-area score. Training (Eq. 3-4):
   cross-entropy of the distance logits against :math:`\delta^{dis}_i = \mathrm{softmax}_i(-\lVert g_i -
   g_{gt}\rVert_2)` (weight ``goal_weight``, 1.0 as in the paper) plus BCE of the DAC logits against the
   shadow-vehicle test (weight ``dac_weight``; the paper's 0.005 leaves the DAC head near chance on a few
   thousand scenes, where 0.1 learns it without hurting the distance head).
   Selection (Eq. 5): :math:`\hat g = \arg\max_i\, w_1 \log\hat\delta^{dis}_i + w_2 \log\hat\delta^{dac}_i`
   with the reference code's ``w1 = 0.1``, ``w2 = 3`` (:func:`select_goals`).
2. **Trajectory flow** (§3.3, Eq. 7-9): rectified flow on normalised trajectories
   :math:`\tau = H(\tau_{gt})` (:func:`~flowzoo.driving.vocabulary.normalize_trajectory`), source
   :math:`x_0 \sim N(0, \sigma^2 I)` with :math:`\sigma = 0.1`, :math:`x_t = (1 - t) x_0 + t\tau`, target
   velocity :math:`\tau - x_0` and an **L1** loss; goal, and scene, dropped at random (learned null embeddings)
   as classifier-free guidance trains it. The network predicts the trajectory and returns its velocity
   :math:`(\hat\tau - x_t)/(1 - t)`, and the L1 loss on the velocity is weighted by :math:`1 - t`, so that it is
   the L1 error of the predicted trajectory (why: :class:`~flowzoo.driving.nets.TrajectoryVelocity`).
   Time 0 is noise and 1 data, in flowzoo and in GoalFlow's code.
3. **Sampling** (§3.4): ``n_samples`` noises (128 in the paper) integrated with Euler in 1-20 steps on a
   uniform or shifted grid (:func:`flowzoo.core.sampling.shifted_grid`, the paper's
   :math:`t' = 1 - \alpha(1-t)/(1 + (\alpha - 1)(1-t))` with :math:`\alpha = 3`), then denormalised.
4. **Trajectory scorer** (Eq. 12): :math:`f(\hat\tau_i) = -\lambda_1 \Phi(f_{dis}(\hat\tau_i)) + \lambda_2
   \Phi(f_{pg}(\hat\tau_i))`, :math:`\Phi` min-max over the samples, :math:`f_{dis}` the end point's distance
   to the goal, :math:`f_{pg}` the path length (:func:`trajectory_scores`).
5. **Shadow trajectory** (§3.4): samples with the goal masked; when even the closest of them ends farther
   from the goal than ``shadow_threshold`` times its own progress, the goal is deemed unreliable and the
   mean shadow trajectory is the plan (:func:`shadow_fallback`). The reference code compares one shadow
   trajectory; taking the closest of several keeps a goal on any mode the scene supports.

Variants (the paper's Table 2): ``M0`` no goal, mean of the samples; ``M1`` + distance-score goal, mean;
``M2`` + DAC score in the selection, mean; ``M3`` + trajectory scorer and shadow fallback; ``gt_goal`` the
expert's end pose as goal with the trajectory scorer.

Example:
    >>> import torch
    >>> from flowzoo.driving.data import generate_scenes
    >>> arrays = generate_scenes(2, seed=0)
    >>> vocab = torch.as_tensor(arrays["trajectory"][:, -1])
    >>> cfg = GoalFlowConfig(dim=16, scorer_dim=8, heads=2)
    >>> model = GoalFlowModel(cfg, horizon=8, channels=4, size=64, vocabulary=vocab)
    >>> plan = GoalFlowPlanner(model).plan(arrays, steps=1, n_samples=4, variant="M3")
    >>> plan.trajectory.shape, plan.samples.shape, plan.goal.shape
    (torch.Size([2, 8, 3]), torch.Size([2, 4, 8, 3]), torch.Size([2, 3]))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flowzoo.core.config import option_help
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.paths import AffinePath, LinearScheduler
from flowzoo.core.sampling import ClassifierFreeGuidance, integrate, shifted_grid
from flowzoo.core.validation import check_nonnegative, check_number, check_positive, check_positive_int, \
    check_probability
from flowzoo.driving.nets import MIN_REMAINING, GoalScorer, SceneEncoder, TrajectoryVelocity
from flowzoo.driving.vocabulary import ROTATIONS, denormalize_trajectory, normalize_trajectory

__all__ = ["VARIANTS", "GoalFlowConfig", "GoalFlowModel", "GoalFlowLoss", "PlanResult", "planner_inputs",
           "select_goals", "trajectory_scores", "shadow_fallback", "GoalFlowPlanner"]

VARIANTS = ("M0", "M1", "M2", "M3", "gt_goal")
# Eq. 7-8 as the core's affine path with the linear schedule: x_t = (1 - t) x0 + t x1, target x1 - x0, computed
# in exactly that order (CondOTPath's fused form differs in the last bit, which would change trained weights).
_RECTIFIED_PATH = AffinePath(LinearScheduler())


@dataclass
class GoalFlowConfig:
    """Network and loss options of GoalFlow (``--model.<name>`` on the command line)."""

    dim: int = field(default=64, metadata=option_help("token width of every network"))
    heads: int = field(default=4, metadata=option_help("attention heads"))
    scorer_dim: int = field(default=32, metadata=option_help("token width of the goal scorer (B x V queries)"))
    scorer_layers: int = field(default=2, metadata=option_help("decoder layers of the goal scorer"))
    flow_layers: int = field(default=3, metadata=option_help("decoder layers of the trajectory velocity network"))
    joint_head: bool = field(default=True, metadata=option_help("one linear head over all pose tokens "
                                                                "(false: one per pose)"))
    vocab_size: int = field(default=256, metadata=option_help("goal points (k-means of training end poses)"))
    sigma: float = field(default=0.1, metadata=option_help("std of the flow's Gaussian source (paper: 0.1)"))
    goal_weight: float = field(default=1.0, metadata=option_help("weight of the distance-score cross-entropy"))
    dac_weight: float = field(default=0.1, metadata=option_help("weight of the DAC-score BCE (paper: 0.005)"))
    p_drop_goal: float = field(default=0.2, metadata=option_help("probability of masking the goal in training"))
    p_drop_scene: float = field(default=0.1, metadata=option_help("probability of masking BEV + ego in training"))

    def __post_init__(self) -> None:
        check_positive(self.sigma, "sigma", fix="pass e.g. --model.sigma 0.1")
        check_positive_int(self.vocab_size, "vocab_size")
        for name in ("goal_weight", "dac_weight"):
            check_nonnegative(getattr(self, name), name)
        for name in ("p_drop_goal", "p_drop_scene"):
            check_probability(getattr(self, name), name, inclusive_high=False)


class GoalFlowModel(nn.Module):
    """Scene encoder, goal scorer and trajectory velocity network, with the vocabulary as a buffer (so it is
    saved in every checkpoint). As a velocity model: ``model(x, t, bev=..., ego_state=..., command=...,
    goal=..., keep_goal=None, keep_scene=None)`` on normalised trajectories ``(B, T, 30)``."""

    def __init__(self, config: GoalFlowConfig, *, horizon: int, channels: int, size: int,
                 vocabulary: torch.Tensor):
        super().__init__()
        vocabulary = torch.as_tensor(vocabulary, dtype=torch.float32)
        if vocabulary.dim() != 2 or vocabulary.shape[1] != 3 or len(vocabulary) == 0:
            raise ShapeError(expected("a non-empty vocabulary of goal poses (V, 3)", tuple(vocabulary.shape),
                                      "build it with flowzoo.driving.vocabulary.build_vocabulary"))
        self.config, self.horizon = config, horizon
        self.encoder = SceneEncoder(channels, size, config.dim)
        self.scorer = GoalScorer(config.scorer_dim, 1, config.scorer_layers, token_dim=config.dim)
        self.velocity = TrajectoryVelocity(horizon, 3 * ROTATIONS, config.dim, config.heads, config.flow_layers,
                                           joint_head=config.joint_head)
        self.register_buffer("vocabulary", vocabulary.clone())

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, bev: torch.Tensor, ego_state: torch.Tensor,
                command: torch.Tensor, goal: torch.Tensor, keep_goal: torch.Tensor | None = None,
                keep_scene: torch.Tensor | None = None) -> torch.Tensor:
        tokens, ego = self.encoder(bev, ego_state, command)
        ones = torch.ones(len(x), dtype=torch.bool, device=x.device)
        keep_goal = ones if keep_goal is None else keep_goal
        keep_scene = ones if keep_scene is None else keep_scene
        return self.velocity(x, t, self.velocity.environment(tokens, ego), ego, goal, keep_goal, keep_scene)


class GoalFlowLoss:
    """The joint training loss: flow L1 (Eq. 9) + ``goal_weight`` · distance CE (Eq. 3) + ``dac_weight`` · DAC
    BCE (Eq. 4). The batch holds ``x1`` (expert poses (B, T, 3)), ``bev``, ``ego_state``, ``command``, ``goal``
    (B, 3) and ``dac_target`` (B, V)."""

    def __call__(self, model: GoalFlowModel, batch: dict[str, torch.Tensor],
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = model.config
        x1 = normalize_trajectory(batch["x1"])
        n = len(x1)
        tokens, ego = model.encoder(batch["bev"], batch["ego_state"], batch["command"])
        draw = lambda *shape: torch.rand(*shape, generator=generator, device=x1.device)  # noqa: E731
        x0 = cfg.sigma * torch.randn(x1.shape, generator=generator, device=x1.device)
        t = draw(n)
        path = _RECTIFIED_PATH.sample_unchecked(x0, x1, t)
        keep_goal, keep_scene = draw(n) >= cfg.p_drop_goal, draw(n) >= cfg.p_drop_scene
        v = model.velocity(path.x_t, t, model.velocity.environment(tokens, ego), ego, batch["goal"], keep_goal,
                           keep_scene)
        # L1 on the velocity weighted by 1 - t: the L1 error of the predicted trajectory (see TrajectoryVelocity)
        flow = ((v - path.dx_t) * (1 - t).clamp(min=MIN_REMAINING)[:, None, None]).abs().mean()
        distance, dac = model.scorer(model.vocabulary, tokens, ego)
        target = torch.softmax(-torch.cdist(batch["goal"][:, :2], model.vocabulary[:, :2]), -1)
        goal_ce = -(target * torch.log_softmax(distance, -1)).sum(-1).mean()
        dac_bce = F.binary_cross_entropy_with_logits(dac, batch["dac_target"])
        loss = flow + cfg.goal_weight * goal_ce + cfg.dac_weight * dac_bce
        with torch.no_grad():
            hit = (model.vocabulary[distance.argmax(-1), :2] - batch["goal"][:, :2]).norm(dim=-1)
        return loss, {"loss": loss.item(), "flow_l1": flow.item(), "goal_ce": goal_ce.item(),
                      "dac_bce": dac_bce.item(), "top1_goal_m": hit.mean().item()}


@dataclass
class PlanResult:
    """One plan per scene: ``trajectory`` (B, T, 3), every sample ``samples`` (B, N, T, 3), the ``goal`` (B, 3)
    the plans were generated towards (None without one) and method-specific ``extras``."""

    trajectory: torch.Tensor
    samples: torch.Tensor
    goal: torch.Tensor | None
    extras: dict[str, Any] = field(default_factory=dict)


def _tensor(value: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value).to(dtype)


def planner_inputs(batch: dict[str, Any]) -> dict[str, torch.Tensor | None]:
    """A planner's inputs from schema arrays (one scene from ``scene_arrays`` or a stack, uint8 BEV) or a
    :class:`~flowzoo.driving.data.SceneDataset` batch: ``bev`` (B, C, H, W) float in [0, 1], ``ego_state``
    (B, 3), ``command`` (B,) and, when present, the expert's ``truth`` (B, T, 3)."""
    missing = [key for key in ("bev", "ego_state") if key not in batch]
    if missing:
        raise ConfigError(expected("a batch with 'bev' and 'ego_state' (and 'command')", f"keys {sorted(batch)}",
                                   "pass scene arrays (flowzoo.driving.data) or a SceneDataset batch"))
    bev = batch["bev"]
    is_bytes = bev.dtype == torch.uint8 if isinstance(bev, torch.Tensor) else np.asarray(bev).dtype == np.uint8
    scale = 255.0 if is_bytes else 1.0
    bev = _tensor(bev, torch.float32) / scale
    single = bev.dim() == 3
    bev = bev[None] if single else bev
    ego = _tensor(batch["ego_state"], torch.float32).reshape(len(bev), -1)
    command = _tensor(batch.get("command", np.ones(len(bev))), torch.long).reshape(len(bev))
    truth = batch.get("x1", batch.get("trajectory"))
    if truth is not None:
        truth = _tensor(truth, torch.float32)
        truth = truth[None] if truth.dim() == 2 else truth
    return {"bev": bev, "ego_state": ego, "command": command, "truth": truth}


def select_goals(distance_logits: torch.Tensor, dac_logits: torch.Tensor, *, w_dis: float = 0.1,
                 w_dac: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """GoalFlow Eq. 5: per scene, the goal index maximising ``w_dis·log softmax(distance) + w_dac·log σ(dac)``;
    returns (indices (B,), scores (B, V)).

    Example:
        >>> dis = torch.tensor([[2.0, 1.0]]); dac = torch.tensor([[-5.0, 5.0]])
        >>> select_goals(dis, dac, w_dac=0.0)[0].tolist(), select_goals(dis, dac)[0].tolist()
        ([0], [1])
    """
    scores = w_dis * torch.log_softmax(distance_logits, -1) + w_dac * F.logsigmoid(dac_logits)
    return scores.argmax(-1), scores


def _path_length(samples: torch.Tensor) -> torch.Tensor:
    xy = F.pad(samples[..., :2], (0, 0, 1, 0))  # the current pose, the origin, first
    return (xy[..., 1:, :] - xy[..., :-1, :]).norm(dim=-1).sum(-1)


def _min_max(values: torch.Tensor) -> torch.Tensor:
    low, high = values.min(-1, keepdim=True).values, values.max(-1, keepdim=True).values
    return torch.where(high - low > 1e-9, (values - low) / (high - low).clamp(min=1e-9), torch.zeros_like(values))


def trajectory_scores(samples: torch.Tensor, goal: torch.Tensor, *, lambda_dis: float = 1.0,
                      lambda_progress: float = 0.5) -> torch.Tensor:
    """GoalFlow Eq. 12 for samples ``(B, N, T, 3)`` and goals ``(B, 3)``:
    ``−λ₁Φ(‖end − goal‖) + λ₂Φ(path length)``, Φ the min-max normalisation over the N samples; returns (B, N).

    Example:
        >>> s = torch.zeros(1, 2, 2, 3); s[0, 0, :, 0] = torch.tensor([1.0, 2.0]); s[0, 1, :, 0] = 5.0
        >>> trajectory_scores(s, torch.tensor([[2.0, 0, 0]])).tolist()
        [[0.0, -0.5]]
    """
    distance = (samples[..., -1, :2] - goal[:, None, :2]).norm(dim=-1)
    return -lambda_dis * _min_max(distance) + lambda_progress * _min_max(_path_length(samples))


def shadow_fallback(chosen: torch.Tensor, shadow: torch.Tensor, goal: torch.Tensor, threshold: float,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a plan by the mean shadow trajectory where the goal looks unreliable: the closest shadow end
    point is farther from the goal than ``threshold`` × that shadow's path length (at least 1 m).

    Args:
        chosen: (B, T, 3) the goal-driven plans.
        shadow: (B, N, T, 3) samples generated with the goal masked.
        goal: (B, 3) the goals.
        threshold: the reliability ratio.

    Returns:
        (plans (B, T, 3), used_shadow (B,) bool).

    Example:
        >>> shadow = torch.zeros(1, 1, 2, 3); shadow[..., 0] = torch.tensor([5.0, 10.0])
        >>> plan, used = shadow_fallback(torch.ones(1, 2, 3), shadow, torch.tensor([[10.0, 5.0, 0.0]]), 0.2)
        >>> used.tolist(), plan[0, -1, 0].item()
        ([True], 10.0)
    """
    ratio = (shadow[..., -1, :2] - goal[:, None, :2]).norm(dim=-1) / _path_length(shadow).clamp(min=1.0)
    used = ratio.min(-1).values > threshold
    return torch.where(used[:, None, None], shadow.mean(1), chosen), used


class GoalFlowPlanner:
    """Plans with a trained :class:`GoalFlowModel` (see the module docstring for the variants).

    Args:
        model: the trained model (eval mode is set here).
        n_samples, steps, shift: default sample count, Euler steps and time shift (1: uniform grid).
        w_dis, w_dac: goal-selection weights (Eq. 5).
        lambda_dis, lambda_progress: trajectory-scorer weights (Eq. 12).
        shadow_threshold: reliability ratio of :func:`shadow_fallback` in M3 (None: no shadow trajectory).
        goal_scale: classifier-free goal guidance :math:`v_u + w (v_g - v_u)` of the goal-driven samples through
            :class:`flowzoo.core.sampling.ClassifierFreeGuidance`, the unconditional pass masking the goal (the
            model is trained with goal dropout); 1 (default) is the plain goal-conditioned flow.
    """

    def __init__(self, model: GoalFlowModel, *, n_samples: int = 128, steps: int = 1, shift: float = 1.0,
                 w_dis: float = 0.1, w_dac: float = 3.0, lambda_dis: float = 1.0, lambda_progress: float = 0.5,
                 shadow_threshold: float | None = 0.5, goal_scale: float = 1.0):
        self.model = model.eval()
        self.n_samples, self.steps = check_positive_int(n_samples, "n_samples"), check_positive_int(steps, "steps")
        self.shift = check_positive(shift, "shift")
        self.w_dis, self.w_dac = check_number(w_dis, "w_dis"), check_number(w_dac, "w_dac")
        self.lambda_dis, self.lambda_progress = check_number(lambda_dis, "lambda_dis"), \
            check_number(lambda_progress, "lambda_progress")
        self.shadow_threshold = None if shadow_threshold is None else check_positive(shadow_threshold,
                                                                                     "shadow_threshold")
        self.goal_scale = check_nonnegative(goal_scale, "goal_scale", fix="pass 1 for no guidance, e.g. 1.5")

    @property
    def horizon(self) -> int:
        return self.model.horizon

    def settings(self) -> dict[str, Any]:
        """The planner's options and the model's config (for result files)."""
        return {"n_samples": self.n_samples, "steps": self.steps, "shift": self.shift, "w_dis": self.w_dis,
                "w_dac": self.w_dac, "lambda_dis": self.lambda_dis, "lambda_progress": self.lambda_progress,
                "shadow_threshold": self.shadow_threshold, "goal_scale": self.goal_scale,
                "model": asdict(self.model.config)}

    def _goals(self, variant: str, tokens, ego, truth) -> tuple[torch.Tensor | None, dict[str, Any]]:
        if variant == "M0":
            return None, {}
        if variant == "gt_goal":
            if truth is None:
                raise ConfigError(expected("the expert trajectory in the batch for variant 'gt_goal'", "none",
                                           "pass scene arrays with 'trajectory' (or a batch with 'x1')"))
            return truth[:, -1], {}
        distance, dac = self.model.scorer(self.model.vocabulary, tokens, ego)
        index, _ = select_goals(distance, dac, w_dis=self.w_dis, w_dac=0.0 if variant == "M1" else self.w_dac)
        return self.model.vocabulary[index], {"goal_index": index, "goal_dac": torch.sigmoid(dac).gather(
            1, index[:, None]).squeeze(1)}

    @torch.no_grad()
    def plan(self, batch: dict[str, Any], *, steps: int | None = None, n_samples: int | None = None,
             variant: str = "M3", generator: torch.Generator | None = None) -> PlanResult:
        """Plan for one scene (``scene_arrays``) or a batch of scenes; see :class:`PlanResult`."""
        if variant not in VARIANTS:
            raise ConfigError(expected(f"a variant in {VARIANTS}", repr(variant), "pass e.g. variant='M3'"))
        steps = self.steps if steps is None else check_positive_int(steps, "steps")
        n = self.n_samples if n_samples is None else check_positive_int(n_samples, "n_samples")
        inputs = planner_inputs(batch)
        device = next(self.model.parameters()).device
        tokens, ego = self.model.encoder(inputs["bev"].to(device), inputs["ego_state"].to(device),
                                         inputs["command"].to(device))
        truth = None if inputs["truth"] is None else inputs["truth"].to(device)
        goal, extras = self._goals(variant, tokens, ego, truth)
        b = len(tokens)
        shadow = variant == "M3" and self.shadow_threshold is not None
        copies = n * (2 if shadow else 1)  # goal-driven samples, then shadow samples (goal masked)
        keep_goal = torch.zeros(b, copies, dtype=torch.bool, device=device)
        if goal is not None:
            keep_goal[:, :n] = True
        repeat = lambda x: x.repeat_interleave(copies, 0)  # noqa: E731
        cond = {"env": repeat(self.model.velocity.environment(tokens, ego)), "ego": repeat(ego),
                "goal": repeat(goal if goal is not None else torch.zeros(b, 3, device=device)),
                "keep_goal": keep_goal.reshape(-1), "keep_scene": torch.ones(b * copies, dtype=torch.bool,
                                                                            device=device)}
        x0 = self.model.config.sigma * torch.randn(b * copies, self.horizon, 3 * ROTATIONS, generator=generator)
        grid = {"steps": steps} if self.shift == 1.0 else {"time_grid": shifted_grid(steps, self.shift)}
        velocity = self.model.velocity
        if goal is not None and self.goal_scale != 1.0:  # scale 1 is the conditional model itself: skip the wrapper
            velocity = ClassifierFreeGuidance(velocity, self.goal_scale, null_cond={"keep_goal": False})
        result = integrate(velocity, x0.to(device), cond=cond, **grid)
        samples = denormalize_trajectory(result.x).reshape(b, copies, self.horizon, 3)
        samples, shadow_samples = samples[:, :n], samples[:, n:]
        if variant in ("M3", "gt_goal"):
            scores = trajectory_scores(samples, goal, lambda_dis=self.lambda_dis,
                                       lambda_progress=self.lambda_progress)
            trajectory = samples[torch.arange(b), scores.argmax(-1)]
        else:
            trajectory = samples.mean(1)
        if shadow:
            trajectory, extras["used_shadow"] = shadow_fallback(trajectory, shadow_samples, goal,
                                                                self.shadow_threshold)
        extras["nfe"] = result.nfe
        return PlanResult(trajectory=trajectory.cpu(), samples=samples.cpu(),
                          goal=None if goal is None else goal.cpu(), extras=extras)
