"""Training entrypoint of the driving planners: ``python -m flowzoo.driving.train <method> --scenes DIR --out RUN``.

Methods: ``goalflow`` (GoalFlow, arXiv 2503.05689: goal scorer + trajectory flow, trained jointly on the core
:class:`~flowzoo.core.training.Trainer`), ``ego_mlp`` and ``regressor`` (the baselines of
:mod:`flowzoo.driving.baselines`). ``flowzoo train driving <method> ...`` is the same command.

One run:

1. the scenes of ``--scenes`` (a directory written by ``flowzoo driving make-scenes``) are loaded and checked;
2. GoalFlow's goal vocabulary is built by k-means over their expert end poses, and the shadow-vehicle DAC
   target of every goal in every scene is computed once;
3. the model trains (``--trainer.*``: steps, batch size, learning rate, EMA, checkpoints, seed, resume);
   the vocabulary is a buffer of the model, so every checkpoint carries it;
4. ``<out>/planner.json`` records the method, the network options and the scene format (horizon, channels,
   raster size) so that :func:`load_planner` rebuilds the planner and refuses scenes of another format.

Example::

    flowzoo driving make-scenes --n 5000 --out scenes/train
    python -m flowzoo.driving.train goalflow --scenes scenes/train --out runs/gf --trainer.steps 3000
    flowzoo driving evaluate --checkpoint runs/gf --scenes scenes/test --steps 1 --variant M3
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from flowzoo.core.cli import split_method
from flowzoo.core.config import config_from_dict, option_help, parse_config
from flowzoo.core.errors import CheckpointError, ConfigError, expected
from flowzoo.core.training import (Trainer, TrainerConfig, atomic_write_bytes, read_checkpoint,
                                    refuse_fresh_run_over_checkpoints)
from flowzoo.core.validation import check_int
from flowzoo.driving.baselines import ConstantVelocityPlanner, EgoMLP, RegressionLoss, RegressionPlanner, \
    TrajectoryRegressor
from flowzoo.driving.data import SceneSchemaError, load_scenes
from flowzoo.driving.geometry import polygon_from_vertices
from flowzoo.driving.goalflow import GoalFlowConfig, GoalFlowLoss, GoalFlowModel, GoalFlowPlanner
from flowzoo.driving.vocabulary import build_vocabulary, dac_targets

__all__ = ["METHODS", "PLANNER_FILE", "DrivingTrainConfig", "load_training_scenes", "build_planner_model",
           "train_planner", "load_planner", "constant_velocity_planner", "main"]

PROG = "python -m flowzoo.driving.train"
METHODS = {"goalflow": "GoalFlow: goal scorer + goal-conditioned rectified flow over trajectories",
           "ego_mlp": "baseline: MLP from the ego state and command to the 8 poses",
           "regressor": "baseline: TransFuser-like BEV + ego regressor of one trajectory (L1)"}
PLANNER_FILE, PLANNER_FORMAT, PLANNER_VERSION = "planner.json", "flowzoo-driving-planner", 1


def _default_trainer() -> TrainerConfig:
    return TrainerConfig(steps=3000, batch_size=64, lr=5e-4, warmup_steps=100, ema_decay=0.999, checkpoint_every=1000,
                         log_every=100, out_dir="runs/driving", tensorboard=False)


@dataclass
class DrivingTrainConfig:
    """Train a driving planner on synthetic (or converted) BEV scenes."""

    method: Literal["goalflow", "ego_mlp", "regressor"] = field(
        default="goalflow", metadata=option_help("set by the first argument"))
    scenes: str = field(default="", metadata=option_help("training scene directory (flowzoo driving make-scenes)"))
    out: str = field(default="", metadata=option_help("run directory (same as --trainer.out_dir)"))
    limit: int = field(default=0, metadata=option_help("train on the first N scenes only (0: all)"))
    vocab_seed: int = field(default=0, metadata=option_help("seed of the vocabulary's k-means"))
    baseline_dim: int = field(default=64, metadata=option_help("width of the ego_mlp / regressor networks"))
    model: GoalFlowConfig = field(default_factory=GoalFlowConfig)
    trainer: TrainerConfig = field(default_factory=_default_trainer)

    def __post_init__(self) -> None:
        check_int(self.limit, "--limit", low=0)
        check_int(self.baseline_dim, "--baseline_dim", low=8)


def _say(message: str) -> None:
    print(f"flowzoo driving train: {message}", file=sys.stderr, flush=True)


def load_training_scenes(path: str | Path, limit: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    """Load a scene directory (first ``limit`` scenes when positive); a missing path is a clear error."""
    if not str(path):
        raise ConfigError(expected("--scenes DIR", "nothing", "create scenes with flowzoo driving make-scenes "
                                   "--n 5000 --out scenes/train and pass --scenes scenes/train"))
    if not Path(path).exists():
        raise SceneSchemaError(expected("an existing scene directory for --scenes", f"{path}: no such path",
                                        f"create it with flowzoo driving make-scenes --out {path}"))
    arrays, meta = load_scenes(path)
    if limit:
        arrays = {key: value[:limit] for key, value in arrays.items()}
    return arrays, meta


def _scene_format(arrays: dict[str, np.ndarray], meta: dict) -> dict[str, Any]:
    return {"horizon": int(arrays["trajectory"].shape[1]), "channels": list(meta["channels"]),
            "raster_size": int(arrays["bev"].shape[-1]), "dt": float(meta["dt"])}


def build_planner_model(method: str, info: dict[str, Any], vocabulary: torch.Tensor | None = None,
                        ) -> torch.nn.Module:
    """The network of ``method`` for the scene format ``info`` (a ``planner.json``'s content)."""
    horizon, channels, size = info["horizon"], len(info["channels"]), info["raster_size"]
    if method == "goalflow":
        if vocabulary is None:
            vocabulary = torch.zeros(info["model"]["vocab_size"], 3)
        return GoalFlowModel(config_from_dict(GoalFlowConfig, info["model"]), horizon=horizon, channels=channels,
                             size=size, vocabulary=vocabulary)
    if method == "ego_mlp":
        return EgoMLP(horizon=horizon, dim=2 * info["baseline_dim"])
    if method == "regressor":
        return TrajectoryRegressor(channels=channels, size=size, horizon=horizon, dim=info["baseline_dim"])
    raise ConfigError(expected(f"a method in {list(METHODS)}", repr(method), f"e.g. {PROG} goalflow"))


def _sampler(arrays: dict[str, np.ndarray], batch_size: int, dac: torch.Tensor | None):
    bev = torch.from_numpy(arrays["bev"])
    x1 = torch.from_numpy(arrays["trajectory"])
    ego = torch.from_numpy(arrays["ego_state"])
    command = torch.from_numpy(arrays["command"].astype(np.int64))

    def sample(generator: torch.Generator) -> dict[str, torch.Tensor]:
        index = torch.randint(len(x1), (batch_size,), generator=generator)
        batch = {"x1": x1[index], "bev": bev[index].float() / 255.0, "ego_state": ego[index],
                 "command": command[index], "goal": x1[index, -1]}
        if dac is not None:
            batch["dac_target"] = dac[index]
        return batch

    return sample


def train_planner(cfg: DrivingTrainConfig) -> dict[str, Any]:
    """Load the scenes, build the vocabulary (GoalFlow), train and write ``planner.json`` and ``summary.json``;
    returns the summary."""
    if cfg.out:
        cfg = replace(cfg, trainer=replace(cfg.trainer, out_dir=cfg.out))
    out_dir = Path(cfg.trainer.out_dir)
    refuse_fresh_run_over_checkpoints(cfg.trainer, "--out")
    arrays, meta = load_training_scenes(cfg.scenes, cfg.limit)
    info = {"format": PLANNER_FORMAT, "version": PLANNER_VERSION, "method": cfg.method, **_scene_format(arrays, meta),
            "model": asdict(cfg.model), "baseline_dim": cfg.baseline_dim, "scenes": str(cfg.scenes),
            "scene_count": len(arrays["bev"])}
    torch.manual_seed(cfg.trainer.seed)
    vocabulary = dac = None
    if cfg.method == "goalflow":
        vocabulary = build_vocabulary(arrays["trajectory"][:, -1], cfg.model.vocab_size, seed=cfg.vocab_seed)
        _say(f"vocabulary of {len(vocabulary)} goal points from {len(arrays['bev'])} scenes; shadow-vehicle "
             "DAC targets ...")
        polygons = [polygon_from_vertices(ring[~np.isnan(ring).any(-1)]) for ring in arrays["drivable"]]
        dac = dac_targets(vocabulary, polygons)
    model = build_planner_model(cfg.method, info, vocabulary)
    objective = GoalFlowLoss() if cfg.method == "goalflow" else RegressionLoss()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / PLANNER_FILE, json.dumps(info, indent=2).encode("utf-8"))
    trainer = Trainer(model, objective, _sampler(arrays, cfg.trainer.batch_size, dac), cfg.trainer, run_config=cfg)
    result = trainer.fit()
    summary = {"method": cfg.method, "scenes": len(arrays["bev"]), "steps": result.step, "seconds": result.seconds,
               "final_metrics": result.metrics, "checkpoint": str(result.checkpoint)}
    atomic_write_bytes(out_dir / "summary.json", json.dumps(summary, indent=2, default=str).encode("utf-8"))
    return summary


def load_planner(run_dir: str | Path, *, horizon: int | None = None, channels: Sequence[str] | None = None,
                 raster_size: int | None = None, **planner_options: Any):
    """Rebuild the planner of a training run (EMA weights when present).

    Args:
        run_dir: the run's ``--out`` directory (holding ``planner.json`` and ``checkpoints/``).
        horizon, channels, raster_size: the format of the scenes it will plan on; a mismatch with the format it
            was trained on raises :class:`~flowzoo.core.errors.CheckpointError`.
        planner_options: options of :class:`~flowzoo.driving.goalflow.GoalFlowPlanner` (GoalFlow runs only).

    Returns:
        a :class:`~flowzoo.driving.goalflow.GoalFlowPlanner` or a
        :class:`~flowzoo.driving.baselines.RegressionPlanner`; both have ``plan(batch, *, steps, n_samples,
        variant, generator)`` and ``.info`` (the ``planner.json`` content plus the checkpoint read).
    """
    run_dir = Path(run_dir)
    if not (run_dir / PLANNER_FILE).is_file():
        raise CheckpointError(expected(f"a driving run directory with {PLANNER_FILE}", f"{run_dir} (none)",
                                       f"pass the --out directory of {PROG} <method>"))
    info = json.loads((run_dir / PLANNER_FILE).read_text())
    if info.get("format") != PLANNER_FORMAT or info.get("version") != PLANNER_VERSION:
        raise CheckpointError(expected(f"{PLANNER_FORMAT} version {PLANNER_VERSION}", f"{info.get('format')!r} "
                                       f"version {info.get('version')}", "retrain with this flowzoo version"))
    for name, wanted in (("horizon", horizon), ("channels", None if channels is None else list(channels)),
                         ("raster_size", raster_size)):
        if wanted is not None and info[name] != wanted:
            raise CheckpointError(expected(f"scenes with the planner's {name} {info[name]}", wanted,
                                           "evaluate on scenes of the format it was trained on, or retrain"))
    checkpoint = read_checkpoint(run_dir)
    model = build_planner_model(info["method"], info)
    try:
        model.load_state_dict(checkpoint.inference_weights)
    except RuntimeError as error:
        raise CheckpointError(expected(f"weights of a {info['method']} planner as {PLANNER_FILE} describes",
                                       str(error).splitlines()[0], "pass the run directory the weights belong "
                                       "to, or retrain")) from None
    info.update(checkpoint=str(checkpoint.path), step=checkpoint.step)
    planner = GoalFlowPlanner(model, **planner_options) if info["method"] == "goalflow" else RegressionPlanner(model)
    planner.info = info
    return planner


def constant_velocity_planner(info: dict[str, Any] | None = None) -> ConstantVelocityPlanner:
    """The constant-velocity baseline (nothing to train)."""
    return ConstantVelocityPlanner(**({"horizon": info["horizon"], "dt": info["dt"]} if info else {}))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowzoo.driving.train <method> [options]``; returns the exit code."""
    split = split_method(argv, METHODS, PROG, usage="--scenes DIR --out RUN [options]   (same: flowzoo train driving "
                         "<method> ...)", example="goalflow --scenes scenes/train --out runs/gf --trainer.steps 3000")
    if split is None:
        return 0
    method, args = split
    cfg = replace(parse_config(DrivingTrainConfig, args, prog=f"{PROG} {method}"), method=method)
    summary = train_planner(cfg)
    print(json.dumps(summary, indent=2, default=str))
    print(f"planner in {cfg.out or cfg.trainer.out_dir}; evaluate it with: flowzoo driving evaluate --checkpoint "
          f"{cfg.out or cfg.trainer.out_dir} --scenes DIR --steps 1")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(main, prog=PROG))
