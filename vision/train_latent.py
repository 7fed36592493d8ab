"""``python -m flowzoo.vision.train autoencoder|lfm``: the two training stages of latent flow matching (LFM, arXiv
2307.08698) as command-line methods, and sampling an LFM run for ``flowzoo vision sample``.

1. ``autoencoder --data SPEC --trainer.out_dir runs/ae [--ae.latent_channels 4 --ae.downsample 2 ...]`` trains the
   conv autoencoder of :mod:`flowzoo.vision.autoencoder` (``--ae.variational true --ae.beta 1e-3``: a VAE;
   ``--ae.kind representation``: RAE's representation autoencoder, arXiv 2510.11690, a frozen feature-classifier
   encoder and a trained decoder, :mod:`flowzoo.vision.representation`);
2. ``lfm --data SPEC --autoencoder runs/ae --trainer.out_dir runs/lfm [--class_cond true]`` measures the latent
   scale on the training images and trains I-CFM on the scaled latents (:func:`flowzoo.vision.latent.train_latent_fm`);
   ``--objective meanflow|meanflow_fd`` trains a latent flow map from scratch instead, and ``--objective mfrae
   --teacher runs/lfm`` MF-RAE's path (arXiv 2511.13019: consistency mid-training, then MeanFlow distillation of
   the teacher lfm run, which must use the same autoencoder and scale; ``--autoencoder`` defaults to the teacher's);
3. ``flowzoo vision sample --checkpoint runs/lfm ...`` decodes its samples (:func:`sample_latent_run`), and
   ``flowzoo vision evaluate --checkpoint runs/lfm`` scores the decoded samples against the test split of the data
   the run trained on (:func:`latent_run_data`: the ``lfm`` command leaves the data spec and its load options in
   ``<run>/image_data.json``).

Time runs from noise (t = 0) to data (t = 1), as everywhere in flowzoo (the latent module documents LFM's mapping).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from flowzoo.core.config import option_help, parse_config
from flowzoo.core.errors import CheckpointError, ConfigError, expected
from flowzoo.core.training import TrainerConfig, atomic_write_bytes, resolve_checkpoint
from flowzoo.core.validation import check_positive_int, check_probability
from flowzoo.vision.autoencoder import AutoencoderConfig, train_autoencoder
from flowzoo.vision.datasets import load_images
from flowzoo.vision.latent import LATENT_KEY, LATENT_OBJECTIVES, generate_latent, load_latent_fm, train_latent_fm

__all__ = ["LATENT_METHODS", "DATA_RECORD", "LatentTrainConfig", "latent_main", "is_latent_run", "latent_run_data",
           "sample_latent_run"]

DATA_RECORD = "image_data.json"  # beside an lfm run's checkpoints: the data spec and load options it trained on
LATENT_METHODS = {"autoencoder": "Autoencoder (conv AE or VAE, --ae.*) whose latents lfm trains on",
                  "lfm": "LFM: I-CFM in the latent space of an autoencoder run (--autoencoder RUN; --objective "
                         "meanflow or mfrae --teacher RUN: a few-step latent flow map)"}


def _default_trainer() -> TrainerConfig:
    return TrainerConfig(steps=5000, batch_size=128, lr=1e-3, warmup_steps=100, ema_decay=0.999,
                         checkpoint_every=1000, out_dir="runs/vision_latent")


@dataclass
class LatentTrainConfig:
    """An autoencoder or a latent-FM run on one image data set (the method is the first argument)."""

    method: str = field(default="lfm", metadata=option_help("set by the first argument (autoencoder or lfm)"))
    data: str = field(default="mnist", metadata=option_help("mnist, digits, faces, patches, folder:PATH, ..."))
    size: int = field(default=0, metadata=option_help("resize images to size x size (0: the data's own)"))
    pad: int = field(default=0, metadata=option_help("background border added on each side"))
    channels: int = field(default=0, metadata=option_help("convert to 1 or 3 channels (0: the data's own)"))
    autoencoder: str = field(default="", metadata=option_help("lfm: run directory of an autoencoder run"))
    ae: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    net: str = field(default="unet", metadata=option_help("lfm: latent backbone, unet or dit"))
    width: int = field(default=64, metadata=option_help("lfm: channels of the latent backbone"))
    class_cond: bool = field(default=False, metadata=option_help("lfm: condition on class labels (label dropout)"))
    cond_dropout: float = field(default=0.1, metadata=option_help("lfm: share of labels set to the null class"))
    objective: str = field(default="fm", metadata=option_help(
        "lfm: fm (I-CFM), meanflow, meanflow_fd (flow maps from scratch) or mfrae (distils --teacher)"))
    teacher: str = field(default="", metadata=option_help("lfm --objective mfrae: an lfm run on the same autoencoder"))
    teacher_steps: int = field(default=16, metadata=option_help("mfrae: Euler steps of the teacher's trajectories"))
    mid_fraction: float = field(default=0.3, metadata=option_help(
        "mfrae: share of the steps spent on consistency mid-training"))
    trainer: TrainerConfig = field(default_factory=_default_trainer)

    def __post_init__(self) -> None:
        if self.method not in LATENT_METHODS:
            raise ConfigError(expected(f"a method in {sorted(LATENT_METHODS)}", repr(self.method), "pass lfm"))
        if self.net not in ("unet", "dit"):
            raise ConfigError(expected("--net unet or dit", repr(self.net), "pass --net unet"))
        check_probability(self.cond_dropout, "--cond_dropout", inclusive_high=False)
        if self.objective not in LATENT_OBJECTIVES:
            raise ConfigError(expected(f"--objective in {LATENT_OBJECTIVES}", repr(self.objective),
                                       "pass --objective fm"))
        if (self.objective == "mfrae") != bool(self.teacher):
            raise ConfigError(expected("--teacher RUN with --objective mfrae, and only with it",
                                       f"--objective {self.objective}, --teacher {self.teacher!r}",
                                       "train an lfm run first, then pass --objective mfrae --teacher RUN"))
        check_positive_int(self.teacher_steps, "--teacher_steps")
        check_probability(self.mid_fraction, "--mid_fraction")

    def load_options(self) -> dict[str, Any]:
        return {k: v for k, v in (("size", self.size), ("pad", self.pad), ("channels", self.channels)) if v}


def latent_main(method: str, argv: Sequence[str], prog: str) -> dict[str, Any]:
    """Parse ``argv`` into a :class:`LatentTrainConfig` for ``method`` and train it; returns a summary."""
    cfg = parse_config(LatentTrainConfig, [*argv, "--method", method], prog=f"{prog} {method}")
    data = load_images(cfg.data, split="train", **cfg.load_options())
    if method == "autoencoder":
        run = train_autoencoder(data, cfg.trainer.out_dir, config=cfg.ae, trainer=cfg.trainer, spec=cfg.data,
                                load=cfg.load_options())
        return {"run": str(run), "outputs": "checkpoints, metrics.csv, reconstructions.png"}
    teacher = load_latent_fm(cfg.teacher) if cfg.teacher else None
    autoencoder = cfg.autoencoder or (teacher.codec.source if teacher is not None else "")
    if not autoencoder:
        raise ConfigError(expected("--autoencoder RUN for lfm", "no --autoencoder",
                                   f"train one first: {prog} autoencoder --data {cfg.data} --trainer.out_dir runs/ae"))
    trained = train_latent_fm(data, autoencoder, cfg.trainer.out_dir, net=cfg.net, width=cfg.width,
                              class_cond=cfg.class_cond, cond_dropout=cfg.cond_dropout, trainer=cfg.trainer,
                              objective=cfg.objective, teacher=teacher, teacher_steps=cfg.teacher_steps,
                              mid_fraction=cfg.mid_fraction)
    record = {"data": cfg.data, "load": cfg.load_options()}
    atomic_write_bytes(Path(cfg.trainer.out_dir) / DATA_RECORD, json.dumps(record, indent=2).encode("utf-8"))
    return {"run": str(trained.run_dir), "step": trained.step, "latent_scale": trained.codec.scale,
            "outputs": "checkpoints, metrics.csv; sample with flowzoo vision sample --checkpoint RUN"}


def is_latent_run(path: str | Path) -> bool:
    """Whether ``path`` holds a checkpoint of an ``lfm`` run (its ``config.yaml`` records the codec); reads only that
    file, so the loader that follows verifies and reads the weights once."""
    try:
        config = yaml.safe_load((resolve_checkpoint(path) / "config.yaml").read_text(encoding="utf-8"))
    except (CheckpointError, OSError, yaml.YAMLError):   # no checkpoint there: the caller's loader reports it
        return False
    return isinstance(config, dict) and LATENT_KEY in config


def latent_run_data(path: str | Path) -> tuple[str, dict[str, Any]]:
    """``(data spec, load options of load_images)`` an ``lfm`` run trained on: from its run directory's
    :data:`DATA_RECORD`, else (a run trained from Python) the data name in its codec record with the data's own size.

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> _ = (run / DATA_RECORD).write_text('{"data": "mnist", "load": {"pad": 2}}')
        >>> latent_run_data(run)
        ('mnist', {'pad': 2})
    """
    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):   # run directory, checkpoints/, checkpoints/step_N
        if (folder / DATA_RECORD).is_file():
            record = json.loads((folder / DATA_RECORD).read_text(encoding="utf-8"))
            return str(record["data"]), dict(record.get("load") or {})
    config = yaml.safe_load((resolve_checkpoint(path) / "config.yaml").read_text(encoding="utf-8"))
    name = str(config[LATENT_KEY].get("data", ""))
    return name.rsplit("/", 1)[0] if name.endswith(("/train", "/test")) else name, {}


def sample_latent_run(path: str | Path, n: int, *, steps: int, method: str, label: int | None, cfg_scale: float,
                      seed: int) -> tuple[torch.Tensor, torch.Tensor | None, int, tuple[int, ...]]:
    """``(images, labels, evaluations per image, image shape)`` decoded from an ``lfm`` run (a flow-map run jumps
    ``steps`` intervals, one evaluation each)."""
    run = load_latent_fm(path)
    labels = None
    if run.class_cond:
        labels = torch.full((n,), label) if label is not None else torch.arange(n) % run.num_classes
    elif label is not None or cfg_scale != 1.0:
        raise ConfigError(expected("--class / --cfg_scale only for a class-conditional lfm run",
                                   f"--class {label} --cfg_scale {cfg_scale}", "drop them"))
    out = generate_latent(run.model, run.codec, n, steps=None if method == "dopri5" else steps, method=method,
                          labels=labels, cfg_scale=cfg_scale, null_class=run.num_classes,
                          generator=torch.Generator().manual_seed(seed))
    return out.images, labels, out.nfe, tuple(run.codec.shape)
