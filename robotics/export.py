r"""Export a trained policy for deployment with ``torch.export`` (no dependency beyond torch).

:func:`export_policy` captures the whole inference of a :class:`~flowzoo.robotics.policy.FlowPolicy` — observation
normalisation (or none, for already normalised inputs), the observation encoder, the sampler **unrolled** into its
``sample_steps`` network calls (Euler for flow matching, with classifier-free guidance batched into each call when the
policy uses it; flow-map jumps for MeanFlow / MP1 / DM1), clamping, un-normalisation and clipping to the action
limits — as one :class:`torch.export.ExportedProgram` with signature

.. code-block:: text

    program.module()(obs: dict[str, Tensor (B, n_obs_steps, ...)], noise: Tensor (B, horizon, action_dim))
        -> actions (B, horizon, action_dim) in environment units

The source noise is an input, so the exported program is deterministic and equals the eager policy for the same
noise (tested to 1e-5): the caller draws ``torch.randn`` (or passes zeros for the mean-free, deterministic choice).
:func:`save_exported` writes the program with ``torch.export.save`` (atomically: temporary file, fsync, rename) and
stores the EnvSpec and policy config beside it (``extra_files``); :func:`load_exported` returns both.

Checked inputs. A raw exported program refuses a wrong shape with ``AssertionError: Guard failed: ...``;
:class:`ExportedPolicy` (what :func:`load_exported` returns) checks the observations and the noise first with the
eager policy's own checks (:func:`~flowzoo.robotics.policy.check_observations`), so a bad input raises the same
:class:`~flowzoo.core.errors.ShapeError` as ``FlowPolicy.predict_action_chunk``.

Command line (``flowzoo robotics export``, :func:`main`; prints its progress, refuses an existing ``--out`` unless
``--overwrite true``, and writes nothing unless the exported actions equal the eager policy's)::

    flowzoo robotics export --checkpoint runs/push_mp1/policy --out policy.pt2

Batch size. By default the batch is a dynamic dimension (``torch.export.Dim``), so one program serves any B ≥ 1;
``dynamic_batch=False`` fixes it to the example's batch.
"""

from __future__ import annotations

import copy
import io
import json
import os
import sys
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowzoo.core.config import parse_config
from flowzoo.core.errors import CheckpointError, ConfigError, ShapeError, expected
from flowzoo.core.sampling import uniform_grid
from flowzoo.core.training import atomic_write_bytes
from flowzoo.core.validation import check_new_outputs

__all__ = ["DeployablePolicy", "ExportedPolicy", "export_policy", "save_exported", "load_exported", "ExportConfig",
           "main", "EXPORT_META"]

Tensor = torch.Tensor
EXPORT_META = "flowzoo_policy.json"


class DeployablePolicy(nn.Module):
    """The inference of a FlowPolicy as one pure module ``(obs, noise) -> actions`` (what gets exported).

    Args:
        policy: the trained :class:`~flowzoo.robotics.policy.FlowPolicy` (copied; the original is untouched).
        raw_obs: True: observations in environment units (normalised inside); False: already normalised.
    """

    def __init__(self, policy: Any, raw_obs: bool = True):
        super().__init__()
        self.obs_encoder = copy.deepcopy(policy.obs_encoder).eval()
        self.net = copy.deepcopy(policy.net).eval()
        self.net.record_features = False  # no Python side effects inside the exported graph
        config = policy.config
        self.keys = sorted(policy.spec.obs_shapes)
        self.raw_obs = raw_obs
        self.meanflow = config.is_meanflow
        self.clip_sample = config.clip_sample
        grid = uniform_grid(int(config.sample_steps))
        self.grid = [float(v) for v in grid]
        self.steps = [float(b - a) for a, b in zip(grid[:-1], grid[1:])]
        self.guidance = float(config.guidance_scale) if (not self.meanflow and config.guidance == "cfg"
                                                          and config.guidance_scale != 1.0) else None
        null = policy.null_embedding.detach().clone() if policy.null_embedding is not None \
            else torch.zeros(policy.obs_encoder.out_dim)
        self.register_buffer("null_features", null.float())
        normalizer = policy.normalizer
        for key in self.keys:
            scale, offset = self._coefficients(normalizer, key, policy.spec.obs_shapes[key][-1])
            self.register_buffer(f"obs_scale_{key}", scale)
            self.register_buffer(f"obs_offset_{key}", offset)
        scale, offset = self._coefficients(normalizer, "action", policy.spec.action_dim)
        self.register_buffer("action_scale", scale)
        self.register_buffer("action_offset", offset)
        self.register_buffer("action_low", torch.tensor(policy.spec.action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(policy.spec.action_high, dtype=torch.float32))

    @staticmethod
    def _coefficients(normalizer: Any, key: str, dim: int) -> tuple[Tensor, Tensor]:
        """(scale, offset) with normalize(x) = x * scale + offset, read off the normaliser itself."""
        zero = normalizer.normalize(key, torch.zeros(dim, dtype=torch.float64))
        one = normalizer.normalize(key, torch.ones(dim, dtype=torch.float64))
        return (one - zero).float(), zero.float()

    def forward(self, obs: dict[str, Tensor], noise: Tensor) -> Tensor:
        normalized = {}
        for key in self.keys:
            value = obs[key]
            if self.raw_obs:
                value = value * getattr(self, f"obs_scale_{key}") + getattr(self, f"obs_offset_{key}")
            normalized[key] = value
        features = self.obs_encoder(normalized)
        x = noise
        batch = noise.shape[0]
        for k, dt in enumerate(self.steps):
            s = torch.full((batch,), self.grid[k], dtype=x.dtype, device=x.device)
            if self.meanflow:
                t = torch.full((batch,), self.grid[k + 1], dtype=x.dtype, device=x.device)
                x = x + dt * self.net(x, s, t, cond=features)
            elif self.guidance is None:
                x = x + dt * self.net(x, s, cond=features)
            else:
                null = self.null_features.expand_as(features)
                both = self.net(torch.cat([x, x]), torch.cat([s, s]), cond=torch.cat([features, null]))
                v_cond, v_null = both[:batch], both[batch:]
                x = x + dt * (v_null + self.guidance * (v_cond - v_null))
        if self.clip_sample:
            x = x.clamp(-1.0, 1.0)
        actions = (x - self.action_offset) / self.action_scale
        return torch.minimum(torch.maximum(actions, self.action_low), self.action_high)


def export_policy(policy: Any, example_obs: Mapping[str, Tensor] | None = None, *, raw_obs: bool = True,
                  dynamic_batch: bool = True) -> torch.export.ExportedProgram:
    """Capture ``policy``'s inference with ``torch.export`` (see the module docstring for the signature).

    Args:
        policy: a :class:`~flowzoo.robotics.policy.FlowPolicy`.
        example_obs: example observations ``{key: (B, n_obs_steps, ...)}``; zeros of batch 2 when None.
        raw_obs: whether the exported program takes environment-unit (True) or normalised (False) observations.
        dynamic_batch: export the batch size as a dynamic dimension.

    Raises:
        ConfigError: ``policy`` is not a FlowPolicy-like object, or the example does not fit its spec.
    """
    for attribute in ("obs_encoder", "net", "config", "spec", "normalizer"):
        if not hasattr(policy, attribute):
            raise ConfigError(expected("a FlowPolicy", type(policy).__name__,
                                       "pass a flowzoo.robotics.policy.FlowPolicy"))
    module = DeployablePolicy(policy, raw_obs=raw_obs).to(policy.device)
    n_obs = policy.config.n_obs_steps
    if example_obs is None:
        example_obs = {k: torch.zeros(2, n_obs, *shape) for k, shape in policy.spec.obs_shapes.items()}
    obs = {k: torch.as_tensor(example_obs[k], dtype=torch.float32, device=policy.device) for k in module.keys
           if k in example_obs}
    if set(obs) != set(module.keys):
        raise ConfigError(expected(f"example_obs with keys {module.keys}", sorted(example_obs), "pass every key"))
    batch = next(iter(obs.values())).shape[0]
    noise = torch.zeros(batch, policy.config.horizon, policy.spec.action_dim, device=policy.device)
    dynamic_shapes = None
    if dynamic_batch:
        b = torch.export.Dim("batch", min=1, max=4096)
        dynamic_shapes = ({k: {0: b} for k in module.keys}, {0: b})
    with torch.no_grad():
        return torch.export.export(module, (obs, noise), dynamic_shapes=dynamic_shapes)


def save_exported(program: torch.export.ExportedProgram, path: str | os.PathLike, policy: Any | None = None) -> Path:
    """Write an exported program to ``path`` (a ``.pt2`` file) atomically, with the policy's spec and config."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(expected(f"{path} to be a file path", "a directory", "pass e.g. policy.pt2"))
    meta: dict[str, Any] = {"format": "flowzoo-exported-policy"}
    if policy is not None:
        meta.update(spec=policy.spec.to_dict(), config=policy.config.to_dict())
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={EXPORT_META: json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_exported(path: str | os.PathLike) -> tuple[ExportedPolicy, dict[str, Any]]:
    """Load a program written by :func:`save_exported`: ``(policy, meta)``; call ``policy(obs, noise)``.

    ``policy`` is an :class:`ExportedPolicy` (inputs checked like the eager policy's; ``policy.program`` is the raw
    :class:`torch.export.ExportedProgram`); ``policy.module()(obs, noise)`` works too and is checked as well.

    Raises:
        CheckpointError: a missing, truncated or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(expected(f"an exported policy at {path}", "no such file", "export it with save_exported"))
    extra = {EXPORT_META: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
        meta = json.loads(extra[EXPORT_META] or "{}")
    except (RuntimeError, ValueError, OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise CheckpointError(expected("a torch.export program written by save_exported",
                                       f"{type(error).__name__}: {str(error)[:200]}",
                                       "the file is damaged or not an exported policy; export it again")) from error
    if meta.get("format") != "flowzoo-exported-policy":
        raise CheckpointError(expected("a flowzoo exported policy", f"meta {str(meta)[:100]}",
                                       "export it with flowzoo.robotics.export.save_exported"))
    return ExportedPolicy(program, meta), meta


class ExportedPolicy:
    """An exported policy whose call checks its inputs like the eager policy before running the program.

    The expected shapes are read off the program's own input placeholders (observation keys, ``n_obs_steps``,
    ``horizon``, action size, and the batch: fixed, or the range of a dynamic batch), so a program saved without
    the policy's metadata is checked as well.

    Args:
        program: a program from :func:`export_policy` (or ``torch.export.load``).
        meta: the metadata saved beside it (optional; kept as :attr:`meta`).
    """

    def __init__(self, program: torch.export.ExportedProgram, meta: Mapping[str, Any] | None = None) -> None:
        self.program = program
        self.meta = dict(meta or {})
        shapes, (self.horizon, self.action_dim) = _input_shapes(program)
        self.n_obs_steps = next(iter(shapes.values()))[0]
        self.obs_shapes = {key: shape[1:] for key, shape in shapes.items()}
        self.batch = _batch_range(program)
        self._module = program.module()

    def module(self) -> ExportedPolicy:
        """Itself: ``policy.module()(obs, noise)`` reads like a raw program's call and is checked too."""
        return self

    def __call__(self, obs: Mapping[str, Any], noise: Tensor) -> Tensor:
        """Actions ``(B, horizon, action_dim)`` for observations ``{key: (B, n_obs_steps, ...)}`` and source noise.

        Raises:
            ShapeError / DTypeError / NonFiniteError: as :meth:`FlowPolicy.predict_action_chunk` for the same input.
        """
        from flowzoo.robotics.policy import check_noise, check_observations

        checked = check_observations(obs, self.obs_shapes, self.n_obs_steps)
        batch = next(iter(checked.values())).shape[0]
        low, high = self.batch
        if not low <= batch <= high:
            fixed = low == high
            raise ShapeError(expected(f"a batch of {low}" if fixed else f"a batch between {low} and {high}",
                                      f"a batch of {batch}", "export the policy again with dynamic_batch=True"
                                      if fixed else f"split the batch into chunks of at most {high}"))
        check_noise(noise, batch, self.horizon, self.action_dim)
        return self._module(checked, noise.to(torch.float32))


def _placeholder_values(program: torch.export.ExportedProgram) -> dict[str, Any]:
    return {node.name: node.meta.get("val") for node in program.graph.nodes if node.op == "placeholder"}


def _input_shapes(program: torch.export.ExportedProgram) -> tuple[dict[str, tuple[int, ...]], tuple[int, int]]:
    """``({key: (n_obs_steps, *shape)}, (horizon, action_dim))`` read off the program's user inputs."""
    values = _placeholder_values(program)
    user = list(program.graph_signature.user_inputs)
    obs = {name[len("obs_"):]: tuple(int(d) for d in values[name].shape[1:]) for name in user
           if name.startswith("obs_") and values.get(name) is not None}
    if "noise" not in user or not obs:
        raise CheckpointError(expected("a program with inputs (obs: dict, noise) from export_policy", f"inputs {user}",
                                       "export the policy with flowzoo.robotics.export.export_policy"))
    noise = values["noise"].shape
    return obs, (int(noise[1]), int(noise[2]))


def _batch_range(program: torch.export.ExportedProgram) -> tuple[int, int]:
    """``(low, high)`` batch sizes the program accepts (equal for a fixed batch)."""
    dim = _placeholder_values(program)["noise"].shape[0]
    if isinstance(dim, int):
        return dim, dim
    bounds = program.range_constraints.get(dim.node.expr)
    if bounds is None:
        return 1, sys.maxsize
    return int(bounds.lower), int(bounds.upper) if bounds.upper.is_finite else sys.maxsize


@dataclass
class ExportConfig:
    """Export a saved policy for deployment with torch.export: flowzoo robotics export --checkpoint DIR --out FILE."""

    checkpoint: Path = field(metadata={"help": "policy saved by the training entrypoint (its policy directory)"})
    out: Path = field(default=Path("policy.pt2"), metadata={"help": "file to write (.pt2)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --out file"})
    raw_obs: bool = field(default=True, metadata={"help": "the program takes observations in environment units "
                                                          "(false: already normalised)"})
    dynamic_batch: bool = field(default=True, metadata={"help": "any batch size from 1 to 4096 (false: batch 1 only)"})


def main(argv: Sequence[str] | None = None) -> int:
    """``flowzoo robotics export --checkpoint DIR --out policy.pt2 [--overwrite]``; returns the exit code."""
    cfg = parse_config(ExportConfig, argv, prog="flowzoo robotics export")
    out = Path(cfg.out)
    if out.is_dir():
        raise ConfigError(expected("--out naming a file (e.g. policy.pt2)", f"{out}, a directory", "pass a file path"))
    check_new_outputs([out], cfg.overwrite)
    started = time.perf_counter()
    from flowzoo.robotics.policy import load_policy

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f} s] {message}", file=sys.stderr, flush=True)

    policy = load_policy(cfg.checkpoint)
    say(f"loaded {cfg.checkpoint}: {policy.config.method}, {policy.nfe} NFE, task {policy.spec.task} "
        f"({policy.spec.obs_mode})")
    say("exporting with torch.export (this takes up to a minute)...")
    example = None if cfg.dynamic_batch else {k: torch.zeros(1, policy.config.n_obs_steps, *shape)
                                              for k, shape in policy.spec.obs_shapes.items()}
    program = export_policy(policy, example, raw_obs=cfg.raw_obs, dynamic_batch=cfg.dynamic_batch)
    say("checking the exported actions against the eager policy's...")
    gen = torch.Generator().manual_seed(0)
    obs = {k: torch.randn(1, policy.config.n_obs_steps, *shape, generator=gen)
           for k, shape in policy.spec.obs_shapes.items()}
    noise = torch.randn(1, policy.config.horizon, policy.spec.action_dim, generator=gen)
    want = policy.predict_action_chunk(obs, noise=noise)
    with torch.no_grad():
        got = ExportedPolicy(program)(obs if cfg.raw_obs else policy.normalize_obs(obs), noise)
    difference = float((got - want).abs().max())
    if difference > 1e-4:  # never write a program that does not do what the policy does
        raise CheckpointError(expected("exported actions equal to the eager policy's (max difference <= 1e-4)",
                                       f"max difference {difference:.2e}", "report this; nothing was written"))
    path = save_exported(program, out, policy)
    say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; max difference to eager {difference:.1e}); "
        "load it with flowzoo.robotics.export.load_exported")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(main, prog="python -m flowzoo.robotics.export"))
