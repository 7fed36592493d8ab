"""Blockwise Flow Matching (BFM, arXiv 2510.21167) against one monolithic network on class-conditional MNIST.

Every contender is a :class:`flowzoo.vision.blockwise_nets.BlockwiseVelocity` with the same token width, patch
and heads, trained from the same seed for the same number of steps and batch size:

* ``monolithic``: one segment, one block of ``DEPTH`` layers (plain flow matching: with K = 1 the BFM loss is
  :class:`flowzoo.core.objectives.FlowMatchingLoss` draw for draw);
* ``bfm_k2`` / ``bfm_k4``: K = 2 / 4 segments with blocks of ``DEPTH / K`` layers (together the monolithic
  net's parameters; one block runs per evaluation);
* ``..._sfg``: plus semantic feature guidance, a ``FEATURE_DEPTH``-layer alignment network predicting the
  penultimate features of a feature classifier trained in-repo on the data (cached; the paper uses DINOv2) and
  conditioning the blocks, with the alignment loss weighted by ``FEATURE_WEIGHT``;
* ``..._sfg_fra``: the same trained net sampled with the feature residual approximation, after a second stage
  that trains the ``RESIDUAL_DEPTH``-layer residual network alone.

Samples come from :func:`flowzoo.vision.blockwise.blockwise_sample` (Euler, the steps shared evenly over the
segments) and are scored by :class:`flowzoo.vision.features.ImageEvaluator` (the data set's cached feature
classifier, a different network from the guidance one: trained for another number of epochs): Fréchet distance
(``fd``), KID and the classifier accuracy of the requested labels. ``gflops_per_sample`` is the cost of
generating one image (every evaluation of the run) counted by :func:`flowzoo.vision.blockwise.flops_per_sample`;
``ms_per_sample`` the wall time of sampling divided by the samples, ``train_ms_per_step`` the mean wall time of
a training step, all on the CPU with one thread. The note of a BFM row says whether the claim "BFM matches the
monolithic FD at <= 0.7x its FLOPs per sample" holds for it, "matches" meaning an FD at most 10 % above; when
the monolithic samples are not recognisably digits (class accuracy below 0.5, as after the quick mode's few
steps) the note says the claim was not tested.

    python -m benchmarks.vision_bfm            # the full run
    python -m benchmarks.vision_bfm --quick    # a few minutes: fewer steps, samples and variants
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch

from flowzoo.vision.blockwise import BlockwiseFlowMatchingLoss, FeatureResidualLoss, blockwise_sample, flops_per_sample
from flowzoo.vision.blockwise_nets import BlockwiseVelocity
from flowzoo.vision.datasets import ImageBatchSampler, load_images
from flowzoo.vision.features import ImageEvaluator, load_feature_classifier

__all__ = ["Variant", "VARIANTS", "QUICK_VARIANTS", "SETTINGS", "build_net", "rows", "format_table", "main"]

HIDDEN, HEADS, DEPTH, FEATURE_DEPTH, RESIDUAL_DEPTH = 32, 2, 8, 2, 1
FEATURE_WEIGHT, LEARNING_RATE, GUIDANCE_EPOCHS = 0.5, 1e-3, 4
CLAIM_FLOPS, CLAIM_FD, MIN_ACCURACY = 0.7, 1.1, 0.5
COLUMNS = ["section", "data", "method", "baseline", "nfe", "fd", "kid", "accuracy", "ms_per_sample",
           "train_ms_per_step", "gflops_per_sample", "params", "note"]


@dataclass(frozen=True)
class Variant:
    """One contender: segments K, layers per block, feature guidance, residual approximation at sampling."""

    segments: int
    block_depth: int
    guided: bool = False
    residual: bool = False

    @property
    def trained_as(self) -> str:
        """The variant whose trained weights this one samples with (the residual rows reuse the guided net)."""
        base = f"bfm_k{self.segments}" if self.segments > 1 else "monolithic"
        return base + ("_sfg" if self.guided else "")


VARIANTS = {
    "monolithic": Variant(1, DEPTH),
    "bfm_k2": Variant(2, DEPTH // 2),
    "bfm_k4": Variant(4, DEPTH // 4),
    "bfm_k2_sfg": Variant(2, DEPTH // 2, guided=True),
    "bfm_k2_sfg_fra": Variant(2, DEPTH // 2, guided=True, residual=True),
    "bfm_k4_sfg": Variant(4, DEPTH // 4, guided=True),
    "bfm_k4_sfg_fra": Variant(4, DEPTH // 4, guided=True, residual=True),
}
QUICK_VARIANTS = ("monolithic", "bfm_k4", "bfm_k4_sfg", "bfm_k4_sfg_fra")
# train steps, batch, residual-network steps, samples scored, sampling steps
SETTINGS = {True: (150, 32, 40, 500, 8), False: (2000, 64, 300, 2000, 20)}


def build_net(name: str, shape: tuple[int, int, int], num_classes: int, feature_dim: int) -> BlockwiseVelocity:
    """The network of variant ``name`` for images of ``shape`` (C, H, W) and ``feature_dim`` guidance features."""
    variant, (channels, side, _) = VARIANTS[name], shape
    patch = 4 if side % 4 == 0 and side >= 16 else 2
    guided = {"feature_dim": feature_dim, "feature_depth": FEATURE_DEPTH, "residual_depth": RESIDUAL_DEPTH}
    return BlockwiseVelocity(channels, side, patch=patch, hidden=HIDDEN, heads=HEADS, segments=variant.segments,
                             block_depth=variant.block_depth, num_classes=num_classes,
                             **(guided if variant.guided else {}))


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


def _fit(net, objective, sampler, steps: int, seed: int, parameters, desc: str) -> float:
    """Train ``parameters`` of ``net`` for ``steps``; returns the mean wall time of a step in ms."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(parameters, lr=LEARNING_RATE, weight_decay=0.0)
    net.train()
    bar, start = _progress(steps, desc), time.perf_counter()
    for _ in range(steps):
        loss, metrics = objective(net, sampler(gen), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        opt.step()
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", refresh=False)
        bar.update(1)
    bar.close()
    return 1000 * (time.perf_counter() - start) / steps


def _generate(net, n: int, steps: int, num_classes: int, residual: bool, seed: int):
    gen = torch.Generator().manual_seed(seed + 1)
    labels = torch.arange(n) % num_classes
    noise = torch.randn((n, net.in_channels, net.image_size, net.image_size), generator=gen)
    net.eval()
    start, images, nfe = time.perf_counter(), [], 0
    for s in range(0, n, 250):
        result = blockwise_sample(net, noise[s:s + 250], steps=steps, cond={"y": labels[s:s + 250]},
                                  residual=residual)
        images.append(result.x)
        nfe = result.nfe
    return torch.cat(images), labels, nfe, 1000 * (time.perf_counter() - start) / n


def rows(data: str = "mnist", quick: bool = True, seed: int = 0, *, variants: tuple[str, ...] | None = None,
         settings: tuple[int, int, int, int, int] | None = None, samples: dict | None = None) -> list[dict]:
    """Train and score every variant (``QUICK_VARIANTS`` when ``quick``); one row per variant, monolithic first.

    ``settings`` overrides :data:`SETTINGS` (train steps, batch, residual steps, samples, sampling steps), for tests;
    ``samples`` (a dict), when given, receives each row's first 8 images under its ``"<data> <method>"``.
    """
    torch.manual_seed(seed)
    steps, batch, residual_steps, n, sample_steps = settings or SETTINGS[bool(quick)]
    names = variants or (QUICK_VARIANTS if quick else tuple(VARIANTS))
    train = load_images(data, split="train", seed=seed)
    evaluator = ImageEvaluator.for_dataset(data, verbose=False)
    guide, _ = load_feature_classifier(data, epochs=GUIDANCE_EPOCHS, verbose=False)
    guide.requires_grad_(False)
    sampler = ImageBatchSampler(train, batch_size=batch)
    trained: dict[str, tuple[BlockwiseVelocity, float]] = {}
    out = []
    for name in names:
        variant = VARIANTS[name]
        if variant.trained_as not in trained:
            torch.manual_seed(seed)
            net = build_net(variant.trained_as, train.shape, train.num_classes, guide.feature_dim)
            objective = BlockwiseFlowMatchingLoss(representation=guide.features if variant.guided else None,
                                                  feature_weight=FEATURE_WEIGHT)
            ms = _fit(net, objective, sampler, steps, seed, list(net.parameters()), variant.trained_as)
            trained[variant.trained_as] = (net, ms)
        net, ms = trained[variant.trained_as]
        if variant.residual and not getattr(net, "residual_trained", False):
            _fit(net, FeatureResidualLoss(), sampler, residual_steps, seed, net.residual_parameters(), name)
            net.residual_trained = True
        images, labels, nfe, ms_sample = _generate(net, n, sample_steps, train.num_classes, variant.residual, seed)
        if samples is not None:
            samples[f"{data} {name}"] = images[:8].clone()
        cond = {"y": torch.zeros(1, dtype=torch.long)}
        flops = flops_per_sample(net, train.shape, cond=cond, steps=sample_steps, residual=variant.residual) * nfe
        out.append({"section": "blockwise", "data": data, "method": name,
                    "baseline": "" if name == "monolithic" else "monolithic", "nfe": nfe,
                    "fd": evaluator.fd(images), "kid": evaluator.kid(images, subset_size=min(1000, n)),
                    "accuracy": evaluator.class_accuracy(images, labels), "ms_per_sample": ms_sample,
                    "train_ms_per_step": ms, "gflops_per_sample": flops / 1e9,
                    "params": sum(p.numel() for p in net.parameters()), "note": ""})
    _add_notes(out)
    return out


def _add_notes(table: list[dict]) -> None:
    mono = next((r for r in table if r["method"] == "monolithic"), None)
    if mono is None:
        return
    mono["note"] = f"{DEPTH} layers, {mono['nfe']} Euler steps"
    # Samples the classifier cannot tell apart from noise make FD ratios meaningless: say so rather than judge.
    untrained = mono["accuracy"] < MIN_ACCURACY
    for row in table:
        if row is mono:
            continue
        ratio, fd_ratio = row["gflops_per_sample"] / mono["gflops_per_sample"], row["fd"] / mono["fd"]
        holds = ratio <= CLAIM_FLOPS and fd_ratio <= CLAIM_FD
        verdict = ("not tested: the monolithic net is undertrained (class accuracy "
                   f"{mono['accuracy']:.2f} < {MIN_ACCURACY}); train longer (--steps)" if untrained
                   else f"claim {'holds' if holds else 'does not hold'}")
        row["note"] = f"{ratio:.2f}x FLOPs, {fd_ratio:.2f}x FD of monolithic: {verdict}"


def format_table(table: list[dict]) -> str:
    """The rows as a Markdown table."""
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |" for row in table]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vision_bfm", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="mnist", help="data spec for load_images (default mnist)")
    parser.add_argument("--quick", action="store_true", help="fewer steps, samples and variants (a few minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per net (default: the setting's)")
    parser.add_argument("--variants", default=None, help=f"comma-separated subset of {', '.join(VARIANTS)} "
                                                         "(default: all; --quick: the quick ones)")
    parser.add_argument("--save", action="store_true", help="save the table as benchmarks/results/vision_bfm")
    args = parser.parse_args(argv)
    variants = tuple(v.strip() for v in args.variants.split(",")) if args.variants else None
    if variants and (set(variants) - set(VARIANTS) or "monolithic" not in variants):
        parser.error(f"--variants from {sorted(VARIANTS)}, monolithic included (it is every row's baseline)")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    settings = SETTINGS[bool(args.quick)]
    settings = (args.steps or settings[0], *settings[1:])
    torch.set_num_threads(args.threads)
    table = rows(args.data, quick=args.quick, seed=args.seed, variants=variants, settings=settings)
    print(format_table(table))
    if args.save:
        from benchmarks.results import reproduce_command, save_table

        save_table("vision_bfm", table, title=__doc__.strip().splitlines()[0], quick=args.quick,
                   command=reproduce_command("benchmarks.vision_bfm", argv),
                   notes=[f"{settings[0]} training steps per net at batch {settings[1]}, width {HIDDEN}, {DEPTH} layers in "
                          f"all; {settings[3]} samples per row at {settings[4]} Euler steps; one CPU thread"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
