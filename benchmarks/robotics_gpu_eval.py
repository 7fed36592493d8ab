"""Evaluate in Meta-World the point-cloud policies that ``benchmarks/gpu_checks.sh`` trained on a GPU (issue 4).

The GPU machine has no simulator, so ``gpu_checks.sh`` returns its policies as tar files (``policies_fm.tar``,
``policies_mp1.tar``: one ``<task>_<method>_seed<k>/policy`` checkpoint each). This script unpacks them and runs
each policy on its task with the Meta-World benchmark's evaluation settings (episode seeds 10000 + k, at most 200
steps, an episode ends at its first success; reach-v3 with the goal in ``agent_pos`` as the policy's spec says),
and prints success per run, the mean per method, and ms per action on this CPU beside the training time per
update that the GPU reported.

    python -m benchmarks.robotics_gpu_eval OUT_DIR --episodes 50     # OUT_DIR: where gpu_checks.sh wrote
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tarfile
import tempfile
from pathlib import Path

from benchmarks.results import reproduce_command, save_table
from flowzoo.robotics.evaluate import evaluate_policy
from flowzoo.robotics.policy import load_policy

RUN = re.compile(r"(?P<task>[a-z-]+-v3)_(?P<method>fm|mp1)_seed(?P<seed>\d+)")


def unpack(out_dir: Path, into: Path) -> list[Path]:
    """The run directories inside the tar files of ``out_dir`` (unpacked into ``into``)."""
    for archive in sorted(out_dir.glob("policies_*.tar")):
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    return sorted(p for p in into.iterdir() if p.is_dir() and RUN.fullmatch(p.name))


def evaluate_runs(runs: list[Path], episodes: int, max_steps: int, num_envs: int) -> list[dict]:
    rows = []
    for run in runs:
        match = RUN.fullmatch(run.name)
        policy = load_policy(run / "policy").eval()
        seed = int(match["seed"])
        result = evaluate_policy(policy, match["task"], episodes=episodes, seed=10_000 + seed, num_envs=num_envs,
                                 max_steps=max_steps, stop_on_success=True, progress=True)
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
        rows.append({"run": run.name, "task": match["task"], "method": match["method"], "seed": seed,
                     "success": result.success_rate, "episodes": episodes,
                     "cpu_ms_per_action": result.policy_ms_per_action,
                     "gpu_train_ms_per_step": summary.get("train_ms_per_step"), "updates": summary.get("steps")})
        print(f"{run.name}: success {result.success_rate:.2f}", flush=True)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| run | updates | GPU ms / update | success | episodes | CPU ms / action |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        train = f"{r['gpu_train_ms_per_step']:.1f}" if r["gpu_train_ms_per_step"] else "-"
        lines.append(f"| {r['run']} | {r['updates']} | {train} | {r['success']:.2f} | {r['episodes']} | "
                     f"{r['cpu_ms_per_action']:.2f} |")
    for method in ("fm", "mp1"):
        values = [r["success"] for r in rows if r["method"] == method]
        if values:
            lines.append(f"| **{method} mean** ({len(values)} runs) | | | {statistics.mean(values):.2f} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="the folder gpu_checks.sh wrote (holding policies_*.tar)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--envs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        rows = evaluate_runs(unpack(args.out_dir, Path(scratch)), args.episodes, args.max_steps, args.envs)
    print()
    print(format_table(rows))
    save_table("robotics_gpu_eval", rows, title=f"Point-cloud policies trained on a GPU (gpu_checks.sh), evaluated in "
               f"Meta-World: {args.episodes} episodes, at most {args.max_steps} steps",
               command=reproduce_command("benchmarks.robotics_gpu_eval", argv), quick=False,
               notes=["machine: where the evaluation ran; the training GPU's times are the GPU ms / update column"])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
