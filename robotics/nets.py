r"""Networks of the robot policies: observation encoders and a conditional 1-D temporal U-Net over action chunks.

* :class:`PointCloudEncoder` — DP3's point encoder (Ze et al., "3D Diffusion Policy", arXiv 2403.03954, §3.2;
  used unchanged by MP1, arXiv 2507.10543): a per-point MLP 3→64→128→256 with LayerNorm and ReLU, max-pooling
  over the points, then a linear projection to ``out_dim`` with LayerNorm.
* :class:`StateEncoder` — an MLP for low-dimensional vectors (Meta-World's 39-d state, proprioception).
* :class:`ObservationEncoder` — one encoder per observation key, applied to every step of the observation
  history; the per-step features are concatenated and flattened over the ``n_obs_steps`` steps into one
  global condition vector (DP3 / Diffusion Policy's ``obs_as_global_cond``).
* :class:`ConditionalUnet1D` — Diffusion Policy's temporal U-Net (Chi et al., arXiv 2303.04137, §3.2 "CNN-based"):
  residual blocks of two Conv1d–GroupNorm–Mish layers (kernel 5) along the horizon, FiLM-modulated
  (per-channel scale and bias) by [time embedding, global condition]; down-sampling by strided convolutions,
  up-sampling by transposed ones, skip connections.

The U-Net is both a **velocity model** and a **flow map** (flowzoo conventions, time 0 = noise, 1 = data):

* ``net(x, t, cond=g)`` — velocity at time t; the time embedding is that of t.
* ``net(x, s, t, cond=g)`` — average velocity over [s, t] for the state x at time s. The embedding is the sum
  of an embedding of the state time s and one of the gap t − s, like MP1's ``timestep_embed + rs_embed``.
  MP1 (data at 0, noise at 1) embeds its pair (t, r) with the state at its later time t; in flowzoo time the
  state time is s = 1 − t_MP1 and the gap t − s = t_MP1 − r_MP1, so the information is the same. The gap is formed
  inside the network, so the MeanFlow JVP over (x, s, t) with tangent (v, 1, 0) is the total derivative d/ds
  (see :mod:`flowzoo.core.fewstep.meanflow`). With s = t the gap embedding is that of 0, so a flow map called with equal
  times is its own instantaneous velocity.

Tiny horizons. Each down-sampling halves the horizon; the chunk is padded at its end (repeating the last
action) to a multiple of 2^(levels − 1) and the output is cropped back, so horizon 1, 3 or 4 work with three
levels. The features of the down blocks of the last forward pass (every level but the deepest, MP1's choice
for its dispersive loss) are kept in ``net.last_features``; the mid-block output in ``net.last_mid_features``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, DTypeError, ShapeError, expected
from flowzoo.core.validation import check_int, check_positive_int
from flowzoo.core.nets import SinusoidalTimeEmbedding

__all__ = ["PointCloudEncoder", "StateEncoder", "ObservationEncoder", "ConditionalUnet1D", "TimeEmbedding"]

Tensor = torch.Tensor
POINT_KEYS = ("point_cloud",)


class PointCloudEncoder(nn.Module):
    """DP3's PointNet: (B, N, 3) xyz → (B, out_dim). Permutation-invariant (max-pool over points)."""

    def __init__(self, out_dim: int = 64, hidden: Sequence[int] = (64, 128, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for size in hidden:
            layers += [nn.Linear(width, check_positive_int(size, "hidden")), nn.LayerNorm(size), nn.ReLU()]
            width = size
        self.point_mlp = nn.Sequential(*layers)
        self.projection = nn.Sequential(nn.Linear(width, check_positive_int(out_dim, "out_dim")), nn.LayerNorm(out_dim))
        self.out_dim = out_dim

    def forward(self, points: Tensor) -> Tensor:
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ShapeError(expected("a point cloud (B, N, 3)", f"shape {tuple(points.shape)}",
                                      "pass xyz points, channels last"))
        features = self.point_mlp(points)
        # amax skips the argmax that max(dim=1) also computes: much faster pooling, the same values. With autograd
        # on, max keeps its backward (the gradient to one point per channel), which is also the faster one.
        pooled = features.max(dim=1).values if torch.is_grad_enabled() else features.amax(dim=1)
        return self.projection(pooled)


class StateEncoder(nn.Module):
    """An MLP (B, in_dim) → (B, out_dim) with ReLU (DP3's ``state_mlp``)."""

    def __init__(self, in_dim: int, out_dim: int = 64, hidden: Sequence[int] = (64,)):
        super().__init__()
        layers: list[nn.Module] = []
        width = check_positive_int(in_dim, "in_dim")
        for size in hidden:
            layers += [nn.Linear(width, check_positive_int(size, "hidden")), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, check_positive_int(out_dim, "out_dim")))
        self.mlp = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class ObservationEncoder(nn.Module):
    """Encode an observation history ``{key: (B, n_obs_steps, *shape)}`` into one vector (B, out_dim).

    Point clouds (key ``"point_cloud"``) go through a :class:`PointCloudEncoder`, every other key (a vector, e.g.
    ``"state"`` or ``"agent_pos"``) through its own :class:`StateEncoder`. Per step the features are concatenated
    in sorted key order; the steps are then concatenated, so ``out_dim = n_obs_steps * sum(feature sizes)``.

    Args:
        obs_shapes: shape of one observation per key (an :class:`~flowzoo.robotics.envs.EnvSpec`'s ``obs_shapes``).
        n_obs_steps: length of the observation history.
        point_dim, state_dim: feature size of each point-cloud / state key (MP1: 64 and 64).
        state_hidden: hidden widths of the state MLPs.
    """

    def __init__(self, obs_shapes: Mapping[str, Sequence[int]], n_obs_steps: int = 2, point_dim: int = 64,
                 state_dim: int = 64, state_hidden: Sequence[int] = (64,)):
        super().__init__()
        if not isinstance(obs_shapes, Mapping) or not obs_shapes:
            raise ConfigError(expected("obs_shapes as a non-empty mapping key -> shape", repr(obs_shapes),
                                       'pass e.g. {"state": (39,)}'))
        self.n_obs_steps = check_positive_int(n_obs_steps, "n_obs_steps")
        self.obs_shapes = {str(k): tuple(int(n) for n in v) for k, v in sorted(obs_shapes.items())}
        encoders: dict[str, nn.Module] = {}
        for key, shape in self.obs_shapes.items():
            if key in POINT_KEYS:
                if len(shape) != 2 or shape[1] != 3:
                    raise ConfigError(expected(f'obs_shapes["{key}"] as (N, 3)', shape, "store xyz points"))
                encoders[key] = PointCloudEncoder(point_dim)
            else:
                if len(shape) != 1:
                    raise ConfigError(expected(f'obs_shapes["{key}"] as a vector shape (D,)', shape,
                                               "flatten the observation or add an encoder for it"))
                encoders[key] = StateEncoder(shape[0], state_dim, state_hidden)
        self.encoders = nn.ModuleDict(encoders)
        self.step_dim = sum(e.out_dim for e in self.encoders.values())
        self.out_dim = self.n_obs_steps * self.step_dim

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        if not isinstance(obs, Mapping):
            raise DTypeError(expected("observations as a dict key -> tensor", type(obs).__name__,
                                      f"pass {{key: tensor}} with keys {list(self.obs_shapes)}"))
        missing = sorted(set(self.obs_shapes) - set(obs))
        if missing:
            raise ShapeError(expected(f"observation keys {sorted(self.obs_shapes)}", f"keys {sorted(obs)}",
                                      f"add {missing}"))
        parts, batch = [], None
        for key, shape in self.obs_shapes.items():
            value = obs[key]
            want = (self.n_obs_steps, *shape)
            if not isinstance(value, Tensor) or tuple(value.shape[1:]) != want or (batch not in (None, value.shape[0])):
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ShapeError(expected(f'obs["{key}"] of shape (B, {", ".join(map(str, want))})', got,
                                          "stack n_obs_steps observations after the batch axis"))
            batch = value.shape[0]
            features = self.encoders[key](value.reshape(batch * self.n_obs_steps, *shape))
            parts.append(features.reshape(batch, self.n_obs_steps, -1))
        return torch.cat(parts, dim=-1).reshape(batch, self.out_dim)


class TimeEmbedding(nn.Module):
    """Sinusoidal features → Linear → Mish → Linear (Diffusion Policy's ``diffusion_step_encoder``)."""

    def __init__(self, dim: int, time_scale: float):
        super().__init__()
        self.net = nn.Sequential(SinusoidalTimeEmbedding(dim, scale=time_scale), nn.Linear(dim, 4 * dim), nn.Mish(),
                                 nn.Linear(4 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.net(t)


class _ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int):
        super().__init__(nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                         nn.GroupNorm(groups, out_channels), nn.Mish())


class _FiLMResidualBlock(nn.Module):
    """Two conv blocks; the first one's output is scaled and shifted per channel by a map of the condition."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int, groups: int):
        super().__init__()
        self.first = _ConvBlock(in_channels, out_channels, kernel_size, groups)
        self.second = _ConvBlock(out_channels, out_channels, kernel_size, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_channels))
        self.skip = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        return self.second(scale * self.first(x) + shift) + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """Temporal U-Net over an action chunk (B, horizon, action_dim), FiLM-conditioned on time and a global vector.

    Call as a velocity model ``net(x, t, cond=g)`` or as a flow map ``net(x, s, t, cond=g)`` (module docstring).

    Args:
        action_dim: A, the size of one action.
        global_cond_dim: size of the condition vector g (0: unconditional).
        down_dims: channels per level (MP1: (512, 1024, 2048); default small, for CPUs).
        kernel_size: temporal convolution kernel (5).
        n_groups: GroupNorm groups; must divide every entry of ``down_dims``.
        time_dim: size of each time embedding (Diffusion Policy's ``diffusion_step_embed_dim``).
        time_scale: multiplies t before the sinusoidal features. Default 1, as MP1 feeds t ∈ [0, 1] straight into
            Diffusion Policy's embedding: MeanFlow differentiates the network in time, and with 100 the
            (t − s) du/ds part of the target was ~800x larger at initialisation (0.0027 → 2.2 mean square on the
            toy task's net) and MP1 training on the toy diverged (target MSE 1379 at step 200; 0.8 with 1).
        record_features: keep the down-block and mid-block features of the last forward pass.
    """

    def __init__(self, action_dim: int, global_cond_dim: int = 0, down_dims: Sequence[int] = (64, 128, 256),
                 kernel_size: int = 5, n_groups: int = 8, time_dim: int = 64, time_scale: float = 1.0,
                 record_features: bool = True):
        super().__init__()
        self.action_dim = check_positive_int(action_dim, "action_dim")
        check_int(global_cond_dim, "global_cond_dim", low=0, fix="pass the encoder's out_dim")
        dims = [check_positive_int(d, "down_dims entries") for d in down_dims]
        if not dims:
            raise ConfigError(expected("at least one entry in down_dims", list(down_dims), "use e.g. (64, 128, 256)"))
        if any(d % check_positive_int(n_groups, "n_groups") for d in dims):
            raise ConfigError(expected(f"down_dims divisible by n_groups={n_groups}", dims,
                                       "use multiples of 8 or change n_groups"))
        if check_positive_int(kernel_size, "kernel_size") % 2 == 0:
            raise ConfigError(expected("an odd kernel_size (the horizon keeps its length)", kernel_size, "use 5"))
        self.global_cond_dim, self.down_dims = global_cond_dim, tuple(dims)
        self.time_embedding = TimeEmbedding(check_positive_int(time_dim, "time_dim"), time_scale)
        self.gap_embedding = TimeEmbedding(time_dim, time_scale)
        cond_dim = time_dim + global_cond_dim
        widths = [self.action_dim, *dims]
        levels = len(dims)
        self.down = nn.ModuleList()
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            self.down.append(nn.ModuleList([
                _FiLMResidualBlock(w_in, w_out, cond_dim, kernel_size, n_groups),
                _FiLMResidualBlock(w_out, w_out, cond_dim, kernel_size, n_groups),
                nn.Conv1d(w_out, w_out, 3, stride=2, padding=1) if i < levels - 1 else nn.Identity()]))
        self.mid = nn.ModuleList([_FiLMResidualBlock(dims[-1], dims[-1], cond_dim, kernel_size, n_groups)
                                  for _ in range(2)])
        self.up = nn.ModuleList()
        for w_out, w_in in reversed(list(zip(dims[:-1], dims[1:]))):
            self.up.append(nn.ModuleList([
                _FiLMResidualBlock(2 * w_in, w_out, cond_dim, kernel_size, n_groups),
                _FiLMResidualBlock(w_out, w_out, cond_dim, kernel_size, n_groups),
                nn.ConvTranspose1d(w_out, w_out, 4, stride=2, padding=1)]))
        self.head = nn.Sequential(_ConvBlock(dims[0], dims[0], kernel_size, n_groups),
                                  nn.Conv1d(dims[0], self.action_dim, 1))
        self.stride = 2 ** (levels - 1)
        self.record_features = record_features
        self.last_features: list[Tensor] = []
        self.last_mid_features: Tensor | None = None

    def embed_times(self, s: Tensor, t: Tensor | None = None) -> Tensor:
        """The time part of the FiLM condition: emb(t) for a velocity, emb(s) + emb_gap(t − s) for a flow map."""
        if t is None:
            return self.time_embedding(s)
        return self.time_embedding(s) + self.gap_embedding(t - s)

    def forward(self, x: Tensor, time: Tensor | float, end_time: Tensor | float | None = None, *,
                cond: Tensor | None = None) -> Tensor:
        """Velocity (two arguments) or average velocity over [time, end_time] (three), shaped like ``x``."""
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.action_dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(expected(f"an action chunk (B, horizon, {self.action_dim})", got,
                                      "pass x as (batch, horizon, action_dim)"))
        batch, horizon = x.shape[0], x.shape[1]
        s = self._time(time, batch, x)
        t = None if end_time is None else self._time(end_time, batch, x)
        features = self.embed_times(s, t).to(x.dtype)
        if self.global_cond_dim:
            if not isinstance(cond, Tensor) or cond.shape != (batch, self.global_cond_dim):
                got = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
                raise ShapeError(expected(f"cond of shape ({batch}, {self.global_cond_dim})", got,
                                          "pass the observation encoder's output as cond="))
            features = torch.cat([features, cond.to(x.dtype)], dim=1)
        padded = -(-horizon // self.stride) * self.stride
        h = x
        if padded != horizon:
            h = torch.cat([x, x[:, -1:].expand(batch, padded - horizon, self.action_dim)], dim=1)
        h = h.transpose(1, 2)
        skips = []
        for first, second, downsample in self.down:
            h = second(first(h, features), features)
            skips.append(h)
            h = downsample(h)
        for block in self.mid:
            h = block(h, features)
        if self.record_features:
            self.last_features = skips[:-1]
            self.last_mid_features = h
        # As in Diffusion Policy, up-sampling pairs with the deepest skips first; the shallowest one is unused.
        for first, second, upsample in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = upsample(second(first(h, features), features))
        return self.head(h).transpose(1, 2)[:, :horizon]

    @staticmethod
    def _time(value: Tensor | float, batch: int, like: Tensor) -> Tensor:
        value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
        if value.dim() == 0:
            value = value.expand(batch)
        if value.shape != (batch,):
            raise ShapeError(expected(f"a time of shape ({batch},)", f"shape {tuple(value.shape)}",
                                      "pass one time per sample"))
        return value
