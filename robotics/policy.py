r"""Flow-matching robot policies: one network family, four training methods, save / load.

A :class:`FlowPolicy` maps an observation history to an **action chunk** (DP3 / Diffusion Policy, arXiv
2403.03954 / 2303.04137): the observations (normalised) go through an
:class:`~flowzoo.robotics.nets.ObservationEncoder` into a feature vector g, and a
:class:`~flowzoo.robotics.nets.ConditionalUnet1D` conditioned on g turns Gaussian noise (time 0) into a
normalised chunk (time 1), which is un-normalised and clipped to the action limits. Methods
(``PolicyConfig.method``; the config and each method's defaults live in :mod:`flowzoo.robotics.policy_config`):

* ``"fm"`` — flow matching (FlowPolicy / Diffusion-Policy-style baseline):
  :class:`~flowzoo.core.objectives.FlowMatchingLoss` on the chunk, sampled with ``sample_steps`` Euler steps of
  :func:`flowzoo.core.sampling.ode.integrate` (default 10).
* ``"meanflow"`` — the MeanFlow objective (:class:`~flowzoo.core.fewstep.meanflow.MeanFlowLoss`, built by
  :func:`flowzoo.robotics.mp1.meanflow_objective`), sampled by :func:`flowzoo.core.fewstep.flowmap.flowmap_sample` with
  ``sample_steps`` jumps (default 1 NFE).
* ``"mp1"`` — MeanFlow + MP1's guided target + the scale-invariant dispersive loss (:mod:`flowzoo.robotics.mp1`).
* ``"dm1"`` — MeanFlow + one of DM1's dispersive variants (:mod:`flowzoo.robotics.dm1`).

Training. :meth:`FlowPolicy.loss` encodes the observations **once**, with gradient, and hands the features to the
core objective as the conditioning tensor ``cond`` (batch ``{"x1": chunk, "cond": g}``); the objective's gradient
pass reaches the encoder through g. MeanFlow's target pass (JVP) runs without gradient. A dispersive term
(:func:`flowzoo.core.fewstep.dispersive.dispersive_loss`) is added with ``dispersive_weight`` on the features named by
``dispersive_target``: ``"down"`` (the U-Net's down-block activations of the gradient pass, MP1), ``"mid"`` (the
mid-block output, DM1's README) or ``"embeddings"`` (DM1's code: separately on the observation features g and on
the two time embeddings of fresh times s ~ U(0, 1), t ~ U(s, 1), summed).

Checkpoints (:func:`save_policy` / :func:`load_policy`): a directory with ``policy.json`` (format, config, EnvSpec,
normaliser, weight file name and SHA-256) and ``weights-<hash>.safetensors``. The weights are written first and
the JSON last, each atomically, so the JSON is the commit point; loading verifies the checksum and refuses a
corrupt, truncated or mismatched checkpoint with :class:`~flowzoo.core.errors.CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flowzoo.core.fewstep import dispersive_loss
from flowzoo.core.errors import (CheckpointError, ConfigError, DTypeError, FlowzooError, NonFiniteError, ShapeError,
                                 expected)
from flowzoo.core.fewstep import flowmap_sample
from flowzoo.core.sampling import ClassifierFreeGuidance
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import integrate
from flowzoo.core.training import atomic_write_bytes
from flowzoo.robotics.normalizer import Normalizer
from flowzoo.robotics.spec import EnvSpec
from flowzoo.robotics.mp1 import meanflow_objective
from flowzoo.robotics.nets import ConditionalUnet1D, ObservationEncoder
from flowzoo.robotics.policy_config import PolicyConfig

__all__ = ["FlowPolicy", "save_policy", "load_policy", "policy_objective", "check_observations", "check_noise",
           "remove_stale_evaluations", "POLICY_FORMAT"]

Tensor = torch.Tensor
POLICY_FORMAT = "flowzoo-policy"
_FORMAT_VERSION = 1


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
        self.weights_sha256: str | None = None  # set by save_policy / load_policy: the checkpoint's weights

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
        checked = check_observations(obs, self.spec.obs_shapes, self.config.n_obs_steps, self.device)
        return {key: self.normalizer.normalize(key, value) for key, value in checked.items()}

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
        else:
            check_noise(noise, batch, self.config.horizon, self.spec.action_dim)
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


def check_observations(obs: Any, obs_shapes: Mapping[str, tuple[int, ...]], n_obs_steps: int,
                       device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """A raw batched observation history ``{key: (B, n_obs_steps, *shape)}`` checked and converted to float32.

    The one input check of a policy's inference, shared by :meth:`FlowPolicy.normalize_obs` and the exported
    program's wrapper (:class:`flowzoo.robotics.export.ExportedPolicy`), so both refuse bad input alike.

    Raises:
        DTypeError: ``obs`` is not a mapping. ShapeError: a key is missing, a shape does not fit or the batch is
        empty. NonFiniteError: a value is NaN or infinite.
    """
    if not isinstance(obs, Mapping):
        raise DTypeError(expected("observations as a dict key -> array", type(obs).__name__,
                                  f"pass {{key: (B, n_obs_steps, ...)}} with keys {sorted(obs_shapes)}"))
    missing = sorted(set(obs_shapes) - set(obs))
    if missing:
        raise ShapeError(expected(f"observation keys {sorted(obs_shapes)}", f"keys {sorted(obs)}",
                                  f"add {missing} (was the policy trained with another obs mode?)"))
    out, batch = {}, None
    for key, shape in obs_shapes.items():
        value = torch.as_tensor(np.asarray(obs[key]) if not isinstance(obs[key], Tensor) else obs[key])
        want = (n_obs_steps, *shape)
        if value.dim() != len(want) + 1 or tuple(value.shape[1:]) != want or batch not in (None, value.shape[0]):
            raise ShapeError(expected(f'obs["{key}"] of shape (B, {", ".join(map(str, want))})',
                                      f"shape {tuple(value.shape)}",
                                      "stack n_obs_steps observations after the batch axis"))
        if value.shape[0] == 0:
            raise ShapeError(expected(f'obs["{key}"] with at least one sample', "an empty batch", "pass B >= 1"))
        value = value.to(device, torch.float32)
        if not bool(torch.isfinite(value).all()):
            raise NonFiniteError(expected(f'finite obs["{key}"]', "NaN/Inf", "check the sensor / environment"))
        batch = value.shape[0]
        out[key] = value
    return out


def check_noise(noise: Any, batch: int, horizon: int, action_dim: int) -> None:
    """Refuse source noise that is not a tensor of shape ``(batch, horizon, action_dim)`` (ShapeError)."""
    if not isinstance(noise, Tensor) or tuple(noise.shape) != (batch, horizon, action_dim):
        raise ShapeError(expected(f"noise of shape ({batch}, {horizon}, {action_dim})",
                                  getattr(noise, "shape", type(noise).__name__), "pass policy.initial_noise(B)"))


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
    is written last; weight files the new JSON does not name are removed afterwards, and so are the evaluation
    records beside them that describe other weights (:func:`remove_stale_evaluations`).
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
    remove_stale_evaluations(root, digest)
    policy.weights_sha256 = digest
    return root / "policy.json"


def remove_stale_evaluations(root: str | os.PathLike, weights_sha256: str) -> list[Path]:
    """Delete the evaluation records in ``root`` (``*eval_*.json``, written by ``flowzoo robotics evaluate``)
    that do not name ``weights_sha256``; returns the removed paths.

    An evaluation record names the weights it evaluated (``weights_sha256``), so a record whose weights were
    replaced would describe weights that are no longer there. Files that are not evaluation records (no
    ``success_rate``) are left alone; a record without a hash cannot show which weights it describes and goes.
    """
    removed = []
    for path in Path(root).glob("*eval_*.json"):
        try:
            record = json.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and "success_rate" in record and record.get("weights_sha256") != weights_sha256:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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
    policy.weights_sha256 = digest
    return policy.to(map_location).eval()
