"""Open-loop evaluation of driving planners on held-out scenes, the NAVSIM way (arXiv 2406.15349; GoalFlow,
arXiv 2503.05689, Eq. 18): every scene's plan is driven by an LQR-tracked kinematic bicycle at 10 Hz from the
ego's current state and the simulated states are scored with :func:`flowzoo.driving.metrics.evaluate_plans`
(NC, DAC, TTC, comfort, EP and the PDM-style score; ``tracked=False`` / ``--tracked false`` scores the raw
2 Hz poses instead; the raw plan's comfort and score are reported beside the tracked ones), its samples with
minADE / minFDE against the expert, and the planner's wall-clock time per plan is measured.

``flowzoo driving evaluate --checkpoint RUN --scenes DIR --steps 1 [--variant M3] [--plots K]`` writes
``<RUN>/eval/<variant>_steps<k>.json`` and ``.md`` (the means, the settings and per-scene scores) and, with
``--plots K``, BEV figures of the first K scenes (every sample, the chosen plan, the goal and the expert)
beside them. ``--baseline constant_velocity`` evaluates the constant-velocity planner (no checkpoint). GoalFlow's
goal-selection weights (Eq. 5: ``--w_dis``, ``--w_dac``) and trajectory-scorer weights (Eq. 12: ``--lambda_dis``,
``--lambda_progress``) default to :class:`~flowzoo.driving.goalflow.GoalFlowPlanner`'s; ``benchmarks.driving``
chooses ``w_dac`` on a validation split, so its GoalFlow rows are reproduced by passing the ``w_dac`` it reports.

Example:
    >>> from flowzoo.driving.baselines import ConstantVelocityPlanner
    >>> from flowzoo.driving.data import generate_scenes
    >>> report = evaluate_planner(ConstantVelocityPlanner(), generate_scenes(2, seed=0))
    >>> sorted(report["metrics"])[:4], report["metrics"]["scenes"]
    (['comfort', 'dac', 'ep', 'min_ade'], 2)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from flowzoo.core.config import option_help, parse_config
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.training import atomic_write_bytes
from flowzoo.core.validation import check_int, check_new_outputs, check_nonnegative, check_positive_int
from flowzoo.driving.data import scene_arrays
from flowzoo.driving.geometry import polygon_from_vertices
from flowzoo.driving.goalflow import VARIANTS
from flowzoo.driving.metrics import evaluate_plans, min_ade_fde

__all__ = ["METRICS", "score_plan", "evaluate_planner", "format_table", "EvaluateConfig", "evaluate_main"]

_SCORER_WEIGHTS = ("w_dis", "w_dac", "lambda_dis", "lambda_progress")  # GoalFlowPlanner options (Eq. 5, Eq. 12)
METRICS = ("nc", "dac", "ttc", "comfort", "ep", "score", "min_ade", "min_fde", "ms_per_plan")


def score_plan(scene: dict[str, np.ndarray], plan: np.ndarray, samples: np.ndarray, *,
               tracked: bool = True) -> dict[str, float]:
    """PDM-style sub-scores of one plan ``(T, 3)`` in one scene (from ``scene_arrays``), and minADE / minFDE of
    its ``samples`` ``(S, T, 3)``; ``tracked``: score the LQR-tracked 10 Hz states (NAVSIM) and add the raw
    plan's ``raw_comfort`` / ``raw_score``."""
    result = evaluate_plans(np.asarray(plan)[None], drivable=polygon_from_vertices(scene["drivable"]),
                            agent_futures=scene["agent_futures"], agent_sizes=scene["agent_boxes"][:, 3:5],
                            routes=list(scene["routes"]), reference_progress=float(scene["reference_progress"]),
                            initial_speed=float(scene["ego_state"][0]), initial_yaw_rate=float(scene["ego_state"][2]),
                            initial_accel=float(scene["ego_state"][1]), tracked=tracked,
                            agent_now=scene["agent_boxes"][:, :3])
    ade, fde = min_ade_fde(np.asarray(samples), scene["trajectory"])
    return {**{key: float(value[0]) for key, value in result.items()}, "min_ade": ade, "min_fde": fde}


def _batch(arrays: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {key: arrays[key][start:stop] for key in ("bev", "ego_state", "command", "trajectory")}


def evaluate_planner(planner, arrays: dict[str, np.ndarray], *, steps: int | None = None,
                     n_samples: int | None = None, variant: str | None = None, batch_size: int = 1,
                     limit: int = 0, seed: int = 0, progress: bool = False, keep_plans: int = 0,
                     tracked: bool = True) -> dict[str, Any]:
    """Plan and score every scene of ``arrays`` (schema arrays, e.g. from ``load_scenes``).

    Args:
        planner: anything with ``plan(batch, *, steps, n_samples, variant, generator) -> PlanResult``.
        arrays: the scenes.
        steps, n_samples, variant: passed to ``plan`` (None: the planner's defaults).
        batch_size: scenes planned per call (1 measures the latency of one plan).
        limit: evaluate the first N scenes only (0: all).
        seed: seed of the planner's noise.
        progress: a progress bar.
        keep_plans: keep the plans, samples and goals of the first K scenes (for figures).
        tracked: score the LQR-tracked states (NAVSIM; the default) rather than the raw poses.

    Returns:
        ``{"metrics": means of :data:`METRICS`, "scenes" (and "shadow_used", the fraction of plans replaced by
        the shadow trajectory, for GoalFlow's M3; "raw_comfort", "raw_score" when tracked), "per_scene": {metric:
        list}, "plans": [...]}``.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    count = len(arrays["bev"]) if not limit else min(check_int(limit, "limit", low=0), len(arrays["bev"]))
    kwargs = {k: v for k, v in (("steps", steps), ("n_samples", n_samples), ("variant", variant)) if v is not None}
    generator = torch.Generator().manual_seed(int(seed))
    per_scene: dict[str, list[float]] = {key: [] for key in METRICS}
    kept: list[dict[str, Any]] = []
    with tqdm(total=count, desc="evaluate", unit="scene", disable=not progress) as bar:
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            began = time.perf_counter()
            result = planner.plan(_batch(arrays, start, stop), generator=generator, **kwargs)
            ms = 1000 * (time.perf_counter() - began) / (stop - start)
            for j, i in enumerate(range(start, stop)):
                scene = scene_arrays(arrays, i)
                plan, samples = result.trajectory[j].numpy(), result.samples[j].numpy()
                for key, value in score_plan(scene, plan, samples, tracked=tracked).items():
                    per_scene.setdefault(key, []).append(value)
                per_scene["ms_per_plan"].append(ms)
                if "used_shadow" in result.extras:  # how often GoalFlow's shadow fallback replaced the plan
                    per_scene.setdefault("shadow_used", []).append(float(result.extras["used_shadow"][j]))
                if i < keep_plans:
                    kept.append({"index": i, "plan": plan, "samples": samples,
                                 "goal": None if result.goal is None else result.goal[j].numpy()})
            bar.update(stop - start)
    metrics: dict[str, float] = {key: float(np.mean(values)) for key, values in per_scene.items()}
    metrics["scenes"] = count
    return {"metrics": metrics, "per_scene": per_scene, "plans": kept}


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per planner, the PDM sub-scores and score in percent, minADE / minFDE in
    metres and ms per plan; "raw C" and "raw score" (the raw 2 Hz poses scored) when every row has them.

    Example:
        >>> print(format_table({"cv": {"nc": 1, "dac": 1, "ttc": 1, "comfort": 1, "ep": 0.5, "score": 0.79,
        ...     "min_ade": 2.0, "min_fde": 4.0, "ms_per_plan": 0.1}}).splitlines()[2])
        | cv | 100.0 | 100.0 | 100.0 | 100.0 | 50.0 | 79.0 | 2.00 | 4.00 | 0.1 |
    """
    raw = all("raw_score" in m for m in rows.values())
    lines = ["| planner | NC | DAC | TTC | C | EP | score |" + (" raw C | raw score |" if raw else "")
             + " minADE (m) | minFDE (m) | ms/plan |", "|---" * (12 if raw else 10) + "|"]
    for name, m in rows.items():
        keys = ("nc", "dac", "ttc", "comfort", "ep", "score") + (("raw_comfort", "raw_score") if raw else ())
        cells = [f"{100 * m[k]:.1f}" for k in keys]
        cells += [f"{m['min_ade']:.2f}", f"{m['min_fde']:.2f}", f"{m['ms_per_plan']:.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class EvaluateConfig:
    """Open-loop evaluation of a trained driving planner on held-out scenes."""

    scenes: str = field(metadata=option_help("held-out scene directory (flowzoo driving make-scenes)"))
    checkpoint: str = field(default="", metadata=option_help("run directory of python -m flowzoo.driving.train"))
    baseline: str = field(default="", metadata=option_help("'constant_velocity': evaluate that baseline instead"))
    steps: int = field(default=1, metadata=option_help("Euler steps of the flow"))
    n_samples: int = field(default=128, metadata=option_help("trajectory samples per scene (paper: 128)"))
    variant: str = field(default="M3", metadata=option_help(f"GoalFlow variant: {', '.join(VARIANTS)}"))
    shift: float = field(default=1.0, metadata=option_help("time shift of the sampling grid (1: uniform; paper: 3)"))
    shadow_threshold: float = field(default=0.5, metadata=option_help("shadow-trajectory reliability ratio "
                                                                       "(0: no shadow trajectory)"))
    limit: int = field(default=0, metadata=option_help("evaluate the first N scenes only (0: all)"))
    batch_size: int = field(default=1, metadata=option_help("scenes per planner call (1: latency of one plan)"))
    plots: int = field(default=0, metadata=option_help("BEV figures of the first K scenes"))
    seed: int = field(default=0, metadata=option_help("seed of the sampling noise"))
    out: str = field(default="", metadata=option_help("result JSON (default: "
                                                      "<checkpoint>/eval/<variant>_steps<k>.json)"))
    w_dis: float = field(default=0.1, metadata=option_help("goal-selection weight of the distance score "
                                                            "(GoalFlow Eq. 5)"))
    w_dac: float = field(default=3.0, metadata=option_help("goal-selection weight of the drivable-area score "
                                                            "(Eq. 5; benchmarks.driving picks it on validation)"))
    lambda_dis: float = field(default=1.0, metadata=option_help("trajectory-scorer weight of the distance to the "
                                                                 "goal (Eq. 12)"))
    lambda_progress: float = field(default=0.5, metadata=option_help("trajectory-scorer weight of progress (Eq. 12)"))
    tracked: bool = field(default=True, metadata=option_help("score the LQR-tracked 10 Hz states as NAVSIM does "
                                                              "(false: the raw 2 Hz poses)"))
    overwrite: bool = field(default=False, metadata=option_help("replace an existing result"))
    progress: bool = field(default=True, metadata=option_help("progress bar"))


def _planner(cfg: EvaluateConfig, meta: dict, arrays: dict[str, np.ndarray]):
    from flowzoo.driving.train import constant_velocity_planner, load_planner

    if cfg.baseline:
        if cfg.baseline != "constant_velocity" or cfg.checkpoint:
            raise ConfigError(expected("--baseline constant_velocity without --checkpoint", f"--baseline "
                                       f"{cfg.baseline} --checkpoint {cfg.checkpoint or '(none)'}",
                                       "pass either --checkpoint RUN or --baseline constant_velocity"))
        _check_weights_apply(cfg, cfg.baseline)
        return constant_velocity_planner({"horizon": arrays["trajectory"].shape[1], "dt": meta["dt"]}), \
            {"method": "constant_velocity"}
    if not cfg.checkpoint:
        raise ConfigError(expected("--checkpoint RUN (a training run directory)", "nothing",
                                   "pass --checkpoint runs/gf, or --baseline constant_velocity"))
    planner = load_planner(cfg.checkpoint, horizon=int(arrays["trajectory"].shape[1]),
                           channels=list(meta["channels"]), raster_size=int(arrays["bev"].shape[-1]),
                           n_samples=cfg.n_samples, steps=cfg.steps, shift=cfg.shift,
                           shadow_threshold=cfg.shadow_threshold or None, **_weights(cfg))
    _check_weights_apply(cfg, planner.info["method"])
    return planner, planner.info


def _weights(cfg: EvaluateConfig) -> dict[str, float]:
    """The GoalFlow selection (Eq. 5) and trajectory-scorer (Eq. 12) weights of ``cfg``."""
    return {name: getattr(cfg, name) for name in _SCORER_WEIGHTS}


def _check_weights_apply(cfg: EvaluateConfig, method: str) -> None:
    """Weights given for a planner without a goal scorer would be silently ignored: refuse them."""
    if method != "goalflow" and _weights(cfg) != _weights(EvaluateConfig(scenes=cfg.scenes)):
        raise ConfigError(expected("--w_dis / --w_dac / --lambda_dis / --lambda_progress only with a GoalFlow "
                                   "checkpoint", f"them with a {method} planner", "drop those options"))


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flowzoo driving evaluate``; returns 0 after writing the results."""
    from flowzoo.driving.train import load_training_scenes

    cfg = parse_config(EvaluateConfig, sys.argv[1:] if argv is None else list(argv), prog="flowzoo driving evaluate")
    if cfg.variant not in VARIANTS:
        raise ConfigError(expected(f"--variant among {', '.join(VARIANTS)}", cfg.variant, "pass e.g. --variant M3"))
    for name, low in (("steps", 1), ("n_samples", 1), ("limit", 0), ("batch_size", 1), ("plots", 0)):
        check_int(getattr(cfg, name), f"--{name}", low=low)
    for name in _SCORER_WEIGHTS:  # a negative weight would reward off-road goals or far-from-goal plans
        check_nonnegative(getattr(cfg, name), f"--{name}")
    if not cfg.checkpoint and not cfg.baseline:
        raise ConfigError(expected("--checkpoint RUN or --baseline constant_velocity", "neither",
                                   "pass --checkpoint runs/gf"))
    name = f"{cfg.variant}_steps{cfg.steps}" if not cfg.baseline else cfg.baseline
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint or ".") / "eval" / f"{name}.json"
    check_new_outputs([out], cfg.overwrite)
    arrays, meta = load_training_scenes(cfg.scenes)
    planner, info = _planner(cfg, meta, arrays)
    report = evaluate_planner(planner, arrays, steps=cfg.steps, n_samples=cfg.n_samples,
                              variant=cfg.variant if info["method"] == "goalflow" else None,
                              batch_size=cfg.batch_size, limit=cfg.limit, seed=cfg.seed, progress=cfg.progress,
                              keep_plans=cfg.plots, tracked=cfg.tracked)
    label = name if info["method"] == "goalflow" else info["method"]
    table = format_table({label: report["metrics"]})
    record = {"planner": info, "planner_settings": planner.settings() if hasattr(planner, "settings") else {},
              "settings": {k: getattr(cfg, k) for k in EvaluateConfig.__dataclass_fields__},
              "metrics": report["metrics"], "per_scene": report["per_scene"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, json.dumps(record, indent=1, default=str).encode("utf-8"))
    atomic_write_bytes(out.with_suffix(".md"), (table + "\n").encode("utf-8"))
    if cfg.plots:
        from flowzoo.driving.plotting import plot_scene

        for kept in report["plans"]:
            i = kept["index"]
            score = report["per_scene"]["score"][i]
            plot_scene(scene_arrays(arrays, i), out.parent / f"{out.stem}_plots" / f"scene_{i:05d}.png",
                       samples=kept["samples"], chosen=kept["plan"], goal=kept["goal"],
                       title=f"scene {i}: {label}, score {100 * score:.0f}")
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}" + (f", {cfg.plots} plots in {out.parent / (out.stem + '_plots')}"
                                                          if cfg.plots else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(evaluate_main, prog="flowzoo driving evaluate"))
