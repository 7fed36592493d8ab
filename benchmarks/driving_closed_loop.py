"""GoalFlow closed loop in highway-env (arXiv 2503.05689): the expert, unguided flow matching and GoalFlow driving.

The paper evaluates open loop on NAVSIM; this benchmark drives the plans. One run:

1. collects IDM/MOBIL demonstrations in every environment of ``--envs`` with
   :func:`flowzoo.driving.simulate.collect_demonstrations` (seeds ``--demo_seed`` onwards, disjoint from the
   evaluation seeds; half of the recorded states perturbed sideways and in heading, so the expert's plans also
   show the way back to the lane centre), and saves them as one scene directory;
2. trains one GoalFlow planner on them with :func:`flowzoo.driving.train.train_planner` (the same command as
   ``python -m flowzoo.driving.train goalflow``); its goal is dropped in a fifth of the training examples, so the
   same network is also the unguided flow (M0: goal masked, mean of the samples), as in the open-loop ablation;
3. runs ``--episodes`` seeded episodes (seeds ``--seed`` onwards, the same for every planner) per environment
   with :func:`flowzoo.driving.simulate.run_episodes` for the IDM expert, constant velocity, M0 at 1 step and
   GoalFlow M3 at 1 and 5 Euler steps, and reports success, collisions per km, the off-road rate, progress,
   comfort, mean speed and planner milliseconds (:func:`flowzoo.driving.simulate.summarize`).

The table is ``driving_closed_loop`` (``.quick`` for ``--quick``: 5 episodes per planner and environment, a
few hundred training updates; the full run: 50 episodes each). ``--lateral_noise 0 --heading_noise 0 --table
driving_closed_loop_unperturbed`` is the same run without the perturbed demonstrations.

Run::

    .venv/bin/python -m benchmarks.driving_closed_loop --quick --work runs/closed_loop
    .venv/bin/python -m benchmarks.driving_closed_loop

``--figures_from RUN --figures DIR`` only draws the documentation's figures from a trained run (e.g.
``runs/closed_loop/goalflow``): a GIF of GoalFlow (M3, 1 step) driving the first 15 s of ``highway-fast-v0``
and a BEV figure of the planner's view at one state (samples, chosen plan, goal, the expert's plan).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.training import TrainerConfig
from flowzoo.driving.data import save_scenes
from flowzoo.driving.goalflow import GoalFlowConfig
from flowzoo.driving.highway import check_env_id
from flowzoo.driving.train import DrivingTrainConfig, load_planner, train_planner
from flowzoo.driving.simulate import IDMPlanner, constant_velocity_planner, collect_demonstrations, \
    goalflow_planner, run_episodes, summarize

from benchmarks.results import reproduce_command, save_table

QUICK = {"envs": "highway-fast-v0,merge-v0", "demo_episodes": 8, "train_steps": 400, "episodes": 5,
         "n_samples": 32, "vocab_size": 64, "batch_size": 64, "demo_max_steps": 0, "max_steps": 0}
FULL = {"envs": "highway-fast-v0,merge-v0", "demo_episodes": 40, "train_steps": 2000, "episodes": 50,
        "n_samples": 64, "vocab_size": 128, "batch_size": 64, "demo_max_steps": 0, "max_steps": 0}
PLANNERS = ("IDM (expert)", "constant velocity", "unguided FM (M0)", "GoalFlow (M3)", "GoalFlow (M3)")
COLUMNS = ("env", "planner", "steps", "episodes", "success_rate", "collisions_per_km", "offroad_rate", "progress_m",
           "comfort", "mean_speed", "planner_ms", "errors")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick setting (see QUICK)")
    for name, default in FULL.items():
        parser.add_argument(f"--{name}", type=type(default), default=None, help=f"full: {default}")
    parser.add_argument("--every", type=int, default=5, help="simulation steps between recorded demonstrations")
    parser.add_argument("--lateral_noise", type=float, default=1.0, help="demonstration perturbation, metres")
    parser.add_argument("--heading_noise", type=float, default=0.1, help="demonstration perturbation, rad")
    parser.add_argument("--replan_every", type=int, default=5, help="simulation steps between plans")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first evaluation episode")
    parser.add_argument("--demo_seed", type=int, default=1000, help="seed of the first demonstration episode")
    parser.add_argument("--video", default="", help="also write the first GoalFlow (M3, 1 step) episode as a GIF")
    parser.add_argument("--work", default="", help="keep demonstrations and the run here (default: temporary)")
    parser.add_argument("--table", default="driving_closed_loop", help="name of the saved table (ablations)")
    parser.add_argument("--figures_from", default="", help="a trained GoalFlow run: only draw the figures")
    parser.add_argument("--figures", default="docs/_static/driving", help="where --figures_from writes")
    return parser


def figures(run: str | Path, out: str | Path, *, seed: int = 0, seconds: float = 15.0, n_samples: int = 32,
            env: str = "highway-fast-v0") -> list[Path]:
    """A GIF of GoalFlow (M3, 1 step) driving ``seconds`` of episode ``seed`` and a BEV figure of its view
    halfway through (samples, chosen plan, selected goal, expert plan); returns the two paths."""
    from flowzoo.driving.highway import HighwaySim
    from flowzoo.driving.plotting import plot_scene
    from flowzoo.driving.tracking import Tracker

    torch.set_num_threads(1)
    out = Path(out)
    goalflow = load_planner(run, n_samples=n_samples)
    sim = HighwaySim(env, render=True)
    steps = int(round(seconds / sim.dt))
    gif = out / "goalflow_highway.gif"
    run_episodes(goalflow_planner(goalflow, steps=1, variant="M3"), env, episodes=1, seed=seed, max_steps=steps,
                 video=gif, progress=False, sim=sim)
    sim.reset(seed)
    policy, tracker = goalflow_planner(goalflow, steps=1, variant="M3"), Tracker()
    policy.reset(sim)
    for step in range(steps // 2):  # drive to the middle of the clip as the GIF does, then show one plan
        if step % 5 == 0:
            tracker.set_plan(policy(*sim.observe()), sim.pose, sim.speed, sim.time)
        sim.step(*tracker.control(sim.pose, sim.speed, sim.time))
    scene = sim.scene_record()
    plan = goalflow.plan(scene, steps=1, variant="M3", generator=torch.Generator().manual_seed(seed))
    png = out / "goalflow_highway_bev.png"
    plot_scene(scene, png, samples=plan.samples[0].numpy(), chosen=plan.trajectory[0].numpy(),
               goal=plan.goal[0].numpy(), extent=(-30.0, 100.0, -16.0, 16.0),
               title=f"GoalFlow M3 (1 step), {env}, t = {sim.time:.0f} s")
    return [gif, png]


def _train(args: argparse.Namespace, scenes: Path, out: Path) -> None:
    steps = args.train_steps
    trainer = TrainerConfig(steps=steps, batch_size=args.batch_size, lr=1e-3, warmup_steps=min(100, steps // 10),
                            ema_decay=0.99 if steps < 1000 else 0.999, checkpoint_every=0, log_every=100,
                            out_dir=str(out), seed=args.seed, progress=True, tensorboard=False, device="cpu",
                            overwrite=True)
    train_planner(DrivingTrainConfig(method="goalflow", scenes=str(scenes), trainer=trainer,
                                     model=replace(GoalFlowConfig(), vocab_size=args.vocab_size)))


def _planners(goalflow) -> list[tuple[str, int | None, object]]:
    """(name, flow steps, planner) in table order."""
    return [(PLANNERS[0], None, IDMPlanner()), (PLANNERS[1], None, constant_velocity_planner),
            (PLANNERS[2], 1, goalflow_planner(goalflow, steps=1, variant="M0")),
            (PLANNERS[3], 1, goalflow_planner(goalflow, steps=1, variant="M3")),
            (PLANNERS[4], 5, goalflow_planner(goalflow, steps=5, variant="M3"))]


def run(args: argparse.Namespace, work: Path) -> tuple[list[dict], int]:
    """Collect demonstrations, train, drive every planner; returns the table's rows and the number of
    demonstration states."""
    torch.set_num_threads(1)
    envs = [check_env_id(e.strip()) for e in args.envs.split(",") if e.strip()]
    if not envs:
        raise ConfigError(expected("--envs naming at least one environment", repr(args.envs),
                                   "pass e.g. --envs highway-fast-v0,merge-v0"))
    demos = collect_demonstrations(envs, args.demo_episodes, seed=args.demo_seed, every=args.every,
                                   max_steps=args.demo_max_steps or None, lateral_noise=args.lateral_noise,
                                   heading_noise=args.heading_noise, progress=True)
    save_scenes(work / "demonstrations", demos, seed=args.demo_seed, overwrite=True)
    _train(args, work / "demonstrations", work / "goalflow")
    goalflow = load_planner(work / "goalflow", n_samples=args.n_samples)
    rows = []
    for env in envs:
        for name, steps, planner in _planners(goalflow):
            video = args.video if (args.video and name == PLANNERS[3] and steps == 1 and env == envs[0]) else None
            results = run_episodes(planner, env, episodes=args.episodes, seed=args.seed,
                                   replan_every=args.replan_every, max_steps=args.max_steps or None, video=video)
            summary = summarize(results)
            row = {"env": env, "planner": name, "steps": steps}
            row.update({k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in summary.items()})
            rows.append({k: row.get(k) for k in COLUMNS})
            print(" | ".join(str(row.get(k)) for k in COLUMNS), flush=True)
    return rows, len(demos["bev"])


def _notes(args: argparse.Namespace, rows: list[dict], states: int) -> list[str]:
    envs = list(dict.fromkeys(r["env"] for r in rows))
    perturbed = (f"half perturbed by up to {args.lateral_noise:g} m / {args.heading_noise:g} rad"
                 if args.lateral_noise or args.heading_noise else "none perturbed")
    notes = [f"GoalFlow trained for {args.train_steps} updates of {args.batch_size} on {states} states recorded "
             f"from {args.demo_episodes} IDM demonstration episodes per environment (seeds {args.demo_seed}+, "
             f"every {args.every} simulation steps, {perturbed}); "
             f"vocabulary of {args.vocab_size} goals, {args.n_samples} samples per plan",
             f"{args.episodes} evaluation episodes per planner and environment, seeds {args.seed}+ for every "
             f"planner; a plan every {args.replan_every} simulation steps, tracked at the simulator's rate; "
             "M0 is the same network with its goal masked (mean of the samples)",
             "success: no collision, on the road at the end, and the episode reached its end or 60 s; comfort: "
             "fraction of 4-s windows of the driven path within NAVSIM's bounds; planner_ms per plan (the IDM "
             "expert's is its 4-s rollout of a copy of the road)"]
    for env in envs:
        by = {(r["planner"], r["steps"]): r for r in rows if r["env"] == env}
        m0, m3 = by.get((PLANNERS[2], 1)), by.get((PLANNERS[3], 1))
        if m0 and m3:
            notes.append(f"{env}: GoalFlow M3 (1 step) success {m3['success_rate']:.2f} vs unguided M0 "
                         f"{m0['success_rate']:.2f}; expert {by[(PLANNERS[0], None)]['success_rate']:.2f}")
    return notes


def main(argv: list[str] | None = None) -> list[dict] | list[Path]:
    args = _parser().parse_args(argv)
    if args.figures_from:
        paths = figures(args.figures_from, args.figures, seed=args.seed)
        print("\n".join(f"wrote {p} ({p.stat().st_size // 1024} kB)" for p in paths))
        return paths
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    started = time.perf_counter()
    print(" | ".join(COLUMNS))
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        rows, states = run(args, Path(args.work))
    else:
        with tempfile.TemporaryDirectory() as folder:
            rows, states = run(args, Path(folder))
    notes = _notes(args, rows, states)
    print("\n".join(notes))
    save_table(args.table, rows, columns=COLUMNS, title="Closed loop in highway-env: the IDM expert, "
               "unguided flow matching and GoalFlow", command=reproduce_command("benchmarks.driving_closed_loop",
                                                                                argv),
               quick=args.quick, notes=notes)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return rows


if __name__ == "__main__":
    main()
