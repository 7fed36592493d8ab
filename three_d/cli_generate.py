"""``flowzoo three_d generate``: shapes from a two-stage generator run, as PLY point clouds and OBJ meshes::

    flowzoo three_d generate --checkpoint RUN --steps 1 --out shapes/ [--n 2] [--classes sphere,box] [--overwrite]

A run directory holds one checkpoint written by :func:`save_generator` (weights, and the
:class:`~flowzoo.three_d.generator.GeneratorConfig` plus the sampling guidance in ``config.yaml``): a teacher
(sample it with ``--steps 25``) or a distilled student (``--steps 1`` or ``2``). For each requested class the
command writes ``--n`` shapes: ``<class>_<i>.ply`` (active voxel centres plus offsets) and ``<class>_<i>.obj``
(marching cubes on the generated occupancy). An existing ``--out`` is refused unless ``--overwrite``.

No time convention applies beyond the generator's (0 = noise, 1 = data).

Example:
    >>> import tempfile, torch
    >>> from flowzoo.three_d.generator import GeneratorConfig
    >>> cfg = GeneratorConfig(classes=("sphere", "box"), grid_size=8, latent_channels=2, vae_width=4, width=16,
    ...                       attribute_hidden=8)
    >>> run = tempfile.mkdtemp()
    >>> _ = save_generator(build_generator(cfg), run, cfg)
    >>> load_generator(run)[1].classes
    ('sphere', 'box')
"""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from flowzoo.core.config import option_help, parse_config
from flowzoo.core.errors import CheckpointError, ConfigError, expected
from flowzoo.core.training import read_checkpoint, write_checkpoint
from flowzoo.core.validation import check_int, check_new_outputs

from flowzoo.three_d.generator import AttributeFlow, GeneratorConfig, StructureFlow, TwoStageGenerator
from flowzoo.three_d.voxels import OccupancyVAE, occupancy_to_mesh

__all__ = ["build_generator", "save_generator", "load_generator", "write_obj", "GeneratorTrainConfig",
           "DistillTrainConfig", "train_generator", "train_distill", "GenerateConfig", "generate_main",
           "command"]


def build_generator(config: GeneratorConfig, guidance: tuple[float, float] | None = None) -> TwoStageGenerator:
    """An untrained generator of ``config``'s sizes (``guidance`` overrides the config's sampling guidance)."""
    vae = OccupancyVAE(config.grid_size, config.latent_channels, config.vae_width)
    k = len(config.classes)
    return TwoStageGenerator(vae, StructureFlow(vae.latent_shape, k, config.width, config.depth),
                             AttributeFlow(k, config.attribute_hidden),
                             tuple(config.guidance if guidance is None else guidance))


def save_generator(generator: TwoStageGenerator, run: str | Path, config: GeneratorConfig, *, step: int = 0
                   ) -> Path:
    """Write ``generator`` as a verified checkpoint of ``run`` (``run/checkpoints/step_*``); returns its folder."""
    import safetensors.torch
    import yaml

    state = io.BytesIO()
    torch.save({"step": int(step)}, state)
    record = {"generator": {**asdict(config), "classes": list(config.classes), "guidance": list(config.guidance)},
              "sampling_guidance": [float(g) for g in generator.guidance]}
    weights = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    return write_checkpoint(Path(run) / "checkpoints", step, {
        "model.safetensors": safetensors.torch.save(weights), "state.pt": state.getvalue(),
        "config.yaml": yaml.safe_dump(record).encode("utf-8")})


def load_generator(run: str | Path) -> tuple[TwoStageGenerator, GeneratorConfig]:
    """The generator of a run written by :func:`save_generator`, in eval mode, and its config."""
    checkpoint = read_checkpoint(run)
    record = (checkpoint.config or {}).get("generator")
    if not isinstance(record, dict):
        raise CheckpointError(expected(f"a two-stage generator checkpoint (config.yaml with 'generator') in {run}",
                                       f"config keys {sorted(checkpoint.config or {})}",
                                       "pass a run written by the generator or distill method"))
    known = {f.name for f in fields(GeneratorConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in known}
    config = GeneratorConfig(**values)
    generator = build_generator(config, tuple(checkpoint.config.get("sampling_guidance", config.guidance)))
    try:
        generator.load_state_dict(checkpoint.model)
    except RuntimeError as error:
        raise CheckpointError(expected(f"weights matching the config of {run}", str(error).splitlines()[0],
                                       "the checkpoint was written by another version; retrain")) from error
    return generator.eval(), config


def write_obj(path: str | Path, vertices, faces) -> None:
    """A triangle mesh as Wavefront OBJ text (1-based face indices)."""
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    Path(path).write_text("\n".join(lines) + "\n")


@dataclass
class GeneratorTrainConfig:
    """Train the two-stage (VAE + structure flow + offset flow) shape generator."""

    out: str = field(metadata=option_help("the run directory to create"))
    classes: str = field(default="sphere,box,torus,cylinder,cone", metadata=option_help("comma-separated shapes"))
    shapes: int = field(default=40, metadata=option_help("training shapes per class"))
    grid_size: int = field(default=16, metadata=option_help("occupancy grid size (a power of two >= 8)"))
    vae_steps: int = field(default=600, metadata=option_help("VAE updates"))
    structure_steps: int = field(default=1500, metadata=option_help("stage-1 updates"))
    attribute_steps: int = field(default=600, metadata=option_help("stage-2 updates"))
    guidance: float = field(default=1.5, metadata=option_help("stage-1 CFG scale at sampling"))
    seed: int = field(default=0, metadata=option_help("seed"))
    overwrite: bool = field(default=False, metadata=option_help("replace an existing --out"))


@dataclass
class DistillTrainConfig:
    """Distil a generator run into 1-2-step students (MDT-dist VM / VM + VD, or consistency distillation)."""

    teacher: str = field(metadata=option_help("the teacher's run directory"))
    out: str = field(metadata=option_help("the student's run directory to create"))
    method: str = field(default="vm_vd", metadata=option_help("vm, vm_vd or cd"))
    steps: int = field(default=300, metadata=option_help("updates per stage"))
    shapes: int = field(default=40, metadata=option_help("training shapes per class"))
    seed: int = field(default=0, metadata=option_help("seed"))
    overwrite: bool = field(default=False, metadata=option_help("replace an existing --out"))


def train_generator(cfg: GeneratorTrainConfig) -> dict:
    from flowzoo.three_d.generator import train_teacher
    from flowzoo.three_d.voxels import check_grid_size, make_shape_voxels

    check_new_outputs([cfg.out], cfg.overwrite, fix="choose another --out, or pass --overwrite to replace it")
    config = GeneratorConfig(classes=tuple(c.strip() for c in cfg.classes.split(",")),
                             grid_size=check_grid_size(cfg.grid_size), vae_steps=cfg.vae_steps,
                             structure_steps=cfg.structure_steps, attribute_steps=cfg.attribute_steps,
                             guidance=(cfg.guidance, 1.0))
    data = make_shape_voxels(cfg.shapes, config.classes, config.grid_size, cfg.seed)
    generator = train_teacher(data, config, seed=cfg.seed, progress=True)
    path = save_generator(generator, cfg.out, config)
    return {"checkpoint": str(path), "shapes": len(data)}


def train_distill(cfg: DistillTrainConfig) -> dict:
    from flowzoo.three_d.generator import distill_generator
    from flowzoo.three_d.voxels import make_shape_voxels

    check_new_outputs([cfg.out], cfg.overwrite, fix="choose another --out, or pass --overwrite to replace it")
    teacher, config = load_generator(cfg.teacher)
    data = make_shape_voxels(cfg.shapes, config.classes, config.grid_size, cfg.seed)
    student = distill_generator(teacher, data, cfg.method, steps=cfg.steps, batch_size=config.batch_size,
                                seed=cfg.seed, progress=True)
    path = save_generator(student, cfg.out, config)  # saved with sampling guidance (1, 1): CFG is distilled in
    return {"checkpoint": str(path), "method": cfg.method}


@dataclass
class GenerateConfig:
    """Generate shapes with a two-stage generator (teacher or distilled student)."""

    checkpoint: str = field(metadata=option_help("the run directory (or a checkpoint inside it)"))
    out: str = field(metadata=option_help("the output folder to create"))
    steps: int = field(default=1, metadata=option_help("Euler steps per stage (25 for a teacher, 1-2 for a student)"))
    n: int = field(default=2, metadata=option_help("shapes per class"))
    classes: str = field(default="all", metadata=option_help("comma-separated class names, or all"))
    seed: int = field(default=0, metadata=option_help("seed of the noise"))
    overwrite: bool = field(default=False, metadata=option_help("replace an existing --out"))


def generate_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flowzoo three_d generate``; returns 0 after writing ``--out``."""
    cfg = parse_config(GenerateConfig, sys.argv[1:] if argv is None else list(argv), prog="flowzoo three_d generate")
    steps = check_int(cfg.steps, "--steps", low=1, fix="pass e.g. --steps 1")
    n = check_int(cfg.n, "--n", low=1, fix="pass e.g. --n 2")
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:  # refused before any work
        raise ConfigError(expected("--out naming a new path", f"{out} (exists)",
                                   "choose another --out, or pass --overwrite to replace it"))
    if not Path(cfg.checkpoint).exists():
        raise ConfigError(expected("--checkpoint naming an existing run", f"{cfg.checkpoint} (missing)",
                                   "pass the run directory written by training"))
    generator, config = load_generator(cfg.checkpoint)
    names = config.classes if cfg.classes == "all" else tuple(c.strip() for c in cfg.classes.split(","))
    unknown = [c for c in names if c not in config.classes]
    if unknown:
        raise ConfigError(expected(f"--classes from {list(config.classes)}", ",".join(unknown),
                                   "pass names the run was trained on, or all"))
    labels = torch.tensor([config.classes.index(c) for c in names for _ in range(n)])
    shapes = generator.sample(labels, steps=steps, generator=torch.Generator().manual_seed(cfg.seed))
    from flowzoo.three_d.io import PointCloud, write_ply

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for i, (label, cloud) in enumerate(zip(labels.tolist(), shapes.points())):
        stem = out / f"{config.classes[label]}_{i % n}"
        if len(cloud):  # an empty shape is reported below instead of written as an invalid PLY
            write_ply(stem.with_suffix(".ply"), PointCloud(cloud.numpy()))
        write_obj(stem.with_suffix(".obj"), *occupancy_to_mesh(shapes.occupancy[i, 0]))
    empty = int((shapes.occupancy.flatten(1).sum(1) == 0).sum())
    print(f"wrote {len(labels)} shapes ({steps} step(s) per stage, {shapes.seconds / len(labels):.3f} s per shape) "
          f"to {out}" + (f"; {empty} shape(s) came out empty (no PLY written, empty OBJ)" if empty else ""))
    return 0


def command(argv: Sequence[str]) -> int | None:
    """generate --checkpoint RUN --steps 1 --out DIR [--n N] [--classes a,b] [--overwrite]: shapes as PLY + OBJ"""
    return generate_main(argv)


if __name__ == "__main__":
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(generate_main, prog="flowzoo three_d generate"))
