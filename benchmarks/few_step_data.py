"""Datasets, evaluation timing and the markdown table of ``benchmarks/few_step.py``.

Checkerboard (N(0, I) -> checkerboard) and moons (8 Gaussians -> moons) are scored by W2 (exact EMD, POT)
against a fixed reference sample; digits (N(0, I) -> scikit-learn's 8x8 digits in [-1, 1]) by a Fréchet
distance on a small classifier's features (:mod:`flowzoo.vision.vector_features`). Each dataset also carries its
noise floor: the metric of fresh real data against the same reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from flowzoo.core.data import sample_toy
from flowzoo.core.analysis import wasserstein2

__all__ = ["DATASETS", "DEFAULT_STEPS", "Dataset", "make_dataset", "interleaved_min_times", "table"]

DATASETS = ("checkerboard", "moons", "digits")
# (steps of the methods trained from scratch, steps of the fine-tunes from the FM teacher). Moons gets twice the
# from-scratch steps and a wider MLP (3x512, every method alike): its one-step map splits 8 blobs onto two thin
# moons, and SplitMeanFlow's 1-NFE W2 went 0.430 (3x256, 6000 steps) -> 0.380 (3x512, 6000) -> 0.313 (3x512,
# 12000; mean of 3 evaluation draws, FM Euler-100 0.253), while FM itself is at the noise floor by 6000 steps.
DEFAULT_STEPS = {"checkerboard": (6000, 6000), "moons": (12000, 6000), "digits": (3000, 3000)}


@dataclass
class Dataset:
    name: str
    title: str
    dim: int
    hidden: int
    depth: int
    refiner_hidden: int
    source: Callable[[int, torch.Generator], torch.Tensor]
    target: Callable[[int, torch.Generator], torch.Tensor]
    metric: str                                  # column name of the quality figure
    evaluate: Callable[[torch.Tensor], dict] = None
    floor: dict = field(default_factory=dict)    # the metric of real data against the reference
    floor_note: str = ""


def make_dataset(name: str, args) -> Dataset:
    if name in ("checkerboard", "moons"):
        src = "normal" if name == "checkerboard" else "8gaussians"
        title = "N(0, I) -> checkerboard" if name == "checkerboard" else "8 Gaussians -> moons"
        ds = Dataset(name, title, 2, 256 if name == "checkerboard" else 512, 3, 64,
                     source=lambda n, g: sample_toy(src, n, generator=g),
                     target=lambda n, g: sample_toy(name, n, generator=g), metric="W2")
        reference = sample_toy(name, args.eval_samples, seed=4321)
        ds.evaluate = lambda x: {"W2": wasserstein2(x, reference)}
        ds.floor = ds.evaluate(sample_toy(name, args.eval_samples, seed=999))
        ds.floor_note = "fresh data: the metric's noise floor"
        return ds
    from flowzoo.vision.vector_features import VectorEvaluator, load_digits_vectors

    data, _ = load_digits_vectors()
    evaluator = VectorEvaluator.digits()
    ds = Dataset(name, "N(0, I) -> 8x8 digits (64-D, [-1, 1])", 64, 512, 4, 128,
                 source=lambda n, g: torch.randn(n, 64, generator=g),
                 target=lambda n, g: data[torch.randint(0, len(data), (n,), generator=g)], metric="FD")
    ds.evaluate = lambda x: {"FD": evaluator.fd(x), "label KL": evaluator.label_kl(x)}
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(999))[:args.eval_samples]
    ds.floor = ds.evaluate(data[pick])
    ds.floor_note = f"{args.eval_samples} real digits (a subset of the reference: optimistic floor)"
    print(f"  digits classifier: test accuracy {evaluator.accuracy:.3f}", flush=True)
    return ds


def interleaved_min_times(fns: list[Callable], reps: int) -> tuple[list[float], list[object]]:
    best, outs = [float("inf")] * len(fns), [None] * len(fns)
    for _ in range(reps):
        for k, fn in enumerate(fns):
            started = time.perf_counter()
            with torch.no_grad():
                outs[k] = fn()
            best[k] = min(best[k], time.perf_counter() - started)
    return best, outs


def _fmt(value) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-2 <= abs(value) < 1e4:
            return f"{value:.3f}"
        return f"{value:.3g}"
    return str(value)


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    cells = [keys] + [[_fmt(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) if i in (0, 1, len(keys) - 1) else c[i].rjust(widths[i])
                               for i in range(len(keys))) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)

