r"""Flow-matching robot policies: one network family, four training methods, save / load.

A :class:`FlowPolicy` maps an observation history to an **action chunk** (DP3 / Diffusion Policy, arXiv
2403.03954 / 2303.04137): the observations (normalised) go through an
:class:`~flowzoo.robotics.nets.ObservationEncoder` into a feature vector g, and a
:class:`~flowzoo.robotics.nets.ConditionalUnet1D` conditioned on g turns Gaussian noise (time 0) into a
normalised chunk (time 1), which is un-normalised and clipped to the action limits. Methods
(``PolicyConfig.method``):

* ``"fm"`` — flow matching (FlowPolicy / Diffusion-Policy-style baseline):
  :class:`~flowzoo.core.objectives.FlowMatchingLoss` on the chunk, sampled with ``sample_steps`` Euler steps of
  :func:`flowzoo.core.solvers.integrate` (default 10).
* ``"meanflow"`` — the MeanFlow objective (:class:`~flowzoo.core.meanflow.MeanFlowLoss`, built by
  :func:`flowzoo.robotics.mp1.meanflow_objective`), sampled by :func:`flowzoo.core.flowmap.flowmap_sample` with
  ``sample_steps`` jumps (default 1 NFE).
* ``"mp1"`` — MeanFlow + MP1's guided target + the scale-invariant dispersive loss (:mod:`flowzoo.robotics.mp1`).
* ``"dm1"`` — MeanFlow + one of DM1's dispersive variants (:mod:`flowzoo.robotics.dm1`).

Training. :meth:`FlowPolicy.loss` encodes the observations **once**, with gradient, and hands the features to the
core objective as the conditioning tensor ``cond`` (batch ``{"x1": chunk, "cond": g}``); the objective's gradient
pass reaches the encoder through g. MeanFlow's target pass (JVP) runs without gradient. A dispersive term
(:func:`flowzoo.core.dispersive.dispersive_loss`) is added with ``dispersive_weight`` on the features named by
``dispersive_target``: ``"down"`` (the U-Net's down-block activations of the gradient pass, MP1), ``"mid"`` (the
mid-block output, DM1's README) or ``"embeddings"`` (DM1's code: separately on the observation features g and on
the two time embeddings of fresh times s ~ U(0, 1), t ~ U(s, 1), summed).

Checkpoints (:func:`save_policy` / :func:`load_policy`): a directory with ``policy.json`` (format, config, EnvSpec,
normaliser, weight file name and SHA-256) and ``weights-<hash>.safetensors``. The weights are written first and
the JSON last, each atomically, so the JSON is the commit point; loading verifies the checksum and refuses a
corrupt, truncated or mismatched checkpoint with :class:`~flowzoo.core.errors.CheckpointError`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from flowzoo.core.config import config_from_dict, config_to_dict, option_help, validate_config
from flowzoo.core.dispersive import DISPERSIVE_KINDS, dispersive_loss
from flowzoo.core.errors import (CheckpointError, ConfigError, DTypeError, FlowzooError, NonFiniteError, ShapeError,
                                 expected)
from flowzoo.core.flowmap import flowmap_sample
from flowzoo.core.guidance import ClassifierFreeGuidance
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.solvers import integrate
from flowzoo.core.training import atomic_write_bytes
from flowzoo.robotics.data import Normalizer
from flowzoo.robotics.envs import EnvSpec
from flowzoo.robotics.mp1 import MP1_TIME_MEAN, meanflow_objective
from flowzoo.robotics.nets import ConditionalUnet1D, ObservationEncoder

__all__ = ["PolicyConfig", "FlowPolicy", "save_policy", "load_policy", "policy_objective", "METHODS",
           "DISPERSIVE_TARGETS", "POLICY_FORMAT"]

Tensor = torch.Tensor
METHODS = ("fm", "meanflow", "mp1", "dm1")
DISPERSIVE_TARGETS = ("down", "mid", "embeddings")
POLICY_FORMAT = "flowzoo-policy"
_FORMAT_VERSION = 1
_AUTO = "auto"

# Per-method values of the fields left "auto" (strings) or None (numbers); they agree with mp1.MP1_DEFAULTS and
# dm1.DM1_DEFAULTS (tested). ``dispersive`` None is an explicit "no dispersive loss", hence its own "auto".
_METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "fm": dict(dispersive=None, guidance="none", guidance_scale=1.0, dispersive_target="down", sample_steps=10,
               adaptive_p=0.5),
    "meanflow": dict(dispersive=None, guidance="none", guidance_scale=1.0, dispersive_target="down", sample_steps=1,
                     adaptive_p=0.5),
    "mp1": dict(dispersive="mp1", guidance="mp1", guidance_scale=2.0, dispersive_target="down", sample_steps=1,
                adaptive_p=0.5),
    "dm1": dict(dispersive="infonce_l2", guidance="none", guidance_scale=1.0, dispersive_target="embeddings",
                sample_steps=1, adaptive_p=0.0),
}
_UNSET: dict[str, Any] = dict(dispersive=_AUTO, guidance=_AUTO, dispersive_target=_AUTO, guidance_scale=None,
                              sample_steps=None, adaptive_p=None)


@dataclass
class PolicyConfig:
    """Options of a :class:`FlowPolicy`.

    The method-dependent fields (``dispersive``, ``dispersive_target``, ``guidance``: ``"auto"``;
    ``guidance_scale``, ``sample_steps``, ``adaptive_p``: None) stay unresolved in the config, so that changing
    ``method`` later (``dataclasses.replace``, a ``--policy.method`` override) still yields that method's
    defaults. :meth:`resolved` fills them in; a :class:`FlowPolicy` resolves its config when it is built, and its
    ``policy.config`` and its checkpoints hold the resolved values. The config is validated on creation as if
    resolved.
    """

    method: Literal["fm", "meanflow", "mp1", "dm1"] = field(default="fm", metadata=option_help("training method"))
    n_obs_steps: int = field(default=2, metadata=option_help("observation history length"))
    horizon: int = field(default=4, metadata=option_help("actions per predicted chunk"))
    n_action_steps: int = field(default=4, metadata=option_help("actions of each chunk executed before replanning"))
    sample_steps: int | None = field(default=None, metadata=option_help("sampling steps (NFE); none: 10 for fm, 1 otherwise"))
    down_dims: tuple[int, ...] = field(default=(64, 128, 256), metadata=option_help("U-Net channels per level"))
    kernel_size: int = field(default=5, metadata=option_help("U-Net temporal kernel"))
    n_groups: int = field(default=8, metadata=option_help("GroupNorm groups"))
    time_dim: int = field(default=64, metadata=option_help("time embedding size"))
    time_scale: float = field(default=1.0, metadata=option_help("time multiplier of the sinusoidal embedding (MP1: 1)"))
    point_dim: int = field(default=64, metadata=option_help("point-cloud feature size per step"))
    state_dim: int = field(default=64, metadata=option_help("state feature size per key and step"))
    state_hidden: tuple[int, ...] = field(default=(64,), metadata=option_help("hidden widths of the state MLPs"))
    dispersive: str | None = field(default=_AUTO, metadata=option_help(f"dispersive loss kind {DISPERSIVE_KINDS} or none"))
    dispersive_weight: float = field(default=0.5, metadata=option_help("weight of the dispersive loss"))
    dispersive_temperature: float | None = field(default=None, metadata=option_help("tau; none: the kind's default"))
    dispersive_target: str = field(default=_AUTO, metadata=option_help(f"features for the dispersive loss {DISPERSIVE_TARGETS}"))
    guidance: str = field(default=_AUTO, metadata=option_help("none | cfg (condition dropout) | mp1 (MP1's target)"))
    guidance_scale: float | None = field(default=None, metadata=option_help("omega; none: 2 for mp1, else 1"))
    cond_dropout: float = field(default=0.0, metadata=option_help("probability of training with the null condition (cfg)"))
    null_cond: Literal["learned", "zeros"] = field(default="learned", metadata=option_help("null observation features for cfg"))
    time_mean: float = field(default=MP1_TIME_MEAN, metadata=option_help("logit-normal mean of MeanFlow times (flowzoo time)"))
    time_std: float = field(default=1.0, metadata=option_help("logit-normal std of MeanFlow times"))
    distinct_fraction: float = field(default=0.5, metadata=option_help("fraction of MeanFlow pairs with s < t"))
    adaptive_p: float | None = field(default=None, metadata=option_help("MeanFlow adaptive-weight power p (0: plain MSE); "
                                                                "none: 0 for dm1, else 0.5 (MP1)"))
    adaptive_c: float = field(default=1e-3, metadata=option_help("MeanFlow adaptive-weight offset c"))
    derivative: Literal["jvp", "finite_difference"] = field(default="jvp", metadata=option_help("MeanFlow du/ds"))
    clip_sample: bool = field(default=True, metadata=option_help("clamp the normalised chunk to [-1, 1] before un-normalising"))

    def __post_init__(self) -> None:
        if isinstance(self.down_dims, list):
            self.down_dims = tuple(self.down_dims)
        if isinstance(self.state_hidden, list):
            self.state_hidden = tuple(self.state_hidden)
        validate_config(self)
        self.resolved()  # refuse a bad combination now, not when the policy is built

    def resolved(self) -> "PolicyConfig":
        """A copy with every ``"auto"`` / None field replaced by ``method``'s default, checked.

        Raises:
            ConfigError: an unknown method or an invalid combination of options.
        """
        if self.method not in METHODS:
            raise ConfigError(expected(f"method in {list(METHODS)}", repr(self.method), "pick one of them"))
        out = copy.copy(self)  # no __post_init__: a resolved config must not resolve again
        for name, value in _METHOD_DEFAULTS[self.method].items():
            if getattr(out, name) == _UNSET[name]:
                setattr(out, name, value)
        out._check()
        return out

    @property
    def is_resolved(self) -> bool:
        """True when no method-dependent field is left "auto" / None (what :meth:`resolved` returns)."""
        return all(getattr(self, name) != unset for name, unset in _UNSET.items())

    def _check(self) -> None:
        def need(ok: bool, name: str, want: str, fix: str) -> None:
            if not ok:
                raise ConfigError(expected(f"policy option {name} {want}", repr(getattr(self, name)), fix))

        for name in ("n_obs_steps", "horizon", "n_action_steps", "sample_steps"):
            need(getattr(self, name) >= 1, name, "at least 1", f"pass --{name} 1 or more")
        need(self.n_action_steps <= self.horizon, "n_action_steps", f"at most horizon={self.horizon}",
             "execute at most the actions a chunk holds")
        need(self.dispersive is None or self.dispersive in DISPERSIVE_KINDS, "dispersive",
             f"in {list(DISPERSIVE_KINDS)} or none", "pick a listed kind")
        need(self.dispersive_target in DISPERSIVE_TARGETS, "dispersive_target", f"in {list(DISPERSIVE_TARGETS)}",
             "pick a listed target")
        need(self.guidance in ("none", "cfg", "mp1"), "guidance", "in ['none', 'cfg', 'mp1']", "pick one")
        need(not (self.guidance == "mp1" and self.method == "fm"), "guidance",
             "not 'mp1' for method fm (MP1's target is a MeanFlow target)", "use guidance 'cfg' or a MeanFlow method")
        need(0.0 <= self.cond_dropout < 1.0, "cond_dropout", "in [0, 1)", "use e.g. 0.1")
        need(self.cond_dropout == 0.0 or self.guidance == "cfg", "cond_dropout",
             "0 unless guidance is 'cfg' (only CFG trains a null condition)", "pass --guidance cfg or drop it")
        need(not (self.guidance == "cfg" and self.guidance_scale != 1.0 and self.cond_dropout == 0.0), "cond_dropout",
             "> 0 with guidance 'cfg' (the null branch must be trained)", "pass e.g. --cond_dropout 0.1")
        need(math.isfinite(self.guidance_scale), "guidance_scale", "finite", "use e.g. 2.0")
        need(self.dispersive_weight >= 0 and math.isfinite(self.dispersive_weight), "dispersive_weight",
             "finite and >= 0", "use e.g. 0.5")
        need(0.0 <= self.distinct_fraction <= 1.0, "distinct_fraction", "in [0, 1]", "use 0.5 (MP1)")

    @property
    def is_meanflow(self) -> bool:
        return self.method != "fm"

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PolicyConfig":
        return config_from_dict(cls, data)


# ----------------------------------------------------------------------------------------------- the policy
class FlowPolicy(nn.Module):
    """An observation-conditioned action-chunk generator (see the module docstring).

    Args:
        spec: the environment's :class:`~flowzoo.robotics.envs.EnvSpec` (observation keys/shapes, action limits).
        normalizer: the demonstrations' :class:`~flowzoo.robotics.data.Normalizer` (statistics for ``action`` and the
            vector observation keys).
        config: :class:`PolicyConfig` (default: flow matching).

    Calling the module, ``policy(batch)``, is :meth:`loss` (so that DistributedDataParallel sees the forward).
    """

    def __init__(self, spec: EnvSpec, normalizer: Normalizer, config: PolicyConfig | None = None):
        super().__init__()
        if not isinstance(spec, EnvSpec):
            raise ConfigError(expected("spec as an EnvSpec", type(spec).__name__, "pass env_spec(env) or dataset.spec"))
        if not isinstance(normalizer, Normalizer) or "action" not in normalizer.stats:
            raise ConfigError(expected("a Normalizer with statistics for 'action'", repr(normalizer),
                                       "pass the dataset's normalizer (DemoDataset.normalizer)"))
        self.spec, self.normalizer = spec, normalizer
        config = config if config is not None else PolicyConfig()
        if not isinstance(config, PolicyConfig):
            raise ConfigError(expected("config as a PolicyConfig", type(config).__name__, "build PolicyConfig(...)"))
        self.config = config.resolved()
        c = self.config
        self.obs_encoder = ObservationEncoder(spec.obs_shapes, c.n_obs_steps, c.point_dim, c.state_dim, c.state_hidden)
        self.net = ConditionalUnet1D(spec.action_dim, self.obs_encoder.out_dim, c.down_dims, c.kernel_size,
                                     c.n_groups, c.time_dim, c.time_scale)
        self.null_embedding = nn.Parameter(torch.zeros(self.obs_encoder.out_dim)) \
            if c.guidance == "cfg" and c.null_cond == "learned" else None
        self.register_buffer("action_low", torch.tensor(spec.action_low, dtype=torch.float32), persistent=False)
        self.register_buffer("action_high", torch.tensor(spec.action_high, dtype=torch.float32), persistent=False)
        self.objective = self._build_objective()
        self._queue: deque[Tensor] = deque()
        self._history: deque[dict[str, Tensor]] = deque(maxlen=c.n_obs_steps)

    # ------------------------------------------------------------------------------------ training
    def _null_value(self) -> Tensor | float:
        return self.null_embedding if self.null_embedding is not None else 0.0

    def _build_objective(self):
        c = self.config
        if not c.is_meanflow:
            dropout = dict(cond_dropout=c.cond_dropout, null_cond={"cond": self._null_value()}) \
                if c.guidance == "cfg" and c.cond_dropout > 0 else {}
            return FlowMatchingLoss(**dropout)
        return meanflow_objective(guidance=c.guidance, guidance_scale=c.guidance_scale, cond_dropout=c.cond_dropout,
                                  null_value=self._null_value(), time_mean=c.time_mean, time_std=c.time_std,
                                  distinct_fraction=c.distinct_fraction, adaptive_p=c.adaptive_p,
                                  adaptive_c=c.adaptive_c, derivative=c.derivative)

    def forward(self, batch: Mapping[str, Any], generator: torch.Generator | None = None):  # noqa: D102
        return self.loss(batch, generator=generator)

    def loss(self, batch: Mapping[str, Any],
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Training loss on a :class:`~flowzoo.robotics.data.WindowDataset` batch (normalised ``obs`` and ``action``).

        Returns ``(loss, metrics)``: the objective's metrics, plus ``dispersive`` (the unweighted dispersive term)
        and ``objective`` (the flow loss alone) when a dispersive loss is used.
        """
        if not isinstance(batch, Mapping) or "obs" not in batch or "action" not in batch:
            raise ConfigError(expected('a batch {"obs": {...}, "action": (B, horizon, A)}',
                                       sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__,
                                       "use flowzoo.robotics.data.WindowDataset items"))
        action = batch["action"]
        want = (self.config.horizon, self.spec.action_dim)
        if not isinstance(action, Tensor) or action.dim() != 3 or tuple(action.shape[1:]) != want:
            got = tuple(action.shape) if isinstance(action, Tensor) else type(action).__name__
            raise ShapeError(expected(f'batch["action"] of shape (B, {want[0]}, {want[1]})', got,
                                      f"build the WindowDataset with horizon={want[0]}"))
        features = self.obs_encoder(batch["obs"])
        loss, metrics = self.objective(self.net, {"x1": action, "cond": features}, generator=generator)
        metrics = dict(metrics)
        if self.config.dispersive is not None and self.config.dispersive_weight > 0:
            term = dispersive_loss(self._dispersive_features(features, generator), self.config.dispersive,
                                   self.config.dispersive_temperature)
            metrics["objective"], metrics["dispersive"] = metrics["loss"], float(term.detach())
            loss = loss + self.config.dispersive_weight * term
            metrics["loss"] = float(loss.detach())
        return loss, metrics

    def _dispersive_features(self, features: Tensor, generator: torch.Generator | None) -> list[Tensor]:
        target = self.config.dispersive_target
        if target == "down":  # a one-level U-Net has no down-sampling block: its mid block stands in
            return list(self.net.last_features) or [self.net.last_mid_features]
        if target == "mid":
            return [self.net.last_mid_features]
        # DM1: observation features and the two time embeddings of fresh uniform times, each dispersed on its own.
        n = features.shape[0]
        s = torch.rand(n, generator=generator, device=features.device)
        gap = torch.rand(n, generator=generator, device=features.device) * (1 - s)
        return [features, self.net.time_embedding(s), self.net.gap_embedding(gap)]

    # ------------------------------------------------------------------------------------ inference
    @property
    def nfe(self) -> int:
        """Network evaluations per action chunk (CFG at sampling doubles the batch, not the count of calls)."""
        return int(self.config.sample_steps)

    @property
    def device(self) -> torch.device:
        return self.action_low.device

    def normalize_obs(self, obs: Mapping[str, Any]) -> dict[str, Tensor]:
        """Validate a raw batched observation history ``{key: (B, n_obs_steps, *shape)}`` and normalise it."""
        if not isinstance(obs, Mapping):
            raise DTypeError(expected("observations as a dict key -> array", type(obs).__name__,
                                      f"pass {{key: (B, n_obs_steps, ...)}} with keys {sorted(self.spec.obs_shapes)}"))
        missing = sorted(set(self.spec.obs_shapes) - set(obs))
        if missing:
            raise ShapeError(expected(f"observation keys {sorted(self.spec.obs_shapes)}", f"keys {sorted(obs)}",
                                      f"add {missing} (was the policy trained with another obs mode?)"))
        out, batch = {}, None
        for key, shape in self.spec.obs_shapes.items():
            value = torch.as_tensor(np.asarray(obs[key]) if not isinstance(obs[key], Tensor) else obs[key])
            want = (self.config.n_obs_steps, *shape)
            if value.dim() != len(want) + 1 or tuple(value.shape[1:]) != want or batch not in (None, value.shape[0]):
                raise ShapeError(expected(f'obs["{key}"] of shape (B, {", ".join(map(str, want))})',
                                          f"shape {tuple(value.shape)}",
                                          "stack n_obs_steps observations after the batch axis"))
            if value.shape[0] == 0:
                raise ShapeError(expected(f'obs["{key}"] with at least one sample', "an empty batch", "pass B >= 1"))
            if not value.is_floating_point():
                value = value.float()
            value = value.to(self.device, torch.float32)
            if not bool(torch.isfinite(value).all()):
                raise NonFiniteError(expected(f'finite obs["{key}"]', "NaN/Inf", "check the sensor / environment"))
            batch = value.shape[0]
            out[key] = self.normalizer.normalize(key, value)
        return out

    def initial_noise(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """Source samples (batch, horizon, action_dim) at time 0."""
        return torch.randn(batch, self.config.horizon, self.spec.action_dim, generator=generator, device=self.device)

    def _finish(self, x: Tensor) -> Tensor:
        """Normalised chunk → environment units within the limits."""
        if self.config.clip_sample:
            x = x.clamp(-1.0, 1.0)
        actions = self.normalizer.unnormalize("action", x)
        return torch.minimum(torch.maximum(actions, self.action_low), self.action_high)

    @torch.no_grad()
    def sample_normalized(self, features: Tensor, noise: Tensor) -> Tensor:
        """The normalised chunk for encoder features and source noise (core solvers; no clipping)."""
        c = self.config
        cond = {"cond": features}
        if c.is_meanflow:
            return flowmap_sample(self.net, noise, steps=c.sample_steps, cond=cond).x
        model = self.net
        if c.guidance == "cfg" and c.guidance_scale != 1.0:
            model = ClassifierFreeGuidance(self.net, c.guidance_scale, {"cond": self._null_value()})
        return integrate(model, noise, method="euler", steps=c.sample_steps, cond=cond).x

    @torch.no_grad()
    def predict_action_chunk(self, obs: Mapping[str, Any], noise: Tensor | None = None,
                             generator: torch.Generator | None = None) -> Tensor:
        """Action chunk (B, horizon, action_dim) in environment units, within the limits, for raw observations.

        Args:
            obs: ``{key: (B, n_obs_steps, *shape)}`` numpy arrays or tensors, environment units.
            noise: optional source samples (B, horizon, action_dim); drawn from ``generator`` when None.
            generator: random generator of the noise.
        """
        normalized = self.normalize_obs(obs)
        batch = next(iter(normalized.values())).shape[0]
        if noise is None:
            noise = self.initial_noise(batch, generator)
        elif not isinstance(noise, Tensor) or tuple(noise.shape) != (batch, self.config.horizon, self.spec.action_dim):
            raise ShapeError(expected(f"noise of shape ({batch}, {self.config.horizon}, {self.spec.action_dim})",
                                      getattr(noise, "shape", type(noise).__name__), "pass policy.initial_noise(B)"))
        features = self.obs_encoder(normalized)
        return self._finish(self.sample_normalized(features, noise.to(self.device, torch.float32)))

    def reset(self) -> None:
        """Forget queued actions and the observation history (call at every episode start)."""
        self._queue.clear()
        self._history.clear()

    @torch.no_grad()
    def select_action(self, obs: Mapping[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """The next action (B, action_dim), LeRobot-style: a chunk is predicted when the queue is empty and its
        first ``n_action_steps`` actions are queued.

        ``obs`` is either a history ``{key: (B, n_obs_steps, *shape)}`` or one step ``{key: (B, *shape)}``; single
        steps are stacked into an internal history (the first one repeated until it is full, as in training).
        """
        if not self._queue:
            history = self._stack_history(obs)
            chunk = self.predict_action_chunk(history, generator=generator)
            self._queue.extend(chunk[:, :self.config.n_action_steps].unbind(1))
        return self._queue.popleft()

    def _stack_history(self, obs: Mapping[str, Any]) -> Mapping[str, Any]:
        key, shape = next(iter(self.spec.obs_shapes.items()))
        if not isinstance(obs, Mapping) or key not in obs or np.ndim(obs[key]) != len(shape) + 1:
            return obs  # a full history (or bad input, which predict_action_chunk reports)
        step = {k: torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v) for k, v in obs.items()}
        if not self._history:
            self._history.extend([step] * (self.config.n_obs_steps - 1))
        self._history.append(step)
        return {k: torch.stack([h[k] for h in self._history], dim=1) for k in step}


def policy_objective(policy_model: nn.Module, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
    """``objective(model, batch)`` for :class:`flowzoo.core.training.Trainer`: the policy's :meth:`FlowPolicy.loss`
    through its forward (works with a DistributedDataParallel-wrapped policy)."""
    return policy_model(batch)


# ----------------------------------------------------------------------------------------------- save / load
def _weights_bytes(policy: FlowPolicy) -> bytes:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    return save(state, metadata={"format": POLICY_FORMAT})


def save_policy(policy: FlowPolicy, path: str | os.PathLike) -> Path:
    """Write ``policy`` to the directory ``path`` (created if needed); returns the path of ``policy.json``.

    Weights go to ``weights-<sha256[:16]>.safetensors`` and the JSON (config, spec, normaliser, file name, hash)
    is written last; weight files the new JSON does not name are removed afterwards.
    """
    if not isinstance(policy, FlowPolicy):
        raise ConfigError(expected("a FlowPolicy", type(policy).__name__, "pass the trained policy"))
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise CheckpointError(expected(f"{root} to be a directory (a policy checkpoint)", "an existing file",
                                       "choose another path; the file was left as it is"))
    root.mkdir(parents=True, exist_ok=True)
    data = _weights_bytes(policy)
    digest = hashlib.sha256(data).hexdigest()
    weights_name = f"weights-{digest[:16]}.safetensors"
    atomic_write_bytes(root / weights_name, data)
    meta = {"format": POLICY_FORMAT, "format_version": _FORMAT_VERSION, "config": policy.config.to_dict(),
            "spec": policy.spec.to_dict(), "normalizer": policy.normalizer.to_dict(), "weights": weights_name,
            "weights_sha256": digest}
    atomic_write_bytes(root / "policy.json", json.dumps(meta, indent=2).encode("utf-8"))
    for stale in root.glob("weights-*.safetensors"):
        if stale.name != weights_name:
            stale.unlink(missing_ok=True)
    return root / "policy.json"


def load_policy(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> FlowPolicy:
    """Rebuild a policy saved by :func:`save_policy` (``path``: the directory or its ``policy.json``).

    Raises:
        CheckpointError: missing / unreadable / corrupt files, a checksum or weight-shape mismatch.
    """
    root = Path(path)
    meta_path = root if root.name == "policy.json" else root / "policy.json"
    if not meta_path.is_file():
        raise CheckpointError(expected(f"a policy checkpoint at {root} (policy.json)", "no such file",
                                       "pass the directory written by save_policy"))
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(expected("a readable JSON policy.json", f"{type(error).__name__}: {error}",
                                       "the checkpoint is damaged; save the policy again")) from error
    if not isinstance(meta, dict) or meta.get("format") != POLICY_FORMAT:
        raise CheckpointError(expected(f"format {POLICY_FORMAT!r} in policy.json",
                                       repr(meta.get("format") if isinstance(meta, dict) else meta)[:80],
                                       "pass a checkpoint written by flowzoo.robotics.save_policy"))
    if meta.get("format_version") != _FORMAT_VERSION:
        raise CheckpointError(expected(f"format_version {_FORMAT_VERSION}", meta.get("format_version"),
                                       "load it with the flowzoo version that wrote it"))
    try:
        config = PolicyConfig.from_dict(meta["config"])
        spec = EnvSpec.from_dict(meta["spec"])
        normalizer = Normalizer.from_dict(meta["normalizer"])
        weights_path = meta_path.parent / str(meta["weights"])
        digest = str(meta["weights_sha256"])
    except (KeyError, TypeError, FlowzooError) as error:
        raise CheckpointError(expected("config, spec, normalizer and weights entries in policy.json",
                                       f"{type(error).__name__}: {error}", "save the policy again")) from error
    try:
        data = weights_path.read_bytes()
    except OSError as error:
        raise CheckpointError(expected(f"the weight file {weights_path.name}", f"{type(error).__name__}: {error}",
                                       "the checkpoint is incomplete; save the policy again")) from error
    if hashlib.sha256(data).hexdigest() != digest:
        raise CheckpointError(expected(f"{weights_path.name} with SHA-256 {digest[:16]}...", "different content",
                                       "the weight file is truncated or was replaced; save the policy again"))
    from safetensors.torch import load

    policy = FlowPolicy(spec, normalizer, config)
    try:
        state = load(data)
        policy.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as error:
        raise CheckpointError(expected("weights that fit the stored config", f"{type(error).__name__}: {error}"[:400],
                                       "the JSON and the weights come from different policies; save again")) from error
    return policy.to(map_location).eval()
