"""Action Flow Matching under drifting dynamics: success and steps-to-goal against its baselines.

Setting (Mallo et al., RSS 2025, arXiv 2504.18471; research notes §3, experiment E3): the dynamics change once
15 % of the waypoints are reached and return to nominal at 80 %. Three controllers share one MPPI planner
(horizon 5, population 256) over a 2-member Gaussian ensemble pre-trained on nominal transitions:

* ``planner``: the misaligned model as it is;
* ``refit``: the planner re-fitting its model online (one Adam step per environment step on the latest 16
  transitions);
* ``afm``: the planner on the fixed model + Action Flow Matching (pre-trained on analytic data, regime detection,
  online fine-tuning on hindsight-relabelled transitions).

Tasks: the unicycle ground vehicle (circle or figure-8 loop; gain pairs × seeds) and the MuJoCo point mass whose mass,
friction and actuator gain change. Metrics: success = reached / total waypoints, steps to finish (the step budget
when unfinished), ms per control step. Prints one markdown table, names the winner per task, and saves a
trajectory plot.

Run (``--quick``: about 3-5 minutes on 2 busy CPU cores; full: about 20-30 minutes):

    .venv/bin/python -m benchmarks.robotics_afm --quick
    .venv/bin/python -m benchmarks.robotics_afm --plot afm_trajectories.png
"""

from __future__ import annotations

import argparse
import copy
import time
from statistics import mean

import numpy as np
import torch

from benchmarks.results import reproduce_command, save_table
from flowzoo.robotics.afm.regimes import PAPER_GAINS, point_mass_afm_batch, point_mass_regime_maps, unicycle_afm_batch
from flowzoo.robotics.afm.method import ActionFlowMatching, ActionFlowNet
from flowzoo.robotics.afm.controller import AFMController
from flowzoo.robotics.afm.waypoints import DriftSchedule, circle_waypoints, figure8_waypoints
from flowzoo.robotics.afm.point_mass import PointMassTask
from flowzoo.robotics.afm.sim import UnicycleTask
from flowzoo.robotics.mppi import (GaussianEnsemble, LearnedDynamics, MPPIConfig, MPPIPlanner, PlannerController,
                                   goal_distance_cost, run_mission)

METHODS = ("planner", "refit", "afm")
# Sign inversions (the hard case), a scaling, and (-0.7, 1.2), which is not among the pre-training gains.
UNICYCLE_GAINS_FULL = ((-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0), (2.5, 0.5), (-0.7, 1.2))
UNICYCLE_GAINS_QUICK = ((-1.0, 1.0), (1.0, -1.0))
UNICYCLE_TRAIN_GAINS = tuple(PAPER_GAINS) + ((2.5, 0.5), (0.5, 2.0), (1.5, 0.7), (0.7, 1.5))
POINT_MASS_CHANGES_FULL = ({"gain": -1.0}, {"gain": 0.5, "mass": 3.0, "friction": 2.0}, {"gain": -0.7, "mass": 2.0},
                           {"mass": 3.0, "friction": 0.5})
POINT_MASS_CHANGES_QUICK = ({"gain": -1.0}, {"gain": 0.5, "mass": 3.0, "friction": 2.0})


def nominal_transitions(task, n: int, generator: torch.Generator):
    """Random states and actions with their nominal next states (the data a deployed robot was modelled on)."""
    low = torch.as_tensor(task.action_low, dtype=torch.float32)
    high = torch.as_tensor(task.action_high, dtype=torch.float32)
    actions = low + (high - low) * torch.rand(n, task.action_dim, generator=generator)
    states = torch.randn(n, task.state_dim, generator=generator)
    if isinstance(task, UnicycleTask):
        states[:, 2] = (torch.rand(n, generator=generator) * 2 - 1) * np.pi
    else:
        states[:, 2:] = torch.rand(n, 2, generator=generator) * 2 - 1
    return states, actions, task.nominal_step(states, actions)


def prepare(task, batch_fn, args):
    """Pre-train the nominal ensemble and the AFM flow once per task (each run gets fresh copies)."""
    generator = torch.Generator().manual_seed(0)
    inputs = task.model_input(torch.zeros(1, task.state_dim), torch.zeros(1, task.action_dim)).shape[1]
    ensemble = GaussianEnsemble(inputs, task.state_dim, members=2, hidden=args.hidden)
    LearnedDynamics(ensemble, task).fit(*nominal_transitions(task, 20000, generator), steps=args.dynamics_steps,
                                        progress=not args.no_progress)
    net = ActionFlowNet(task.action_dim, task.regime_state_dim, task.state_dim)
    afm = ActionFlowMatching(net, lr=3e-3)
    afm.pretrain(batch_fn, steps=args.afm_steps, progress=not args.no_progress)
    return ensemble, net


def make_controller(method: str, task, ensemble, net, batch_fn, seed: int):
    learner = LearnedDynamics(copy.deepcopy(ensemble), task)
    planner = MPPIPlanner(learner, goal_distance_cost(task.position), task.action_low, task.action_high,
                          MPPIConfig(population=256), seed=seed)
    if method == "planner":
        return PlannerController(planner)
    if method == "refit":
        return PlannerController(planner, learner, window=16)
    afm = ActionFlowMatching(copy.deepcopy(net), lr=1e-3, seed=seed)
    return AFMController(task, planner, learner, afm, online=True, replay=lambda g: batch_fn(g, 64))


def evaluate(name: str, task_factory, conditions, ensemble, net, batch_fn, seeds, args, trajectories):
    rows = []
    for condition in conditions:
        for method in METHODS:
            successes, steps, times = [], [], []
            for seed in seeds:
                torch.manual_seed(seed)
                task = task_factory(condition, seed)
                controller = make_controller(method, task, ensemble, net, batch_fn, seed)
                start = time.perf_counter()
                result = run_mission(task, controller, progress=not args.no_progress,
                                     desc=f"{name} {condition} {method} seed {seed}")
                times.append(1000 * (time.perf_counter() - start) / max(result.steps, 1))
                successes.append(result.success_rate)
                steps.append(result.steps_to_finish if result.steps_to_finish is not None else task.max_steps)
                if seed == seeds[0]:
                    trajectories.append((name, condition, method, result))
            rows.append({"task": name, "condition": condition, "method": method, "success": mean(successes),
                         "steps": mean(steps), "ms": mean(times)})
    return rows


def print_table(rows) -> None:
    print("| task | dynamics change | method | success | steps to finish | ms / step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['task']} | {r['condition']} | {r['method']} | {r['success']:.3f} | {r['steps']:.0f} | "
              f"{r['ms']:.1f} |")
    print()
    for task in dict.fromkeys(r["task"] for r in rows):
        summary = {m: (mean(r["success"] for r in rows if r["task"] == task and r["method"] == m),
                       mean(r["steps"] for r in rows if r["task"] == task and r["method"] == m)) for m in METHODS}
        best = max(METHODS, key=lambda m: (summary[m][0], -summary[m][1]))
        described = ", ".join(f"{m}: success {s:.3f}, steps {st:.0f}" for m, (s, st) in summary.items())
        print(f"- {task}: mean over conditions and seeds — {described}. Winner: **{best}**.")


def save_plot(trajectories, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((name, str(condition)) for name, condition, _, _ in trajectories))
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, condition) in zip(axes.flat, panels):
        for task_name, cond, method, result in trajectories:
            if task_name == name and str(cond) == condition:
                ax.plot(result.positions[:, 0], result.positions[:, 1], label=f"{method} ({result.success_rate:.2f})")
                waypoints = result.waypoints
        ax.scatter(waypoints[:, 0], waypoints[:, 1], c="k", s=10, zorder=3, label="waypoints")
        center, extent = waypoints.mean(0), 1.6 * np.abs(waypoints - waypoints.mean(0)).max()
        ax.set_xlim(center[0] - extent, center[0] + extent)      # runs that drive away leave the frame
        ax.set_ylim(center[1] - extent, center[1] + extent)
        ax.set_title(f"{name} {condition}", fontsize=9)
        ax.set_aspect("equal")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 conditions per task, 1 seed, shorter pre-training")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per condition (default 1 quick, 3 full)")
    parser.add_argument("--plot", default="afm_trajectories.png", help="trajectory plot (PNG)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--loop", choices=("circle", "figure8"), default="circle",
                        help="unicycle waypoint loop: circle (20 points, r = 4 m) or figure-8 (40 points, 12 m wide)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.hidden = 128
    args.dynamics_steps = 1000 if args.quick else 2000
    args.afm_steps = 3000 if args.quick else 6000
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 3)))
    trajectories, rows = [], []

    loop = circle_waypoints(20, 4.0) if args.loop == "circle" else figure8_waypoints(40, 6.0)
    unicycle = UnicycleTask(loop)
    unicycle_batch = lambda g, n=256: unicycle_afm_batch(unicycle, n, g, gains=UNICYCLE_TRAIN_GAINS)  # noqa: E731
    ensemble, net = prepare(unicycle, unicycle_batch, args)

    def unicycle_factory(gains, seed):
        return UnicycleTask(loop, DriftSchedule({"v_gain": gains[0], "w_gain": gains[1]}),
                            max_steps=400 if args.loop == "circle" else 800, seed=seed)

    rows += evaluate("unicycle", unicycle_factory, UNICYCLE_GAINS_QUICK if args.quick else UNICYCLE_GAINS_FULL,
                     ensemble, net, unicycle_batch, seeds, args, trajectories)

    point_mass = PointMassTask()
    maps = point_mass_regime_maps(point_mass, 128, torch.Generator().manual_seed(0))
    mass_batch = lambda g, n=256: point_mass_afm_batch(point_mass, n, g, maps)  # noqa: E731
    ensemble, net = prepare(point_mass, mass_batch, args)

    def point_mass_factory(change, seed):
        return PointMassTask(schedule=DriftSchedule(dict(change)), max_steps=300)

    rows += evaluate("point mass (MuJoCo)", point_mass_factory,
                     POINT_MASS_CHANGES_QUICK if args.quick else POINT_MASS_CHANGES_FULL,
                     ensemble, net, mass_batch, seeds[:1] if args.quick else seeds, args, trajectories)
    print_table(rows)
    save_table("robotics_afm", [{"task": r["task"], "dynamics change": str(r["condition"]), "method": r["method"],
                                 "success": r["success"], "steps to finish": r["steps"], "ms / step": r["ms"]}
                                for r in rows],
               title=f"Action Flow Matching vs MPPI under drifting dynamics ({args.loop} loop, {len(seeds)} seed(s))",
               command=reproduce_command("benchmarks.robotics_afm", argv), quick=args.quick)
    if args.plot:
        save_plot(trajectories, args.plot)
        print(f"\ntrajectory plot: {args.plot}")


if __name__ == "__main__":
    main()
