"""``flowzoo vision sample`` and ``flowzoo vision evaluate`` on a SymmFlow run (Caetano et al., arXiv 2506.10634).

:mod:`flowzoo.vision.cli` parses the options and hands a run of ``python -m flowzoo.vision.train symmflow`` here:
``sample --task generate|segment|classify`` works on the first ``--n`` items of the test split of the run's own
data and writes a grid of image tuples plus an ``.npz`` (:func:`sample_symmflow_command`); ``evaluate`` prints and
writes the segmentation mIoU, the one-step classification accuracy and the generation FD
(:func:`evaluate_symmflow_command`, scored by :func:`flowzoo.vision.train_symmflow.score_symmflow`). Options of the
pixel-space runs (``--class``, ``--cfg_scale``, ``--refiner``, ``--sampler flowturbo``, ...) set away from their
defaults are refused with the list of what a SymmFlow run takes. Time runs from the semantic map (t = 0) to the
image (t = 1), as :mod:`flowzoo.vision.symmflow` documents.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

import numpy as np

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.training import atomic_write_bytes, atomic_write_with
from flowzoo.core.validation import check_new_outputs

__all__ = ["check_symmflow_options", "sample_symmflow_command", "evaluate_symmflow_command"]

_PIXEL_RUN_OPTIONS = {"label": "--class", "cfg_scale": "--cfg_scale", "guidance": "--guidance",
                      "raag_alpha": "--raag_alpha", "prune": "--prune", "prune_tau": "--prune_tau",
                      "prune_max_similarity": "--prune_max_similarity", "refiner": "--refiner",
                      "refiner_steps": "--refiner_steps", "data": "--data"}
_SYMMFLOW_TAKES = ("--task, --n, --steps, --sampler (euler, midpoint, heun, rk4, dopri5), --out, --nrow, --seed, "
                   "--overwrite, --progress", "--n, --steps, --seg_steps, --sampler (euler, midpoint, heun, rk4, "
                   "dopri5), --out, --seed, --overwrite, --progress")


def check_symmflow_options(cfg, command: str) -> None:
    """Raise a ConfigError naming the options of ``cfg`` (the ``sample`` or ``evaluate`` config) set away from their
    defaults that a SymmFlow run cannot use."""
    takes = _SYMMFLOW_TAKES[0 if command == "sample" else 1]
    from flowzoo.vision.fewstep import SOLVERS

    defaults = {f.name: f.default for f in fields(cfg)}
    used = [f"{flag} {getattr(cfg, name)}" for name, flag in _PIXEL_RUN_OPTIONS.items()
            if name in defaults and getattr(cfg, name) != defaults[name]]
    used += [f"--sampler {cfg.method}"] if cfg.method not in SOLVERS else []
    if used:
        raise ConfigError(expected(f"for a SymmFlow run only {takes}", ", ".join(used),
                                   "drop them: they apply to the pixel-space runs of flowzoo.vision.train"))


def sample_symmflow_command(cfg, out: Path, arrays: Path) -> int:
    """``sample`` on a ``symmflow`` run: ``--task`` on the first ``--n`` test items, a grid of image tuples."""
    from flowzoo.vision.metrics import save_image_grid
    from flowzoo.vision.train_symmflow import load_symmflow, sample_symmflow

    check_symmflow_options(cfg, "sample")
    run = load_symmflow(cfg.checkpoint)
    samples = sample_symmflow(run, cfg.task, cfg.n, steps=cfg.steps, method=cfg.method, seed=cfg.seed,
                              progress=cfg.progress)
    per_row = samples.per_item * (cfg.nrow or math.ceil(math.sqrt(cfg.n)))
    save_image_grid(samples.tiles, out, nrow=per_row, scale=max(1, min(4, 64 // samples.tiles.shape[-1])))
    atomic_write_with(arrays, lambda path: np.savez_compressed(path, **samples.arrays), suffix=".npz")
    print(f"{samples.summary} from {run.checkpoint}: wrote {out} and {arrays}")
    return 0


_SYMMFLOW_METRICS = {"miou": "segmentation mIoU", "pixel_accuracy": "pixel accuracy",
                     "classification_accuracy": "one-step classification accuracy", "fd": "generation FD",
                     "foreground_iou": "foreground IoU"}


def evaluate_symmflow_command(cfg) -> int:
    """``evaluate`` on a ``symmflow`` run: its metrics on the first ``--n`` test items, written as JSON."""
    from flowzoo.vision.train_symmflow import load_symmflow, score_symmflow, symmflow_test_split

    check_symmflow_options(cfg, "evaluate")
    run = load_symmflow(cfg.checkpoint)
    run_dir = run.checkpoint.parent.parent
    name = f"evaluate_{cfg.method}{cfg.steps}_n{cfg.n}_seg{cfg.seg_steps}_symmflow.json"
    out = Path(cfg.out) if cfg.out else run_dir / name
    check_new_outputs([out], cfg.overwrite)
    test = symmflow_test_split(run, cfg.n)
    metrics = score_symmflow(run.model, run.config.load("train"), test, gen_steps=cfg.steps, seg_steps=cfg.seg_steps,
                             method=cfg.method, seed=cfg.seed, progress=cfg.progress)
    record = {"checkpoint": str(run.checkpoint), "step": run.step, "data": test.name,
              "direction": run.config.direction, "n": cfg.n, "method": cfg.method, "steps": cfg.steps,
              "seg_steps": cfg.seg_steps, "metrics": metrics}
    atomic_write_bytes(out, json.dumps(record, indent=2).encode("utf-8"))
    print("  ".join(f"{label} {metrics[name]:.4g}" for name, label in _SYMMFLOW_METRICS.items() if name in metrics)
          + f"  ({cfg.n} test images of {test.name}; wrote {out})")
    return 0
