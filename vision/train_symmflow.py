r"""``python -m flowzoo.vision.train symmflow``: SymmFlow (and its single-direction baselines) on the core Trainer.

Symmetrical Flow Matching (Caetano, Viviers, de With, van der Sommen, AAAI 2026, arXiv 2506.10634, §3) trains one
network on the joint state of an image and its encoded semantic map with the two modalities on opposite time
directions (:mod:`flowzoo.vision.symmflow` documents the loss and the time convention: t is the image's flowzoo
time, 0 = noise, 1 = image; the map sits at its own time 1 − t). This module is its command-line entry point: the
data are images with pixel maps (:func:`~flowzoo.vision.segmentation.load_segmentation`: ``mnist-masks`` or the
synthetic ``shapes``), the network :class:`~flowzoo.vision.symmflow.SymmFlowNet`, the objective
:class:`~flowzoo.vision.symmflow.SymmFlowLoss`, and the loop the core :class:`~flowzoo.core.training.Trainer`
(seeded, EMA, checkpoints, ``--trainer.resume``). ``--direction generate`` / ``segment`` train the single-direction
baselines with the same network and loss. Each evaluation reports the one-step segmentation mIoU on up to 256
test images and writes a grid of images generated from test maps; :func:`load_symmflow` rebuilds a run.

Example::

    python -m flowzoo.vision.train symmflow --data mnist-masks --size 16 --trainer.steps 3000 \
        --trainer.out_dir runs/vision/symmflow
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowzoo.core.config import config_to_dict, option_help, parse_config
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.training import Trainer, TrainerConfig, is_main_process, read_checkpoint_record
from flowzoo.core.validation import check_int, check_positive_int, check_probability
from flowzoo.vision.metrics import save_image_grid
from flowzoo.vision.segmentation import MapCodec, SegmentationData, load_segmentation, mean_iou
from flowzoo.vision.symmflow import DIRECTIONS, SymmFlowLoss, SymmFlowNet, generate, segment, segmentation_batch

__all__ = ["SYMMFLOW_METHODS", "SYMMFLOW_KEY", "SymmFlowTrainConfig", "TrainedSymmFlow", "symmflow_main",
           "train_symmflow", "load_symmflow"]

SYMMFLOW_METHODS = {"symmflow": "SymmFlow: one flow between images and semantic maps (--direction symmetric|"
                                "generate|segment; --data mnist-masks|shapes)"}
SYMMFLOW_KEY = "symmflow"  # where config.yaml records the data and network of the run


def _default_trainer() -> TrainerConfig:
    return TrainerConfig(steps=3000, batch_size=32, lr=2e-3, warmup_steps=100, ema_decay=0.999,
                         checkpoint_every=1000, out_dir="runs/vision_symmflow")


@dataclass
class SymmFlowTrainConfig:
    """A SymmFlow run (or a single-direction baseline) on images with pixel maps."""

    method: str = field(default="symmflow", metadata=option_help("set by the first argument (symmflow)"))
    data: str = field(default="mnist-masks", metadata=option_help("mnist-masks (digits, 11 classes) or shapes (synthetic)"))
    size: int = field(default=16, metadata=option_help("image side"))
    count: int = field(default=0, metadata=option_help("shapes: training images (0: 4000)"))
    direction: str = field(default="symmetric", metadata=option_help("symmetric (SymmFlow), generate (map->image FM) or segment (image->map FM)"))
    encoding: str = field(default="colour", metadata=option_help("map code: colour (3 channels) or onehot"))
    channels: int = field(default=16, metadata=option_help("U-Net channels"))
    image_weight: float = field(default=0.5, metadata=option_help("weight w of the image term (1 - w: the map's)"))
    grid_n: int = field(default=32, metadata=option_help("images generated from test maps for the grid"))
    grid_steps: int = field(default=8, metadata=option_help("Euler steps of that generation"))
    trainer: TrainerConfig = field(default_factory=_default_trainer)

    def __post_init__(self) -> None:
        if self.method not in SYMMFLOW_METHODS:
            raise ConfigError(expected(f"a method in {sorted(SYMMFLOW_METHODS)}", repr(self.method), "pass symmflow"))
        if self.direction not in DIRECTIONS:
            raise ConfigError(expected(f"--direction in {DIRECTIONS}", repr(self.direction), "pass --direction symmetric"))
        if self.encoding not in ("colour", "onehot"):
            raise ConfigError(expected("--encoding colour or onehot", repr(self.encoding), "pass --encoding colour"))
        check_positive_int(self.size, "--size")
        check_int(self.count, "--count", low=0)
        check_positive_int(self.channels, "--channels")
        check_probability(self.image_weight, "--image_weight")
        check_positive_int(self.grid_n, "--grid_n")
        check_positive_int(self.grid_steps, "--grid_steps")

    def load(self, split: str) -> SegmentationData:
        """One split of the run's data."""
        count = (self.count or None) if split == "train" else None
        return load_segmentation(self.data, split=split, size=self.size, seed=self.trainer.seed, count=count)


@dataclass
class TrainedSymmFlow:
    """A SymmFlow run rebuilt from its checkpoint (EMA weights when present), in eval mode."""

    model: SymmFlowNet
    config: SymmFlowTrainConfig
    checkpoint: Path
    step: int


def _build(cfg: SymmFlowTrainConfig, image_channels: int, num_classes: int) -> SymmFlowNet:
    return SymmFlowNet(image_channels, MapCodec(num_classes, encoding=cfg.encoding), direction=cfg.direction,
                       channels=cfg.channels)


class _Batches:
    """The Trainer's sampler: a random batch of the segmentation data (images, maps, labels)."""

    def __init__(self, data: SegmentationData, batch_size: int):
        self.data, self.batch_size = data, check_positive_int(batch_size, "batch_size")

    def __call__(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return segmentation_batch(self.data, torch.randint(len(self.data), (self.batch_size,), generator=generator))


def _evaluate(model: nn.Module, cfg: SymmFlowTrainConfig, test: SegmentationData, grid: Path | None) -> dict:
    """One-step segmentation mIoU on up to 256 test images, and a grid generated from test maps."""
    model.eval()
    device = next(model.parameters()).device
    rows = test.subset(slice(0, 256))
    metrics: dict[str, float] = {}
    with torch.no_grad():
        if cfg.direction != "generate":
            labels = segment(model, rows.images.to(device), steps=1,
                             generator=torch.Generator().manual_seed(0)).extras["labels"].cpu()
            metrics["miou_1step"] = mean_iou(labels, rows.maps, test.num_classes)
        if cfg.direction != "segment" and grid is not None:
            maps = test.maps[:cfg.grid_n].to(device)
            images = generate(model, maps, steps=cfg.grid_steps, generator=torch.Generator().manual_seed(0)).x
            save_image_grid(images.float().cpu().clamp(-1, 1), grid, scale=max(1, min(4, 64 // cfg.size)))
    return metrics


def train_symmflow(cfg: SymmFlowTrainConfig) -> dict[str, Any]:
    """Train ``cfg`` with the core Trainer; writes the run directory and returns the final metrics."""
    train, test = cfg.load("train"), cfg.load("test")
    torch.manual_seed(cfg.trainer.seed)
    model = _build(cfg, train.shape[0], train.num_classes)
    record = {"data": cfg.data, "shape": list(train.shape), "num_classes": int(train.num_classes)}
    trainer = Trainer(model, SymmFlowLoss(model.codec, image_weight=cfg.image_weight, direction=cfg.direction),
                      _Batches(train, cfg.trainer.batch_size), cfg.trainer,
                      evaluate=lambda m, step, folder: _evaluate(m, cfg, test, Path(folder) / "samples.png"),
                      run_config={**config_to_dict(cfg), SYMMFLOW_KEY: record})
    result = trainer.fit()
    metrics: dict[str, Any] = {"step": result.step, "train_seconds": result.seconds}
    if is_main_process():
        final = trainer.ema.module if trainer.ema is not None else trainer.model
        metrics.update(_evaluate(final, cfg, test, Path(cfg.trainer.out_dir) / "samples.png"))
    return metrics


def load_symmflow(path: str | Path) -> TrainedSymmFlow:
    """Rebuild a ``symmflow`` run from its directory or a checkpoint."""
    checkpoint, record, stored = read_checkpoint_record(
        path, SYMMFLOW_KEY, run_of="a symmflow run", fix="pass the --trainer.out_dir of `flowzoo.vision.train symmflow`")
    from flowzoo.core.config import config_from_dict

    cfg = config_from_dict(SymmFlowTrainConfig, stored)
    model = _build(cfg, int(record["shape"][0]), int(record["num_classes"]))
    model.load_state_dict(checkpoint.inference_weights)
    return TrainedSymmFlow(model.eval(), cfg, checkpoint.path, checkpoint.step)


def symmflow_main(method: str, argv: Sequence[str], prog: str) -> dict[str, Any]:
    """Parse ``argv`` into a :class:`SymmFlowTrainConfig` for ``method`` and train it; returns a summary."""
    cfg = parse_config(SymmFlowTrainConfig, [*argv, "--method", method], prog=f"{prog} {method}")
    metrics = train_symmflow(cfg)
    summary = {"run": str(Path(cfg.trainer.out_dir)), "steps": metrics["step"]}
    if "miou_1step" in metrics:
        summary["one-step mIoU"] = round(metrics["miou_1step"], 4)
    return summary
