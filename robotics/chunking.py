r"""The pieces every runner of a chunking policy shares: the policy protocol, observation history, chunk plan.

A chunking policy (Diffusion Policy, DP3, MP1) maps the last ``n_obs_steps`` observations to a chunk of
``horizon`` future actions. The fixed-rate controller (:mod:`flowzoo.robotics.controller`) and the simulated
evaluation (:mod:`flowzoo.robotics.evaluate`) both drive one through these parts:

* :class:`ChunkPolicy` — what they need from a policy (``flowzoo.robotics.policy.FlowPolicy`` fits).
* :class:`ObservationHistory` — the last ``n_obs_steps`` frames; at the start of a run the first frame is
  repeated, as in the training windows (robotics.md window convention). :func:`batch_observations` stacks the
  histories of several robots into one policy batch.
* :class:`ActionPlan` — the chunks that still cover future steps. A chunk predicted from the observation of
  control step ``k`` holds the actions of steps ``k .. k + horizon - 1`` (its *origin* is k), so a chunk that
  arrives late is used from the current step on and its stale actions are never replayed. With **temporal
  ensembling** (ACT: Zhao et al., "Learning Fine-Grained Bimanual Manipulation with Low-Cost Hardware", arXiv
  2304.13705, §3.3) every chunk that covers step j proposes an action for it; they are averaged with weights
  :math:`w_i = \exp(-m\,i)`, where i = 0 is the *oldest* proposal and m is ``temporal_ensemble`` (ACT: m > 0
  favours older predictions, which smooths the motion). Non-finite proposals are dropped.

All names are also importable from :mod:`flowzoo.robotics.controller`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from flowzoo.core.errors import ShapeError, expected
from flowzoo.core.validation import check_positive_int

__all__ = ["ChunkPolicy", "ObservationHistory", "batch_observations", "ActionPlan"]


@runtime_checkable
class ChunkPolicy(Protocol):
    """What the controller and the evaluation need from a policy (``flowzoo.robotics.policy.FlowPolicy`` fits).

    ``spec`` is an EnvSpec (``obs_shapes``, ``action_dim``, ``action_low``, ``action_high``, ...) and ``config``
    carries ``n_obs_steps`` and ``n_action_steps``. ``predict_action_chunk`` takes raw observations batched as
    ``{key: (B, n_obs_steps, ...)}`` and returns ``(B, horizon, action_dim)`` actions in environment units.
    """

    spec: Any
    config: Any

    def predict_action_chunk(self, obs: dict[str, torch.Tensor]) -> torch.Tensor: ...


class ObservationHistory:
    """The last ``n_obs_steps`` observations, oldest first, padded at the start by repeating the first frame.

    Args:
        n_obs_steps: frames the policy sees.
        shapes: expected shape of each key of one observation (``spec.obs_shapes``); when given, a missing key
            or a wrong shape raises :class:`ShapeError`, and an observation that is a bare array is accepted
            if there is exactly one key (it is stored under that key).
    """

    def __init__(self, n_obs_steps: int, shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        check_positive_int(n_obs_steps, "n_obs_steps", fix="check policy.config")
        self.n_obs_steps = n_obs_steps
        self.shapes = None if shapes is None else {k: tuple(int(d) for d in v) for k, v in shapes.items()}
        self._frames: list[dict[str, np.ndarray]] = []

    def reset(self) -> None:
        self._frames.clear()

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, obs: Mapping[str, Any] | np.ndarray | torch.Tensor) -> None:
        """Append one observation (a copy, as float32); the oldest frame drops out once the buffer is full."""
        if not isinstance(obs, Mapping):
            if self.shapes is None or len(self.shapes) != 1:
                raise ShapeError(expected("an observation dict {key: array}", type(obs).__name__,
                                          "return a dict such as {'state': array} from the environment"))
            obs = {next(iter(self.shapes)): obs}
        frame: dict[str, np.ndarray] = {}
        keys = self.shapes if self.shapes is not None else obs
        for key in keys:
            if key not in obs:
                raise ShapeError(expected(f"observation key {key!r}", sorted(obs),
                                          "give the observation keys the policy was trained with"))
            value = obs[key]
            value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if self.shapes is not None and value.shape != self.shapes[key]:
                raise ShapeError(expected(f"observation {key!r} of shape {self.shapes[key]}", value.shape,
                                          "check the observation mode and the number of points"))
            frame[key] = np.array(value, dtype=np.float32, copy=True)
        self._frames.append(frame)
        del self._frames[:-self.n_obs_steps]

    def stacked(self) -> dict[str, np.ndarray]:
        """``{key: (n_obs_steps, ...)}``: oldest first, the first frame repeated until the buffer is full."""
        if not self._frames:
            raise ShapeError(expected("at least one observation before stacking", "an empty history",
                                      "push the first observation first"))
        frames = [self._frames[0]] * (self.n_obs_steps - len(self._frames)) + self._frames
        return {key: np.stack([f[key] for f in frames]) for key in frames[0]}


def batch_observations(stacked: Sequence[Mapping[str, np.ndarray]],
                       device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Stack per-robot histories ``{key: (n_obs_steps, ...)}`` into the policy's ``{key: (B, n_obs_steps, ...)}``."""
    keys = list(stacked[0])
    return {key: torch.from_numpy(np.stack([s[key] for s in stacked])).to(device) for key in keys}


class ActionPlan:
    """The chunks that still cover future steps, and the action each step gets from them.

    Args:
        temporal_ensemble: None uses the newest chunk that covers the step; a float m averages every covering
            chunk with weights ``exp(-m * i)``, i = 0 the oldest (ACT).
    """

    def __init__(self, temporal_ensemble: float | None = None) -> None:
        self.temporal_ensemble = temporal_ensemble
        self._chunks: list[tuple[int, np.ndarray]] = []
        self._newest_origin: int | None = None

    @property
    def newest_origin(self) -> int | None:
        """Origin of the newest chunk ever added (kept after the chunk has run out)."""
        return self._newest_origin

    def add(self, origin: int, chunk: np.ndarray) -> None:
        """Add the chunk predicted from the observation of step ``origin`` (row i is for step origin + i)."""
        self._chunks.append((origin, np.asarray(chunk, dtype=np.float64)))
        self._chunks.sort(key=lambda item: item[0])
        self._newest_origin = origin if self._newest_origin is None else max(self._newest_origin, origin)

    def action_for(self, step: int) -> tuple[np.ndarray | None, bool]:
        """The planned action for ``step`` (None if no chunk covers it) and whether a non-finite row was dropped."""
        self._chunks = [(o, c) for o, c in self._chunks if o + len(c) > step]
        rows = [c[step - o] for o, c in self._chunks if o <= step]  # oldest first
        finite = [r for r in rows if np.all(np.isfinite(r))]
        dropped = len(finite) < len(rows)
        if not finite:
            return None, dropped
        if self.temporal_ensemble is None:
            return finite[-1].copy(), dropped
        weights = np.exp(-self.temporal_ensemble * np.arange(len(finite)))
        return (weights[:, None] * np.stack(finite)).sum(0) / weights.sum(), dropped
