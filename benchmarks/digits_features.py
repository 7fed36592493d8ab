"""The digits-FID's reference points: the 8×8 digits classifier's accuracy and the distances it gives known sets.

The classifier and the evaluator are the library's (:mod:`flowzoo.vision.vector_features`: a Fréchet distance on
the penultimate features of a small classifier trained once on scikit-learn's digits as 64-vectors in [−1, 1],
cached under ``flowzoo.vision.features.default_cache_dir()``). This command prints and saves what a reader needs
to judge a digits FD: the classifier's held-out accuracy, FD of a held-out fifth of the real digits against all
of them (the floor), FD of N(0, I) noise (the ceiling), and the label KL of the real digits.

    .venv/bin/python -m benchmarks.digits_features
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from benchmarks.results import reproduce_command, save_table
from flowzoo.vision.metrics import frechet_distance
from flowzoo.vision.vector_features import VectorEvaluator, holdout_split, load_digits_vectors

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Print (and save) the classifier's accuracy and reference distances: real vs real, noise vs real."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the classifier is cached (default: flowzoo.vision.features.default_cache_dir())")
    args = parser.parse_args(argv)
    ev = VectorEvaluator.digits(cache_dir=args.cache_dir)
    x, _ = load_digits_vectors()
    _, test = holdout_split(len(x), 1)
    row = {"classifier test accuracy": ev.accuracy, "FD(real 20% vs all)": ev.fd(x[test]),
           "FD(N(0,I) noise)": ev.fd(torch.randn(1000, 64)), "label KL(real)": ev.label_kl(x),
           "math check": math.isclose(frechet_distance(np.zeros(1), np.eye(1), np.zeros(1), np.eye(1)), 0.0)}
    print(f"classifier test accuracy {row['classifier test accuracy']:.4f}; FD(real 20% vs all) "
          f"{row['FD(real 20% vs all)']:.3f}; FD(N(0,I) noise) {row['FD(N(0,I) noise)']:.2f}; label KL(real) "
          f"{row['label KL(real)']:.4f}; math check {row['math check']}")
    save_table("digits_features", [row], title="The digits-FID's reference points (sklearn 8x8 digits)",
               command=reproduce_command("benchmarks.digits_features", argv), quick=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
