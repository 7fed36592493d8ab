"""``flowzoo driving <command>``: the driving commands registered under the ``flowzoo.commands`` entry point::

    flowzoo driving make-scenes --n 5000 --out scenes/ --seed 0 [--workers 2] [--overwrite] [--plot 4]
    flowzoo driving train goalflow --scenes scenes/ --out runs/gf     (= flowzoo train driving goalflow ...)
    flowzoo driving evaluate --checkpoint runs/gf --scenes test/ --steps 1 [--variant M3] [--w_dac 3] [--plots 4]
    flowzoo driving simulate --checkpoint runs/gf --env highway-fast-v0 --episodes 50 [--video run.gif]

``make-scenes`` generates synthetic scenes with expert plans (:func:`flowzoo.driving.data.generate_scenes`) and
writes them atomically in the schema of :mod:`flowzoo.driving.data` (``--workers W`` processes give the same
scenes as one); an existing ``--out`` is replaced only with ``--overwrite``; ``--plot K`` also writes BEV
figures of the first K scenes to ``<out>/plots/``. ``train`` is :func:`flowzoo.driving.train.main`,
``evaluate`` :func:`flowzoo.driving.evaluate.evaluate_main` and ``simulate``
:func:`flowzoo.driving.cli_simulate.simulate_main`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flowzoo.core.config import option_help, parse_config
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int, check_positive_int

__all__ = ["MakeScenesConfig", "make_scenes_main", "commands"]


@dataclass
class MakeScenesConfig:
    """Generate synthetic driving scenes with expert plans."""

    out: str = field(metadata=option_help("the scene directory to create"))
    n: int = field(default=5000, metadata=option_help("number of scenes"))
    seed: int = field(default=0, metadata=option_help("seed; the scenes are a deterministic function of it"))
    shard_size: int = field(default=1000, metadata=option_help("scenes per .npz shard"))
    workers: int = field(default=1, metadata=option_help("processes generating scenes (same scenes for any count)"))
    plot: int = field(default=0, metadata=option_help("write BEV figures of the first K scenes to <out>/plots/"))
    overwrite: bool = field(default=False, metadata=option_help("replace an existing --out"))
    progress: bool = field(default=True, metadata=option_help("progress bar"))


def make_scenes_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flowzoo driving make-scenes``; returns 0 after writing ``--out``."""
    cfg = parse_config(MakeScenesConfig, sys.argv[1:] if argv is None else list(argv),
                       prog="flowzoo driving make-scenes")
    n = check_positive_int(cfg.n, "--n", fix="pass e.g. --n 5000")
    check_positive_int(cfg.shard_size, "--shard_size", fix="pass e.g. --shard_size 1000")
    workers = check_positive_int(cfg.workers, "--workers", fix="pass 1, or up to the number of CPU cores")
    plots = check_int(cfg.plot, "--plot", low=0, high=n, fix=f"pass a number of scenes from 0 to --n ({n})")
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:  # checked before any work, so a refused run costs nothing
        raise ConfigError(expected("--out naming a new path", f"{out} (exists)",
                                   "choose another --out, or pass --overwrite to replace it"))
    from flowzoo.driving.data import generate_scenes, save_scenes, scene_arrays

    start = time.perf_counter()
    arrays = generate_scenes(n, cfg.seed, progress=cfg.progress, workers=workers)
    seconds = time.perf_counter() - start
    save_scenes(out, arrays, seed=cfg.seed, shard_size=cfg.shard_size, overwrite=cfg.overwrite)
    if plots:
        from flowzoo.driving.plotting import plot_scene
        from flowzoo.driving.scenes import SCENE_KINDS

        for i in range(plots):
            scene = scene_arrays(arrays, i)
            plot_scene(scene, out / "plots" / f"scene_{i:05d}.png",
                       title=f"scene {i}: {SCENE_KINDS[int(scene['kind'])]}, {len(scene['routes'])} goals")
    print(f"wrote {out}: {n} scenes ({n / max(seconds, 1e-9):.0f} scenes/s)" + (f", {plots} plots" if plots else ""))
    return 0


def commands() -> dict[str, Callable[[Sequence[str]], int | None]]:
    """Command name -> ``callable(argv)`` (entry point ``driving = flowzoo.driving.cli:commands``)."""

    def make_scenes(argv: Sequence[str]) -> int | None:
        """make-scenes --n N --out DIR [--seed S] [--workers W] [--overwrite] [--plot K]: scenes with expert plans"""
        return make_scenes_main(argv)

    def train(argv: Sequence[str]) -> int | None:
        """train <goalflow|ego_mlp|regressor> --scenes DIR --out RUN [options]: the method comes first"""
        from flowzoo.driving.train import main

        return main(argv)

    def evaluate(argv: Sequence[str]) -> int | None:
        """evaluate --checkpoint RUN --scenes DIR --steps 1 [--variant M3] [--plots K]: open-loop PDM scores"""
        from flowzoo.driving.evaluate import evaluate_main

        return evaluate_main(argv)

    def simulate(argv: Sequence[str]) -> int | None:
        """simulate --env ID [--planner idm|constant_velocity|checkpoint] [--checkpoint RUN] [--episodes N] [--steps S] [--video run.gif]: closed loop in highway-env"""
        from flowzoo.driving.cli_simulate import simulate_main

        return simulate_main(argv)

    return {"make-scenes": make_scenes, "train": train, "evaluate": evaluate, "simulate": simulate}


if __name__ == "__main__":
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(make_scenes_main, prog="flowzoo driving make-scenes"))
