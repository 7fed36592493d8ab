"""Training entrypoint of the robot policies: ``python -m flowzoo.robotics.train <method> --task ... --obs ...``.

``<method>`` is one of ``fm`` (multi-step flow-matching policy, the FlowPolicy / Diffusion-Policy baseline), ``meanflow``
(MeanFlow policy at 1 NFE, no dispersive loss), ``mp1`` (MeanFlow + MP1's dispersive loss and guided target) and ``dm1``
(MeanFlow + a DM1 dispersive variant, ``--policy.dispersive infonce_l2|infonce_cosine|hinge|covariance``). Every
field is listed by ``--help``; the policy's own options are ``--policy.*`` and the engine's ``--trainer.*``.

One run:

1. demonstrations: ``--demos DIR`` (a :class:`~flowzoo.robotics.data.DemoDataset`) or, if that is empty or missing,
   ``--episodes`` scripted-expert episodes collected into ``<out_dir>/demos`` (:func:`~flowzoo.robotics.collect.
   collect_demos`; the toy task ``toy-obstacle`` uses its own bimodal expert);
2. the policy (:class:`~flowzoo.robotics.policy.FlowPolicy`) is trained by the core :class:`~flowzoo.core.training.
   Trainer` on (observation history, action chunk) windows;
3. every ``--trainer.eval_every`` updates (and at the end) the EMA policy runs ``--eval_episodes`` simulated episodes
   (:func:`~flowzoo.robotics.evaluate.evaluate_policy`); the success rates over training are kept by a
   :class:`~flowzoo.robotics.evaluate.SuccessTracker`, so the DP3/MP1 protocol (mean of the best K evaluations) and
   the last evaluation are reported side by side, with ``success.png``;
4. the final policy is saved to ``<out_dir>/policy`` (weights, config, environment spec and normaliser), ready for
   ``flowzoo robotics evaluate --checkpoint <out_dir>/policy``; a rollout video of the final policy is optional;
   ``summary.json`` holds the success summary and the time spent training (``train_seconds``,
   ``train_ms_per_step``) and evaluating (``eval_seconds``) separately.

The method is the first argument; it sets ``--policy.method``, whose method-dependent options stay "auto" until the
policy is built (:meth:`~flowzoo.robotics.policy.PolicyConfig.resolved`), so ``--policy.*`` options apply on top of
that method's defaults (``dm1 --policy.dispersive hinge`` keeps DM1's other settings).

Example:
    python -m flowzoo.robotics.train mp1 --task reach-v3 --obs state --episodes 10 \\
        --trainer.steps 3000 --trainer.out_dir runs/robotics/reach_mp1
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from flowzoo.core.config import parse_config
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.training import Trainer, TrainerConfig
from flowzoo.core.training.distributed import is_main_process
from flowzoo.robotics.data import DemoDataset, WindowDataset
from flowzoo.robotics.policy_config import METHODS, PolicyConfig
from flowzoo.robotics.policy import FlowPolicy, policy_objective, save_policy

__all__ = ["RobotTrainConfig", "load_or_collect_demos", "train_policy", "main"]


def _default_trainer() -> TrainerConfig:
    return TrainerConfig(steps=3000, batch_size=128, lr=1e-3, warmup_steps=200, ema_decay=0.995, eval_every=1000,
                         checkpoint_every=1000, out_dir="runs/robotics", tensorboard=False)


@dataclass
class RobotTrainConfig:
    """A policy trained on scripted-expert demonstrations of one task."""

    task: str = field(default="reach-v3", metadata={"help": "Meta-World v3 task (e.g. push-v3) or toy-obstacle"})
    obs: Literal["state", "pointcloud"] = field(default="state", metadata={"help": "observation mode"})
    demos: str = field(default="", metadata={"help": "demonstration directory; empty: collect into out_dir/demos"})
    episodes: int = field(default=20, metadata={"help": "expert episodes to collect when --demos is not given"})
    action_noise: float = field(default=0.0, metadata={"help": "std of Gaussian noise on the expert's actions"})
    num_points: int = field(default=512, metadata={"help": "points per cloud (pointcloud mode)"})
    eval_episodes: int = field(default=20, metadata={"help": "episodes per evaluation (0: no simulated evaluation)"})
    eval_envs: int = field(default=4, metadata={"help": "environments run side by side during evaluation"})
    eval_seed: int = field(default=1000, metadata={"help": "seed of the evaluation episodes (same at every evaluation)"})
    eval_max_steps: int = field(default=0, metadata={"help": "episode step limit at evaluation (0: the task's)"})
    video: bool = field(default=False, metadata={"help": "write a rollout video of the final policy"})
    progress: bool = field(default=True, metadata={"help": "progress bars for collection and evaluation"})
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    trainer: TrainerConfig = field(default_factory=_default_trainer)


def load_or_collect_demos(cfg: RobotTrainConfig) -> DemoDataset:
    """The run's demonstrations: ``cfg.demos`` if it holds a dataset, else collected into ``out_dir/demos``."""
    if cfg.demos and Path(cfg.demos).exists():
        demos = DemoDataset.load(cfg.demos)
        if demos.spec.task != cfg.task or demos.spec.obs_mode != cfg.obs:
            raise ConfigError(expected(f"demonstrations of task {cfg.task!r} with obs {cfg.obs!r}",
                                       f"task {demos.spec.task!r}, obs {demos.spec.obs_mode!r} in {cfg.demos}",
                                       "pass --task/--obs matching the dataset, or another --demos"))
        return demos
    out = Path(cfg.demos) if cfg.demos else Path(cfg.trainer.out_dir) / "demos"
    if cfg.task == "toy-obstacle":
        from flowzoo.robotics.toy import generate_toy_demos

        demos = generate_toy_demos(cfg.episodes, seed=cfg.trainer.seed, action_noise=cfg.action_noise)
        if is_main_process():
            demos.save(out)
        return demos
    from flowzoo.robotics.collect import collect_demos

    return collect_demos(cfg.task, cfg.episodes, cfg.obs, out if is_main_process() else None, seed=cfg.trainer.seed,
                         action_noise=cfg.action_noise, num_points=cfg.num_points, progress=cfg.progress)


def _evaluator(cfg: RobotTrainConfig, out_dir: Path):
    from flowzoo.robotics.tracking import SuccessTracker
    from flowzoo.robotics.evaluate import evaluate_policy

    tracker = SuccessTracker()
    timing = {"eval_seconds": 0.0}

    def evaluate(model: torch.nn.Module, step: int, eval_dir: Path) -> dict[str, float]:
        started = time.perf_counter()
        model.eval()
        result = evaluate_policy(model, cfg.task, episodes=cfg.eval_episodes, seed=cfg.eval_seed,
                                 num_envs=cfg.eval_envs, max_steps=cfg.eval_max_steps or None,
                                 stop_on_success=True, progress=False)
        model.train()
        result.save(Path(eval_dir) / "evaluation.json")
        tracker.record(step, result)
        tracker.save(out_dir / "success.json")
        tracker.plot(out_dir / "success.png", title=f"{cfg.policy.method} on {cfg.task} ({cfg.obs})")
        timing["eval_seconds"] += time.perf_counter() - started
        return {"success": result.success_rate, "mean_return": result.mean_return,
                "policy_ms_per_action": result.policy_ms_per_action}

    return evaluate, tracker, timing


def train_policy(cfg: RobotTrainConfig) -> dict[str, Any]:
    """Collect or load demonstrations, train, evaluate, save; returns the summary written to ``summary.json``."""
    if cfg.policy.method not in METHODS:
        raise ConfigError(expected(f"a method in {list(METHODS)}", repr(cfg.policy.method), "e.g. mp1"))
    out_dir = Path(cfg.trainer.out_dir)
    torch.manual_seed(cfg.trainer.seed)
    demos = load_or_collect_demos(cfg)
    policy = FlowPolicy(demos.spec, demos.normalizer, cfg.policy)
    windows = WindowDataset(demos, policy.config.n_obs_steps, policy.config.horizon)
    evaluate, tracker, timing = (None, None, {"eval_seconds": 0.0}) if cfg.eval_episodes <= 0 \
        else _evaluator(cfg, out_dir)
    trainer = Trainer(policy, policy_objective, windows.sampler(cfg.trainer.batch_size), cfg.trainer,
                      evaluate=evaluate, run_config=cfg)
    result = trainer.fit()
    final = trainer.ema.module if trainer.ema is not None else policy
    summary: dict[str, Any] = {"task": cfg.task, "obs": cfg.obs, "method": cfg.policy.method, "nfe": final.nfe,
                               "episodes": demos.episodes, "windows": len(windows), "steps": result.step,
                               "seconds": result.seconds, "train_seconds": result.seconds - timing["eval_seconds"],
                               "eval_seconds": timing["eval_seconds"],
                               "train_ms_per_step": 1000 * (result.seconds - timing["eval_seconds"]) /
                               max(result.step, 1), "final_metrics": result.metrics}
    if not is_main_process():
        return summary
    summary["policy"] = str(save_policy(final, out_dir / "policy"))
    if tracker is not None and tracker.summary():
        summary["success"] = tracker.summary()
    if cfg.video and cfg.eval_episodes > 0:
        from flowzoo.robotics.evaluate import evaluate_policy

        shown = evaluate_policy(final.eval(), cfg.task, episodes=1, seed=cfg.eval_seed, num_envs=1,
                                video=out_dir / "rollout.mp4", progress=False)
        summary["video"] = shown.video
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    method = "fm"
    if args and not args[0].startswith("-"):
        method, args = args[0], args[1:]
    if method not in METHODS:
        raise ConfigError(expected(f"a method in {list(METHODS)} as the first argument", repr(method),
                                   "e.g. python -m flowzoo.robotics.train mp1 --task reach-v3"))
    if any(a == "--policy.method" or a.startswith("--policy.method=") for a in args):
        raise ConfigError(expected("the method as the first argument", "--policy.method",
                                   "write python -m flowzoo.robotics.train <fm|meanflow|mp1|dm1> ..."))
    # The policy's method-dependent options stay "auto" until the policy is built, so the method can be set like
    # any other option and every --policy.* override applies on top of that method's defaults.
    cfg = parse_config(RobotTrainConfig, [*args, "--policy.method", method],
                       prog=f"python -m flowzoo.robotics.train {method}")
    cfg = replace(cfg, trainer=replace(cfg.trainer, progress=cfg.trainer.progress and cfg.progress))
    summary = train_policy(cfg)
    if is_main_process():
        print(json.dumps(summary, indent=2, default=str))
        print(f"policy in {summary.get('policy')}; evaluate it with: flowzoo robotics evaluate --checkpoint "
              f"{summary.get('policy')} --episodes 20")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
