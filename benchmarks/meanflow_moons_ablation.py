"""Why MeanFlow's 1-NFE W2 on 8 Gaussians -> moons stays at ~2.3x flow matching's: one run per variant (issue 3).

``benchmarks/few_step.py`` trains MeanFlow on moons (MLP 3x512, 12000 Adam steps, batch 512, settings of
:func:`flowzoo.core.fewstep.presets.meanflow_settings`) to 1-NFE W2 0.612 against FM Euler-100's 0.266. Each
variant here changes one thing and reports 1- and 2-NFE W2 every ``--eval-every`` steps (the last checkpoints
fluctuate by about +-0.05, so read the trend, not one number):

* ``baseline``: the table's setting, independent pairs;
* ``batch2048``: four times the batch (target noise averaged over more samples per step);
* ``beta2``: Adam beta2 = 0.95 (MeanFlow's ImageNet optimiser);
* ``ema``: also reports an EMA (decay 0.999) of the weights;
* ``p0``: plain MSE instead of the adaptive weight p = 0.5;
* ``posterior``: the conditional velocity x1 - x0 replaced by a batch estimate of the *marginal* velocity
  (self-normalised over the batch's data points, weights p0((x_s - s x1_j) / (1 - s)) with the 8-Gaussian
  source density: the "stable target field" of Xu et al., ICLR 2023, arXiv 2302.00670, written for the linear
  path's velocity instead of the score). It
  removes nearly all of the target's noise while keeping the independent coupling's curved marginal flow;
* ``ot``: minibatch exact-OT pairs (straighter marginal paths); ``ot_ema`` the same with the EMA column;
* ``ot_ugap``: OT pairs and uniform-gap intervals (``presets.meanflow_ot_settings``, the table's
  "MeanFlow + OT" row before its learning rate was halved): the long jumps of 1-step sampling trained often, on
  targets OT has made nearly noise-free; ``ot_ugap_lr`` the same at the table's learning rate for that row
  (``presets.MEANFLOW_OT_LR_FACTOR``: 5e-4), which damps its spikes (seeds 0 / 2: 0.289 / 0.264).

Measured on this 2-core CPU (seed 0, 12000 steps unless noted; 1-NFE W2, noise floor 0.263): baseline 0.612,
batch2048 0.590 (6000 steps), beta2 0.589, ema 0.612 raw / 0.628 EMA, p0 0.769 (6000 steps), posterior
0.59-0.69 over steps 4500-9000, ot 0.408 (EMA 0.391; 2-NFE 0.356), ot_ugap 0.327 (seeds 1 / 2: 0.284 / 0.352;
FM-100 0.266). Less target noise (a bigger batch, the
posterior velocity) leaves the error where it was; straighter paths (OT) cut it by a third. So with independent
pairs MeanFlow's one-step error on this map comes from the curvature of the flow it must average, not from the
variance of its target. SplitMeanFlow, whose target is the model's own two half-interval jumps instead of the
derivative, reaches 0.297 with the same network; MeanFlow gets there once OT pairs allow uniform-gap intervals.

    .venv/bin/python -m benchmarks.meanflow_moons_ablation --variants baseline posterior ot   # ~8 min each, 1 core
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from types import SimpleNamespace

import torch
from tqdm.auto import tqdm

from benchmarks.few_step_data import make_dataset
from benchmarks.results import reproduce_command, save_table
from flowzoo.core.fewstep import MEANFLOW_OT_LR_FACTOR, meanflow_ot_settings, meanflow_settings
from flowzoo.core.couplings import ExactOTCoupling
from flowzoo.core.fewstep import MLPFlowMap, flowmap_sample
from flowzoo.core.fewstep import MeanFlowLoss

__all__ = ["VARIANTS", "BatchPosteriorVelocity", "run_variant", "main"]

VARIANTS = ("baseline", "batch2048", "beta2", "ema", "p0", "posterior", "ot", "ot_ema", "ot_ugap", "ot_ugap_lr")


class BatchPosteriorVelocity:
    """Marginal velocity of the linear path x_s = (1 - s) x0 + s x1, estimated over a batch of data points.

    For x_s, each data point x1_j implies the source point x0_j = (x_s - s x1_j) / (1 - s) and the velocity
    x1_j - x0_j; their average under weights proportional to p0(x0_j) is a consistent estimate of E[x1 - x0 | x_s]
    (the Jacobian 1 / (1 - s)^d is the same for every j). Call :meth:`set_data` with each batch's x1; used as
    ``MeanFlowLoss(teacher=...)``, so the target's velocity is this estimate instead of the conditional one.
    """

    def __init__(self, source_log_prob, max_time: float = 1.0 - 1e-3):
        self.source_log_prob, self.max_time, self.x1 = source_log_prob, max_time, None

    def set_data(self, x1: torch.Tensor) -> None:
        self.x1 = x1

    def __call__(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        s = s.reshape(-1, 1, 1).clamp(max=self.max_time)
        x0 = (x.unsqueeze(1) - s * self.x1.unsqueeze(0)) / (1 - s)          # (B, J, d)
        weights = torch.softmax(self.source_log_prob(x0), dim=1).unsqueeze(-1)
        return (weights * (self.x1.unsqueeze(0) - x0)).sum(1)


def eight_gaussians_log_prob(z: torch.Tensor) -> torch.Tensor:
    """Log density (up to a constant) of ``sample_toy("8gaussians")``: radius 5, variance sqrt(0.1)."""
    angles = torch.arange(8, dtype=z.dtype) * (math.pi / 4)
    centres = 5.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return torch.logsumexp(-((z.unsqueeze(-2) - centres) ** 2).sum(-1) / (2 * 0.1**0.5), dim=-1)


def run_variant(variant: str, steps: int = 12000, eval_every: int = 1500, seed: int = 0, hidden: int = 512,
                eval_samples: int = 1500, progress: bool = True) -> list[dict]:
    """Train one variant; returns a row per evaluation (step, 1- and 2-NFE W2, EMA columns where kept)."""
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    batch = 2048 if variant == "batch2048" else 512
    torch.manual_seed(seed)
    model = MLPFlowMap(2, hidden=hidden, depth=3)
    posterior = BatchPosteriorVelocity(eight_gaussians_log_prob) if variant == "posterior" else None
    settings = meanflow_ot_settings() if variant.startswith("ot_ugap") else meanflow_settings()
    settings = {**settings, **({"adaptive_p": 0.0} if variant == "p0" else {})}
    loss_fn = MeanFlowLoss(derivative="jvp", teacher=posterior,
                           coupling=ExactOTCoupling() if variant.startswith("ot") else None, **settings)
    lr = 1e-3 * (MEANFLOW_OT_LR_FACTOR if variant == "ot_ugap_lr" else 1.0)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.95 if variant == "beta2" else 0.999))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=5e-5)
    ema = copy.deepcopy(model) if variant.endswith("ema") else None
    gen, data_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 17)
    moons = make_dataset("moons", SimpleNamespace(eval_samples=eval_samples))   # few_step.py's data and W2
    x0 = moons.source(eval_samples, torch.Generator().manual_seed(1234))

    @torch.no_grad()
    def w2(net) -> tuple[float, float]:
        net.eval()
        out = tuple(moons.evaluate(flowmap_sample(net, x0, steps=n).x)["W2"] for n in (1, 2))
        net.train()
        return out

    rows, started = [], time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc=variant, disable=not progress, mininterval=2.0, file=sys.stderr):
        data = {"x0": moons.source(batch, data_gen), "x1": moons.target(batch, data_gen)}
        if posterior is not None:
            posterior.set_data(data["x1"])
        loss, _ = loss_fn(model, data, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                for kept, live in zip(ema.parameters(), model.parameters()):
                    kept.lerp_(live, 1e-3)
        if step % eval_every == 0 or step == steps:
            row = {"variant": variant, "step": step, "seconds": time.perf_counter() - started}
            row["W2 1-NFE"], row["W2 2-NFE"] = w2(model)
            if ema is not None:
                row["EMA W2 1-NFE"], row["EMA W2 2-NFE"] = w2(ema)
            rows.append(row)
            print("  " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                  flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["baseline", "posterior", "ot"], choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=12000)
    parser.add_argument("--eval-every", type=int, default=1500)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--eval-samples", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for variant in args.variants:
        rows += run_variant(variant, args.steps, args.eval_every, args.seed, args.hidden, args.eval_samples,
                            progress=not args.no_progress)
    print("\n| variant | steps | W2 1-NFE | W2 2-NFE | EMA W2 1-NFE |\n|---|---|---|---|---|")
    final = []
    for variant in args.variants:
        last = [r for r in rows if r["variant"] == variant][-1]
        ema = f"{last['EMA W2 1-NFE']:.3f}" if "EMA W2 1-NFE" in last else ""
        print(f"| {variant} | {last['step']} | {last['W2 1-NFE']:.3f} | {last['W2 2-NFE']:.3f} | {ema} |")
        final.append({"variant": variant, "steps": last["step"], "W2 1-NFE": last["W2 1-NFE"],
                      "W2 2-NFE": last["W2 2-NFE"], "EMA W2 1-NFE": last.get("EMA W2 1-NFE")})
    save_table("meanflow_moons_ablation", final, title=f"MeanFlow on 8 Gaussians -> moons, one change per variant "
               f"(hidden {args.hidden}, seed {args.seed}): W2 at the last evaluation",
               command=reproduce_command("benchmarks.meanflow_moons_ablation", argv),
               quick=args.steps < parser.get_default("steps"),
               notes=["every evaluation (each --eval-every steps) is in the rows main() returns"])
    return rows


if __name__ == "__main__":
    main()
