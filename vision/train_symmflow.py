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

A trained run serves ``flowzoo vision sample`` (:func:`sample_symmflow`: ``--task generate`` images from the test
split's maps, ``segment`` maps of its images, ``classify`` its images' classes) and ``flowzoo vision evaluate``
(:func:`score_symmflow`: segmentation mIoU, one-step classification accuracy, generation Fréchet distance), on the
test split that the run's recorded data spec rebuilds (:func:`symmflow_test_split`). The scoring pieces
(:func:`segmentation_scores`, :func:`exact_accuracy`, :func:`foreground_iou`, :func:`feature_evaluator`) are the
ones the SymmFlow benchmark scores its networks with, so the command and the benchmark measure the same thing.

Example::

    python -m flowzoo.vision.train symmflow --data mnist-masks --size 16 --trainer.steps 3000 \
        --trainer.out_dir runs/vision/symmflow
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from flowzoo.core.config import config_to_dict, option_help, parse_config
from flowzoo.core.errors import CheckpointError, ConfigError, ShapeError, expected
from flowzoo.core.training import (Trainer, TrainerConfig, is_main_process, read_checkpoint_record,
                                   resolve_checkpoint)
from flowzoo.core.validation import check_int, check_positive_int, check_probability, check_tensor
from flowzoo.vision.datasets import to_uint8
from flowzoo.vision.features import ImageEvaluator, train_feature_classifier
from flowzoo.vision.metrics import save_image_grid
from flowzoo.vision.segmentation import MapCodec, SegmentationData, load_segmentation, mean_iou, pixel_accuracy
from flowzoo.vision.symmflow import (DIRECTIONS, SymmFlowLoss, SymmFlowNet, classify, generate, segment,
                                     segmentation_batch)

__all__ = ["SYMMFLOW_METHODS", "SYMMFLOW_KEY", "SYMMFLOW_TASKS", "MULTILABEL_SETS", "SymmFlowTrainConfig",
           "TrainedSymmFlow", "SymmFlowSamples", "symmflow_main", "train_symmflow", "load_symmflow",
           "is_symmflow_run", "symmflow_test_split", "check_task", "is_multilabel", "segmentation_scores",
           "exact_accuracy", "foreground_iou", "feature_evaluator", "score_symmflow", "render_maps",
           "sample_symmflow"]

SYMMFLOW_METHODS = {"symmflow": "SymmFlow: one flow between images and semantic maps (--direction symmetric|"
                                "generate|segment; --data mnist-masks|shapes)"}
SYMMFLOW_KEY = "symmflow"  # where config.yaml records the data and network of the run
SYMMFLOW_TASKS = ("generate", "segment", "classify")
"""What ``flowzoo vision sample --task`` does with a SymmFlow run: maps → images, images → maps, images → classes."""
MULTILABEL_SETS = ("shapes",)
"""Segmentation sets with several classes per image: classification must get the whole set of visible classes."""


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


def is_symmflow_run(path: str | Path) -> bool:
    """Whether ``path`` holds a checkpoint of a ``symmflow`` run (its ``config.yaml`` records :data:`SYMMFLOW_KEY`);
    reads only that file, so the loader that follows verifies and reads the weights once.

    Example:
        >>> is_symmflow_run("no/such/run")
        False
    """
    try:
        config = yaml.safe_load((resolve_checkpoint(path) / "config.yaml").read_text(encoding="utf-8"))
    except (CheckpointError, OSError, yaml.YAMLError):   # no checkpoint there: the caller's loader reports it
        return False
    return isinstance(config, dict) and SYMMFLOW_KEY in config


def symmflow_test_split(run: TrainedSymmFlow, n: int | None = None) -> SegmentationData:
    """The first ``n`` rows (all when None) of the test split of the data the run trained on, rebuilt from the data
    spec, size and seed its ``config.yaml`` records."""
    test = run.config.load("test")
    if n is None:
        return test
    n = check_positive_int(n, "--n")
    if n > len(test):
        raise ConfigError(expected(f"--n at most the {len(test)} images of {test.name}", n,
                                   f"pass --n {len(test)} or fewer"))
    return test.subset(slice(0, n))


def check_task(run: TrainedSymmFlow, task: str) -> str:
    """``task`` (one of :data:`SYMMFLOW_TASKS`) if the run's direction can do it: a ``--direction generate`` baseline
    cannot segment or classify, a ``--direction segment`` one cannot generate."""
    if task not in SYMMFLOW_TASKS:
        raise ConfigError(expected(f"--task in {SYMMFLOW_TASKS}", repr(task), "pass --task generate"))
    direction = run.config.direction
    if direction != "symmetric" and (direction == "generate") != (task == "generate"):
        able = "generate" if direction == "generate" else "segment or classify"
        raise ConfigError(expected(f"a run that can {task} (trained with --direction symmetric)",
                                   f"{run.checkpoint}, trained with --direction {direction}", f"pass --task {able}"))
    return task


def is_multilabel(data: SegmentationData) -> bool:
    """Whether ``data`` (named ``"<set>/<split>"``) is a :data:`MULTILABEL_SETS` set, classified by the whole set of
    its visible classes rather than one label.

    Example:
        >>> from flowzoo.vision.segmentation import make_shapes
        >>> is_multilabel(make_shapes(2, size=8)), is_multilabel(make_shapes(2, size=8, name="digits/test"))
        (True, False)
    """
    return data.name.partition("/")[0] in MULTILABEL_SETS


def segmentation_scores(labels: torch.Tensor, data: SegmentationData) -> dict[str, float]:
    """``{"miou", "pixel_accuracy"}`` of predicted class maps (B, H, W) against ``data.maps``."""
    return {"miou": mean_iou(labels, data.maps, data.num_classes),
            "pixel_accuracy": pixel_accuracy(labels, data.maps, data.num_classes)}


def exact_accuracy(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Share of rows whose prediction is exactly right: labels (B,), or every entry of multi-labels (B, L).

    Example:
        >>> exact_accuracy(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 0]))
        0.6666666666666666
        >>> exact_accuracy(torch.tensor([[True, False], [True, True]]), torch.tensor([[True, False], [True, False]]))
        0.5
    """
    pred = check_tensor(pred, "pred", floating=False, finite=False)
    truth = check_tensor(truth, "truth", floating=False, finite=False)
    if pred.shape != truth.shape or pred.dim() not in (1, 2):
        raise ShapeError(expected("pred and truth of one shape, (B,) or (B, L)",
                                   f"{tuple(pred.shape)} and {tuple(truth.shape)}", "predict one label set per row"))
    hits = (pred == truth) if pred.dim() == 1 else (pred == truth).all(1)
    return float(hits.double().mean())


def foreground_iou(images: torch.Tensor, data: SegmentationData) -> float:
    """IoU of the foreground of images generated from ``data.maps`` with the maps' foreground (class > 0): a digit
    pixel is brighter than mid grey, a shapes pixel saturated (the grey background never is)."""
    images = check_tensor(images, "images", min_dim=4)
    fake = (images.amax(1) - images.amin(1)) > 0.5 if is_multilabel(data) else images[:, 0] > 0.0
    real = data.maps > 0
    return float((fake & real).sum() / (fake | real).sum().clamp_min(1))


def feature_evaluator(train: SegmentationData, test: SegmentationData, *, epochs: int = 30,
                      seed: int = 0) -> ImageEvaluator:
    """The Fréchet distance's feature space: a classifier of the image labels trained on ``train``, against the
    ``test`` images (:func:`~flowzoo.vision.features.train_feature_classifier`)."""
    classifier, accuracy = train_feature_classifier(train.as_image_data(), test.as_image_data(),
                                                    epochs=check_positive_int(epochs, "epochs"), seed=seed)
    return ImageEvaluator(classifier, test.images, accuracy)


def score_symmflow(model: SymmFlowNet, train: SegmentationData, test: SegmentationData, *, gen_steps: int = 10,
                   seg_steps: int = 1, method: str = "euler", min_pixels: int = 3, feature_epochs: int = 30,
                   seed: int = 0, progress: bool = False) -> dict[str, float]:
    """SymmFlow's metrics on ``test`` (the benchmark's): what the model's direction can do of

    * ``miou`` and ``pixel_accuracy`` of a ``seg_steps``-step segmentation of the test images;
    * ``classification_accuracy`` of the one-step pixel vote (:func:`~flowzoo.vision.symmflow.classify`; the
      whole set of visible classes for :data:`MULTILABEL_SETS`, classes with ``min_pixels`` pixels or more);
    * ``fd`` of images generated from the test maps in ``gen_steps`` steps, in the features of a classifier
      trained on ``train`` for ``feature_epochs`` epochs, and their ``foreground_iou`` with the maps.
    """
    model.eval()
    metrics: dict[str, float] = {}
    gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    if model.direction != "generate":
        result = segment(model, test.images, steps=seg_steps, method=method, generator=gen, progress=progress)
        metrics.update(segmentation_scores(result.extras["labels"], test))
        multilabel = is_multilabel(test)
        votes = classify(model, test.images, steps=1, multilabel=multilabel, min_pixels=min_pixels, generator=gen)
        metrics["classification_accuracy"] = exact_accuracy(votes, test.multilabels if multilabel else test.labels)
    if model.direction != "segment":
        if progress:
            print(f"training the feature classifier of the FD on {len(train)} images of {train.name}", flush=True)
        evaluator = feature_evaluator(train, test, epochs=feature_epochs, seed=seed)
        images = generate(model, test.maps, steps=gen_steps, method=method, generator=gen, progress=progress).x
        metrics.update(fd=evaluator.fd(images), foreground_iou=foreground_iou(images, test),
                       feature_classifier_accuracy=evaluator.accuracy)
    return metrics


def render_maps(maps: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class maps (B, H, W) as RGB images (B, 3, H, W) in [−1, 1], one colour per class (the colour code of
    :class:`~flowzoo.vision.segmentation.MapCodec`, background black).

    Example:
        >>> render_maps(torch.tensor([[[0, 1]]]), 3)[0, :, 0, 0].tolist()
        [-1.0, -1.0, -1.0]
    """
    return MapCodec(num_classes, encoding="colour").encode(maps)


def _evaluations(nfe: int) -> str:
    return f"{nfe} evaluation{'' if nfe == 1 else 's'} each"


def _rgb(images: torch.Tensor) -> torch.Tensor:
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _interleave(*columns: torch.Tensor) -> torch.Tensor:
    """Rows (image_i of column 1, image_i of column 2, ...) for a grid of side-by-side tuples."""
    return torch.stack([_rgb(c.float().cpu().clamp(-1, 1)) for c in columns], 1).flatten(0, 1)


@dataclass
class SymmFlowSamples:
    """What ``flowzoo vision sample --task`` writes for a SymmFlow run.

    Attributes:
        tiles: the grid's images in [−1, 1], ``per_item`` consecutive tiles for each of the N test items.
        per_item: tiles per item (generate: map | image; segment: image | predicted map | true map; classify: image).
        arrays: the ``.npz`` contents.
        summary: one line for the terminal.
    """

    tiles: torch.Tensor
    per_item: int
    arrays: dict[str, np.ndarray]
    summary: str


@torch.no_grad()
def sample_symmflow(run: TrainedSymmFlow, task: str, n: int, *, steps: int = 10, method: str = "euler",
                    seed: int = 0, min_pixels: int = 3, progress: bool = False) -> SymmFlowSamples:
    """Run ``task`` on the first ``n`` test items of the run's data (:func:`symmflow_test_split`) with ``steps``
    steps of ``method``: ``"generate"`` images from the maps, ``"segment"`` the images into maps, ``"classify"`` the
    images by the pixel vote of a ``steps``-step segmentation (``steps=1``: the paper's one-step classification)."""
    task = check_task(run, task)
    test, gen = symmflow_test_split(run, n), torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    model, k = run.model, test.num_classes
    base = {"maps": test.maps.numpy(), "labels": test.labels.numpy(), "multilabels": test.multilabels.numpy()}
    if task == "generate":
        result = generate(model, test.maps, steps=steps, method=method, generator=gen, progress=progress)
        images = result.x.float().clamp(-1, 1)
        arrays = {"images": to_uint8(images).numpy(), "x": images.numpy(), **base, "nfe": np.int64(result.nfe)}
        return SymmFlowSamples(_interleave(render_maps(test.maps, k), images), 2, arrays,
                               f"{n} images generated from test maps of {test.name} ({method}, "
                               f"{_evaluations(result.nfe)}; foreground IoU with the maps "
                               f"{foreground_iou(images, test):.3f})")
    if task == "segment":
        result = segment(model, test.images, steps=steps, method=method, generator=gen, progress=progress)
        labels = result.extras["labels"]
        scores = segmentation_scores(labels, test)
        arrays = {"images": to_uint8(test.images).numpy(), "x": test.images.numpy(), **base,
                  "predicted_maps": labels.numpy(), "nfe": np.int64(result.nfe)}
        return SymmFlowSamples(_interleave(test.images, render_maps(labels, k), render_maps(test.maps, k)), 3, arrays,
                               f"{n} test images of {test.name} segmented ({method}, {_evaluations(result.nfe)}): "
                               f"mIoU {scores['miou']:.3f}, pixel accuracy {scores['pixel_accuracy']:.3f}")
    if method != "euler":   # classify() votes on the map of an Euler segmentation
        raise ConfigError(expected("--sampler euler for --task classify", f"--sampler {method}",
                                   "drop --sampler, or use --task segment for other solvers"))
    multilabel = is_multilabel(test)
    votes = classify(model, test.images, steps=steps, multilabel=multilabel, min_pixels=min_pixels, generator=gen)
    truth = test.multilabels if multilabel else test.labels
    names = test.class_names[1:]
    shown = ["+".join(names[j] for j in row.nonzero().flatten().tolist()) or "-" if multilabel else names[int(row)]
             for row in votes[:8]]
    arrays = {"images": to_uint8(test.images).numpy(), "x": test.images.numpy(), **base,
              "predicted": votes.numpy(), "nfe": np.int64(steps)}
    return SymmFlowSamples(test.images.float().clamp(-1, 1), 1, arrays,
                           f"{n} test images of {test.name} classified by a {steps}-step pixel vote: accuracy "
                           f"{exact_accuracy(votes, truth):.3f}; first predictions {' '.join(shown)}")
