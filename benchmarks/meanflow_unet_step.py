"""MeanFlow's training step against a flow-matching step on a CIFAR-sized U-Net (issue 3's GPU check).

Issue 3 asks for the time of one MeanFlow training step (JVP target) over one flow-matching step on a U-Net of
image size; torchcfm's CIFAR U-Net with a naive ``torch.func.jvp`` measured 197.9 ms against 57.8 ms on an H200
(3.4x), and the target is <= 1.5x. Every row trains the same network
(:meth:`flowzoo.core.nets.FlowMapUNet.cifar10`: torchcfm's CIFAR layout, 36 M parameters, with a second time
embedding for the flow map's gap) with AdamW on batches of (B, 3, 32, 32), and gives the median time of a whole
step (objective, backward, optimiser) and its ratio to the flow-matching step of the same precision and dropout:

* ``fm``: :class:`flowzoo.core.objectives.FlowMatchingLoss` on ``u(x, t, t)``.
* ``meanflow jvp``: :class:`flowzoo.core.fewstep.meanflow.MeanFlowLoss`, forward-mode AD for du/ds with the lean
  rules of :mod:`flowzoo.core.fewstep.forward_ad` (``generic dual tensors``: PyTorch's own rules), under
  ``no_grad`` and only on the samples with s < t (``distinct`` of the batch: MeanFlow's ImageNet setting is 25 %,
  py-meanflow's CIFAR setting 75 %, 100 % is the worst case), then an ordinary forward with gradient.
* ``meanflow fd``: the same with a central finite difference (two forwards without gradient on the s < t part).
* ``imf jvp``: improved MeanFlow, whose tangent is the model's own velocity (one more forward without gradient).
* dropout 0.1 (torchcfm's CIFAR setting): every pass must draw the same mask, so the JVP runs on the whole batch.
* bf16: the steps under ``torch.autocast``; MeanFlowLoss keeps its target pass in float32 (py-meanflow does the
  same), so only the gradient pass is in bf16.
* ``naive jvp``: the py-meanflow / torchcfm-PR form for contrast: one ``torch.func.jvp`` over the whole batch
  whose primal output carries the gradient, so the backward pass runs through the forward-mode computation.
* ``torchcfm U-Net fm``: torchcfm's own CIFAR U-Net (if torchcfm imports), flow matching: calibrates this
  U-Net's step against the one the issue's 57.8 ms was measured on.

It also checks on the same network (float32, TF32 off) that the lean JVP target equals the generic one and how
far the finite-difference target (step 5e-3) is from it (relative differences).

    python -m benchmarks.meanflow_unet_step --device cuda            # the issue's check (about a minute)
    python -m benchmarks.meanflow_unet_step --size tiny --steps 3    # a CPU smoke run (seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks.results import reproduce_command, save_table
from flowzoo.core.fewstep import MeanFlowLoss, TwoTimeSampler
from flowzoo.core.nets import FlowMapUNet
from flowzoo.core.objectives import FlowMatchingLoss

__all__ = ["Variant", "VARIANTS", "StepTiming", "tiny_unet", "time_variant", "target_agreement", "format_table", "main"]


def tiny_unet(dropout: float = 0.0) -> FlowMapUNet:
    """The CIFAR layout at a few thousand parameters on 8x8 images, for CPU smoke runs and tests."""
    return FlowMapUNet(3, 16, (1, 2), 1, (1,), 16, dropout)


SIZES = {"cifar": (FlowMapUNet.cifar10, 32), "tiny": (tiny_unet, 8)}
REFERENCE_MS = {"torchcfm fm (issue, H200)": 57.8, "torchcfm torch.func.jvp meanflow (issue, H200)": 197.9}


class Velocity(nn.Module):
    """The flow map at s = t, the velocity a flow-matching loss trains."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net.velocity(x, t)


class NaiveMeanFlow:
    """MeanFlow as py-meanflow writes it: ``u, du = torch.func.jvp(u_fn, (x, s, t), (v, 1, 0))`` on the whole
    batch, the loss on ``u`` (so the gradient flows back through the JVP's primal), adaptive weight p = 1."""

    def __init__(self, distinct: float):
        self.sampler = TwoTimeSampler(distinct_fraction=distinct)

    def __call__(self, model: nn.Module, batch: dict, generator: torch.Generator | None = None):
        x1 = batch["x1"]
        x0 = torch.randn(x1.shape, device=x1.device, generator=generator)
        s, t = self.sampler.sample(x1.shape[0], device=x1.device, generator=generator)
        shape = (-1, 1, 1, 1)
        x, v = (1 - s).reshape(shape) * x0 + s.reshape(shape) * x1, x1 - x0
        u, du_ds = torch.func.jvp(model, (x, s, t), (v, torch.ones_like(s), torch.zeros_like(t)))
        target = (v + (t - s).reshape(shape) * du_ds).detach()
        per_sample = ((u - target) ** 2).flatten(1).mean(1)
        return (per_sample / (per_sample.detach() + 1e-3)).mean(), {}


class TorchCFMVelocity(nn.Module):
    """torchcfm's ``UNetModel(t, x)`` as ``model(x, t)``."""

    def __init__(self, dropout: float):
        super().__init__()
        from torchcfm.models.unet import UNetModel

        self.net = UNetModel(dim=(3, 32, 32), num_res_blocks=2, num_channels=128, channel_mult=[1, 2, 2, 2],
                             num_heads=4, num_head_channels=64, attention_resolutions="16", dropout=dropout)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(t, x)


@dataclass(frozen=True)
class Variant:
    name: str
    objective: str            # "fm", "meanflow", "imf", "naive-jvp", "torchcfm-fm"
    derivative: str = "jvp"
    distinct: float = 0.75
    dropout: float = 0.0
    bf16: bool = False
    lean: bool = True          # MeanFlowLoss's lean forward-mode rules (flowzoo.core.fewstep.forward_ad)

    def build(self, size: str) -> tuple[nn.Module, Callable]:
        if self.objective == "torchcfm-fm":
            return TorchCFMVelocity(self.dropout), FlowMatchingLoss()
        net = SIZES[size][0](self.dropout)
        if self.objective == "fm":
            return Velocity(net), FlowMatchingLoss()
        if self.objective == "naive-jvp":
            return net, NaiveMeanFlow(self.distinct)
        sampler = TwoTimeSampler(distinct_fraction=self.distinct)
        return net, MeanFlowLoss(time_sampler=sampler, derivative=self.derivative, formulation=self.objective,
                                 lean_forward_ad=self.lean)

    @property
    def baseline(self) -> str:
        return f"fm{' dropout' if self.dropout else ''}{' bf16' if self.bf16 else ''}"


VARIANTS = (
    Variant("fm", "fm"),
    Variant("meanflow jvp, 25% s<t", "meanflow", distinct=0.25),
    Variant("meanflow jvp, 75% s<t", "meanflow", distinct=0.75),
    Variant("meanflow jvp, 75% s<t, generic dual tensors", "meanflow", distinct=0.75, lean=False),
    Variant("meanflow jvp, 100% s<t", "meanflow", distinct=1.0),
    Variant("meanflow fd, 75% s<t", "meanflow", derivative="finite_difference"),
    Variant("imf jvp, 75% s<t", "imf"),
    Variant("fm dropout", "fm", dropout=0.1),
    Variant("meanflow jvp, 75% s<t, dropout 0.1", "meanflow", dropout=0.1),
    Variant("fm bf16", "fm", bf16=True),
    Variant("meanflow jvp, 75% s<t, bf16", "meanflow", bf16=True),
    Variant("naive jvp (torch.func.jvp, gradient through it), 75% s<t", "naive-jvp"),
    Variant("naive jvp, 25% s<t", "naive-jvp", distinct=0.25),
    Variant("fm (again)", "fm"),
    Variant("torchcfm U-Net fm", "torchcfm-fm"),
)


@dataclass
class StepTiming:
    name: str
    baseline: str
    median_ms: float
    spread_ms: float          # interquartile range
    peak_gib: float
    params_m: float
    loss: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variant(variant: Variant, size: str, batch: int, steps: int, warmup: int, device: torch.device,
                 seed: int = 0) -> StepTiming:
    """Median wall time (ms) of ``steps`` whole training steps after ``warmup`` untimed ones."""
    torch.manual_seed(seed)
    model, objective = variant.build(size)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    resolution = SIZES[size][1] if variant.objective != "torchcfm-fm" else 32
    generator = torch.Generator(device).manual_seed(seed)
    images = torch.rand(4, batch, 3, resolution, resolution, device=device, generator=generator) * 2 - 1
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if variant.bf16
                else contextlib.nullcontext())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, loss = [], torch.zeros(())
    for step in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss, _ = objective(model, {"x1": images[step % 4]}, generator=generator)
        loss.backward()
        optimizer.step()
        _sync(device)
        if step >= warmup:
            times.append(1000.0 * (time.perf_counter() - start))
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return StepTiming(variant.name, variant.baseline, statistics.median(times), quartiles[2] - quartiles[0], peak,
                      sum(p.numel() for p in model.parameters()) / 1e6, float(loss.detach()))


def target_agreement(size: str, batch: int, device: torch.device, seed: int = 0) -> dict[str, float]:
    """Relative differences of MeanFlow targets on one batch (float32, TF32 off): lean vs generic forward-mode
    AD (equal up to rounding), and the finite difference (step 5e-3) vs the JVP (its truncation error)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        torch.manual_seed(seed)
        net = SIZES[size][0]().to(device).eval()
        resolution = SIZES[size][1]
        x = torch.randn(batch, 3, resolution, resolution, device=device)
        v = torch.randn_like(x)
        s = torch.rand(batch, device=device) * 0.8
        t = s + 0.2 * torch.rand(batch, device=device)
        lean = MeanFlowLoss().target(net, x, s, t, v)
        generic = MeanFlowLoss(lean_forward_ad=False).target(net, x, s, t, v)
        finite = MeanFlowLoss(derivative="finite_difference").target(net, x, s, t, v)
        return {"lean_vs_generic": float((lean - generic).norm() / generic.norm()),
                "fd_vs_jvp": float((finite - generic).norm() / generic.norm())}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def format_table(rows: list[StepTiming]) -> str:
    by_name = {r.name: r for r in rows}
    lines = ["| step | params (M) | median ms | IQR ms | ratio to its FM step | peak GiB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        base = by_name.get(r.baseline)
        ratio = f"{r.median_ms / base.median_ms:.2f}x" if base is not None and base is not r else "1 (baseline)"
        if r.name.startswith("torchcfm"):
            ratio = f"{r.median_ms / by_name['fm'].median_ms:.2f}x of our U-Net's FM step" if "fm" in by_name else "-"
        lines.append(f"| {r.name} | {r.params_m:.1f} | {r.median_ms:.1f} | {r.spread_ms:.1f} | {ratio} | "
                     f"{r.peak_gib:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="cifar")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    variants = [v for v in VARIANTS if v.objective != "torchcfm-fm" or args.size == "cifar"]
    try:
        import torchcfm.models.unet  # noqa: F401
    except ImportError:
        variants = [v for v in variants if v.objective != "torchcfm-fm"]
        print("torchcfm not importable: its U-Net row is skipped (pip install --no-deps torchcfm==1.0.7 POT)")
    if device.type == "cpu":
        variants = [v for v in variants if not v.bf16]
    started = time.perf_counter()
    rows = []
    for variant in variants:
        rows.append(time_variant(variant, args.size, args.batch, args.steps, args.warmup, device))
        print(f"{variant.name}: {rows[-1].median_ms:.1f} ms", file=sys.stderr, flush=True)
    agreement = target_agreement(args.size, min(args.batch, 32), device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    title = (f"One training step (objective + backward + AdamW), batch {args.batch} of 3x{SIZES[args.size][1]}^2, "
             f"{args.size} U-Net; median of {args.steps} steps after {args.warmup} warm-up steps")
    print(f"\n{title}, on {name}, torch {torch.__version__}; TF32 for cuDNN convolutions as torch's default "
          f"({torch.backends.cudnn.allow_tf32}), matmul TF32 {torch.backends.cuda.matmul.allow_tf32}.\n")
    print(format_table(rows))
    agreement_note = (f"MeanFlow targets, float32, TF32 off: lean vs generic forward mode "
                      f"{agreement['lean_vs_generic']:.1e}, finite difference (5e-3) vs JVP "
                      f"{agreement['fd_vs_jvp']:.1e} (relative)")
    print(f"\n{agreement_note}")
    save_table("meanflow_unet_step", [asdict(r) for r in rows], title=title,
               command=reproduce_command("benchmarks.meanflow_unet_step", argv), quick=args.size != "cifar",
               device=device, notes=[agreement_note, f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}, matmul TF32 "
                                     f"{torch.backends.cuda.matmul.allow_tf32}"])
    print("Issue 3's reference (torchcfm U-Net, H200): FM 57.8 ms, torch.func.jvp MeanFlow 197.9 ms (3.4x); "
          "target <= 1.5x.")
    print(f"Total {time.perf_counter() - started:.0f} s.")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "rows": [asdict(r) for r in rows],
                                         "agreement": agreement}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
