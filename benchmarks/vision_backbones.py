"""Image backbones side by side: flowzoo's U-Net against torchcfm's CIFAR U-Net recipe, and flowzoo's DiT.

One flow-matching training step on MNIST-shaped input (B, 1, 28, 28), for

* ``torchcfm UNetModel``: ``torchcfm.models.unet.UNetModel`` (its ``UNetModelWrapper``) with the settings of torchcfm's
  ``examples/images/cifar10`` training script (128 channels, two residual blocks per level, 64 channels per
  attention head, dropout 0.1, Adam at learning rate 2e-4, gradient clipping at norm 1), its width multipliers
  for 28×28 images (1, 2, 2), trained as that script trains it (``ConditionalFlowMatcher(sigma=0)``, mean
  squared error of ``net(t, x_t)`` against ``u_t``). The script's ``attention_resolutions="16"`` means attention
  at the second level (16×16 of 32×32); on 28×28 the wrapper would turn "16" into the downsampling factor
  28 // 16 = 1 (full resolution), so both nets put attention at the second level (14×14), as the recipe does;
* ``flowzoo UNet``: :class:`flowzoo.core.nets.UNet` at the same size (channels, multipliers, residual blocks,
  attention level, head width, dropout), trained by :class:`flowzoo.core.objectives.FlowMatchingLoss`, same
  optimiser and clipping;
* ``flowzoo DiT-S/2``: :class:`flowzoo.vision.nets.DiT` (``dit_s``, patch 2: 196 tokens), same objective,
  optimiser and clipping.

The steps are interleaved (every round runs each net once, in a fresh random order) so that a slow-down of the
shared machine hits all of them alike. The table gives the median wall time of a step and its median CPU time
(the process's, one thread by default: on a machine shared with other jobs the wall time also counts the waits
for a core, the CPU time does not, so the ratio to torchcfm's step is taken on CPU time), the parameter counts,
and the sampling throughput at 100 Euler steps (flowzoo nets through
:func:`flowzoo.core.sampling.integrate`, torchcfm's as the plain loop ``x += dt * net(t, x)``), all in float32
on the CPU with the thread count given (default 1, the flowzoo command-line default).

    python -m benchmarks.vision_backbones            # batch 128 as the CIFAR script (long on one thread)
    python -m benchmarks.vision_backbones --batch 32 --sample-batch 4    # the run on the docs page
    python -m benchmarks.vision_backbones --quick    # batch 8, 3 timed steps, 10 Euler steps (a few minutes)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmarks.results import reproduce_command, save_table
from flowzoo.core.nets import UNet
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import integrate
from flowzoo.vision.nets import DiT

__all__ = ["SIZES", "Contender", "build_contenders", "time_training", "time_sampling", "format_table", "main"]

# (image size, channels, multipliers, residual blocks, head channels, dropout, DiT preset)
SIZES = {
    "mnist": (28, 128, (1, 2, 2), 2, 64, 0.1, "dit_s/2"),
    "tiny": (8, 32, (1, 2), 1, 32, 0.1, "dit_tiny/2"),   # for tests and smoke runs (torchcfm needs 32 | channels)
}
LEARNING_RATE, CLIP_NORM = 2e-4, 1.0   # torchcfm's CIFAR-10 script


class TorchCFMVelocity(nn.Module):
    """torchcfm's ``UNetModel(t, x)`` as ``model(x, t)``, at one of :data:`SIZES`."""

    def __init__(self, size: str):
        super().__init__()
        from torchcfm.models.unet import UNetModel  # torchcfm exports its UNetModelWrapper under this name

        image, channels, multipliers, blocks, head, dropout, _ = SIZES[size]
        self.net = UNetModel(dim=(1, image, image), num_channels=channels, num_res_blocks=blocks,
                                    channel_mult=multipliers, num_heads=4, num_head_channels=head,
                                    attention_resolutions=str(image // 2), dropout=dropout)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(t, x)


@dataclass
class Contender:
    name: str
    model: nn.Module
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]   # (model, x0, x1) -> scalar
    sample: Callable[[nn.Module, torch.Tensor, int], torch.Tensor]          # (model, x0, steps) -> x1

    @property
    def params_m(self) -> float:
        return sum(p.numel() for p in self.model.parameters()) / 1e6


def _flowzoo_loss() -> Callable:
    objective = FlowMatchingLoss()
    return lambda model, x0, x1: objective(model, {"x0": x0, "x1": x1})[0]


def _flowzoo_sample(model: nn.Module, x0: torch.Tensor, steps: int) -> torch.Tensor:
    return integrate(model, x0, steps=steps, method="euler").x


def _torchcfm_loss() -> Callable:
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

    matcher = ConditionalFlowMatcher(sigma=0.0)

    def loss(model, x0, x1):
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        return ((model(xt, t) - ut) ** 2).mean()
    return loss


def _torchcfm_sample(model: nn.Module, x0: torch.Tensor, steps: int) -> torch.Tensor:
    x, dt = x0, 1.0 / steps
    for index in range(steps):
        x = x + dt * model(x, torch.full((x.shape[0],), index * dt))
    return x


def build_contenders(size: str, with_torchcfm: bool = True) -> list[Contender]:
    """The nets of the table at ``size``, each with its training loss and sampler (module docstring)."""
    image, channels, multipliers, blocks, head, dropout, dit = SIZES[size]
    rows = []
    if with_torchcfm:
        rows.append(Contender("torchcfm UNetModel", TorchCFMVelocity(size), _torchcfm_loss(), _torchcfm_sample))
    rows.append(Contender("flowzoo UNet", UNet(in_channels=1, channels=channels, multipliers=multipliers,
                                               res_blocks=blocks, attention_levels=(1,), head_channels=head,
                                               dropout=dropout), _flowzoo_loss(), _flowzoo_sample))
    rows.append(Contender(f"flowzoo DiT ({dit})", DiT.preset(dit, in_channels=1), _flowzoo_loss(), _flowzoo_sample))
    return rows


def time_training(contenders: list[Contender], image: int, batch: int, steps: int, warmup: int,
                  seed: int = 0) -> dict[str, tuple[list[float], list[float]]]:
    """Per contender, the wall and CPU times (ms) of ``steps`` training steps (loss, backward, clipping, Adam)
    after ``warmup`` untimed ones, interleaved in a fresh random order every round."""
    generator = torch.Generator().manual_seed(seed)
    optimisers = {c.name: torch.optim.Adam(c.model.parameters(), lr=LEARNING_RATE) for c in contenders}
    times: dict[str, tuple[list[float], list[float]]] = {c.name: ([], []) for c in contenders}
    order = np.random.default_rng(seed)
    for round_index in range(warmup + steps):
        x1 = torch.rand(batch, 1, image, image, generator=generator) * 2 - 1   # MNIST-shaped, in [-1, 1]
        x0 = torch.randn(batch, 1, image, image, generator=generator)
        for index in order.permutation(len(contenders)):
            contender = contenders[index]
            contender.model.train()
            optimiser = optimisers[contender.name]
            started, started_cpu = time.perf_counter(), time.process_time()
            optimiser.zero_grad(set_to_none=True)
            contender.loss(contender.model, x0, x1).backward()
            torch.nn.utils.clip_grad_norm_(contender.model.parameters(), CLIP_NORM)
            optimiser.step()
            if round_index >= warmup:
                times[contender.name][0].append(1e3 * (time.perf_counter() - started))
                times[contender.name][1].append(1e3 * (time.process_time() - started_cpu))
    return times


@torch.no_grad()
def time_sampling(contender: Contender, image: int, batch: int, steps: int = 100) -> float:
    """Samples per second of ``steps`` Euler steps on ``batch`` images (after one untimed step)."""
    contender.model.eval()
    x0 = torch.randn(batch, 1, image, image, generator=torch.Generator().manual_seed(1))
    contender.sample(contender.model, x0, 1)
    started = time.perf_counter()
    contender.sample(contender.model, x0, steps)
    return batch / (time.perf_counter() - started)


def format_table(rows: list[dict]) -> str:
    lines = ["| backbone | params (M) | step ms (wall) | IQR ms | step ms (CPU) | CPU-time ratio to torchcfm | "
             "samples/s |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = "-" if row["ratio_to_torchcfm"] is None else f"{row['ratio_to_torchcfm']:.2f}x"
        lines.append(f"| {row['backbone']} | {row['params_m']:.2f} | {row['step_ms']:.1f} | {row['iqr_ms']:.1f} | "
                     f"{row['step_cpu_ms']:.1f} | {ratio} | {row['samples_per_s']:.3g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="mnist")
    parser.add_argument("--batch", type=int, default=None, help="training batch (default 128; --quick 8)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per net (default 7; --quick 3)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--sample-batch", type=int, default=None, help="images sampled at once (16; --quick 2)")
    parser.add_argument("--euler-steps", type=int, default=None, help="sampling steps (100; --quick 10)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small batches, few steps")
    args = parser.parse_args(argv)
    batch = args.batch or (8 if args.quick else 128)
    steps = args.steps or (3 if args.quick else 7)
    sample_batch = args.sample_batch or (2 if args.quick else 16)
    euler_steps = args.euler_steps or (10 if args.quick else 100)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        import torchcfm.models.unet  # noqa: F401
        with_torchcfm = True
    except ImportError:
        with_torchcfm = False
        print("torchcfm not importable: its row is skipped (pip install --no-deps torchcfm==1.0.7 POT)",
              file=sys.stderr)
    image = SIZES[args.size][0]
    contenders = build_contenders(args.size, with_torchcfm)
    times = time_training(contenders, image, batch, steps, args.warmup, args.seed)
    rows = []
    for contender in contenders:
        wall, cpu = times[contender.name]
        quartiles = statistics.quantiles(wall, n=4) if steps > 1 else [0.0, 0.0, 0.0]
        rows.append({"backbone": contender.name, "params_m": round(contender.params_m, 2),
                     "step_ms": round(statistics.median(wall), 1), "iqr_ms": round(quartiles[2] - quartiles[0], 1),
                     "step_cpu_ms": round(statistics.median(cpu), 1), "ratio_to_torchcfm": None,
                     "samples_per_s": float(f"{time_sampling(contender, image, sample_batch, euler_steps):.3g}")})
        print(f"{contender.name}: step {rows[-1]['step_ms']} ms", file=sys.stderr, flush=True)
    if with_torchcfm:
        for row in rows:
            row["ratio_to_torchcfm"] = round(row["step_cpu_ms"] / rows[0]["step_cpu_ms"], 2)
    title = (f"Backbones on {image}x{image} MNIST-shaped input: one flow-matching training step (batch {batch}, "
             f"median of {steps}) and samples/s at {euler_steps} Euler steps (batch {sample_batch})")
    print(title)
    print(format_table(rows))
    notes = ["float32 on the CPU, {} thread(s); random data (timing only); Adam lr 2e-4, gradient clipping 1 "
             "(torchcfm's CIFAR-10 script); steps interleaved in a random order per round; the ratio is of CPU "
             "times (a shared machine's waits for a core inflate wall times unevenly)".format(args.threads),
             "U-Nets: 128 channels, multipliers (1, 2, 2), 2 residual blocks, attention at 14x14 with 64 channels "
             "per head, dropout 0.1" if args.size == "mnist" else f"size {args.size}",
             "torchcfm samples with the plain loop x += dt * net(t, x); flowzoo with integrate(method='euler')"]
    save_table("vision_backbones", rows, title=title, command=reproduce_command("benchmarks.vision_backbones", argv),
               quick=args.quick, notes=notes, device="cpu")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
