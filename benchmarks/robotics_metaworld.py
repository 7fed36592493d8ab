"""Meta-World v3 policies side by side: 10-step FM policy vs one-step MeanFlow, MP1 and DM1 (issue 4).

For each task (several difficulty levels), seed and observation mode, scripted-expert demonstrations are collected
once (cached in ``benchmarks/.cache/robotics``), then every method trains the same network family on them with the
same budget (:func:`flowzoo.robotics.train.train_policy`). The policy is evaluated in simulation several times
during training; the table reports the last evaluation and the DP3/MP1 protocol (mean of the best 3 evaluations)
in separate columns, never mixed, plus the policy's inference time per action chunk at batch 1 on one thread
(policy only) and its ratio to the 10-step FM policy.

    python benchmarks/robotics_metaworld.py --quick     # < 10 min on 2 cores: 2 tasks, 1 seed, state + 1 cloud task
    python benchmarks/robotics_metaworld.py             # full (~80 min): 6 tasks x 3 seeds, state and clouds

Absolute success is far below the papers' (a CPU budget of ~1-2k updates on a tiny U-Net instead of 3000 epochs
on (512, 1024, 2048)); the comparison between rows at equal budget is what the table is for.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from flowzoo.core.training import TrainerConfig
from flowzoo.robotics.policy import PolicyConfig
from flowzoo.robotics.train import RobotTrainConfig, load_or_collect_demos, train_policy

CACHE = Path(__file__).resolve().parent / ".cache" / "robotics"

# Two easy, two medium, one hard, one very hard task (Seo et al.'s Meta-World difficulty split used by DP3/MP1).
FULL_TASKS = ("reach-v3", "button-press-v3", "drawer-close-v3", "door-open-v3", "push-v3", "pick-place-v3")
QUICK_TASKS = ("reach-v3", "drawer-close-v3")

# name -> PolicyConfig overrides
METHODS: dict[str, dict] = {
    "FM policy, 10 steps": dict(method="fm", sample_steps=10),
    "MeanFlow, 1 NFE, no dispersive": dict(method="meanflow"),
    "MP1 (MeanFlow + dispersive + guided target), 1 NFE": dict(method="mp1"),
    "DM1 infonce_l2, 1 NFE": dict(method="dm1", dispersive="infonce_l2"),
    "DM1 infonce_cosine, 1 NFE": dict(method="dm1", dispersive="infonce_cosine"),
    "DM1 hinge, 1 NFE": dict(method="dm1", dispersive="hinge"),
    "DM1 covariance, 1 NFE": dict(method="dm1", dispersive="covariance"),
}
QUICK_METHODS = ("FM policy, 10 steps", "MeanFlow, 1 NFE, no dispersive",
                 "MP1 (MeanFlow + dispersive + guided target), 1 NFE", "DM1 infonce_l2, 1 NFE")
CLOUD_METHODS = ("FM policy, 10 steps", "MP1 (MeanFlow + dispersive + guided target), 1 NFE")


@dataclass
class Budget:
    steps: int
    eval_every: int
    eval_episodes: int
    eval_max_steps: int
    episodes: int = 10
    batch_size: int = 64
    down_dims: tuple[int, ...] = (32, 64)
    num_points: int = 256


def demos_for(task: str, obs: str, seed: int, budget: Budget) -> Path:
    """Collect (once) and cache the expert demonstrations of one task / observation mode / seed."""
    path = CACHE / f"{task}_{obs}_{budget.episodes}ep_{budget.num_points}pts_seed{seed}"
    if not (path / "meta.json").exists():
        cfg = RobotTrainConfig(task=task, obs=obs, demos=str(path), episodes=budget.episodes,
                               num_points=budget.num_points, progress=False,
                               trainer=TrainerConfig(seed=seed, out_dir=str(path.parent)))
        load_or_collect_demos(cfg)
    return path


@torch.no_grad()
def chunk_latency_ms(policy_dir: Path, repeats: int = 30) -> float:
    """Median ms of one ``predict_action_chunk`` at batch 1 on one thread (observations from the demonstrations)."""
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
    return statistics.median(times)


def run_one(task: str, obs: str, seed: int, method: str, budget: Budget, workdir: Path) -> dict:
    demos = demos_for(task, obs, seed, budget)
    out = workdir / f"{task}_{obs}_{seed}_{abs(hash(method)) % 10**8}"
    policy_cfg = PolicyConfig(down_dims=budget.down_dims, **METHODS[method])
    eval_episodes, eval_every = budget.eval_episodes, budget.eval_every
    if obs == "pointcloud":  # every evaluation step renders a depth image (~10-40 ms): evaluate half as often
        eval_episodes, eval_every = max(2, (2 * eval_episodes) // 3), 2 * eval_every
    cfg = RobotTrainConfig(
        task=task, obs=obs, demos=str(demos), eval_episodes=eval_episodes, eval_envs=2,
        eval_max_steps=budget.eval_max_steps, eval_seed=10_000 + seed, progress=False, policy=policy_cfg,
        trainer=TrainerConfig(steps=budget.steps, batch_size=budget.batch_size, lr=1e-3, warmup_steps=100,
                              ema_decay=0.99, eval_every=eval_every, checkpoint_every=budget.steps,
                              out_dir=str(out), seed=seed, progress=False, tensorboard=False))
    summary = train_policy(cfg)
    success = summary["success"]
    return {"last": success["last"], "best3": success["best_3_mean"], "nfe": summary["nfe"],
            "ms_chunk": chunk_latency_ms(Path(summary["policy"])), "train_ms": summary["train_ms_per_step"]}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 tasks, 1 seed, 4 methods (< 10 min on 2 cores)")
    parser.add_argument("--tasks", nargs="*", help="override the task list")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 1 quick, 3 full)")
    parser.add_argument("--no-cloud", action="store_true", help="skip the point-cloud rows")
    parser.add_argument("--all-dm1", action="store_true", help="full mode: also the hinge, cosine and covariance "
                        "DM1 variants (about 2x the time)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the networks are small: 1 is fastest)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    if args.quick:
        budget = Budget(steps=1200, eval_every=400, eval_episodes=6, eval_max_steps=150)
        tasks, methods, seeds = QUICK_TASKS, QUICK_METHODS, range(args.seeds or 1)
        cloud_tasks = QUICK_TASKS[:1]
    else:
        budget = Budget(steps=1500, eval_every=500, eval_episodes=10, eval_max_steps=200)
        tasks, seeds = FULL_TASKS, range(args.seeds or 3)
        methods = tuple(METHODS) if args.all_dm1 else QUICK_METHODS
        cloud_tasks = FULL_TASKS[:2]
    tasks = tuple(args.tasks) if args.tasks else tasks
    runs = [(t, "state", s, m) for t in tasks for s in seeds for m in methods]
    if not args.no_cloud:
        runs += [(t, "pointcloud", s, m) for t in cloud_tasks if t in tasks for s in seeds for m in CLOUD_METHODS]
    started = time.perf_counter()
    results: dict[tuple[str, str], list[dict]] = {}
    per_task: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="flowzoo_mw_") as tmp:
        try:
            from tqdm import tqdm
            iterator = tqdm(runs, desc="runs", file=sys.stderr)
        except ImportError:  # pragma: no cover
            iterator = runs
        for task, obs, seed, method in iterator:
            row = run_one(task, obs, seed, method, budget, Path(tmp))
            results.setdefault((obs, method), []).append(row)
            per_task.setdefault((obs, method, task), []).append(row["last"])
    fm_ms = {obs: _mean([r["ms_chunk"] for r in results.get((obs, "FM policy, 10 steps"), [])])
             for obs in ("state", "pointcloud")}
    print(f"\nMeta-World v3, tasks {', '.join(tasks)}; seeds {len(seeds)}; {budget.episodes} demos; "
          f"{budget.steps} updates, batch {budget.batch_size}, U-Net {budget.down_dims}; "
          f"{budget.eval_episodes} episodes per evaluation every {budget.eval_every} updates (max "
          f"{budget.eval_max_steps} steps)\n")
    print("| obs | method | NFE | success, last | success, best-3 mean (DP3 protocol) | ms / chunk (batch 1) "
          "| speed-up vs FM-10 | train ms / step |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (obs, method), rows in results.items():
        ms = _mean([r["ms_chunk"] for r in rows])
        print(f"| {obs} | {method} | {rows[0]['nfe']} | {_mean([r['last'] for r in rows]):.2f} | "
              f"{_mean([r['best3'] for r in rows]):.2f} | {ms:.2f} | {fm_ms[obs] / ms:.1f}x | "
              f"{_mean([r['train_ms'] for r in rows]):.0f} |")
    print("\nLast-evaluation success per task (mean over seeds):\n")
    shown = sorted({task for _, _, task in per_task})
    print("| obs | method | " + " | ".join(shown) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in shown) + " |")
    for obs, method in results:
        cells = [f"{_mean(per_task.get((obs, method, task), [])):.2f}" for task in shown]
        print(f"| {obs} | {method} | " + " | ".join(cells) + " |")
    fm = results.get(("state", "FM policy, 10 steps"))
    mp1 = results.get(("state", "MP1 (MeanFlow + dispersive + guided target), 1 NFE"))
    plain = results.get(("state", "MeanFlow, 1 NFE, no dispersive"))
    if fm and mp1:
        fm_s, mp1_s = _mean([r["last"] for r in fm]), _mean([r["last"] for r in mp1])
        speed = _mean([r["ms_chunk"] for r in fm]) / _mean([r["ms_chunk"] for r in mp1])
        print(f"\nTarget: MP1 at 1 NFE matches FM-10's mean success ({mp1_s:.2f} vs {fm_s:.2f}: "
              f"{'PASS' if mp1_s >= fm_s else 'FAIL'}) and is >= 8x faster per action ({speed:.1f}x: "
              f"{'PASS' if speed >= 8 else 'FAIL'})")
    if plain and mp1:
        dispersive = [r for (obs, m), rows in results.items() if obs == "state" and ("MP1" in m or "DM1" in m)
                      for r in rows]
        with_d, without = _mean([r["last"] for r in dispersive]), _mean([r["last"] for r in plain])
        print(f"Target: the dispersive loss does not lower success on average ({with_d:.2f} with, "
              f"{without:.2f} without: {'PASS' if with_d >= without else 'FAIL'})")
    print(f"\nTotal {time.perf_counter() - started:.0f} s on {torch.get_num_threads()} threads.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
