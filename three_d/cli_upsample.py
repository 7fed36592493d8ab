"""``flowzoo three_d upsample in.ply --ratio 4 --checkpoint RUN --out out.ply``: PUFM++ upsampling of a scan.

Reads the cloud (:func:`flowzoo.three_d.io.read_point_cloud`: PLY, XYZ, PCD, OBJ/OFF vertices), rebuilds the
upsampler of a ``python -m flowzoo.three_d.train pufm`` run (:func:`flowzoo.three_d.train.load_upsampler`),
upsamples patch-wise by ``--ratio`` (4, or 16 as 4× twice) with ``--steps`` Euler steps placed by the run's
stage-3 schedule, and writes exactly ``ratio · N`` points. ``--checkpoint midpoints`` uses midpoint
interpolation alone (no network). An existing ``--out`` is replaced only with ``--overwrite``. A progress bar
on stderr counts the patches of every pass.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from flowzoo.core.config import option_help, parse_config
from flowzoo.core.errors import ConfigError, EmptyInputError, NonFiniteError, expected
from flowzoo.core.validation import check_int, check_nonnegative

__all__ = ["UpsampleConfig", "upsample_main", "command"]

PROG = "flowzoo three_d upsample"


@dataclass
class UpsampleConfig:
    """Upsample a point cloud with a trained PUFM run."""

    input: str = field(metadata=option_help("the sparse cloud (.ply, .xyz, .pcd, .obj, .off)"))
    checkpoint: str = field(default="", metadata=option_help("a pufm run directory, or 'midpoints' (no network)"))
    out: str = field(default="", metadata=option_help("output cloud (.ply or .xyz)"))
    ratio: int = field(default=4, metadata=option_help("upsampling ratio: 4, or 16 (4x twice)"))
    steps: int = field(default=2, metadata=option_help("Euler steps per 4x pass (1, 2 or 5 are typical)"))
    uniform_steps: bool = field(default=False, metadata=option_help("uniform steps instead of the stage-3 schedule"))
    project: float = field(default=0.0, metadata=option_help("on-manifold projection step (0: off; PUFM++: 0.01)"))
    seed: int = field(default=0, metadata=option_help("seed of a Gaussian-source run's noise (PUFM starts from "
                                                      "the plain midpoints)"))
    overwrite: bool = field(default=False, metadata=option_help("replace an existing --out"))


def _read_points(path: str) -> torch.Tensor:
    from flowzoo.three_d.io import read_point_cloud

    points = np.asarray(read_point_cloud(path).points, dtype=np.float32)
    if points.ndim != 2 or points.shape[0] < 2:
        raise EmptyInputError(expected(f"a cloud of at least 2 points in {path}", f"{len(points)} points",
                                       "pass a non-empty scan"))
    if not np.isfinite(points).all():
        raise NonFiniteError(expected(f"finite coordinates in {path}", f"{int((~np.isfinite(points)).sum())} "
                                      "NaN/Inf values", "remove the invalid points first"))
    return torch.from_numpy(points)


def upsample_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flowzoo three_d upsample``; returns 0 after writing ``--out``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-"):  # the input file may come first, without --input
        args = ["--input", args[0], *args[1:]]
    cfg = parse_config(UpsampleConfig, args, prog=PROG)
    ratio = check_int(cfg.ratio, "--ratio", low=2, fix="pass an integer ratio >= 2, e.g. --ratio 4")
    steps = check_int(cfg.steps, "--steps", low=1, fix="pass e.g. --steps 2")
    project = check_nonnegative(cfg.project, "--project")
    if not cfg.checkpoint or not cfg.out:
        raise ConfigError(expected("--checkpoint RUN and --out FILE", f"checkpoint={cfg.checkpoint!r}, "
                                   f"out={cfg.out!r}", f"e.g. {PROG} scan.ply --checkpoint runs/pufm --out dense.ply"))
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise ConfigError(expected("--out naming a new file", f"{out} (exists)", "choose another --out or pass "
                                   "--overwrite"))
    points = _read_points(cfg.input)
    generator = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    if cfg.checkpoint == "midpoints":
        from flowzoo.three_d.pufm_sampling import upsample

        dense = upsample(None, points, ratio, progress=True)
    else:
        from flowzoo.three_d.train import load_upsampler

        dense = load_upsampler(cfg.checkpoint)(points, ratio, steps=steps, adaptive=not cfg.uniform_steps,
                                               project=project, generator=generator, progress=True)
    from flowzoo.three_d.io import write_point_cloud

    out.parent.mkdir(parents=True, exist_ok=True)
    write_point_cloud(out, dense.numpy())
    print(f"wrote {out}: {len(dense)} points from {len(points)} ({ratio}x, {time.perf_counter() - start:.1f} s)")
    return 0


def command() -> Callable[[Sequence[str]], int | None]:
    """The ``upsample`` command for ``flowzoo.three_d.cli.commands()``."""

    def upsample_command(argv: Sequence[str]) -> int | None:
        """upsample IN --checkpoint RUN|midpoints --out OUT [--ratio 4|16] [--steps 2] [--project 0.01]: PUFM++"""
        return upsample_main(argv)

    return upsample_command


if __name__ == "__main__":  # pragma: no cover
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(upsample_main, prog=PROG))
