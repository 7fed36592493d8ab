"""Training entrypoint of the core: a flow between two toy distributions.

``python -m flowzoo.core.train --help`` (or ``flowzoo train core --help``) lists every field.
The run trains an :class:`~flowzoo.core.nets.mlp.MLPVelocity` with :class:`~flowzoo.core.objectives.FlowMatchingLoss`
(I-CFM with ``--coupling independent``, OT-CFM with ``--coupling exact_ot``, ...) from ``source`` to
``target``, evaluates W2 at several Euler step counts, and writes samples, a PNG and metrics next to
its checkpoints in ``trainer.out_dir``.

Example:
    python -m flowzoo.core.train --source 8gaussians --target moons --coupling exact_ot \\
        --trainer.steps 2000 --trainer.out_dir runs/otcfm
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from flowzoo.core.config import parse_config
from flowzoo.core.couplings import get_coupling
from flowzoo.core.data import sample_toy
from flowzoo.core.analysis import path_straightness, wasserstein2
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.paths import AffinePath, CosineScheduler, LinearScheduler, PolynomialScheduler, VPScheduler
from flowzoo.core.analysis import plot_samples_2d
from flowzoo.core.sampling import integrate
from flowzoo.core.paths import get_time_sampler
from flowzoo.core.training import Trainer, TrainerConfig
from flowzoo.core.training.distributed import is_main_process

__all__ = ["ToyFlowConfig", "build_toy_run", "run", "main"]

SCHEDULERS = {
    "linear": LinearScheduler,
    "cosine": CosineScheduler,
    "vp": VPScheduler,
    "polynomial": lambda: PolynomialScheduler(2),
}


def _default_trainer() -> TrainerConfig:
    return TrainerConfig(steps=3000, batch_size=256, lr=2e-3, warmup_steps=100, ema_decay=0.999,
                         eval_every=1000, checkpoint_every=1000, out_dir="runs/core")


@dataclass
class ToyFlowConfig:
    """A flow between two toy distributions (``flowzoo.core.data``)."""

    source: str = field(default="8gaussians", metadata={"help": "source distribution (t = 0)"})
    target: str = field(default="moons", metadata={"help": "target distribution (t = 1)"})
    dim: int = field(default=2, metadata={"help": "dimension (for n-D distributions such as gaussian_mixture)"})
    coupling: Literal["independent", "exact_ot", "sinkhorn", "schrodinger_bridge", "gibbs"] = field(
        default="exact_ot", metadata={"help": "how (x0, x1) pairs are formed in each batch"})
    coupling_strength: float = field(
        default=0.0, metadata={"help": "sinkhorn reg / bridge sigma / gibbs eps (0: the coupling's default)"})
    path: Literal["linear", "cosine", "vp", "polynomial"] = field(
        default="linear", metadata={"help": "scheduler of the affine probability path"})
    time_sampler: Literal["uniform", "logit_normal", "u_shaped"] = field(
        default="uniform", metadata={"help": "training-time distribution"})
    hidden: int = field(default=256, metadata={"help": "MLP width"})
    depth: int = field(default=3, metadata={"help": "MLP hidden layers"})
    eval_samples: int = field(default=1000, metadata={"help": "samples used for W2 at evaluation"})
    eval_euler_steps: list[int] = field(default_factory=lambda: [1, 2, 4, 100],
                                        metadata={"help": "Euler step counts evaluated"})
    trainer: TrainerConfig = field(default_factory=_default_trainer)


def _coupling(cfg: ToyFlowConfig):
    if cfg.coupling_strength <= 0:
        return get_coupling(cfg.coupling)
    key = {"sinkhorn": "reg", "schrodinger_bridge": "sigma", "gibbs": "eps"}.get(cfg.coupling)
    return get_coupling(cfg.coupling, **({key: cfg.coupling_strength} if key else {}))


def build_toy_run(cfg: ToyFlowConfig):
    """Return ``(model, objective, sample_batch, evaluate)`` for the toy run described by ``cfg``."""
    torch.manual_seed(cfg.trainer.seed)
    model = MLPVelocity(cfg.dim, hidden=cfg.hidden, depth=cfg.depth)
    objective = FlowMatchingLoss(path=AffinePath(SCHEDULERS[cfg.path]()), coupling=_coupling(cfg),
                                 time_sampler=get_time_sampler(cfg.time_sampler))

    def sample_batch(generator: torch.Generator) -> dict[str, torch.Tensor]:
        n = cfg.trainer.batch_size
        return {"x0": sample_toy(cfg.source, n, dim=cfg.dim, generator=generator),
                "x1": sample_toy(cfg.target, n, dim=cfg.dim, generator=generator)}

    # Fixed evaluation sets, independent of the training stream.
    eval_source = sample_toy(cfg.source, cfg.eval_samples, dim=cfg.dim, seed=10_000 + cfg.trainer.seed)
    eval_target = sample_toy(cfg.target, cfg.eval_samples, dim=cfg.dim, seed=20_000 + cfg.trainer.seed)

    @torch.no_grad()
    def evaluate(eval_model: torch.nn.Module, step: int, eval_dir: Path) -> dict[str, float]:
        eval_dir = Path(eval_dir)
        eval_dir.mkdir(parents=True, exist_ok=True)
        eval_model.eval()
        metrics: dict[str, float] = {}
        panels: dict[str, torch.Tensor] = {}
        trajectory = None
        for steps in cfg.eval_euler_steps:
            result = integrate(eval_model, eval_source, method="euler", steps=steps,
                               return_trajectory=(steps == max(cfg.eval_euler_steps)))
            metrics[f"w2_euler{steps}"] = wasserstein2(result.x, eval_target)
            panels[f"Euler {steps} step{'s' if steps > 1 else ''}"] = result.x
            if result.trajectory is not None:
                trajectory = result.trajectory
        metrics["straightness"] = path_straightness(eval_model, eval_source[:500], steps=100)
        torch.save({"samples": panels, "source": eval_source}, eval_dir / "samples.pt")
        if cfg.dim == 2:
            plot_samples_2d(panels, eval_dir / "samples.png", trajectories=trajectory, reference=eval_target,
                            title=f"{cfg.source} -> {cfg.target} ({cfg.coupling}), step {step}")
        eval_model.train()
        return metrics

    return model, objective, sample_batch, evaluate


def run(cfg: ToyFlowConfig) -> dict[str, float]:
    """Train, evaluate, and write ``final_metrics.json`` in ``cfg.trainer.out_dir``; returns the metrics."""
    model, objective, sample_batch, evaluate = build_toy_run(cfg)
    trainer = Trainer(model, objective, sample_batch, cfg.trainer, evaluate=evaluate, run_config=cfg)
    result = trainer.fit()
    metrics = dict(result.eval_metrics)
    metrics["train_seconds"] = result.seconds
    if is_main_process():  # under torchrun only rank 0 evaluates and writes
        (Path(cfg.trainer.out_dir) / "final_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(ToyFlowConfig, sys.argv[1:] if argv is None else list(argv), prog="flowzoo train core")
    metrics = run(cfg)
    if is_main_process():
        print(json.dumps(metrics, indent=2))
        print(f"outputs in {Path(cfg.trainer.out_dir).resolve()} (checkpoints/, eval/, metrics.csv, final_metrics.json)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(main, prog="python -m flowzoo.core.train"))
