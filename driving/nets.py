"""Networks of the GoalFlow planner (arXiv 2503.05689, §3) and its regression baselines, small enough for a CPU.

* :class:`SceneEncoder`: GoalFlow's perception is TransFuser over cameras and LiDAR; with synthetic scenes the
  input is the BEV raster itself, so a strided conv stem turns the ``(C, H, W)`` raster into a grid of BEV
  tokens ``F_bev`` (with learned positions), and an MLP turns the ego state and the driving command into
  ``F_ego``.
* :class:`GoalScorer` (§3.2): a transformer decoder (cross-attention blocks) whose queries are the goal
  vocabulary's embeddings plus ``F_ego``, attending to ``F_bev``; two heads give each goal point a distance
  logit (Eq. 3) and a drivable-area-compliance logit (Eq. 4).
* :class:`TrajectoryVelocity` (§3.3): the rectified-flow velocity ``v(x_t, t | scene, goal)`` over normalised
  trajectories ``(T, 30)``: one token per pose, plus a time token, a sinusoidal goal token, an ego token and
  a few environment tokens (learned queries that attended to the BEV tokens), through transformer layers.
  Condition dropout (as classifier-free guidance trains it) swaps the goal token, or the ego and environment
  tokens, for learned null embeddings, so the same network also gives the goal-free "shadow" trajectory and
  GoalFlow's M0.

Flow time runs from 0 (noise) to 1 (data), as everywhere in flowzoo; GoalFlow's code uses the same direction.
The rationale for sharing one scene encoder between the scorer and the flow: the paper shares TransFuser's
BEV feature between its goal and trajectory modules too.

Example:
    >>> import torch
    >>> enc = SceneEncoder(channels=4, size=64, dim=32)
    >>> tokens, ego = enc(torch.zeros(2, 4, 64, 64), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    >>> tokens.shape, ego.shape
    (torch.Size([2, 64, 32]), torch.Size([2, 32]))
"""

from __future__ import annotations

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.nets import SinusoidalTimeEmbedding
from flowzoo.core.validation import check_int
from flowzoo.driving.scenes import COMMANDS
from flowzoo.driving.vocabulary import SCALE

__all__ = ["EGO_SCALE", "MIN_REMAINING", "SceneEncoder", "PoseEmbedding", "CrossAttentionBlock", "GoalScorer", "TrajectoryVelocity"]

EGO_SCALE = (10.0, 2.0, 0.5)
MIN_REMAINING = 0.05  # floor of 1 - t when turning a trajectory prediction into a velocity  # typical magnitudes of speed (m/s), acceleration (m/s²) and yaw rate (rad/s)


def _check_dims(dim: int, heads: int, layers: int) -> None:
    check_int(dim, "dim", low=8, fix="pass e.g. dim=64")
    check_int(heads, "heads", low=1)
    check_int(layers, "layers", low=1)
    if dim % heads:
        raise ConfigError(expected("dim divisible by heads", f"dim={dim}, heads={heads}", "pass e.g. dim=64, heads=4"))


class SceneEncoder(nn.Module):
    """BEV raster ``(B, C, H, W)`` in [0, 1] -> BEV tokens ``(B, (H/8)·(W/8), dim)``; ego state ``(B, 3)`` and
    command ``(B,)`` -> ego feature ``(B, dim)``."""

    def __init__(self, channels: int, size: int, dim: int = 64):
        super().__init__()
        self.channels = check_int(channels, "channels", low=1)
        self.size = check_int(size, "raster size", low=8)
        if self.size % 8:
            raise ConfigError(expected("a raster size divisible by 8", size, "rasterise at e.g. 64 pixels"))
        width = max(dim // 2, 8)
        self.stem = nn.Sequential(  # 4x4 patches, then one strided 3x3 conv: 1/8 of the raster per side
            nn.Conv2d(channels, width, 4, stride=4), nn.GELU(),
            nn.Conv2d(width, dim, 3, stride=2, padding=1), nn.GELU(), nn.Conv2d(dim, dim, 1))
        self.positions = nn.Parameter(torch.randn((size // 8) ** 2, dim) * 0.02)
        self.commands = nn.Embedding(len(COMMANDS), dim)
        self.ego = nn.Sequential(nn.Linear(3, dim), nn.GELU(), nn.Linear(dim, dim))
        self.register_buffer("ego_scale", torch.tensor(EGO_SCALE), persistent=False)

    def forward(self, bev: torch.Tensor, ego_state: torch.Tensor, command: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if bev.dim() != 4 or bev.shape[1:] != (self.channels, self.size, self.size):
            raise ShapeError(expected(f"bev of shape (B, {self.channels}, {self.size}, {self.size})",
                                      tuple(bev.shape), "rasterise the scenes as the training scenes were"))
        tokens = self.stem(bev).flatten(2).transpose(1, 2) + self.positions
        ego = self.ego(ego_state / self.ego_scale) + self.commands(command.long())
        return tokens, ego


class PoseEmbedding(nn.Module):
    """Sinusoidal features of goal poses ``(..., 3)`` (x/60, y/15 and heading, GoalFlow's goal embedding)
    followed by a linear map to ``dim``."""

    def __init__(self, dim: int, frequencies: int = 16):
        super().__init__()
        self.features = SinusoidalTimeEmbedding(2 * frequencies, max_period=100.0, scale=10.0)
        self.linear = nn.Linear(3 * 2 * frequencies, dim)
        self.register_buffer("scale", torch.tensor([SCALE[0], SCALE[1], 1.0]), persistent=False)

    def forward(self, poses: torch.Tensor) -> torch.Tensor:
        scaled = (poses / self.scale).reshape(-1)
        features = self.features(scaled).reshape(*poses.shape[:-1], -1)
        return self.linear(features)


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention of queries to tokens, then an MLP, both residual (a transformer decoder layer
    without its self-attention: the goal scorer's queries score goals independently, and attention among
    hundreds of goal queries would cost more than the rest of the planner)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_query, self.norm_tokens, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.heads = heads
        self.query, self.key_value, self.project = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        # Plain matmul attention: with a few dozen keys it is several times faster on the CPU than the fused
        # scaled-dot-product kernel.
        q = self.query(self.norm_query(queries)).unflatten(-1, (self.heads, -1))  # (B, V, H, d)
        k, v = self.key_value(self.norm_tokens(tokens)).unflatten(-1, (2, self.heads, -1)).unbind(2)
        weights = torch.softmax(torch.einsum("bvhd,bshd->bhvs", q * q.shape[-1] ** -0.5, k), -1)
        queries = queries + self.project(torch.einsum("bhvs,bshd->bvhd", weights, v).flatten(-2))
        return queries + self.mlp(self.norm_mlp(queries))


class GoalScorer(nn.Module):
    """GoalFlow's goal-point scorer: ``(vocabulary (V, 3), BEV tokens, ego feature) -> (distance logits (B, V),
    DAC logits (B, V))``."""

    def __init__(self, dim: int = 32, heads: int = 1, layers: int = 2, *, token_dim: int | None = None):
        super().__init__()
        _check_dims(dim, heads, layers)
        token_dim = dim if token_dim is None else check_int(token_dim, "token_dim", low=1)
        # The scorer runs B x V queries (V in the hundreds), so it works at its own, smaller width.
        self.tokens_in, self.ego_in = nn.Linear(token_dim, dim), nn.Linear(token_dim, dim)
        self.embed = PoseEmbedding(dim)
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, heads) for _ in range(layers))
        self.distance_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))
        self.dac_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def forward(self, vocabulary: torch.Tensor, tokens: torch.Tensor, ego: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.embed(vocabulary)[None] + self.ego_in(ego)[:, None]  # F_vocab + F_ego, (B, V, D)
        tokens = self.tokens_in(tokens)
        for block in self.blocks:
            out = block(out, tokens)
        return self.distance_head(out).squeeze(-1), self.dac_head(out).squeeze(-1)


class TrajectoryVelocity(nn.Module):
    r"""The flow's velocity network over normalised trajectories ``(B, T, width)``.

    GoalFlow's ``F_env = transformer(Q, F_bev + F_ego)``: :meth:`environment` lets ``env_tokens`` learned
    queries attend to the BEV tokens once per scene (so planning many samples of one scene pays for it once).
    :meth:`forward` ``(x, t, env, ego, goal, keep_goal, keep_scene)`` then runs self-attention over one token
    per pose, a time token, a sinusoidal goal token, the ego token and the environment tokens. ``keep_goal`` /
    ``keep_scene`` ``(B,)`` booleans (False: learned null embeddings replace the goal, or the ego and
    environment tokens: GoalFlow's condition dropout).

    The network predicts the clean trajectory :math:`\hat x_1` and returns the velocity
    :math:`(\hat x_1 - x_t) / (1 - t)` (the rectified-flow velocity of that prediction, with :math:`1 - t`
    floored at :data:`MIN_REMAINING`). Predicting the velocity directly asks the network to reproduce the
    source noise :math:`-x_0` inside its target to within centimetres (x is divided by 60), which a small
    network learns slowly; single samples then jitter from pose to pose and fail the comfort bounds. With the
    trajectory prediction (the x-prediction of Li & He 2025, arXiv 2511.13720) the noise cancels exactly.
    ``joint_head``: one linear map from all pose tokens to the whole trajectory instead of one per token; it
    couples the poses, and its samples are smoother and closer to the expert's.
    """

    def __init__(self, horizon: int, width: int, dim: int = 64, heads: int = 4, layers: int = 3,
                 env_tokens: int = 8, joint_head: bool = False):
        super().__init__()
        _check_dims(dim, heads, layers)
        self.horizon, self.width = check_int(horizon, "horizon", low=1), check_int(width, "width", low=1)
        self.env_queries = nn.Parameter(torch.randn(check_int(env_tokens, "env_tokens", low=1), dim) * 0.02)
        self.env_block = CrossAttentionBlock(dim, heads)
        self.encode = nn.Linear(width, dim)
        self.positions = nn.Parameter(torch.randn(horizon, dim) * 0.02)
        self.time = nn.Sequential(SinusoidalTimeEmbedding(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.goal = PoseEmbedding(dim)
        self.null_goal = nn.Parameter(torch.zeros(dim))
        self.null_ego = nn.Parameter(torch.zeros(dim))
        self.null_env = nn.Parameter(torch.randn(env_tokens, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.joint_head = bool(joint_head)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width)) if not joint_head else \
            nn.Sequential(nn.Flatten(1), nn.LayerNorm(horizon * dim), nn.Linear(horizon * dim, horizon * width),
                          nn.Unflatten(1, (horizon, width)))

    def environment(self, tokens: torch.Tensor, ego: torch.Tensor) -> torch.Tensor:
        """Environment tokens ``(B, env_tokens, dim)`` from BEV tokens and the ego feature."""
        return self.env_block(self.env_queries[None] + ego[:, None], tokens)

    def forward(self, x: torch.Tensor, t: torch.Tensor, env: torch.Tensor, ego: torch.Tensor,
                goal: torch.Tensor, keep_goal: torch.Tensor, keep_scene: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (self.horizon, self.width):
            raise ShapeError(expected(f"trajectories of shape (B, {self.horizon}, {self.width})", tuple(x.shape),
                                      "use the horizon the planner was trained on"))
        keep_goal, keep_scene = keep_goal[:, None].to(x.dtype), keep_scene[:, None].to(x.dtype)
        goal_token = keep_goal * self.goal(goal) + (1 - keep_goal) * self.null_goal
        ego_token = keep_scene * ego + (1 - keep_scene) * self.null_ego
        env = keep_scene[:, :, None] * env + (1 - keep_scene[:, :, None]) * self.null_env
        sequence = torch.cat([self.time(t)[:, None], goal_token[:, None], ego_token[:, None], env,
                              self.encode(x) + self.positions], 1)
        trajectory = self.out(self.blocks(sequence)[:, -self.horizon:])
        return (trajectory - x) / (1 - t).clamp(min=MIN_REMAINING)[:, None, None]
