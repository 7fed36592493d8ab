"""SCOOP self-supervised scene flow on generated scenes (arXiv 2211.14020, the E8 experiment at CPU scale).

Trains the SCOOP correspondence model with no ground-truth flow on synthetic scene-flow pairs
(:func:`flowzoo.three_d.scene_pairs.make_scene_flow_pair`: a few shapes, per-object rigid motion plus ego motion, frames
re-sampled independently, an occluded sector, 1 cm noise) and scores held-out pairs on EPE3D, Acc3DS, Acc3DR and
Outliers (valid points only) and milliseconds per pair (one pair per call, one CPU thread):

* zero flow (the floor every method must beat);
* SCOOP's raw correspondence flow; SCOOP + test-time refinement; refinement from zero flow at the same step
  budget (Neural Scene Flow Prior-style optimisation only); SCOOP + refinement without the smoothness term;
* the raw and refined SCOOP flow after training on 10 / 100 / 500 scenes (the same number of updates each).

The notes say whether refinement cuts EPE3D well below the raw correspondence flow (the paper's claim).
The quick setting uses smaller clouds, fewer updates and refinement steps, and 10 / 100 training scenes only.

Run (``--quick``: about 3 minutes on one busy core; the full run about 30 minutes)::

    .venv/bin/python -m benchmarks.three_d_scene_flow --quick
    .venv/bin/python -m benchmarks.three_d_scene_flow
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from flowzoo.core.training import TrainerConfig
from flowzoo.three_d.metrics import scene_flow_metrics
from flowzoo.three_d.scoop import SceneSet, SCOOPLoss, make_scene_set, refine_flow, train_scoop
from flowzoo.three_d.scoop_model import SCOOPModel

from benchmarks.results import reproduce_command, save_table

QUICK = {"n_points": 256, "train_steps": 100, "n_test": 6, "refine_steps": 150, "sizes": "10,100", "main_size": 100}
FULL = {"n_points": 512, "train_steps": 300, "n_test": 12, "refine_steps": 300, "sizes": "10,100,500",
        "main_size": 100}
SCENE = {"extent": 4.0, "n_objects": 3}  # a denser scene than the default: CPU-sized clouds still cover each object
MODEL = {"channels": 16, "neighbors": 16, "top_k": 8, "max_distance": 3.0}  # 3 m: no object moves farther
METRICS = ("EPE3D", "Acc3DS", "Acc3DR", "Outliers")
COLUMNS = ("method", "train_scenes", "refine_steps", *METRICS, "ms_per_pair")
DEFAULT_FIGURE = Path(__file__).resolve().parent.parent / "docs" / "_static" / "three_d" / "scene_flow.png"


def _train(scenes: SceneSet, settings: dict, seed: int, work: Path) -> SCOOPModel:
    cfg = TrainerConfig(steps=settings["train_steps"], batch_size=2, lr=1e-2, ema_decay=0.0, seed=seed,
                        out_dir=str(work / f"scoop_{len(scenes)}"), log_every=25, progress=True, tensorboard=False,
                        overwrite=True)
    model, _ = train_scoop(scenes, cfg, model=SCOOPModel(**MODEL), loss=SCOOPLoss(smoothness_neighbors=16))
    return model


def _evaluate(name: str, test: SceneSet, estimate, *, train_scenes: int | None, refine_steps: int) -> dict:
    """One row: ``estimate(i) -> flow (1, N, 3)`` timed per pair, metrics averaged over pairs."""
    flows, seconds = [], 0.0
    for i in range(len(test)):
        start = time.perf_counter()
        flows.append(estimate(i))
        seconds += time.perf_counter() - start
    scores = scene_flow_metrics(torch.cat(flows), test.flow, test.valid)
    row = {"method": name, "train_scenes": train_scenes, "refine_steps": refine_steps}
    row.update({key: round(float(scores[key].mean()), 4) for key in METRICS})
    row["ms_per_pair"] = round(1000 * seconds / len(test), 1)
    print(row, flush=True)
    return row


def _scoop_estimator(model: SCOOPModel, test: SceneSet, steps: int, smoothness: float = 1.0):
    def estimate(i: int) -> torch.Tensor:
        with torch.no_grad():
            out = model(test.source[i:i + 1], test.target[i:i + 1])
        if steps == 0:
            return out.flow
        return refine_flow(test.source[i:i + 1], test.target[i:i + 1], out.flow, steps=steps, weights=out.confidence,
                           smoothness=smoothness, neighbors=MODEL["neighbors"]).flow

    return estimate


def rows(quick: bool, seed: int = 0, *, overrides: dict | None = None, work: Path | None = None) -> list[dict]:
    """The table's rows (see the module doc); ``overrides`` replaces entries of QUICK / FULL (tests)."""
    return run({**(QUICK if quick else FULL), **(overrides or {})}, seed, work)[0]


def run(settings: dict, seed: int, work: Path | None) -> tuple[list[dict], SCOOPModel]:
    """The rows and the model trained on ``main_size`` scenes."""
    sizes = sorted({int(s) for s in str(settings["sizes"]).split(",")} | {settings["main_size"]})
    steps = settings["refine_steps"]
    test = make_scene_set(settings["n_test"], seed=seed + 1000, n_points=settings["n_points"], **SCENE)
    everything = make_scene_set(max(sizes), seed=seed, n_points=settings["n_points"], **SCENE)
    models = {}
    with tempfile.TemporaryDirectory() if work is None else contextlib.nullcontext(str(work)) as folder:
        for size in sizes:
            subset = SceneSet(everything.source[:size], everything.target[:size], everything.flow[:size],
                              everything.valid[:size])
            models[size] = _train(subset, settings, seed, Path(folder))
    main = models[settings["main_size"]]
    table = [_evaluate("zero flow", test, lambda i: torch.zeros_like(test.flow[i:i + 1]), train_scenes=None,
                       refine_steps=0),
             _evaluate("SCOOP raw", test, _scoop_estimator(main, test, 0), train_scenes=settings["main_size"],
                       refine_steps=0),
             _evaluate("SCOOP + refinement", test, _scoop_estimator(main, test, steps),
                       train_scenes=settings["main_size"], refine_steps=steps),
             _evaluate("refinement from zero", test,
                       lambda i: refine_flow(test.source[i:i + 1], test.target[i:i + 1], steps=steps,
                                             neighbors=MODEL["neighbors"]).flow, train_scenes=None, refine_steps=steps),
             _evaluate("SCOOP + refinement, no smoothness", test, _scoop_estimator(main, test, steps, 0.0),
                       train_scenes=settings["main_size"], refine_steps=steps)]
    for size in sizes:
        if size == settings["main_size"]:
            continue
        table.append(_evaluate("SCOOP raw", test, _scoop_estimator(models[size], test, 0), train_scenes=size,
                               refine_steps=0))
        table.append(_evaluate("SCOOP + refinement", test, _scoop_estimator(models[size], test, steps),
                               train_scenes=size, refine_steps=steps))
    return table, main


def verdict(table: list[dict], main_size: int) -> str:
    """Whether refinement cuts EPE3D well (at least 2×) below the raw correspondence flow."""
    raw = next(r for r in table if r["method"] == "SCOOP raw" and r["train_scenes"] == main_size)["EPE3D"]
    refined = next(r for r in table if r["method"] == "SCOOP + refinement" and r["train_scenes"] == main_size)["EPE3D"]
    holds = refined <= 0.5 * raw
    return (f"claim {'holds' if holds else 'does not hold'}: refinement takes EPE3D from {raw:.3f} (raw "
            f"correspondence flow) to {refined:.3f} ({raw / max(refined, 1e-9):.1f}x lower; 'well below' = >= 2x)")


def figure(path: Path, seed: int, n_points: int, model: SCOOPModel, steps: int = 150) -> Path:
    """A held-out scene with its true, raw and refined flows as arrows (PNG)."""
    from flowzoo.three_d.plotting import plot_scene_flow

    scene = make_scene_set(1, seed=seed + 1000, n_points=n_points, **SCENE)
    with torch.no_grad():
        raw = model(scene.source, scene.target)
    refined = refine_flow(scene.source, scene.target, raw.flow, steps=steps, weights=raw.confidence,
                          neighbors=MODEL["neighbors"]).flow
    flows = {"ground truth": scene.flow[0], "SCOOP raw": raw.flow[0], f"SCOOP + {steps} refinement steps": refined[0]}
    path.parent.mkdir(parents=True, exist_ok=True)
    return plot_scene_flow(scene.source[0], scene.target[0], path, flows=flows, max_arrows=120, dpi=70)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick setting (see QUICK)")
    parser.add_argument("--seed", type=int, default=0)
    for name, default in FULL.items():
        parser.add_argument(f"--{name}", type=type(default), default=None, help=f"full: {default}")
    parser.add_argument("--figure", default=str(DEFAULT_FIGURE), help="the PNG to write ('' for none)")
    parser.add_argument("--work", default="", help="keep the training runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small clouds run fastest on one thread, and the timings stay comparable
    try:
        return _run_and_save(args, argv)
    finally:
        torch.set_num_threads(threads)


def _run_and_save(args: argparse.Namespace, argv: list[str] | None) -> list[dict]:
    overrides = {name: getattr(args, name) for name in FULL if getattr(args, name) is not None}
    settings = {**(QUICK if args.quick else FULL), **overrides}
    started = time.perf_counter()
    table, model = run(settings, args.seed, Path(args.work) if args.work else None)
    notes = [f"{settings['n_points']}-point synthetic scenes ({SCENE['n_objects']} objects within "
             f"{SCENE['extent']:g} m, per-object and ego motion, occlusion, 1 cm noise), {settings['n_test']} "
             f"held-out pairs; SCOOP {MODEL} trained self-supervised for {settings['train_steps']} updates of "
             f"2 scenes (lr 1e-2) on each training-set size; refinement: Adam lr 0.05, smoothness 1, "
             f"{settings['refine_steps']} steps; metrics on valid (non-occluded) points; ms per pair on one CPU "
             "thread, one pair per call",
             verdict(table, settings["main_size"])]
    if args.quick:
        notes.append("quick: smaller clouds, fewer updates and refinement steps, and 10 / 100 training scenes "
                     "(the full run adds 500)")
    for row in table:
        print("  ".join(f"{row[c]}" for c in COLUMNS))
    print("\n".join(notes))
    save_table("three_d_scene_flow", table, columns=COLUMNS, title="SCOOP scene flow on held-out synthetic scenes",
               command=reproduce_command("benchmarks.three_d_scene_flow", argv), quick=args.quick, notes=notes)
    if args.figure:
        print("figure:", figure(Path(args.figure), args.seed, settings["n_points"], model, settings["refine_steps"]))
    print(f"{time.perf_counter() - started:.0f} s")
    return table


if __name__ == "__main__":
    main()
