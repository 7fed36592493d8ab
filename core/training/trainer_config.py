"""The options of the training engine: :class:`TrainerConfig` (``--trainer.<name>`` in every entrypoint)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from flowzoo.core.config import option_help, validate_config
from pathlib import Path

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.training.checkpoint import list_checkpoints

__all__ = ["TrainerConfig", "refuse_fresh_run_over_checkpoints"]


@dataclass
class TrainerConfig:
    """Options of the training engine (``--trainer.<name>`` in an entrypoint)."""

    steps: int = field(default=1000, metadata=option_help("total optimiser updates of the run"))
    batch_size: int = field(default=256, metadata=option_help("samples per update and per process"))
    lr: float = field(default=1e-3, metadata=option_help("peak AdamW learning rate"))
    weight_decay: float = field(default=0.0, metadata=option_help("AdamW weight decay (matrices only; biases and norms are not decayed)"))
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=option_help("AdamW betas"))
    fused: bool | Literal["auto"] = field(default="auto", metadata=option_help("fused AdamW kernel (auto: when every parameter is on CUDA; true: also on the CPU)"))
    warmup_steps: int = field(default=0, metadata=option_help("linear learning-rate warm-up updates"))
    min_lr_ratio: float = field(default=0.0, metadata=option_help("cosine decay floor as a fraction of lr (1: constant)"))
    grad_clip: float = field(default=1.0, metadata=option_help("clip the global gradient norm to this (0: no clipping)"))
    ema_decay: float = field(default=0.999, metadata=option_help("EMA decay of the weights used for evaluation (0: no EMA)"))
    precision: Literal["fp32", "bf16", "fp16"] = field(default="fp32", metadata=option_help("autocast precision; fp16 adds loss scaling"))
    num_workers: int = field(default=0, metadata=option_help("DataLoader workers for a Dataset (ignored for callables)"))
    log_every: int = field(default=50, metadata=option_help("log training metrics every this many updates"))
    eval_every: int = field(default=0, metadata=option_help("evaluate every this many updates (0: only at the end)"))
    checkpoint_every: int = field(default=1000, metadata=option_help("checkpoint every this many updates (0: only at the end)"))
    keep_checkpoints: int = field(default=3, metadata=option_help("newest checkpoints kept (0: keep all)"))
    out_dir: str = field(default="runs/flowzoo", metadata=option_help("run directory: checkpoints, logs, evaluations"))
    seed: int = field(default=0, metadata=option_help("seed of every random stream of the run"))
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata=option_help("auto: CUDA when available"))
    progress: bool = field(default=True, metadata=option_help("show a progress bar (rank 0)"))
    tensorboard: bool = field(default=True, metadata=option_help("write TensorBoard scalars when tensorboard is installed"))
    resume: bool | str = field(default=False, metadata=option_help("true: continue the latest checkpoint in out_dir; or a checkpoint path"))
    overwrite: bool = field(default=False, metadata=option_help("start a fresh run even if out_dir holds checkpoints (deletes them)"))
    max_steps: int | None = field(default=None, metadata=option_help("stop (with a checkpoint) after this update without changing the schedule"))
    ddp_find_unused_parameters: bool = field(default=False, metadata=option_help("DDP: allow parameters without gradient"))

    def __post_init__(self) -> None:
        validate_config(self)
        checks = [
            ("steps", self.steps >= 1, "at least 1"), ("batch_size", self.batch_size >= 1, "at least 1"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "a positive number"),
            ("weight_decay", self.weight_decay >= 0, "non-negative"),
            ("betas", all(0 <= b < 1 for b in self.betas), "two numbers in [0, 1)"),
            ("warmup_steps", self.warmup_steps >= 0, "non-negative"),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
            ("grad_clip", self.grad_clip >= 0, "non-negative (0 disables clipping)"),
            ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1) (0 disables EMA)"),
            ("num_workers", self.num_workers >= 0, "non-negative"), ("log_every", self.log_every >= 1, "at least 1"),
            ("eval_every", self.eval_every >= 0, "non-negative (0: only at the end)"),
            ("checkpoint_every", self.checkpoint_every >= 0, "non-negative (0: only at the end)"),
            ("keep_checkpoints", self.keep_checkpoints >= 0, "non-negative (0: keep all)"),
            ("max_steps", self.max_steps is None or self.max_steps >= 1, "at least 1, or none"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ConfigError(expected(f"trainer option {name} {want}", getattr(self, name),
                                           f"pass --trainer.{name} with a value {want}"))


def refuse_fresh_run_over_checkpoints(config: TrainerConfig, option: str = "--trainer.out_dir") -> None:
    """Refuse a fresh run (``resume`` false, no ``overwrite``) whose ``out_dir`` already holds checkpoints, before an
    entry point spends time collecting data or building models (the Trainer would refuse later). ``option``: the
    command-line flag that names the folder, for the message."""
    checkpoints = Path(config.out_dir) / "checkpoints"
    if config.resume is False and not config.overwrite and list_checkpoints(checkpoints):
        raise ConfigError(expected("an out_dir without checkpoints for a fresh run (resume=false)",
                                   f"checkpoints in {checkpoints}",
                                   "pass --trainer.resume true to continue that run, --trainer.overwrite true to "
                                   f"delete it and start over, or choose another {option}"))
