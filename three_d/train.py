"""Training entrypoint of the 3D methods: ``python -m flowzoo.three_d.train <method> [options]``.

Methods (:data:`METHODS`, each a config dataclass and a function that trains it):

* ``pufm``: PUFM / PUFM++ point-cloud upsampling (arXiv 2501.15286, :mod:`flowzoo.three_d.pufm`). One run

  1. generates ``--shapes`` deformed synthetic shapes (:func:`flowzoo.three_d.data.make_upsampling_example`), or
     reads every mesh and point cloud of ``--data DIR`` (:func:`flowzoo.three_d.shape_folders.load_shape_folder`),
     cuts each dense cloud into kNN patches of ``ratio · patch_size`` points around FPS seeds, normalises each
     patch to the unit sphere and keeps a random ``patch_size`` subset of it (plus noise) as its sparse input;
  2. trains stage 1 (:class:`~flowzoo.three_d.pufm.PUFMLoss`) for ``--trainer.steps`` updates;
  3. with ``--stage2_steps N``, fine-tunes the EMA weights with stage 2
     (:class:`~flowzoo.three_d.pufm.EndpointChamferLoss`) in ``<out>/stage2``;
  4. measures stage 3's per-t loss curve (:func:`~flowzoo.three_d.pufm.loss_curve`) and stores it in
     ``<out>/pufm.json`` with the network options, so :func:`load_upsampler` rebuilds the upsampler and places
     its steps by :func:`~flowzoo.three_d.pufm_sampling.adaptive_time_grid`.

* ``generator`` / ``distill``: a TRELLIS-style two-stage shape generator and its MDT-dist (VM, VM + VD) or
  consistency-distilled few-step students (:mod:`flowzoo.three_d.generator`, :mod:`flowzoo.three_d.cli_generate`).
* ``scoop``: SCOOP self-supervised scene flow (arXiv 2211.14020, :mod:`flowzoo.three_d.scoop`): generates
  ``--scenes`` scene pairs (their flow is never used) and trains the correspondence model on SCOOP's loss; the run
  directory is what ``flowzoo three_d scene-flow --checkpoint`` loads.

Another method joins by adding ``METHODS["name"] = Method(description, ConfigDataclass, run)``: ``main`` parses
the arguments after the method name into its config (``core.config.parse_config``: YAML, ``--a.b`` overrides)
and calls ``run(config) -> summary dict``, printed as JSON.

Example::

    python -m flowzoo.three_d.train pufm --shapes 40 --trainer.steps 2000 --stage2_steps 300 --out runs/pufm
    flowzoo three_d upsample scan.ply --ratio 4 --checkpoint runs/pufm --out dense.ply
    python -m flowzoo.three_d.train scoop --scenes 100 --out runs/scoop
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
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
from flowzoo.core.validation import check_int, check_nonnegative, check_positive

from flowzoo.three_d.data import SHAPES, check_shape_names, make_upsampling_example
from flowzoo.three_d.shape_folders import load_shape_folder
from flowzoo.three_d.ops import farthest_point_sample, gather_points, knn, normalize_unit_sphere
from flowzoo.three_d.point_nets import PointNetConfig, PUFMBackbone
from flowzoo.three_d.cli_generate import DistillTrainConfig, GeneratorTrainConfig, train_distill, train_generator
from flowzoo.three_d.scoop import SCOOPLoss, make_scene_set, train_scoop
from flowzoo.three_d.scoop_model import SCOOPModel
from flowzoo.three_d.pufm import EndpointChamferLoss, PUFMLoss, align_to_source, loss_curve, midpoint_interpolate
from flowzoo.three_d.pufm_sampling import adaptive_time_grid, upsample

__all__ = ["Method", "METHODS", "UPSAMPLER_FILE", "PUFMTrainConfig", "dense_cloud_size", "make_patch_pairs",
           "paired_midpoints", "train_pufm",
           "Upsampler", "load_upsampler", "main"]

PROG = "python -m flowzoo.three_d.train"
UPSAMPLER_FILE, UPSAMPLER_FORMAT, UPSAMPLER_VERSION = "pufm.json", "flowzoo-pufm", 1


def _default_trainer() -> TrainerConfig:
    return TrainerConfig(steps=2000, batch_size=8, lr=2e-3, warmup_steps=50, ema_decay=0.995, checkpoint_every=500,
                         log_every=50, out_dir="runs/pufm", tensorboard=False)


@dataclass
class PUFMTrainConfig:
    """Train a PUFM / PUFM++ point-cloud upsampler on generated shapes."""

    method: Literal["pufm"] = field(default="pufm", metadata=option_help("set by the first argument"))
    out: str = field(default="", metadata=option_help("run directory (same as --trainer.out_dir)"))
    shapes: int = field(default=40, metadata=option_help("generated training shapes (unused with --data)"))
    data: str = field(default="", metadata=option_help("a folder of your meshes / point clouds to train on "
                                                       "(empty: the generated shapes)"))
    shape_set: tuple[str, ...] = field(default=SHAPES, metadata=option_help(
        "kinds of generated shapes; add 'composition' for unions of 2-3 deformed primitives"))
    data_seed: int = field(default=0, metadata=option_help("seed of the generated shapes"))
    ratio: int = field(default=4, metadata=option_help("upsampling ratio of one pass (16x runs 4x twice)"))
    patch_size: int = field(default=32, metadata=option_help("sparse points per training patch"))
    patches_per_shape: int = field(default=8, metadata=option_help("FPS-seeded patches cut from each shape"))
    input_noise: float = field(default=0.01, metadata=option_help("noise std of the sparse patches (unit sphere)"))
    source: Literal["midpoints", "gaussian"] = field(
        default="midpoints", metadata=option_help("flow source: noisy midpoints (PUFM) or N(0, I) (baseline)"))
    noise: float = field(default=0.02, metadata=option_help("noise std added to the midpoints"))
    self_condition: float = field(default=0.9, metadata=option_help("latent self-conditioning probability"))
    stage2_steps: int = field(default=0, metadata=option_help("PUFM++ stage-2 (Chamfer endpoint) updates; 0: none"))
    stage2_lr: float = field(default=3e-4, metadata=option_help("learning rate of stage 2"))
    curve_points: int = field(default=51, metadata=option_help("times of stage 3's per-t loss curve"))
    model: PointNetConfig = field(default_factory=PointNetConfig)
    trainer: TrainerConfig = field(default_factory=_default_trainer)

    def __post_init__(self) -> None:
        check_int(self.shapes, "--shapes", low=1)
        check_int(self.ratio, "--ratio", low=2, fix="pass an integer ratio >= 2, e.g. --ratio 4")
        check_int(self.patch_size, "--patch_size", low=4)
        check_int(self.patches_per_shape, "--patches_per_shape", low=1)
        check_nonnegative(self.input_noise, "--input_noise")
        check_nonnegative(self.noise, "--noise")
        check_int(self.stage2_steps, "--stage2_steps", low=0)
        check_positive(self.stage2_lr, "--stage2_lr")
        check_int(self.curve_points, "--curve_points", low=2)
        check_shape_names(self.shape_set)
        if self.data and not Path(self.data).is_dir():
            raise ConfigError(expected("--data naming a folder of meshes or point clouds", f"{self.data!r} (no "
                                       "such folder)", "check the path, or leave --data out to use generated shapes"))


def _say(message: str) -> None:
    print(f"flowzoo three_d train: {message}", file=sys.stderr, flush=True)


def dense_cloud_size(ratio: int, patch_size: int, patches_per_shape: int) -> int:
    """Points per dense training cloud: room for every patch of ``ratio · patch_size`` points, and enough that
    ``patches_per_shape`` FPS-seeded patches overlap little.

    Example:
        >>> dense_cloud_size(4, 32, 8)
        512
    """
    return max(4 * ratio * patch_size, 2 * patches_per_shape * patch_size)


def make_patch_pairs(shapes: int, *, seed: int = 0, ratio: int = 4, patch_size: int = 32, patches_per_shape: int = 8,
                     input_noise: float = 0.01, clouds: np.ndarray | None = None,
                     choices: Sequence[str] = SHAPES) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sparse (P, patch_size, 3), dense (P, ratio · patch_size, 3))`` training patches, P = shapes ·
    patches_per_shape: kNN patches of each shape's dense cloud around FPS seeds, normalised to the unit sphere,
    each with a random subset of itself plus Gaussian noise as its sparse input (the PU-GAN / PUFM protocol).
    The dense clouds are ``shapes`` generated shapes, or ``clouds`` ``(S, n, 3)`` when given (a user's shapes,
    e.g. :func:`~flowzoo.three_d.shape_folders.load_shape_folder`'s; ``shapes`` is then unused), n ≥ ratio · patch_size.
    Generated shapes are drawn from ``choices`` (``SHAPES``, and ``"composition"`` for unions of primitives).

    Example:
        >>> sparse, dense = make_patch_pairs(1, patch_size=8, patches_per_shape=2)
        >>> sparse.shape, dense.shape
        (torch.Size([2, 8, 3]), torch.Size([2, 32, 3]))
    """
    shapes, ratio = check_int(shapes, "shapes", low=1), check_int(ratio, "ratio", low=2)
    patch_size, per = check_int(patch_size, "patch_size", low=1), check_int(patches_per_shape, "patches", low=1)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    n_dense = dense_cloud_size(ratio, patch_size, per)
    if clouds is not None:
        clouds = np.asarray(clouds, dtype=np.float32)
        if clouds.ndim != 3 or clouds.shape[2] != 3 or clouds.shape[1] < max(ratio * patch_size, per):
            raise ConfigError(expected(f"clouds shaped (S, n, 3) with n >= {max(ratio * patch_size, per)}",
                                       clouds.shape, "pass denser clouds or a smaller patch_size"))
    sparse, dense = [], []
    for index in range(shapes if clouds is None else len(clouds)):
        shape = (make_upsampling_example(rng, n_dense=n_dense, n_sparse=8, choices=choices).dense
                 if clouds is None else clouds[index])
        cloud = torch.from_numpy(shape)[None]
        seeds = gather_points(cloud, farthest_point_sample(cloud, per, random_start=True, generator=gen))
        patch = normalize_unit_sphere(gather_points(cloud, knn(seeds, cloud, ratio * patch_size)[1])[0])[0]
        keep = torch.rand(per, ratio * patch_size, generator=gen).argsort(dim=1)[:, :patch_size]
        sub = gather_points(patch, keep)
        sparse.append(sub + input_noise * torch.randn(sub.shape, generator=gen))
        dense.append(patch)
    return torch.cat(sparse), torch.cat(dense)


def _training_patches(cfg: PUFMTrainConfig) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The run's ``(sparse, dense)`` patches and its number of shapes: generated, or read from ``--data``."""
    options = {"seed": cfg.data_seed, "ratio": cfg.ratio, "patch_size": cfg.patch_size,
               "patches_per_shape": cfg.patches_per_shape, "input_noise": cfg.input_noise}
    if not cfg.data:
        _say(f"generating {cfg.shapes} shapes x {cfg.patches_per_shape} patches ...")
        return (*make_patch_pairs(cfg.shapes, choices=cfg.shape_set, **options), cfg.shapes)
    n_points = dense_cloud_size(cfg.ratio, cfg.patch_size, cfg.patches_per_shape)
    folder = load_shape_folder(cfg.data, n_points, np.random.default_rng(cfg.data_seed))
    for name, reason in folder.skipped:
        _say(f"skipped {Path(cfg.data) / name}: {reason}")
    _say(f"read {len(folder.names)} shapes from {cfg.data} ({n_points} points each) x {cfg.patches_per_shape} "
         "patches ...")
    return (*make_patch_pairs(1, clouds=folder.clouds, **options), len(folder.names))


def paired_midpoints(sparse: torch.Tensor, dense: torch.Tensor, ratio: int,
                     chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(midpoints, aligned dense)`` of every training patch, computed once: the PUFM source without its noise
    and the dense patch permuted by the EMD bijection to it.

    Example:
        >>> sparse, dense = make_patch_pairs(1, patch_size=8, patches_per_shape=2)
        >>> [t.shape for t in paired_midpoints(sparse, dense, 4)]
        [torch.Size([2, 32, 3]), torch.Size([2, 32, 3])]
    """
    mids, aligned = [], []
    for start in range(0, len(sparse), chunk):
        mid = midpoint_interpolate(sparse[start:start + chunk], ratio)
        mids.append(mid)
        aligned.append(align_to_source(mid, dense[start:start + chunk]))
    return torch.cat(mids), torch.cat(aligned)


def _sampler(sparse: torch.Tensor, dense: torch.Tensor, batch_size: int, midpoints: torch.Tensor | None = None):
    def sample(generator: torch.Generator) -> dict[str, torch.Tensor]:
        index = torch.randint(len(dense), (batch_size,), generator=generator)
        batch = {"x1": dense[index], "sparse": sparse[index]}
        if midpoints is not None:
            batch["x0"] = midpoints[index]
        return batch

    return sample


def _eval_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    module = trainer.ema.module if trainer.ema is not None else trainer.model
    return {k: v.detach().clone() for k, v in getattr(module, "module", module).state_dict().items()}


def train_pufm(cfg: PUFMTrainConfig) -> dict[str, Any]:
    """Generate the patches, train stage 1 (and stage 2), measure stage 3's loss curve, write ``pufm.json`` and
    ``summary.json``; returns the summary."""
    if cfg.out:
        cfg = replace(cfg, trainer=replace(cfg.trainer, out_dir=cfg.out))
    out_dir = Path(cfg.trainer.out_dir)
    refuse_fresh_run_over_checkpoints(cfg.trainer, "--out")
    sparse, dense, shapes = _training_patches(cfg)
    midpoints = None
    if cfg.source == "midpoints":
        midpoints, dense = paired_midpoints(sparse, dense, cfg.ratio)
    torch.manual_seed(cfg.trainer.seed)
    model = PUFMBackbone(cfg.model, ratio=cfg.ratio)
    flow = PUFMLoss(source=cfg.source, noise=cfg.noise, self_condition=cfg.self_condition)
    trainer = Trainer(model, flow, _sampler(sparse, dense, cfg.trainer.batch_size, midpoints), cfg.trainer,
                      run_config=cfg)
    result = trainer.fit()
    summary = {"method": cfg.method, "source": cfg.source, "data": cfg.data or "generated", "shapes": shapes,
               "patches": len(dense), "stage1_steps": result.step,
               "seconds": result.seconds, "final_metrics": result.metrics, "checkpoint": str(result.checkpoint)}
    weights = _eval_weights(trainer)
    if cfg.stage2_steps:
        model.load_state_dict(weights)
        stage2 = replace(cfg.trainer, steps=cfg.stage2_steps, lr=cfg.stage2_lr, warmup_steps=0,
                         out_dir=str(out_dir / "stage2"), checkpoint_every=0)
        trainer = Trainer(model, EndpointChamferLoss(noise=cfg.noise, flow=flow),
                          _sampler(sparse, dense, cfg.trainer.batch_size, midpoints), stage2, run_config=cfg)
        result = trainer.fit()
        weights = _eval_weights(trainer)
        summary.update(stage2_steps=result.step, stage2_metrics=result.metrics, checkpoint=str(result.checkpoint))
    model = PUFMBackbone(cfg.model, ratio=cfg.ratio)
    model.load_state_dict(weights)
    model.eval()
    curve_batches = [_sampler(sparse, dense, 8, midpoints)(torch.Generator().manual_seed(i)) for i in range(2)]
    times, losses = loss_curve(model, curve_batches, points=cfg.curve_points, loss=flow,
                               generator=torch.Generator().manual_seed(cfg.trainer.seed))
    info = {"format": UPSAMPLER_FORMAT, "version": UPSAMPLER_VERSION, "method": cfg.method, "ratio": cfg.ratio,
            "source": cfg.source, "noise": cfg.noise, "patch_size": cfg.patch_size, "model": asdict(cfg.model),
            "stages": 2 if cfg.stage2_steps else 1, "loss_curve": {"times": times.tolist(), "losses": losses.tolist()}}
    atomic_write_bytes(out_dir / UPSAMPLER_FILE, json.dumps(info, indent=2).encode("utf-8"))
    atomic_write_bytes(out_dir / "summary.json", json.dumps(summary, indent=2, default=str).encode("utf-8"))
    return summary


@dataclass
class Upsampler:
    """A trained PUFM upsampler: the network (EMA weights, eval mode) and its ``pufm.json`` content."""

    model: PUFMBackbone
    info: dict[str, Any]

    def time_grid(self, steps: int, adaptive: bool = True) -> torch.Tensor | None:
        """Stage 3's grid for ``steps`` from the stored loss curve (``None``: uniform steps)."""
        if not adaptive or "loss_curve" not in self.info:
            return None
        curve = self.info["loss_curve"]
        return adaptive_time_grid(torch.tensor(curve["times"]), torch.tensor(curve["losses"]), steps)

    def __call__(self, points: torch.Tensor, ratio: int = 4, *, steps: int = 1, adaptive: bool = True,
                 project: float = 0.0, patch_size: int | None = None, **options: Any) -> torch.Tensor:
        """:func:`~flowzoo.three_d.pufm_sampling.upsample` with this run's source, patch size and schedule (the
        source starts without noise unless ``noise=`` is passed, as the official evaluation does)."""
        grid = self.time_grid(check_int(steps, "steps", low=1), adaptive)
        return upsample(self.model, points, ratio, steps=None if grid is not None else steps, time_grid=grid,
                        patch_size=patch_size or self.info["patch_size"], source=self.info["source"],
                        project=project, **options)


def load_upsampler(run_dir: str | Path, stage: int | None = None) -> Upsampler:
    """Rebuild the upsampler of a ``pufm`` run: the weights of ``stage`` (1 or 2; default the run's last), the
    EMA weights when present."""
    run_dir = Path(run_dir)
    if not (run_dir / UPSAMPLER_FILE).is_file():
        raise CheckpointError(expected(f"a PUFM run directory with {UPSAMPLER_FILE}", f"{run_dir} (none)",
                                       f"pass the --out directory of {PROG} pufm"))
    info = json.loads((run_dir / UPSAMPLER_FILE).read_text())
    if info.get("format") != UPSAMPLER_FORMAT or info.get("version") != UPSAMPLER_VERSION:
        raise CheckpointError(expected(f"{UPSAMPLER_FORMAT} version {UPSAMPLER_VERSION}", f"{info.get('format')!r}"
                                       f" version {info.get('version')}", "retrain with this flowzoo version"))
    stages = info.get("stages", 1)
    stage = stages if stage is None else check_int(stage, "stage", low=1, high=stages,
                                                       fix=f"this run has {stages} stage(s)")
    checkpoint = read_checkpoint(run_dir / "stage2" if stage == 2 else run_dir)
    model = PUFMBackbone(config_from_dict(PointNetConfig, info["model"]), ratio=info["ratio"])
    try:
        model.load_state_dict(checkpoint.inference_weights)
    except RuntimeError as error:
        raise CheckpointError(expected(f"weights of the network {UPSAMPLER_FILE} describes",
                                       str(error).splitlines()[0], "pass the run the weights belong to")) from None
    info.update(checkpoint=str(checkpoint.path), step=checkpoint.step)
    return Upsampler(model.eval(), info)


def _default_scoop_trainer() -> TrainerConfig:
    return TrainerConfig(steps=1000, batch_size=4, lr=1e-3, ema_decay=0.0, checkpoint_every=500, log_every=50,
                         out_dir="runs/scoop", tensorboard=False)


@dataclass
class SCOOPTrainConfig:
    """Train SCOOP self-supervised scene flow on generated scene pairs (no ground-truth flow is used)."""

    method: Literal["scoop"] = field(default="scoop", metadata=option_help("set by the first argument"))
    out: str = field(default="", metadata=option_help("run directory (same as --trainer.out_dir)"))
    scenes: int = field(default=100, metadata=option_help("generated training scene pairs"))
    data_seed: int = field(default=0, metadata=option_help("seed of the generated scenes"))
    n_points: int = field(default=1024, metadata=option_help("points per scan"))
    n_objects: int = field(default=3, metadata=option_help("objects per scene"))
    extent: float = field(default=4.0, metadata=option_help("objects lie within this many metres of the sensor"))
    channels: int = field(default=32, metadata=option_help("first SetConv width (features: 4x)"))
    neighbors: int = field(default=32, metadata=option_help("kNN graph size of the features and smoothness"))
    top_k: int = field(default=64, metadata=option_help("target points per soft correspondence"))
    max_distance: float = field(default=3.0, metadata=option_help("no transport between points farther apart (m)"))
    confidence_weight: float = field(default=0.1, metadata=option_help("weight of 1 - mean confidence"))
    smoothness_weight: float = field(default=10.0, metadata=option_help("weight of the flow smoothness"))
    backward_weight: float = field(default=0.0, metadata=option_help("weight of the target-to-prediction Chamfer"))
    trainer: TrainerConfig = field(default_factory=_default_scoop_trainer)

    def __post_init__(self) -> None:
        check_int(self.scenes, "--scenes", low=1)
        check_int(self.n_points, "--n_points", low=2)
        check_int(self.n_objects, "--n_objects", low=1)
        check_positive(self.extent, "--extent")


def run_scoop(cfg: SCOOPTrainConfig) -> dict[str, Any]:
    """Generate the scenes and train SCOOP; ``flowzoo three_d scene-flow --checkpoint <out>`` then loads it."""
    if cfg.out:
        cfg = replace(cfg, trainer=replace(cfg.trainer, out_dir=cfg.out))
    refuse_fresh_run_over_checkpoints(cfg.trainer, "--out")
    _say(f"generating {cfg.scenes} scene pairs ...")
    scenes = make_scene_set(cfg.scenes, seed=cfg.data_seed, n_points=cfg.n_points, n_objects=cfg.n_objects,
                            extent=cfg.extent)
    torch.manual_seed(cfg.trainer.seed)
    model = SCOOPModel(cfg.channels, cfg.neighbors, cfg.top_k, cfg.max_distance)
    loss = SCOOPLoss(cfg.confidence_weight, cfg.smoothness_weight, cfg.neighbors, cfg.backward_weight)
    _, result = train_scoop(scenes, cfg.trainer, model=model, loss=loss, run_config=cfg)
    return {"method": "scoop", "scenes": cfg.scenes, "steps": result.step, "seconds": result.seconds,
            "final_metrics": result.metrics, "checkpoint": str(result.checkpoint)}


@dataclass(frozen=True)
class Method:
    """One entry of :data:`METHODS`: a description, the config dataclass and ``run(config) -> summary``."""

    description: str
    config: type
    run: Callable[[Any], dict[str, Any]]


METHODS: dict[str, Method] = {
    "pufm": Method("PUFM / PUFM++ point-cloud upsampling (stage 1, optional stage 2, stage-3 schedule)",
                   PUFMTrainConfig, train_pufm),
    "scoop": Method("SCOOP self-supervised scene flow (correspondence model trained without ground-truth flow)",
                    SCOOPTrainConfig, run_scoop),
    "generator": Method("TRELLIS-style two-stage shape generator (occupancy VAE, structure flow, offset flow)",
                        GeneratorTrainConfig, train_generator),
    "distill": Method("MDT-dist few-step students of a generator run (vm, vm_vd) or consistency distillation (cd)",
                      DistillTrainConfig, train_distill),
}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowzoo.three_d.train <method> [options]``; returns the exit code."""
    split = split_method(argv, {name: entry.description for name, entry in METHODS.items()}, PROG,
                         example="pufm --shapes 40 --trainer.steps 2000 --out runs/pufm")
    if split is None:
        return 0
    method, args = split
    cfg = parse_config(METHODS[method].config, args, prog=f"{PROG} {method}")
    summary = METHODS[method].run(cfg)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(main, prog=PROG))
