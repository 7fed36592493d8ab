r"""A "digits-FID" for scikit-learn's 8×8 digits: Fréchet distance on a small classifier's features.

FID (Heusel et al., arXiv 1706.08500, eq. 6) compares two sets by the Fréchet (2-Wasserstein) distance
between Gaussians fitted to their features,

.. math::
    d^2 = \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\big(\Sigma_1 + \Sigma_2 - 2(\Sigma_1 \Sigma_2)^{1/2}\big).

Inception is far too big for 64-pixel digits, so the features here are the penultimate layer (64 units)
of an MLP trained once on ``sklearn.datasets.load_digits`` (≥ 97 % held-out accuracy is asserted) and
cached under ``benchmarks/.cache/`` (git-ignored). The digits are scaled to [−1, 1] (pixel / 8 − 1), the
range the generative models work in; generated samples are clamped to that range before featurising, as
image FID clamps to valid pixels.

Besides the distance, :meth:`DigitsEvaluator.label_kl` gives KL(predicted-label histogram ‖ uniform), a
mode-coverage check (0 when all ten digits are produced equally often, log 10 ≈ 2.30 for one digit).

Example (trains the classifier on first use, about 10 s):
    >>> evaluator = DigitsEvaluator.load()                        # doctest: +SKIP
    >>> x, _ = load_digits_scaled()                               # doctest: +SKIP
    >>> evaluator.fd(x[:900]) < 5.0                               # doctest: +SKIP
    True
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.results import reproduce_command, save_table
from flowzoo.vision.metrics import feature_statistics, frechet_distance

__all__ = ["load_digits_scaled", "DigitClassifier", "train_classifier", "load_classifier",
           "DigitsEvaluator", "CACHE_DIR"]

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
_ARCH = {"hidden": 256, "features": 64, "epochs": 150, "version": 1}
MIN_TEST_ACCURACY = 0.97


def load_digits_scaled() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as a float32 (1797, 64) tensor in [−1, 1] and their int64 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - sklearn is a benchmark-only dependency
        raise SystemExit(f"scikit-learn is needed for the digits benchmark ({err}): pip install scikit-learn")
    data = load_digits()
    x = torch.as_tensor(data.data, dtype=torch.float32) / 8.0 - 1.0
    return x, torch.as_tensor(data.target, dtype=torch.long)


class DigitClassifier(nn.Module):
    """64 → hidden → features → 10 MLP; :meth:`features` returns the penultimate activations."""

    def __init__(self, hidden: int = _ARCH["hidden"], features: int = _ARCH["features"]):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.SiLU(), nn.Dropout(0.2),
                                  nn.Linear(hidden, features), nn.SiLU())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(features, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(x.shape[0], 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = n // 5
    return perm[n_test:], perm[:n_test]


def train_classifier(seed: int = 0, epochs: int = _ARCH["epochs"]) -> tuple[DigitClassifier, float]:
    """Train the feature classifier on 80 % of the digits; return it (eval mode) and its test accuracy.

    Small Gaussian input noise (σ = 0.1) regularises it, and makes the features tolerant of the slight
    blur that generated digits show.
    """
    x, y = load_digits_scaled()
    train, test = _split(len(x), seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        model.train()
        order = train[torch.randperm(len(train), generator=gen)]
        for start in range(0, len(order), 128):
            idx = order[start:start + 128]
            xb = x[idx] + 0.1 * torch.randn(len(idx), 64, generator=gen)
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x[test]).argmax(1) == y[test]).float().mean())
    return model, accuracy


def load_classifier(cache_dir: Path | str = CACHE_DIR, seed: int = 0,
                    verbose: bool = True) -> tuple[DigitClassifier, float]:
    """The cached classifier (trained and saved on first use) and its held-out accuracy."""
    from safetensors.torch import load_file, save_file

    cache_dir = Path(cache_dir)
    tag = f"digits_classifier_h{_ARCH['hidden']}_f{_ARCH['features']}_e{_ARCH['epochs']}_v{_ARCH['version']}_s{seed}"
    weights, meta = cache_dir / f"{tag}.safetensors", cache_dir / f"{tag}.json"
    model = DigitClassifier()
    if weights.exists() and meta.exists():
        model.load_state_dict(load_file(str(weights)))
        return model.eval(), float(json.loads(meta.read_text())["test_accuracy"])
    if verbose:
        print("  training the digits feature classifier (once; cached in benchmarks/.cache/)", flush=True)
    model, accuracy = train_classifier(seed)
    if accuracy < MIN_TEST_ACCURACY:
        raise RuntimeError(f"digit classifier reached {accuracy:.3f} test accuracy, below {MIN_TEST_ACCURACY}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    meta.write_text(json.dumps({"test_accuracy": accuracy, **_ARCH, "seed": seed}))
    return model, accuracy


class DigitsEvaluator:
    """Featurise samples with the cached classifier and compare them with the real digits."""

    def __init__(self, classifier: DigitClassifier, reference: torch.Tensor, accuracy: float = float("nan")):
        self.classifier = classifier.eval()
        self.accuracy = accuracy
        self.mu, self.sigma = feature_statistics(self._features(reference))

    @classmethod
    def load(cls, cache_dir: Path | str = CACHE_DIR, verbose: bool = True) -> "DigitsEvaluator":
        """Evaluator against all 1797 real digits, with the cached (or freshly trained) classifier."""
        classifier, accuracy = load_classifier(cache_dir, verbose=verbose)
        x, _ = load_digits_scaled()
        return cls(classifier, x, accuracy)

    @torch.no_grad()
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x.reshape(x.shape[0], 64).float().clamp(-1.0, 1.0))

    def fd(self, samples: torch.Tensor) -> float:
        """Fréchet distance of ``samples`` (n, 64) to the real digits in feature space."""
        return frechet_distance(*feature_statistics(self._features(samples)), self.mu, self.sigma)

    @torch.no_grad()
    def label_kl(self, samples: torch.Tensor) -> float:
        """KL(histogram of predicted labels ‖ uniform over 10 digits); 0 = every digit equally often."""
        labels = self.classifier(samples.reshape(samples.shape[0], 64).float().clamp(-1.0, 1.0)).argmax(1)
        p = torch.bincount(labels, minlength=10).double() / len(labels)
        p = p[p > 0]
        return float((p * (p * 10).log()).sum())


def main(argv: list[str] | None = None) -> int:
    """Print (and save) the classifier's accuracy and reference distances: real vs real, noise vs real."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="where the classifier is cached")
    args = parser.parse_args(argv)
    ev = DigitsEvaluator.load(args.cache_dir)
    x, _ = load_digits_scaled()
    train, test = _split(len(x), 1)
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
