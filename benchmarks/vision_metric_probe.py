"""Does the image FD rank real images above degraded ones? A sanity check of each data set's evaluator.

An FD on a small in-repo classifier's features (:class:`flowzoo.vision.features.ImageEvaluator`) is only worth
reporting if real images of the distribution a generator learns score better than the same images degraded. This
benchmark featurises, per data set and per reference set (``ImageEvaluator.for_dataset(reference=...)``):

* the first 500 training images; three more real draws of 500 from the training distribution (MNIST: the next
  slices of the training split; ``patches``: fresh crops of the training region, seeds 2–4), whose spread is
  the FD's sampling noise at this size; for ``patches`` also 500 crops of the test region (the right-most 20 % of
  each photograph, :func:`flowzoo.vision.datasets.load_images`);
* the training images with Gaussian noise of std 0.1, 0.3 and 1.0 (clamped to [−1, 1]), blurred (4×4 average
  pooling, then nearest enlargement), and replaced by their own mean colour plus noise of std 0.5;
* pure Gaussian noise (clamped).

The note of each reference says whether the ranking holds, FD(training images) < FD(noise 0.3) < FD(noise 1.0)
< FD(pure noise), and gives the spread of the real draws: a difference smaller than that spread is noise. On ``patches`` it fails against the test split (a region of the photographs
no training crop comes from), which is why :mod:`benchmarks.vision` scores patch generation against the training
region (``reference="train"``); restorations of test images are still scored against the test split.

    python -m benchmarks.vision_metric_probe      # about a minute on one core (classifiers cached)
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from flowzoo.vision.datasets import load_images
from flowzoo.vision.features import ImageEvaluator

from benchmarks.results import reproduce_command, save_table

COLUMNS = ("data", "reference", "probe", "fd", "kid")
PROBE_SIZE = 500


def probes(data: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The image sets of the module docstring, by name."""
    train = load_images(data, split="train").images[:PROBE_SIZE]
    gen = torch.Generator().manual_seed(seed)

    def noisy(std: float) -> torch.Tensor:
        return (train + std * torch.randn(train.shape, generator=gen)).clamp(-1, 1)

    sets = {"training images": train}
    for draw in (1, 2, 3):
        sets[f"real draw {draw}"] = (
            load_images(data, split="train", seed=draw + 1, count=PROBE_SIZE).images if data == "patches"
            else load_images(data, split="train").images[draw * PROBE_SIZE:(draw + 1) * PROBE_SIZE])
    if data == "patches":
        sets["test-region crops"] = load_images(data, split="test").images[:PROBE_SIZE]
    sets.update({"training + noise 0.1": noisy(0.1), "training + noise 0.3": noisy(0.3),
                 "training + noise 1.0": noisy(1.0),
                 "training blurred (4x4 pool)": F.interpolate(F.avg_pool2d(train, 4), size=train.shape[-2:]),
                 "mean colour + noise 0.5": (train.mean((2, 3), keepdim=True)
                                             + 0.5 * torch.randn(train.shape, generator=gen)).clamp(-1, 1),
                 "pure noise": torch.randn(train.shape, generator=gen).clamp(-1, 1)})
    return sets


def ranking_holds(fds: dict[str, float]) -> bool:
    """Real < noise 0.3 < noise 1.0 < pure noise."""
    chain = ("training images", "training + noise 0.3", "training + noise 1.0", "pure noise")
    return all(fds[a] < fds[b] for a, b in zip(chain, chain[1:]))


def rows(datasets: tuple[str, ...] = ("mnist", "patches"), seed: int = 0) -> tuple[list[dict], list[str]]:
    """One row per data set, reference and probe; notes with the ranking verdict per reference."""
    table, notes = [], []
    for data in datasets:
        sets = probes(data, seed)
        for reference in ("test", "train"):
            evaluator = ImageEvaluator.for_dataset(data, verbose=False, reference=reference)
            fds = {}
            for name, images in sets.items():
                fds[name] = evaluator.fd(images)
                table.append({"data": data, "reference": reference, "probe": name, "fd": fds[name],
                              "kid": evaluator.kid(images, subsets=20)})
            verdict = "holds" if ranking_holds(fds) else "fails"
            real = [fds[name] for name in fds if name == "training images" or name.startswith("real draw")]
            notes.append(f"{data}, reference {reference}: ranking real < noise 0.3 < noise 1.0 < pure noise {verdict} "
                         f"(FD {fds['training images']:.1f} < {fds['training + noise 0.3']:.1f} < "
                         f"{fds['training + noise 1.0']:.1f} < {fds['pure noise']:.1f}); four real draws of "
                         f"{PROBE_SIZE}: FD {min(real):.1f} to {max(real):.1f}")
    return table, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mnist,patches", help="comma-separated bundled data sets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-save", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table, notes = rows(tuple(d.strip() for d in args.datasets.split(",") if d.strip()), args.seed)
    for row in table:
        print(f"{row['data']:8s} {row['reference']:5s} {row['probe']:30s} FD {row['fd']:9.2f}  KID {row['kid']:8.3f}")
    print("\n".join(notes))
    if not args.no_save:
        save_table("vision_metric_probe", table, columns=COLUMNS, title=__doc__.splitlines()[0],
                   command=reproduce_command("benchmarks.vision_metric_probe", argv), quick=False, notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
