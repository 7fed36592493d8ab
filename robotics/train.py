"""Training entrypoint of the robot policies: ``python -m flowzoo.robotics.train <method> --task TASK --obs OBS``.

The method comes first: ``fm`` (multi-step flow-matching policy, the FlowPolicy / Diffusion-Policy baseline),
``meanflow`` (MeanFlow policy at 1 NFE, no dispersive loss), ``mp1`` (MeanFlow + MP1's dispersive loss and guided
target) or ``dm1`` (MeanFlow + a DM1 dispersive variant, ``--policy.dispersive
infonce_l2|infonce_cosine|hinge|covariance``). ``python -m flowzoo.robotics.train <method> --help`` lists every
option with that method's defaults; the policy's own options are ``--policy.*`` and the engine's ``--trainer.*``.

One run:

1. demonstrations: ``--demos DIR`` (a :class:`~flowzoo.robotics.data.DemoDataset` written by ``flowzoo robotics
   collect``), or, with ``--collect``, ``--episodes`` scripted-expert episodes collected into ``--demos`` (default
   ``<out_dir>/demos``) by :func:`~flowzoo.robotics.collect.collect_demos` (the toy task ``toy-obstacle`` uses its
   own bimodal expert). A ``--demos`` path that does not exist is an error unless ``--collect`` is given, and
   collection always says what it collects and where;
2. the policy (:class:`~flowzoo.robotics.policy.FlowPolicy`) is trained by the core :class:`~flowzoo.core.training.
   Trainer` on (observation history, action chunk) windows;
3. every ``--trainer.eval_every`` updates (and at the end) the EMA policy runs ``--eval_episodes`` simulated episodes
   (:func:`~flowzoo.robotics.evaluate.evaluate_policy`); the success rates over training are kept by a
   :class:`~flowzoo.robotics.tracking.SuccessTracker`, so the DP3/MP1 protocol (mean of the best K evaluations) and
   the last evaluation are reported side by side, with ``success.png``;
4. the final policy is saved to ``<out_dir>/policy`` (weights, config, environment spec and normaliser), ready for
   ``flowzoo robotics evaluate --checkpoint <out_dir>/policy``; a rollout video of the final policy is optional;
   ``summary.json`` holds the success summary, the weights' SHA-256 and the time spent training (``train_seconds``,
   ``train_ms_per_step``) and evaluating (``eval_seconds``) separately.

The run's ``config.yaml`` records the policy options that ran, the method's defaults filled in
(:meth:`~flowzoo.robotics.policy_config.PolicyConfig.resolved`). A fresh run in a folder that held an earlier one
(``--trainer.overwrite true``) first removes what described the earlier weights (its policy, evaluation records,
``summary.json``, ``success.*``, rollout video) and nothing else; demonstrations stay.

Example::

    flowzoo robotics collect --task reach-v3 --episodes 10 --out demos/reach
    python -m flowzoo.robotics.train mp1 --task reach-v3 --obs state --demos demos/reach \\
        --trainer.steps 3000 --trainer.out_dir runs/robotics/reach_mp1
"""

from __future__ import annotations

import copy
import functools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from flowzoo.core.config import config_from_dict, config_to_dict, option_help, parse_config
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.training import Trainer, TrainerConfig, refuse_fresh_run_over_checkpoints
from flowzoo.core.validation import check_int, check_nonnegative
from flowzoo.core.training.distributed import is_main_process
from flowzoo.robotics.data import DemoDataset, DemoFileError, WindowDataset, check_output_path
from flowzoo.robotics.policy_config import METHODS, PolicyConfig
from flowzoo.robotics.policy import FlowPolicy, policy_objective, save_policy

__all__ = ["RobotTrainConfig", "load_or_collect_demos", "train_policy", "method_config_class", "main"]

PROG = "python -m flowzoo.robotics.train"
METHOD_SUMMARY = {
    "fm": "multi-step flow-matching policy (FlowPolicy / Diffusion-Policy baseline), 10 Euler steps",
    "meanflow": "MeanFlow policy at 1 NFE, no dispersive loss",
    "mp1": "MP1 (arXiv 2507.10543): MeanFlow + dispersive loss + MP1's guided target, 1 NFE",
    "dm1": "MeanFlow + a DM1 dispersive variant (--policy.dispersive infonce_l2|infonce_cosine|hinge|covariance)",
}
# What a fresh run replaces in out_dir besides the trainer's own files (checkpoints, eval/, metrics), which the
# Trainer removes itself.
_RUN_OUTPUTS = ("summary.json", "success.json", "success.png", "rollout.mp4", "rollout.gif")


def _default_trainer() -> TrainerConfig:
    return TrainerConfig(steps=3000, batch_size=128, lr=1e-3, warmup_steps=200, ema_decay=0.995, eval_every=1000,
                         checkpoint_every=1000, out_dir="runs/robotics", tensorboard=False)


@dataclass
class RobotTrainConfig:
    """A policy trained on scripted-expert demonstrations of one task."""

    task: str = field(default="reach-v3", metadata={"help": "Meta-World v3 task (e.g. push-v3) or toy-obstacle"})
    obs: Literal["state", "pointcloud"] = field(default="state", metadata={"help": "observation mode"})
    demos: str = field(default="", metadata={"help": "demonstration directory (flowzoo robotics collect --out); "
                                                     "with --collect, where to collect (empty: out_dir/demos)"})
    collect: bool = field(default=False, metadata={"help": "collect --episodes scripted-expert episodes into --demos "
                                                           "before training (it must be new or empty)"})
    episodes: int = field(default=20, metadata={"help": "expert episodes to collect with --collect"})
    action_noise: float = field(default=0.0, metadata={"help": "std of Gaussian noise on the expert's actions"})
    num_points: int = field(default=512, metadata={"help": "points per cloud (pointcloud mode, --collect)"})
    eval_episodes: int = field(default=20, metadata={"help": "episodes per evaluation (0: no simulated evaluation)"})
    eval_envs: int = field(default=4, metadata={"help": "environments run side by side during evaluation"})
    eval_seed: int = field(default=1000, metadata={"help": "seed of the evaluation episodes (same at every evaluation)"})
    eval_max_steps: int = field(default=0, metadata={"help": "episode step limit at evaluation (0: the task's)"})
    video: bool = field(default=False, metadata={"help": "write a rollout video of the final policy (rollout.mp4)"})
    progress: bool = field(default=True, metadata={"help": "progress bars for collection and evaluation"})
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    trainer: TrainerConfig = field(default_factory=_default_trainer)

    def __post_init__(self) -> None:
        # Counts are checked here, before anything is collected or trained (parse_config checks only the types).
        for name, low in (("episodes", 1), ("num_points", 1), ("eval_episodes", 0), ("eval_envs", 1),
                          ("eval_max_steps", 0)):
            check_int(getattr(self, name), f"--{name}", low=low)
        check_nonnegative(self.action_noise, "--action_noise", fix="pass e.g. --action_noise 0.1 (0: none)")


def _say(message: str) -> None:
    if is_main_process():
        print(f"flowzoo robotics train: {message}", file=sys.stderr, flush=True)


def _is_dataset(path: Path) -> bool:
    return (path / "meta.json").is_file() and (path / "data.npz").is_file()


def load_or_collect_demos(cfg: RobotTrainConfig) -> DemoDataset:
    """The run's demonstrations: loaded from ``cfg.demos``, or collected there first when ``cfg.collect``.

    Raises:
        ConfigError: neither ``--demos`` nor ``--collect``; ``--collect`` into an existing dataset; a dataset of
            another task or observation mode.
        DemoFileError: ``--demos`` does not exist (without ``--collect``), is empty or corrupted.
    """
    out_dir = Path(cfg.trainer.out_dir)
    if cfg.collect:
        return _collect(cfg, Path(cfg.demos) if cfg.demos else out_dir / "demos")
    if not cfg.demos:
        raise ConfigError(expected("--demos DIR (a dataset written by flowzoo robotics collect) or --collect",
                                   "neither", f"pass --demos DIR, or --collect to collect {cfg.episodes} expert "
                                   f"episodes of {cfg.task} into {out_dir / 'demos'}"))
    path = Path(cfg.demos)
    if not path.exists():
        raise DemoFileError(expected("an existing demonstration directory for --demos", f"{path}: no such path",
                                     f"check the path, or add --collect to collect {cfg.episodes} expert episodes "
                                     f"of {cfg.task} into it"))
    demos = DemoDataset.load(path)
    if demos.spec.task != cfg.task or demos.spec.obs_mode != cfg.obs:
        raise ConfigError(expected(f"demonstrations of task {cfg.task!r} with obs {cfg.obs!r}",
                                   f"task {demos.spec.task!r}, obs {demos.spec.obs_mode!r} in {cfg.demos}",
                                   "pass --task/--obs matching the dataset, or another --demos"))
    return demos


def _collect(cfg: RobotTrainConfig, out: Path) -> DemoDataset:
    own = out == Path(cfg.trainer.out_dir) / "demos"
    if _is_dataset(out) and not (own and cfg.trainer.overwrite):
        raise ConfigError(expected("--collect into a new or empty directory", f"{out} already holds a dataset",
                                   f"drop --collect to train on it (--demos {out}), or pass another --demos"))
    check_output_path(out)  # a file or a foreign non-empty directory is refused before minutes of collection
    where = out if is_main_process() else None
    if cfg.task == "toy-obstacle":
        from flowzoo.robotics.toy import generate_toy_demos

        _say(f"--collect: generating {cfg.episodes} expert episodes of toy-obstacle into {out}")
        demos = generate_toy_demos(cfg.episodes, seed=cfg.trainer.seed, action_noise=cfg.action_noise)
        if where is not None:
            demos.save(where)
        return demos
    from flowzoo.robotics.collect import collect_demos
    from flowzoo.robotics.envs import expert_policy

    expert_policy(cfg.task)  # an unknown task fails here, before announcing a collection
    _say(f"--collect: collecting {cfg.episodes} successful scripted-expert episodes of {cfg.task} ({cfg.obs}, "
         f"seed {cfg.trainer.seed}) into {out}")
    demos = collect_demos(cfg.task, cfg.episodes, cfg.obs, where, seed=cfg.trainer.seed,
                          action_noise=cfg.action_noise, num_points=cfg.num_points, progress=cfg.progress)
    _say(f"collected {demos.episodes} episodes ({demos.num_steps} steps) into {out}")
    return demos


def _remove_previous_outputs(out_dir: Path) -> list[str]:
    """Remove what described an earlier run's weights (a fresh run is about to replace them); returns the names.

    The policy directory loses only the policy's own files (``policy.json``, ``weights-*``, evaluation records);
    anything else in it, and the demonstrations, stay.
    """
    from flowzoo.robotics.policy import remove_stale_evaluations

    removed = []
    policy_dir = out_dir / "policy"
    if (policy_dir / "policy.json").is_file():
        removed += [str(p.relative_to(out_dir)) for p in remove_stale_evaluations(policy_dir, "")]
        for path in [policy_dir / "policy.json", *policy_dir.glob("weights-*.safetensors")]:
            path.unlink(missing_ok=True)
            removed.append(str(path.relative_to(out_dir)))
        if not any(policy_dir.iterdir()):
            policy_dir.rmdir()
    for name in _RUN_OUTPUTS:
        if (out_dir / name).is_file():
            (out_dir / name).unlink()
            removed.append(name)
    return removed


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
    """Load (or, with ``cfg.collect``, collect) demonstrations, train, evaluate, save; returns the summary written to
    ``summary.json``."""
    if cfg.policy.method not in METHODS:
        raise ConfigError(expected(f"a method in {list(METHODS)}", repr(cfg.policy.method), "e.g. mp1"))
    out_dir = Path(cfg.trainer.out_dir)
    refuse_fresh_run_over_checkpoints(cfg.trainer)
    torch.manual_seed(cfg.trainer.seed)
    demos = load_or_collect_demos(cfg)
    policy = FlowPolicy(demos.spec, demos.normalizer, cfg.policy)
    cfg = replace(cfg, policy=policy.config)  # config.yaml records the options that ran, not "auto"
    windows = WindowDataset(demos, policy.config.n_obs_steps, policy.config.horizon)
    if cfg.trainer.resume is False and is_main_process():
        removed = _remove_previous_outputs(out_dir)
        if removed:
            _say(f"fresh run in {out_dir}: removed the previous run's {', '.join(removed)}")
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
    summary["weights_sha256"] = final.weights_sha256
    if tracker is not None and tracker.summary():
        summary["success"] = tracker.summary()
    if cfg.video and cfg.eval_episodes > 0:
        from flowzoo.robotics.evaluate import evaluate_policy

        shown = evaluate_policy(final.eval(), cfg.task, episodes=1, seed=cfg.eval_seed, num_envs=1,
                                video=out_dir / "rollout.mp4", progress=False)
        summary["video"] = shown.video
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


@functools.cache
def method_config_class(method: str) -> type[RobotTrainConfig]:
    """The command line's config of ``method``: :class:`RobotTrainConfig` whose policy defaults are ``method``'s
    resolved values, so that ``--help`` shows what will run and ``config.yaml`` records it.

    ``--policy.method`` accepts only ``method`` itself (the method is the first argument).
    """
    if method not in METHODS:
        raise ConfigError(expected(f"a method in {list(METHODS)} as the first argument", repr(method),
                                   f"e.g. {PROG} mp1 --task reach-v3 --demos demos/reach"))
    policy_cls = make_dataclass(
        f"{method.capitalize()}PolicyConfig",
        [("method", Literal[method], field(default=method, metadata=option_help(
            f"training method: set by the first argument ({PROG} <method>)")))],
        bases=(PolicyConfig,), namespace={"__module__": __name__})
    defaults = policy_cls().resolved()
    cls = make_dataclass(f"{method.capitalize()}TrainConfig",
                         [("policy", policy_cls, field(default_factory=lambda: copy.copy(defaults)))],
                         bases=(RobotTrainConfig,), namespace={"__module__": __name__})
    cls.__doc__ = (f"Train a {method} policy: {METHOD_SUMMARY[method]}. The method is the first argument "
                   f"({PROG} <{'|'.join(METHODS)}> [options]); the defaults shown are {method}'s.")
    return cls


def _overview() -> str:
    width = max(map(len, METHODS))
    lines = [f"usage: {PROG} <method> [options]      (the same: flowzoo train robotics <method> [options])", "",
             "The method comes first, then the options:"]
    lines += [f"  {name:<{width}}  {METHOD_SUMMARY[name]}" for name in METHODS]
    lines += ["", f"Run {PROG} <method> --help to list every option with that method's defaults.",
              f"Example: {PROG} mp1 --task reach-v3 --obs state --demos demos/reach --trainer.out_dir runs/reach_mp1",
              "(collect demonstrations with flowzoo robotics collect, or add --collect)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowzoo.robotics.train <method> [options]``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_overview())
        return 0
    method, args = args[0], args[1:]
    if method.startswith("-"):
        raise ConfigError(expected(f"the method as the first argument, one of {', '.join(METHODS)}", method,
                                   f"write {PROG} <method> {method} ... (e.g. {PROG} mp1 --task reach-v3)"))
    cls = method_config_class(method)
    for i, arg in enumerate(args):
        given = arg.split("=", 1)[1] if arg.startswith("--policy.method=") else \
            (args[i + 1] if arg == "--policy.method" and i + 1 < len(args) else None)
        if given is not None and given != method:
            raise ConfigError(expected(f"the method as the first argument ({method} here)", f"--policy.method {given}",
                                       f"write {PROG} {given} ... instead"))
    parsed = parse_config(cls, args, prog=f"{PROG} {method}")
    # Back to the plain config classes (the per-method ones exist for parsing and --help only).
    cfg = config_from_dict(RobotTrainConfig, config_to_dict(parsed))
    cfg = replace(cfg, trainer=replace(cfg.trainer, progress=cfg.trainer.progress and cfg.progress))
    summary = train_policy(cfg)
    if is_main_process():
        print(json.dumps(summary, indent=2, default=str))
        print(f"policy in {summary.get('policy')}; evaluate it with: flowzoo robotics evaluate --checkpoint "
              f"{Path(str(summary.get('policy'))).parent} --episodes 20")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(main, prog="python -m flowzoo.robotics.train"))
