"""Meta-World v3 policies side by side: 10-step FM policy vs one-step MeanFlow, MeanFlow + dispersive, MP1 and DM1
(issue 4).

For each task (several difficulty levels), seed and observation mode, scripted-expert demonstrations are collected
once (cached in ``benchmarks/.cache/robotics``), then every method trains the same network family on them with the
same budget (:func:`flowzoo.robotics.train.train_policy`). The policy is evaluated in simulation several times
during training; the table reports the last evaluation and the DP3/MP1 protocol (mean of the best 3 evaluations)
in separate columns, never mixed, each with the number of episodes behind it and, for the last evaluation, the
binomial standard error; plus the policy's inference time per action chunk at batch 1 on one thread (policy only)
and its ratio to the 10-step FM policy.

The rows separate MP1's two changes to a plain MeanFlow policy, so that each has its own comparison at otherwise
equal settings: **MeanFlow** (no dispersive loss, no guidance), **MeanFlow + dispersive** (MP1's scale-invariant
dispersive term on the down-block features, nothing else changed), **MP1** (that + MP1's guided target, ω = 2) and
**DM1** (MeanFlow + DM1's InfoNCE-L2, plain MSE), beside **DM1 without its dispersive term** (MeanFlow trained with
DM1's plain MSE instead of the adaptive weight). Every dispersive term has weight 0.1 on the down-block features
(:data:`SMALL_NET_DISPERSIVE`, chosen by ``benchmarks/robotics_dispersive.py``; the papers' 0.5, and DM1's
embeddings, were tuned for a (512, 1024, 2048) U-Net and 3000 epochs). "The dispersive loss does not lower
success" is judged on MeanFlow + dispersive vs MeanFlow, and over every dispersive row against the same objective
without the term (:data:`WITHOUT_DISPERSIVE`; MP1 has no such row, its guided target being a second change).
Runs are seeded per (task, seed, method), so ``--methods`` trains a subset with the numbers the full run gives.

Point clouds train a wider U-Net than state, (128, 256) (:data:`CLOUD_DOWN_DIMS`): the point encoder runs once per
chunk whatever the sampler, and at (32, 64) it costs a third of a U-Net pass, which caps a one-step policy's
speed-up at 7.8-7.9x, under issue 4's 8x. The goal of reach / push / pick-place is a marker site that no depth
camera sees, so with the proprioceptive ``agent_pos`` alone those tasks are solved only by chance. Their
point-cloud rows use ``goal_visible`` observations: ``agent_pos`` = hand xyz, gripper, goal xyz (7 values), as
``make_env(..., goal_visible=True)`` produces (evaluation rebuilds that environment from the policy's spec).
The demonstrations are collected that way (``collect_demos(..., goal_visible=True)``) and cached.

    python -m benchmarks.robotics_metaworld --quick     # 2 tasks, 1 seed, 4 state rows (FM-10, MeanFlow,
                                                        # MeanFlow + dispersive, MP1), 2 point-cloud rows on
                                                        # reach: 973 CPU-s, 532 s wall on 2 cores of a slow
                                                        # day's host with the (128, 256) cloud rows (887 CPU-s,
                                                        # 475 s with (32, 64); with 2 DM1 rows too it took
                                                        # 651 s, past the budget); a smoke run: 40
                                                        # episodes a row, s.e. ~0.07, so its verdicts swing;
                                                        # the full run is the measurement
    python -m benchmarks.robotics_metaworld             # full: 6 tasks x 3 seeds, state + 2 cloud tasks:
                                                        # 5288 CPU-s measured for 102 runs with (32, 64) cloud
                                                        # rows, + 18 runs for the DM1 counterpart row; the
                                                        # (128, 256) cloud rows alone take 2769 CPU-s for 12
                                                        # runs (``--no-state``, 1520 s wall), ~45 more per run
                                                        # than at (32, 64) (as measured in --quick): ~55 min in
                                                        # all on 2 idle cores, + ~2 min to collect the
                                                        # demonstrations once
    python -m benchmarks.robotics_metaworld --all-dm1   # + DM1's InfoNCE-cosine, hinge and covariance rows:
                                                        # 3881 CPU-s more for their 54 runs (measured alone
                                                        # with --methods ... --no-cloud, on a slower host),
                                                        # ~85 min in all on 2 cores

Runs are trained two at a time (``--jobs``, one thread each: the target machine has 2 cores); the latency column is
measured afterwards, one policy at a time. Each run prints nothing; the summary line gives the CPU time per run
(a single-threaded run's CPU time is its wall time on an idle core), which is how the times above were obtained on
a machine shared with other jobs.

Absolute success is far below the papers' (a CPU budget of ~1-2k updates on a tiny U-Net instead of 3000 epochs
on (512, 1024, 2048)); the comparison between rows at equal budget is what the table is for.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.results import reproduce_command, save_markdown_tables, tee_stdout
from flowzoo.core.training import TrainerConfig
from flowzoo.robotics.collect import collect_demos
from flowzoo.robotics.policy_config import PolicyConfig
from flowzoo.robotics.train import RobotTrainConfig, load_or_collect_demos, train_policy

CACHE = Path(__file__).resolve().parent / ".cache" / "robotics"

# Two easy, two medium, one hard, one very hard task (Seo et al.'s Meta-World difficulty split used by DP3/MP1).
FULL_TASKS = ("reach-v3", "button-press-v3", "drawer-close-v3", "door-open-v3", "push-v3", "pick-place-v3")
QUICK_TASKS = ("reach-v3", "drawer-close-v3")
HIDDEN_GOAL_TASKS = ("reach-v3", "push-v3", "pick-place-v3")  # goal is a marker site, invisible to the camera

FM = "FM policy, 10 steps"
MEANFLOW = "MeanFlow, 1 NFE"
MEANFLOW_DISPERSIVE = "MeanFlow + dispersive (MP1's term), 1 NFE"
MP1 = "MP1 (MeanFlow + dispersive + guided target), 1 NFE"
DM1 = "DM1 infonce_l2, 1 NFE"
DM1_PLAIN = "DM1 without its dispersive term, 1 NFE"

SMALL_NET_DISPERSIVE = dict(dispersive_weight=0.1, dispersive_target="down")
"""Every dispersive row's weight and features on this small U-Net (``benchmarks/robotics_dispersive.py``):
the papers' 0.5 (MP1) costs reach most of its success, and DM1's default (0.5 on the observation and time
embeddings) zeroes button-press and drawer-close; weight 0.1 on the down-block features, as MP1, costs nothing."""

# name -> PolicyConfig overrides
METHODS: dict[str, dict] = {
    FM: dict(method="fm", sample_steps=10),
    MEANFLOW: dict(method="meanflow"),
    MEANFLOW_DISPERSIVE: dict(method="meanflow", dispersive="mp1", **SMALL_NET_DISPERSIVE),
    MP1: dict(method="mp1", **SMALL_NET_DISPERSIVE),
    DM1_PLAIN: dict(method="dm1", dispersive=None),  # MeanFlow with plain MSE (no adaptive weight), as DM1 trains
    DM1: dict(method="dm1", dispersive="infonce_l2", **SMALL_NET_DISPERSIVE),
    "DM1 infonce_cosine, 1 NFE": dict(method="dm1", dispersive="infonce_cosine", **SMALL_NET_DISPERSIVE),
    "DM1 hinge, 1 NFE": dict(method="dm1", dispersive="hinge", **SMALL_NET_DISPERSIVE),
    "DM1 covariance, 1 NFE": dict(method="dm1", dispersive="covariance", **SMALL_NET_DISPERSIVE),
}
STATE_METHODS = (FM, MEANFLOW, MEANFLOW_DISPERSIVE, MP1, DM1_PLAIN, DM1)
# --quick keeps the rows its targets read (MP1 vs FM-10, dispersive vs none); DM1 is in the full run only.
QUICK_STATE_METHODS = (FM, MEANFLOW, MEANFLOW_DISPERSIVE, MP1)
CLOUD_METHODS = (FM, MP1)
DISPERSIVE_ROWS = tuple(name for name in METHODS if name not in (FM, MEANFLOW, DM1_PLAIN))
# Each dispersive row against the same objective without the term (MP1 has none: it also changes the target).
WITHOUT_DISPERSIVE = {MEANFLOW_DISPERSIVE: MEANFLOW, **{name: DM1_PLAIN for name, cfg in METHODS.items()
                                                       if cfg["method"] == "dm1" and cfg.get("dispersive")}}


@dataclass
class Budget:
    """Training and evaluation budget of one run (state rows; the cloud rows scale it, see :meth:`for_obs`)."""

    steps: int
    eval_every: int
    eval_episodes: int
    eval_max_steps: int
    episodes: int = 10
    batch_size: int = 64
    down_dims: tuple[int, ...] = (32, 64)
    num_points: int = 256
    cloud_steps: int = 0          # 0: ``steps``
    cloud_eval_episodes: int = 0  # 0: ``eval_episodes``
    cloud_batch_size: int = 0     # 0: ``batch_size``
    cloud_down_dims: tuple[int, ...] = ()  # empty: ``down_dims``

    def for_obs(self, obs: str) -> "Budget":
        if obs != "pointcloud":
            return self
        return dataclasses.replace(self, steps=self.cloud_steps or self.steps,
                                   down_dims=self.cloud_down_dims or self.down_dims,
                                   eval_every=(self.cloud_steps or self.steps) * self.eval_every // self.steps,
                                   eval_episodes=self.cloud_eval_episodes or self.eval_episodes,
                                   batch_size=self.cloud_batch_size or self.batch_size)


# The point-cloud rows train a wider U-Net than the state rows. At (32, 64) the DP3 encoder costs a third of a
# U-Net pass at batch 1, which caps any one-step sampler at (E + 10U) / (E + U) = 7.8-7.9x over FM-10 (issue 4 asks
# 8x); at (128, 256) the cap is 9.4x (``benchmarks/robotics_latency.py``, size "benchmark-cloud"). Training
# barely notices: on 32 windows of 2 x 128 points the encoder dominates an update, 154 ms against 90 ms at
# (32, 64) on one thread, while a state update at (128, 256) would cost several times its (32, 64) one.
CLOUD_DOWN_DIMS = (128, 256)
QUICK = Budget(steps=1200, eval_every=400, eval_episodes=20, eval_max_steps=150, num_points=128,
               cloud_steps=1200, cloud_eval_episodes=10, cloud_batch_size=32, cloud_down_dims=CLOUD_DOWN_DIMS)
# Full: 1200 updates like quick mode (1500 would put the estimate, ~9-11k CPU-s over 2 cores, at the 90 min limit).
FULL = Budget(steps=1200, eval_every=400, eval_episodes=10, eval_max_steps=200, num_points=128,
              cloud_steps=1200, cloud_eval_episodes=10, cloud_batch_size=32, cloud_down_dims=CLOUD_DOWN_DIMS)


def demos_for(task: str, obs: str, seed: int, budget: Budget) -> Path:
    """Collect (once) and cache the expert demonstrations of one task / observation mode / seed."""
    points = f"_{budget.num_points}pts" if obs == "pointcloud" else ""
    path = CACHE / f"{task}_{obs}_{budget.episodes}ep{points}_seed{seed}"
    if not (path / "meta.json").exists():
        cfg = RobotTrainConfig(task=task, obs=obs, demos=str(path), collect=True, episodes=budget.episodes,
                               num_points=budget.num_points, progress=False,
                               trainer=TrainerConfig(seed=seed, out_dir=str(path.parent)))
        load_or_collect_demos(cfg)
    return path


def goal_visible_demos_for(task: str, seed: int, budget: Budget) -> Path:
    """Point-cloud demonstrations whose ``agent_pos`` also holds the goal (``collect_demos(goal_visible=True)``),
    collected once and cached like :func:`demos_for`."""
    path = CACHE / f"{task}_pointcloud-goalvisible_{budget.episodes}ep_{budget.num_points}pts_seed{seed}"
    if not (path / "meta.json").exists():
        collect_demos(task, budget.episodes, "pointcloud", path, seed=seed, num_points=budget.num_points,
                      goal_visible=True, progress=False)
    return path


@torch.no_grad()
def chunk_latency_ms(policy_dir: Path, repeats: int = 50) -> float:
    """Fastest of ``repeats`` timings of one ``predict_action_chunk`` at batch 1 on one thread (zero observations).

    The minimum, as ``timeit`` recommends: on a shared machine other processes only ever add time, so the fastest
    repeat is the closest to the policy's own cost; the median would measure the load as well.
    """
    from flowzoo.robotics.policy import load_policy

    policy = load_policy(policy_dir).eval()
    shapes = policy.spec.obs_shapes
    obs = {key: torch.zeros(1, policy.config.n_obs_steps, *shape) for key, shape in shapes.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(3):
            policy.predict_action_chunk(obs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            policy.predict_action_chunk(obs)
            times.append(1000 * (time.perf_counter() - start))
    finally:
        torch.set_num_threads(threads)
    return min(times)


def run_one(task: str, obs: str, seed: int, method: str, budget: Budget, workdir: Path) -> dict:
    """Train and evaluate one (task, obs, seed, method); returns success, latency and the time spent per phase."""
    budget = budget.for_obs(obs)
    goal_visible = obs == "pointcloud" and task in HIDDEN_GOAL_TASKS
    demos = goal_visible_demos_for(task, seed, budget) if goal_visible else demos_for(task, obs, seed, budget)
    out = workdir / f"{task}_{obs}_{seed}_{abs(hash(method)) % 10**8}"
    cfg = RobotTrainConfig(
        task=task, obs=obs, demos=str(demos), eval_episodes=budget.eval_episodes, eval_envs=2,
        eval_max_steps=budget.eval_max_steps, eval_seed=10_000 + seed, progress=False,
        policy=PolicyConfig(down_dims=budget.down_dims, **METHODS[method]),
        trainer=TrainerConfig(steps=budget.steps, batch_size=budget.batch_size, lr=1e-3, warmup_steps=100,
                              ema_decay=0.99, eval_every=budget.eval_every, checkpoint_every=budget.steps,
                              out_dir=str(out), seed=seed, progress=False, tensorboard=False))
    cpu = time.process_time()
    summary = train_policy(cfg)
    cpu = time.process_time() - cpu
    success = summary["success"]
    return {"last": success["last"], "best3": success["best_3_mean"], "evaluations": success["evaluations"],
            "episodes": budget.eval_episodes, "nfe": summary["nfe"], "goal_visible": goal_visible,
            "policy": summary["policy"], "train_ms": summary["train_ms_per_step"], "train_s": summary["train_seconds"],
            "eval_s": summary["eval_seconds"], "cpu_s": cpu}


def _worker_init() -> None:
    torch.set_num_threads(1)


def prepare_demos(runs: list[tuple[str, str, int, str]], budget: Budget) -> float:
    """Collect every run's demonstrations up front (in this process, so parallel workers never race on the cache);
    returns the seconds spent (0 when everything is cached)."""
    started = time.perf_counter()
    for task, obs, seed in dict.fromkeys((t, o, s) for t, o, s, _ in runs):
        cloud = budget.for_obs(obs)
        if obs == "pointcloud" and task in HIDDEN_GOAL_TASKS:
            goal_visible_demos_for(task, seed, cloud)
        else:
            demos_for(task, obs, seed, cloud)
    return time.perf_counter() - started


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _stderr(rate: float, episodes: int) -> float:
    """Binomial standard error of a success rate over ``episodes`` independent episodes."""
    return math.sqrt(max(rate * (1 - rate), 0.0) / episodes) if episodes else float("nan")


def _runs(args: argparse.Namespace) -> tuple[Budget, list[tuple[str, str, int, str]], range, tuple[str, ...]]:
    if args.quick:
        budget, tasks, seeds, cloud_tasks = QUICK, QUICK_TASKS, range(args.seeds or 1), QUICK_TASKS[:1]
        methods = QUICK_STATE_METHODS
    else:
        budget, tasks, seeds, cloud_tasks = FULL, FULL_TASKS, range(args.seeds or 3), ("reach-v3", "button-press-v3")
        methods = tuple(METHODS) if args.all_dm1 else STATE_METHODS
    if args.steps:  # same number of evaluations, over the new budget
        budget = dataclasses.replace(budget, steps=args.steps, cloud_steps=args.steps,
                                     eval_every=max(1, args.steps * budget.eval_every // budget.steps))
    if args.eval_episodes:
        budget = dataclasses.replace(budget, eval_episodes=args.eval_episodes, cloud_eval_episodes=args.eval_episodes)
    if args.cloud_down_dims:
        budget = dataclasses.replace(budget, cloud_down_dims=tuple(args.cloud_down_dims))
    tasks = tuple(args.tasks) if args.tasks else tasks
    if args.methods:
        methods = tuple(args.methods)
    runs = [] if args.no_state else [(t, "state", s, m) for t in tasks for s in seeds for m in methods]
    if not args.no_cloud:
        runs += [(t, "pointcloud", s, m) for t in cloud_tasks if t in tasks for s in seeds for m in CLOUD_METHODS
                 if not args.methods or m in args.methods]
    return budget, runs, seeds, tasks


def _print_tables(results: dict[tuple[str, str], list[dict]], budget: Budget, tasks: tuple[str, ...],
                  seeds: range) -> None:
    fm_ms = {obs: _mean([r["ms_chunk"] for r in results.get((obs, FM), [])]) for obs in ("state", "pointcloud")}
    cloud = budget.for_obs("pointcloud")
    print(f"\nMeta-World v3, tasks {', '.join(tasks)}; seeds {len(seeds)}; {budget.episodes} demos; U-Net "
          f"{budget.down_dims}. State: {budget.steps} updates, batch {budget.batch_size}, {budget.eval_episodes} "
          f"episodes per evaluation every {budget.eval_every} updates. Point cloud ({budget.num_points} points; "
          f"reach/push/pick-place with the goal in agent_pos): {cloud.steps} updates, batch {cloud.batch_size}, "
          f"{cloud.eval_episodes} episodes every {cloud.eval_every} updates, U-Net {cloud.down_dims}. Episodes end "
          f"at success or after {budget.eval_max_steps} steps.\n")
    print("| obs | method | NFE | success, last (± s.e.) | episodes (last) | success, best-3 mean (DP3 protocol) "
          "| episodes (best-3) | ms / chunk (batch 1, best of 50) | speed-up vs FM-10 | train ms / step |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (obs, method), rows in results.items():
        ms, last = _mean([r["ms_chunk"] for r in rows]), _mean([r["last"] for r in rows])
        n_last = sum(r["episodes"] for r in rows)
        n_best = sum(r["episodes"] * min(3, r["evaluations"]) for r in rows)
        print(f"| {obs} | {method} | {rows[0]['nfe']} | {last:.2f} ± {_stderr(last, n_last):.2f} | {n_last} | "
              f"{_mean([r['best3'] for r in rows]):.2f} | {n_best} | {ms:.2f} | {fm_ms[obs] / ms:.1f}x | "
              f"{_mean([r['train_ms'] for r in rows]):.0f} |")


def _print_per_task(per_task: dict[tuple[str, str, str], list[float]], results: dict) -> None:
    print("\nLast-evaluation success per task (mean over seeds):\n")
    shown = sorted({task for _, _, task in per_task})
    print("| obs | method | " + " | ".join(shown) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in shown) + " |")
    for obs, method in results:
        cells = [f"{_mean(per_task[(obs, method, task)]):.2f}" if (obs, method, task) in per_task else "–"
                 for task in shown]
        print(f"| {obs} | {method} | " + " | ".join(cells) + " |")


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _print_targets(results: dict[tuple[str, str], list[dict]]) -> None:
    for obs in ("state", "pointcloud"):
        fm, mp1 = results.get((obs, FM)), results.get((obs, MP1))
        if fm and mp1:
            fm_s, mp1_s = _mean([r["last"] for r in fm]), _mean([r["last"] for r in mp1])
            speed = _mean([r["ms_chunk"] for r in fm]) / _mean([r["ms_chunk"] for r in mp1])
            n = sum(r["episodes"] for r in mp1)
            print(f"\nTarget ({obs}): MP1 at 1 NFE matches FM-10's mean success ({mp1_s:.2f} vs {fm_s:.2f}, "
                  f"{n} episodes each: {_verdict(mp1_s >= fm_s)}) and is >= 8x faster per action ({speed:.1f}x: "
                  f"{_verdict(speed >= 8)})")
    plain, dispersive = results.get(("state", MEANFLOW)), results.get(("state", MEANFLOW_DISPERSIVE))
    if plain and dispersive:
        without, with_d = _mean([r["last"] for r in plain]), _mean([r["last"] for r in dispersive])
        n = sum(r["episodes"] for r in plain)
        se = math.hypot(_stderr(without, n), _stderr(with_d, n))
        print(f"Target (state): the dispersive loss does not lower success, MeanFlow + dispersive vs MeanFlow at "
              f"equal settings: {with_d:.2f} vs {without:.2f} (difference {with_d - without:+.2f} ± {se:.2f} s.e., "
              f"{n} episodes each): {_verdict(with_d >= without)}")
        pairs = [(m, WITHOUT_DISPERSIVE[m]) for (obs, m) in results if obs == "state" and m in WITHOUT_DISPERSIVE
                 and ("state", WITHOUT_DISPERSIVE[m]) in results]
        if pairs:
            gains = [_mean([r["last"] for r in results["state", m]]) - _mean([r["last"] for r in results["state", b]])
                     for m, b in pairs]
            rows = f"{len(pairs)} row{'s' if len(pairs) != 1 else ''}"
            if any(b == DM1_PLAIN for _, b in pairs):
                rows += f"; DM1 trains plain MSE, so its counterpart is '{DM1_PLAIN}'"
            print(f"  every dispersive row against its objective without the term ({rows}): mean difference "
                  f"{_mean(gains):+.3f} "
                  f"({', '.join(f'{g:+.2f}' for g in gains)}): {_verdict(_mean(gains) > -1e-9)}")  # ties: not lower
        mp1 = results.get(("state", MP1))
        if mp1:
            print(f"  MP1's guided target on top of the dispersive term: {_mean([r['last'] for r in mp1]):.2f} vs "
                  f"{with_d:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 tasks, 1 seed, 4 state + 2 cloud rows (~5-8 min)")
    parser.add_argument("--tasks", nargs="*", help="override the task list")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 1 quick, 3 full)")
    parser.add_argument("--no-cloud", action="store_true", help="skip the point-cloud rows")
    parser.add_argument("--no-state", action="store_true", help="skip the state rows")
    parser.add_argument("--cloud-down-dims", type=int, nargs="+", default=None, metavar="C",
                        help=f"U-Net channels of the point-cloud rows (default {CLOUD_DOWN_DIMS}; "
                        f"the state rows keep {FULL.down_dims})")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), metavar="NAME",
                        help="train only these rows (runs are seeded, so a row's numbers do not depend on the "
                        f"others): {list(METHODS)}")
    parser.add_argument("--all-dm1", action="store_true", help="full mode: also the hinge, cosine and covariance "
                        "DM1 variants")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="runs trained side by side, one thread each (default: 2, the cores of the target machine)")
    parser.add_argument("--steps", type=int, default=0, help="override the number of updates (0: the mode's)")
    parser.add_argument("--eval-episodes", type=int, default=0, help="override the episodes per evaluation")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the networks are small: one thread per run is fastest
    budget, runs, seeds, tasks = _runs(args)
    started = time.perf_counter()
    collect_s = prepare_demos(runs, budget)
    results: dict[tuple[str, str], list[dict]] = {}
    per_task: dict[tuple[str, str, str], list[float]] = {}
    phases: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="flowzoo_mw_") as tmp:
        from tqdm import tqdm

        # Each run is single-threaded: one worker per core. Results are gathered in the order of ``runs``.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max(1, args.jobs), mp_context=context, initializer=_worker_init) as pool:
            # The slow point-cloud runs go first so that they do not finish alone at the end.
            order = sorted(range(len(runs)), key=lambda i: runs[i][1] != "pointcloud")
            futures = [None] * len(runs)
            for i in order:
                futures[i] = pool.submit(run_one, *runs[i], budget, Path(tmp))
            for _ in tqdm(as_completed(futures), total=len(futures), desc="runs", file=sys.stderr,
                          disable=args.no_progress):
                pass
        trained = time.perf_counter()
        # Latency once every worker has stopped, one policy after the other, so that no run competes for the CPU.
        for (task, obs, seed, method), future in zip(runs, futures):
            row = future.result()
            row["ms_chunk"] = chunk_latency_ms(Path(row["policy"]))
            results.setdefault((obs, method), []).append(row)
            per_task.setdefault((obs, method, task), []).append(row["last"])
            for key in ("train_s", "eval_s", "cpu_s"):
                phases.setdefault(f"{obs} {key}", []).append(row[key])
        latency_s = time.perf_counter() - trained
    with tee_stdout() as printed:
        _print_tables(results, budget, tasks, seeds)
        _print_per_task(per_task, results)
        _print_targets(results)
    save_markdown_tables(
        "robotics_metaworld", printed.getvalue(), title="Meta-World v3: one-step policies against FM-10",
        suffixes=["per_task"],
        titles=["Meta-World v3: success and latency per (observation, method)",
                "Meta-World v3: last-evaluation success per task (mean over seeds)"],
        notes=[line.strip() for line in printed.getvalue().splitlines() if line.startswith(("Meta-World", "Target"))],
        command=reproduce_command("benchmarks.robotics_metaworld", argv), quick=args.quick)
    wall = time.perf_counter() - started
    print(f"\nTotal {wall:.0f} s wall with {args.jobs} worker(s) of one thread each (demonstrations {collect_s:.0f} s, "
          f"latency {latency_s:.0f} s); time per run (mean): " + "; ".join(
        f"{obs}: train {_mean(phases[f'{obs} train_s']):.0f} s + evaluation {_mean(phases[f'{obs} eval_s']):.0f} s "
        f"wall, {_mean(phases[f'{obs} cpu_s']):.0f} s CPU ({len(phases[f'{obs} cpu_s'])} runs)"
        for obs in ("state", "pointcloud") if f"{obs} cpu_s" in phases) +
        f"; CPU total of the runs {sum(sum(v) for k, v in phases.items() if k.endswith('cpu_s')):.0f} s (each run "
        "is single-threaded: its CPU time is its wall time on an idle core).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
