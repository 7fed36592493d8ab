r"""Training entrypoint of flowzoo.vision: ``python -m flowzoo.vision.train <method> --data SPEC [options]``.

Pixel-space flow matching baselines on an image data set (:func:`~flowzoo.vision.datasets.load_images`):

* ``icfm``: I-CFM, conditional flow matching with independent (noise, image) pairs (Lipman et al., arXiv
  2210.02747, Eq. 23; Tong et al., arXiv 2302.00482, Alg. 1 with σ = 0): :math:`x_t = (1-t)x_0 + t x_1`,
  target :math:`x_1 - x_0`, loss :math:`\|v_\theta(x_t, t, y) - (x_1 - x_0)\|^2`.
* ``otcfm``: OT-CFM, the same loss after pairing each minibatch by exact optimal transport (Tong et al.,
  arXiv 2302.00482, Alg. 2); the labels follow their images through the pairing.
* ``sourcefm_icfm`` / ``sourcefm_otcfm``: the same two losses from SourceFM's norm-aligned source
  :math:`x_0 = s z`, :math:`s = \mathbb{E}\|x_1\| / \mathbb{E}\|z\|` computed from the training images (Lee, Kim,
  Lee, TMLR 2025; :mod:`flowzoo.vision.sourcefm`). The scale is stored with the checkpoint (``image.source_scale``)
  and sampling starts from the same source; directional pruning is a sampling option for any run
  (``flowzoo vision sample --prune true``, :func:`run_source`).
* ``meanflow`` / ``meanflow_fd`` / ``splitmeanflow``: a two-time flow map :math:`u_\theta(x_s, s, t)` (the
  :class:`~flowzoo.core.nets.FlowMapUNet` or :class:`~flowzoo.vision.nets.FlowMapDiT`) on MeanFlow's identity with
  a JVP or finite-difference target (arXiv 2505.13447, Eq. 6) or on SplitMeanFlow's interval splitting (arXiv
  2507.16884), sampled by 1, 2, ... jumps; ``reflow`` (2-rectified flow, arXiv 2209.03003) and ``mfrae`` (MF-RAE's
  consistency mid-training then MeanFlow distillation, arXiv 2511.13019) learn from ``--teacher RUN``, an
  ``icfm``/``otcfm`` run of the same data (:mod:`flowzoo.vision.fewstep`; registry: :mod:`flowzoo.vision.methods`).

Time runs from 0 (Gaussian noise) to 1 (data), as in both papers' flow-matching form, so no mapping is needed.
With ``--class_cond`` the velocity is conditioned on the class label ``y`` and a share ``--cond_dropout`` of the
labels is replaced by the null class (``num_classes``) for classifier-free guidance (Ho & Salimans, arXiv
2207.12598). The backbone is the core's ADM-style :class:`~flowzoo.core.nets.UNet` (``--net unet``) or a
:class:`~flowzoo.vision.nets.DiT` (``--net dit``), sized by ``--net_size``; ``--grad_checkpoint``,
``--channels_last`` and ``--compile`` trade compute for memory or speed it up on a GPU
(:func:`~flowzoo.vision.acceleration.prepare_for_training`), with ``--trainer.precision bf16`` and ``--trainer.fused``.

The run directory (``--trainer.out_dir``) receives the Trainer's checkpoints (weights, EMA, ``config.yaml``,
which also records the data spec, image shape and class count under ``image`` so that ``flowzoo vision sample``
and ``flowzoo vision evaluate`` can rebuild the network), ``metrics.csv`` and a sample grid ``samples.png``
of the final EMA model (each evaluation's grid also goes to TensorBoard). A new method registers with one entry in :data:`flowzoo.vision.methods.METHODS`.

Example::

    python -m flowzoo.vision.train icfm --data digits --net unet --class_cond true \
        --trainer.steps 2000 --trainer.out_dir runs/vision/digits_icfm
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from flowzoo.core.config import config_from_dict, config_to_dict, option_help, parse_config
from flowzoo.core.errors import CheckpointError, ConfigError, ShapeError, expected
from flowzoo.core.nets import FlowMapUNet, UNet
from flowzoo.core.training import Trainer, TrainerConfig, is_main_process, read_checkpoint, read_checkpoint_record
from flowzoo.core.validation import check_int, check_number, check_positive_int, check_probability
from flowzoo.vision.datasets import Augment, ImageBatchSampler, ImageData, load_images
from flowzoo.vision.fewstep import (FrozenTeacher, MidTrainingThenDistillation, PairBatchSampler, check_teacher,
                                    reflow_pairs)
from flowzoo.vision.blockwise_nets import BlockwiseVelocity
from flowzoo.vision.methods import METHODS, guidance_classifier
from flowzoo.vision.acceleration import prepare_for_training
from flowzoo.vision.nets import DiT, FlowMapDiT
from flowzoo.vision.refiner import ImageRefiner, refiner_velocity_error
from flowzoo.vision.sampling import write_sample_grid
from flowzoo.vision.sourcefm import SourceFMLoss, SourceFMSource, build_source
from flowzoo.vision.train_latent import LATENT_METHODS, latent_main
from flowzoo.vision.train_symmflow import SYMMFLOW_METHODS, symmflow_main

__all__ = ["VisionTrainConfig", "UNET_SIZES", "DIT_SIZES", "TrainedImageModel",
           "load_data", "build_net", "train", "load_trained", "run_source", "main"]

PROG = "python -m flowzoo.vision.train"
IMAGE_KEY = "image"  # where config.yaml records the data the network was built for

# U-Net sizes: (channels, multipliers, residual blocks per level, attention levels, channels per head).
UNET_SIZES: dict[str, tuple[int, tuple[int, ...], int, tuple[int, ...], int]] = {
    "tiny": (32, (1, 2), 1, (), 32),
    "small": (64, (1, 2, 2), 2, (1,), 32),
    "base": (96, (1, 2, 2), 2, (1,), 64),
    "cifar": (128, (1, 2, 2, 2), 2, (1,), 64),   # torchcfm's CIFAR-10 U-Net (UNet.cifar10)
}
DIT_SIZES = {"tiny": "dit_tiny", "small": "dit_s", "base": "dit_b"}


def _default_trainer() -> TrainerConfig:
    return TrainerConfig(steps=20000, batch_size=128, lr=2e-4, warmup_steps=200, ema_decay=0.999,
                         checkpoint_every=2000, out_dir="runs/vision")


@dataclass
class VisionTrainConfig:
    """A flow-matching image model trained on one data set (the method is the first argument)."""

    method: str = field(default="icfm", metadata=option_help("set by the first argument (icfm, otcfm, ...)"))
    data: str = field(default="digits", metadata=option_help("mnist, digits, faces, patches, folder:PATH, cifar10:PATH or mnist:PATH"))
    size: int = field(default=0, metadata=option_help("resize images to size x size (0: the data's own; patches: crop size 32)"))
    pad: int = field(default=0, metadata=option_help("background border added on each side (e.g. 2: 28x28 -> 32x32)"))
    channels: int = field(default=0, metadata=option_help("convert to 1 or 3 channels (0: the data's own)"))
    test_fraction: float = field(default=0.2, metadata=option_help("share held out as the test split (bundled sets, folders)"))
    split_seed: int = field(default=0, metadata=option_help("seed of the train/test split"))
    net: Literal["unet", "dit"] = field(default="unet", metadata=option_help("backbone: the ADM-style U-Net or a DiT"))
    net_size: str = field(default="tiny", metadata=option_help("tiny, small, base (or cifar for the U-Net)"))
    width: int = field(default=0, metadata=option_help("override the U-Net's channels / the DiT's token width (0: the size's)"))
    patch: int = field(default=2, metadata=option_help("DiT patch size"))
    class_cond: bool = field(default=False, metadata=option_help("condition on class labels (with label dropout for CFG)"))
    cond_dropout: float = field(default=0.1, metadata=option_help("share of labels replaced by the null class (class_cond)"))
    flip: float = field(default=0.0, metadata=option_help("probability of a horizontal flip (0 for digits)"))
    crop_padding: int = field(default=0, metadata=option_help("random-crop padding in pixels (0: off)"))
    grid_n: int = field(default=64, metadata=option_help("images in the sample grid written at each evaluation"))
    grid_steps: int = field(default=20, metadata=option_help("Euler steps (flow maps: jumps) for that grid"))
    teacher: str = field(default="", metadata=option_help("reflow, mfrae: run directory of an icfm/otcfm teacher"))
    teacher_steps: int = field(default=16, metadata=option_help("Euler steps of the teacher's trajectories (reflow pairs, mfrae chords)"))
    reflow_pairs: int = field(default=0, metadata=option_help("reflow: pairs drawn from the teacher (0: one per training image)"))
    mid_fraction: float = field(default=0.3, metadata=option_help("mfrae: share of the steps spent on consistency mid-training"))
    refiner_width: int = field(default=16, metadata=option_help("refiner: hidden channels of FlowTurbo's conv refiner"))
    refiner_depth: int = field(default=2, metadata=option_help("refiner: hidden 3x3 convolutions"))
    bfm_segments: int = field(default=4, metadata=option_help("bfm: time segments K, each with its own velocity block"))
    bfm_block_depth: int = field(default=2, metadata=option_help("bfm: transformer layers per segment block"))
    bfm_heads: int = field(default=2, metadata=option_help("bfm: attention heads (token width: --width, default 64; patch: --patch)"))
    bfm_guidance: bool = field(default=False, metadata=option_help("bfm: semantic feature guidance from the data set's feature classifier"))
    bfm_feature_weight: float = field(default=0.05, metadata=option_help("bfm: weight of the feature alignment loss (the paper's 0.05)"))
    bfm_feature_dim: int = field(default=0, metadata=option_help("bfm: set by --bfm_guidance (the classifier's feature width)"))
    refiner_max_dt: float = field(default=0.12, metadata=option_help("refiner: largest time offset trained on (FlowTurbo's 0.12); refiner steps must not exceed it"))
    channels_last: bool = field(default=False, metadata=option_help("channels-last weights and activations (faster convolutions on recent GPUs)"))
    compile: bool = field(default=False, metadata=option_help("torch.compile the network for training (compiles during the first steps)"))
    grad_checkpoint: bool = field(default=False, metadata=option_help("recompute the U-Net's / DiT's blocks in the backward pass (less memory)"))
    trainer: TrainerConfig = field(default_factory=_default_trainer)

    def __post_init__(self) -> None:
        check_int(self.size, "--size", low=0)
        check_int(self.pad, "--pad", low=0)
        if self.channels not in (0, 1, 3):
            raise ConfigError(expected("--channels 0, 1 or 3", self.channels, "pass --channels 3 (or 0: keep)"))
        check_probability(self.test_fraction, "--test_fraction", inclusive_low=False, inclusive_high=False)
        check_int(self.split_seed, "--split_seed", low=0)
        check_int(self.width, "--width", low=0)
        check_positive_int(self.patch, "--patch")
        check_probability(self.cond_dropout, "--cond_dropout", inclusive_high=False)
        check_probability(self.flip, "--flip")
        check_int(self.crop_padding, "--crop_padding", low=0)
        check_positive_int(self.grid_n, "--grid_n")
        check_positive_int(self.grid_steps, "--grid_steps")
        check_positive_int(self.teacher_steps, "--teacher_steps")
        check_int(self.reflow_pairs, "--reflow_pairs", low=0)
        check_probability(self.mid_fraction, "--mid_fraction")
        check_positive_int(self.refiner_width, "--refiner_width")
        check_positive_int(self.refiner_depth, "--refiner_depth")
        check_positive_int(self.bfm_segments, "--bfm_segments")
        check_positive_int(self.bfm_block_depth, "--bfm_block_depth")
        check_positive_int(self.bfm_heads, "--bfm_heads")
        check_number(self.bfm_feature_weight, "--bfm_feature_weight", low=0.0)
        check_int(self.bfm_feature_dim, "--bfm_feature_dim", low=0)
        check_probability(self.refiner_max_dt, "--refiner_max_dt", inclusive_low=False, inclusive_high=False)
        special = self.method in METHODS and (METHODS[self.method].refiner or METHODS[self.method].blockwise)
        if self.grad_checkpoint and special:
            raise ConfigError(expected("--grad_checkpoint with a U-Net or DiT method", self.method,
                                       "drop --grad_checkpoint"))
        sizes = UNET_SIZES if self.net == "unet" else DIT_SIZES
        if self.net_size not in sizes:
            raise ConfigError(expected(f"--net_size for --net {self.net} in {sorted(sizes)}", repr(self.net_size),
                                       "pass e.g. --net_size tiny"))

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~flowzoo.vision.datasets.load_images` (and of the feature cache)."""
        options: dict[str, Any] = {"test_fraction": self.test_fraction, "seed": self.split_seed}
        if self.size:
            options["size"] = self.size
        if self.pad:
            options["pad"] = self.pad
        if self.channels:
            options["channels"] = self.channels
        return options


def load_data(cfg: VisionTrainConfig, split: str = "train") -> ImageData:
    """One split of the run's data set, loaded as the run describes it."""
    return load_images(cfg.data, split=split, **cfg.load_options())


def build_net(cfg: VisionTrainConfig, shape: Sequence[int], num_classes: int) -> nn.Module:
    """The run's network for images of ``shape`` (C, H, W): a velocity, or a flow map for a flow-map method;
    ``num_classes`` 0 for unconditional."""
    channels, height, width = (int(v) for v in shape)
    classes = num_classes if cfg.class_cond else 0
    flowmap = cfg.method in METHODS and METHODS[cfg.method].flowmap
    if cfg.method in METHODS and METHODS[cfg.method].refiner:
        return ImageRefiner((channels, height, width), cfg.refiner_width, cfg.refiner_depth, num_classes=classes)
    if cfg.method in METHODS and METHODS[cfg.method].blockwise:
        if height != width or height % cfg.patch:
            raise ShapeError(expected(f"square images whose side is a multiple of --patch {cfg.patch} for bfm",
                                      f"{height}x{width} from {cfg.data}", "pass --size (and --patch 2 or 4)"))
        return BlockwiseVelocity(channels, height, patch=cfg.patch, hidden=cfg.width or 64, heads=cfg.bfm_heads,
                                 segments=cfg.bfm_segments, block_depth=cfg.bfm_block_depth,
                                 feature_dim=cfg.bfm_feature_dim, num_classes=classes)
    if cfg.net == "dit":
        options = {"in_channels": channels, "patch": cfg.patch, "num_classes": classes,
                   "gradient_checkpointing": cfg.grad_checkpoint}
        if cfg.width:
            options["hidden"] = cfg.width
        if height % cfg.patch or width % cfg.patch:
            raise ShapeError(expected(f"images whose sides are multiples of the DiT patch {cfg.patch}",
                                      f"{height}x{width} from {cfg.data}", "pass --patch 1, or --size / --pad"))
        return (FlowMapDiT if flowmap else DiT).preset(DIT_SIZES[cfg.net_size], **options)
    base, multipliers, blocks, attention, head = UNET_SIZES[cfg.net_size]
    factor = 2 ** (len(multipliers) - 1)
    if height % factor or width % factor:
        raise ShapeError(expected(f"images whose sides are multiples of {factor} for the {cfg.net_size} U-Net",
                                  f"{height}x{width} from {cfg.data}",
                                  f"pass --size or --pad to reach a multiple of {factor}, or a smaller --net_size"))
    return (FlowMapUNet if flowmap else UNet)(channels, cfg.width or base, multipliers, blocks, attention, head,
                                              num_classes=classes, gradient_checkpointing=cfg.grad_checkpoint)


def _check_resume(cfg: VisionTrainConfig, image: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint of other images: a convolutional net's weights fit any image size."""
    resume = cfg.trainer.resume
    if resume in (False, None, "", "false"):
        return
    where = Path(cfg.trainer.out_dir) if resume in (True, "true") else Path(str(resume))
    try:
        stored = (read_checkpoint(where).config or {}).get(IMAGE_KEY)
    except CheckpointError:
        return  # nothing to compare with: the Trainer reports a missing or broken checkpoint itself
    if not isinstance(stored, dict):
        return
    theirs = (tuple(int(v) for v in stored.get("shape", ())), int(stored.get("num_classes", -1)))
    ours = (tuple(image["shape"]), int(image["num_classes"]))
    if theirs != ours:
        raise CheckpointError(expected(
            f"a checkpoint of images {ours[0]} with {ours[1]} classes ({image['data']}) to resume",
            f"{where}: images {theirs[0]} with {theirs[1]} classes ({stored.get('data')})",
            "resume with the --data, --size, --pad and --channels the run started with, or start a new "
            "--trainer.out_dir"))


def _load_teacher(cfg: VisionTrainConfig, data: ImageData) -> "TrainedImageModel":
    if not cfg.teacher:
        raise ConfigError(expected(f"--teacher RUN for {cfg.method}", "no --teacher",
                                   "train an icfm or otcfm run first and pass its --trainer.out_dir"))
    teacher = load_trained(cfg.teacher)
    if METHODS[cfg.method].refiner:  # the refiner sees the teacher's conditioning
        cfg.class_cond = teacher.class_cond
    check_teacher(teacher, data.shape, int(data.num_classes), cfg.class_cond, cfg.teacher)
    return teacher


def train(cfg: VisionTrainConfig) -> dict[str, Any]:
    """Train ``cfg.method`` on ``cfg.data``; writes the run directory and returns the final metrics."""
    if cfg.method not in METHODS:
        raise ConfigError(expected(f"a method in {sorted(METHODS)}", repr(cfg.method), f"run {PROG} --help"))
    if cfg.teacher and not METHODS[cfg.method].teacher:
        raise ConfigError(expected(f"--teacher only for {[k for k, m in METHODS.items() if m.teacher]}",
                                   f"--teacher {cfg.teacher} with {cfg.method}", "drop --teacher"))
    data = load_data(cfg, "train")
    if cfg.class_cond and data.labels is None:
        raise ConfigError(expected("a labelled data set for --class_cond", f"{cfg.data} has no labels",
                                   "drop --class_cond"))
    image = {"data": cfg.data, "shape": list(data.shape), "num_classes": int(data.num_classes),
             "load": {k: v for k, v in cfg.load_options().items()}}
    _check_resume(cfg, image)
    method = METHODS[cfg.method]
    teacher = _load_teacher(cfg, data) if method.teacher else None
    if method.pairs:  # reflow fine-tunes the teacher's own network, recorded as this run's
        for name in ("net", "net_size", "width", "patch"):
            setattr(cfg, name, getattr(teacher.config, name))
    if method.blockwise:   # the guidance features' width is part of the network (and of its config record)
        cfg.bfm_feature_dim = guidance_classifier(cfg).feature_dim if cfg.bfm_guidance else 0
    torch.manual_seed(cfg.trainer.seed)
    model = build_net(cfg, data.shape, data.num_classes)
    if method.pairs:
        model.load_state_dict(teacher.model.state_dict())
    prepare_for_training(model, channels_last=cfg.channels_last, compile=cfg.compile)
    objective = method.objective(cfg, data.num_classes, None if teacher is None else FrozenTeacher(teacher.model))
    source = None
    if method.norm_aligned_source:
        source = build_source(data.images, norm_align=True)
        objective = SourceFMLoss(objective, source)
        image["source_scale"] = source.scale
    augment = Augment(cfg.flip, cfg.crop_padding) if (cfg.flip or cfg.crop_padding) else None
    sampler: Any = ImageBatchSampler(data, cfg.trainer.batch_size, augment, labels=cfg.class_cond)
    if method.pairs:
        pairs = reflow_pairs(teacher.model, data, Path(cfg.trainer.out_dir) / "reflow_pairs", n=cfg.reflow_pairs,
                             steps=cfg.teacher_steps, seed=cfg.trainer.seed + 1, labels=cfg.class_cond,
                             progress=cfg.trainer.progress)
        sampler = PairBatchSampler(pairs, cfg.trainer.batch_size)
    out_dir = Path(cfg.trainer.out_dir)

    def evaluate(eval_model: nn.Module, step: int, eval_dir: Path) -> dict[str, float]:
        if method.refiner:
            return _refiner_error(eval_model, teacher.model, cfg)
        return write_sample_grid(eval_model, image, Path(eval_dir) / "samples.png", n=cfg.grid_n, steps=cfg.grid_steps,
                                 class_cond=cfg.class_cond, seed=cfg.trainer.seed, source=source,
                                 writer=trainer.tensorboard_writer, step=step)

    run_config = {**config_to_dict(cfg), IMAGE_KEY: image}
    trainer = Trainer(model, objective, sampler, cfg.trainer, evaluate=evaluate, run_config=run_config)
    if isinstance(objective, MidTrainingThenDistillation):
        objective.step = lambda: trainer.step
    result = trainer.fit()
    metrics: dict[str, Any] = {"step": result.step, "train_seconds": result.seconds, **result.eval_metrics}
    if is_main_process():
        final = trainer.ema.module if trainer.ema is not None else trainer.model
        final.eval()
        if method.refiner:
            metrics.update(_refiner_error(final, teacher.model, cfg))
        else:
            write_sample_grid(final, image, out_dir / "samples.png", n=cfg.grid_n, steps=cfg.grid_steps,
                              class_cond=cfg.class_cond, seed=cfg.trainer.seed, source=source)
    return metrics


def _refiner_error(refiner: nn.Module, teacher: nn.Module, cfg: VisionTrainConfig) -> dict[str, float]:
    """The refiner's held-out velocity error (up to 256 test images), and that of reusing the last velocity."""
    test = load_data(cfg, "test")
    labels = test.labels[:256] if cfg.class_cond else None
    device = next(refiner.parameters()).device
    errors = refiner_velocity_error(refiner, FrozenTeacher(teacher), test.images[:256].to(device),
                                    None if labels is None else labels.to(device), max_dt=cfg.refiner_max_dt)
    return {f"heldout_{name}": value for name, value in errors.items()}


@dataclass
class TrainedImageModel:
    """A trained run rebuilt from its checkpoint (EMA weights when present), in eval mode."""

    model: nn.Module
    config: VisionTrainConfig
    shape: tuple[int, int, int]
    num_classes: int
    checkpoint: Path
    step: int
    source_scale: float = 1.0

    @property
    def class_cond(self) -> bool:
        """Whether the network takes class labels ``y``."""
        return self.config.class_cond and self.num_classes > 0


def load_trained(path: str | Path) -> TrainedImageModel:
    """Rebuild the network of a ``python -m flowzoo.vision.train`` run from its directory or a checkpoint."""
    checkpoint, image, stored = read_checkpoint_record(path, IMAGE_KEY, run_of=PROG, required="shape",
                                                       fix=f"pass the --trainer.out_dir of {PROG}")
    cfg = config_from_dict(VisionTrainConfig, stored)
    shape = tuple(int(v) for v in image["shape"])
    model = build_net(cfg, shape, int(image["num_classes"]))
    model.load_state_dict(checkpoint.inference_weights)
    return TrainedImageModel(model.eval(), cfg, shape, int(image["num_classes"]), checkpoint.path, checkpoint.step,
                             float(image.get("source_scale", 1.0)))


def run_source(run: TrainedImageModel, *, prune: bool = False, max_similarity: float = 0.01,
               tau: float | None = None) -> SourceFMSource | None:
    """The source a trained run samples from: its stored norm-alignment scale and, with ``prune``, SourceFM's
    pruning axes computed on the run's training split (with flips when the run trained with ``--flip``).
    None for a plain Gaussian run sampled without pruning."""
    if not prune and run.source_scale == 1.0:
        return None
    if not prune:
        return SourceFMSource(run.shape, scale=run.source_scale)
    images = load_data(run.config, "train").images
    return build_source(images, prune=True, max_similarity=max_similarity, tau=tau, flip=run.config.flip > 0,
                        scale=run.source_scale)


def _usage() -> str:
    lines = [f"usage: {PROG} <method> --data SPEC [--net unet|dit] [--class_cond true] --trainer.steps N "
             "--trainer.out_dir DIR", "methods:"]
    lines += [f"  {name:14s} {method.summary}" for name, method in METHODS.items()]
    lines += [f"  {name:14s} {summary} (options: {PROG} {name} --help)"
              for name, summary in {**LATENT_METHODS, **SYMMFLOW_METHODS}.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowzoo.vision.train <method> [options]`` (also ``flowzoo train vision``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage() + "\n\noptions:")
        try:
            parse_config(VisionTrainConfig, ["--help"], prog=f"{PROG} <method>")
        except SystemExit:
            pass
        return 0
    method, rest = argv[0], [token.replace("--class-cond", "--class_cond").replace("--net-size", "--net_size")
                             if token.startswith("--") else token for token in argv[1:]]
    if method in LATENT_METHODS or method in SYMMFLOW_METHODS:
        summary = (latent_main if method in LATENT_METHODS else symmflow_main)(method, rest, PROG)
        if is_main_process():
            print(f"{method}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
        return 0
    if method not in METHODS:
        raise ConfigError(expected(f"a method first, one of {sorted([*METHODS, *LATENT_METHODS, *SYMMFLOW_METHODS])}",
                                   repr(method),
                                   f"run e.g. {PROG} icfm --help"))
    cfg = parse_config(VisionTrainConfig, [*rest, "--method", method], prog=f"{PROG} {method}")
    metrics = train(cfg)
    if is_main_process():
        outputs = "checkpoints, metrics.csv, " + ("held-out velocity error: {:.3g}x the reused velocity's".format(
            metrics["heldout_ratio"]) if METHODS[method].refiner else "samples.png")
        print(f"{method}: {metrics['step']} steps in {metrics['train_seconds']:.1f} s; outputs in "
              f"{Path(cfg.trainer.out_dir).resolve()} ({outputs})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(main, prog=PROG))
