"""``flowzoo three_d scene-flow a.ply b.ply --out flow.npy [--refine] [--checkpoint RUN]``: SCOOP scene flow.

Estimates the flow of every point of the first scan towards the second (SCOOP, arXiv 2211.14020): the
correspondence flow of a trained model (``--checkpoint``, a run of ``python -m flowzoo.three_d.train scoop``),
then, with ``--refine``, test-time refinement of a free per-point residual (Adam, ``--steps`` updates of the
confidence-weighted Chamfer + smoothness objective). ``--refine`` without a checkpoint is pure optimisation from
zero flow (Neural Scene Flow Prior style). The flow is saved as an ``(N, 3)`` float32 ``.npy`` in the scans'
units; an existing ``--out`` is replaced only with ``--overwrite``. No time convention applies (no flow matching).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int, check_nonnegative, check_positive

__all__ = ["MAX_PAIRS", "scene_flow_parser", "scene_flow_main", "command"]

MAX_PAIRS = 2 * 10 ** 8  # N · M entries of the transport plan and distance matrices; beyond it memory runs out


def scene_flow_parser() -> argparse.ArgumentParser:
    """The options of ``flowzoo three_d scene-flow``."""
    parser = argparse.ArgumentParser(prog="flowzoo three_d scene-flow", description="Estimate the scene flow from the first scan to the "
                                     "second with SCOOP (arXiv 2211.14020): a trained model's correspondence flow "
                                     "and/or test-time refinement.")
    parser.add_argument("first", help="the first scan (.ply, .xyz, .pcd, ...): the points whose flow is estimated")
    parser.add_argument("second", help="the second scan, in the same units (metres)")
    parser.add_argument("--out", required=True, help="the flow file to write, (N, 3) float32 .npy")
    parser.add_argument("--checkpoint", default=None, help="a SCOOP run directory or checkpoint")
    parser.add_argument("--refine", action="store_true", help="refine the flow at test time (from zero without "
                        "--checkpoint)")
    parser.add_argument("--steps", type=int, default=1000, help="refinement steps (SCOOP: 1000)")
    parser.add_argument("--lr", type=float, default=0.05, help="refinement Adam learning rate (SCOOP: 0.05)")
    parser.add_argument("--smoothness", type=float, default=1.0, help="refinement smoothness weight (SCOOP: 1)")
    parser.add_argument("--neighbors", type=int, default=32, help="kNN graph size of the smoothness term")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def _checked_options(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    if out.suffix != ".npy":
        raise ConfigError(expected("--out ending in .npy", str(out), f"pass e.g. --out {out.with_suffix('.npy')}"))
    if out.exists() and not args.overwrite:  # checked before any work, so a refused run costs nothing
        raise ConfigError(expected("--out naming a new file", f"{out} (exists)",
                                   "choose another --out, or pass --overwrite to replace it"))
    if args.checkpoint is None and not args.refine:
        raise ConfigError(expected("--checkpoint RUN (a trained SCOOP model) or --refine", "neither",
                                   "pass --refine to optimise the flow from zero, or a --checkpoint"))
    check_int(args.steps, "--steps", low=1, fix="pass e.g. --steps 1000")
    check_positive(args.lr, "--lr")
    check_nonnegative(args.smoothness, "--smoothness")
    check_int(args.neighbors, "--neighbors", low=1)
    return out


def _progress_bar(enabled: bool, total: int) -> tuple[Callable[[int, float], None] | None, Callable[[], None]]:
    if not enabled:
        return None, lambda: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="refine", unit="step", file=sys.stderr, dynamic_ncols=True)

    def update(step: int, loss: float) -> None:
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss:.4g}")

    return update, bar.close


def scene_flow_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flowzoo three_d scene-flow``; returns 0 after writing ``--out``."""
    args = scene_flow_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    out = _checked_options(args)
    from flowzoo.core.training import atomic_write_with
    from flowzoo.three_d.io import read_point_cloud
    from flowzoo.three_d.scoop import check_scan_pair, estimate_flow, load_scoop

    first, second = Path(args.first), Path(args.second)
    points = [torch.as_tensor(read_point_cloud(path).points) for path in (first, second)]
    a, b = check_scan_pair(*points, names=(f"file {first}", f"file {second}"))
    if a.shape[1] * b.shape[1] > MAX_PAIRS:
        raise ConfigError(expected(f"scans small enough for {MAX_PAIRS:.0e} point pairs",
                                   f"{a.shape[1]} x {b.shape[1]} points", "downsample both scans (e.g. to 8192 points)"))
    model = load_scoop(args.checkpoint) if args.checkpoint is not None else None
    steps = args.steps if args.refine else 0
    start = time.perf_counter()
    progress, close = _progress_bar(args.progress and steps > 0, steps)
    try:
        flow = estimate_flow(model, a, b, refine_steps=steps, lr=args.lr, smoothness=args.smoothness,
                             neighbors=args.neighbors, progress=progress)
    finally:
        close()
    seconds = time.perf_counter() - start
    array = flow[0].numpy().astype(np.float32)
    atomic_write_with(out, lambda tmp: np.save(tmp, array), suffix=".npy")
    how = ("model" if model is not None else "") + (" + " if model is not None and steps else "") + \
        (f"refinement ({steps} steps)" if steps else "")
    print(f"wrote {out}: flow of {len(array)} points, mean |flow| {np.linalg.norm(array, axis=1).mean():.4g} "
          f"({how}, {seconds:.1f} s)")
    return 0


def command() -> Callable[[Sequence[str]], int]:
    """The ``scene-flow`` command for the ``three_d`` entry of ``flowzoo.commands``:
    ``{"scene-flow": command()}``.

    Example:
        >>> command() is scene_flow_main
        True
    """
    return scene_flow_main


if __name__ == "__main__":
    from flowzoo.core.cli import run_main

    sys.exit(run_main(scene_flow_main, prog="flowzoo three_d scene-flow"))
