r"""Feature classifier and evaluator for flat (vector) data: scikit-learn's 8×8 digits as 64-vectors.

FID (Heusel et al., arXiv 1706.08500, eq. 6) compares two sets by the Fréchet distance between Gaussians fitted
to their features, :math:`d^2 = \|\mu_1-\mu_2\|^2 + \operatorname{tr}(\Sigma_1+\Sigma_2-2(\Sigma_1\Sigma_2)^{1/2})`.
Inception is far too big for 64-pixel vectors, so this "digits-FID" uses the penultimate layer of a
:class:`~flowzoo.vision.features.FeatureClassifier` (its MLP mode: D → 256 → 64 → classes, for D ≤ 256) trained
once on the data and cached. Generative models on vectors are scored with :class:`VectorEvaluator`, an
:class:`~flowzoo.vision.features.ImageEvaluator` that also takes (N, D) rows and adds the mode-coverage check
:meth:`VectorEvaluator.label_kl`, KL(predicted-label histogram ‖ uniform): 0 when every class is produced
equally often, log K for a single class.

The network is the library's, but the recipe differs from
:func:`~flowzoo.vision.features.train_feature_classifier`: 150 epochs of AdamW with cosine decay on a seeded
80/20 split, Gaussian input noise σ = 0.1 (tolerance of the slight blur of generated samples; the noisy rows are
not clamped in training, only samples at evaluation). It is the recipe the recorded few-step and RAAG digit
tables were measured with, kept so that a retrained classifier is the same function. The digits are scaled as
pixel/8 − 1 (exact, 17 levels), not through the uint8 images of :func:`~flowzoo.vision.datasets.load_images`.
The cache (safetensors + JSON under :func:`~flowzoo.vision.features.default_cache_dir`) is keyed by a hash of
the data and labels, the shape, seed, epochs, :data:`~flowzoo.vision.features.FEATURE_VERSION` (the network)
and :data:`VECTOR_RECIPE_VERSION`. Samples are clamped to [−1, 1] before featurising, as image FID clamps to
valid pixels. No time convention is involved: samples are whatever a sampler returned at t = 1 (data).

Example:
    >>> _ = torch.manual_seed(0)
    >>> net = FeatureClassifier((1, 8, 8), num_classes=10)          # untrained: the shapes only
    >>> x, y = load_digits_vectors()
    >>> evaluator = VectorEvaluator(net, x)
    >>> evaluator.fd(x) < 1e-6, evaluator.features(x[:5]).shape, round(evaluator.label_kl(x[y == 3]), 3) > 0
    (True, torch.Size([5, 64]), True)
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, MissingDependencyError, ShapeError, TrainingDivergedError, expected
from flowzoo.core.validation import check_int, check_nonnegative, check_positive_int, check_probability, check_tensor
from flowzoo.vision.features import FEATURE_VERSION, FeatureClassifier, ImageEvaluator, default_cache_dir

__all__ = ["load_digits_vectors", "holdout_split", "train_vector_classifier", "load_vector_classifier",
           "VectorEvaluator", "VECTOR_RECIPE_VERSION", "DIGITS_SHAPE", "DIGITS_MIN_ACCURACY"]

VECTOR_RECIPE_VERSION = 1  # bump when train_vector_classifier's recipe changes: it is part of the cache key
DIGITS_SHAPE = (1, 8, 8)
DIGITS_MIN_ACCURACY = 0.97
MLP_MAX_DIM = 256  # FeatureClassifier builds its MLP up to this many inputs


def load_digits_vectors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 scikit-learn digits as float32 (1797, 64) rows in [−1, 1] (pixel / 8 − 1) and int64 labels.

    Example:
        >>> x, y = load_digits_vectors()
        >>> tuple(x.shape), float(x.min()), float(x.max()), int(y.max())
        ((1797, 64), -1.0, 1.0, 9)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise MissingDependencyError(expected("the package scikit-learn", f"ImportError: {err}",
                                              "pip install scikit-learn (or flowzoo[vision])")) from err
    data = load_digits()
    return torch.as_tensor(data.data, dtype=torch.float32) / 8.0 - 1.0, torch.as_tensor(data.target, dtype=torch.long)


def holdout_split(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, test) index split of ``n`` rows, a fifth (``n // 5``) held out.

    Example:
        >>> train, test = holdout_split(10)
        >>> len(train), len(test), sorted(torch.cat([train, test]).tolist()) == list(range(10))
        (8, 2, True)
    """
    n, seed = check_int(n, "n", low=2), check_int(seed, "seed", low=0)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(n // 5, 1)
    return perm[n_test:], perm[:n_test]


def _check_data(vectors: object, labels: object, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """Validate labelled vectors; return the (C, H, W) the classifier reads them as."""
    vectors = check_tensor(vectors, "vectors", min_dim=2)
    if vectors.dim() != 2:
        raise ShapeError(expected("vectors (N, D)", f"shape {tuple(vectors.shape)}",
                                  "flatten each sample: x.flatten(1)"))
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.shape != (len(vectors),):
        received = f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}"
        raise ShapeError(expected(f"integer labels of shape ({len(vectors)},)", received,
                                  "pass one torch.long class index per row"))
    if bool((labels < 0).any()) or int(labels.max()) < 1:
        raise ConfigError(expected("class labels 0..K-1 with K >= 2",
                                   f"range [{int(labels.min())}, {int(labels.max())}]", "map the labels to 0..K-1"))
    dim = vectors.shape[1]
    if shape is None:
        if dim > MLP_MAX_DIM:
            raise ConfigError(expected(f"at most {MLP_MAX_DIM} features for the vector MLP", dim,
                                       "pass shape=(C, H, W) when the rows are flattened images (a CNN is used)"))
        return (1, 1, dim)
    shape = tuple(check_positive_int(s, "shape entry") for s in shape)
    if len(shape) != 3 or math.prod(shape) != dim:
        raise ShapeError(expected(f"a shape (C, H, W) with C*H*W = {dim}", shape, "pass the shape the rows flatten"))
    return shape


def train_vector_classifier(vectors: torch.Tensor, labels: torch.Tensor, *, shape: tuple[int, int, int] | None = None,
                            seed: int = 0, epochs: int = 150, batch_size: int = 128, noise: float = 0.1,
                            progress: bool = False) -> tuple[FeatureClassifier, float]:
    """Train a :class:`~flowzoo.vision.features.FeatureClassifier` on rows; return it (eval) and its test accuracy.

    The split is :func:`holdout_split` (``seed``); AdamW (lr 2e-3, weight decay 1e-3) with cosine decay over
    ``epochs``; each batch gets Gaussian input noise of std ``noise``. Deterministic for a given seed.

    Args:
        vectors: (N, D) rows in [−1, 1].
        labels: (N,) class indices 0..K−1.
        shape: the (C, H, W) the rows flatten; None reads them as (1, 1, D), which needs D ≤ 256.
        seed: seed of the split, the initialisation, the batches and the noise.
        epochs: passes over the training rows.
        batch_size: rows per step.
        noise: std of the input noise.
        progress: show a tqdm bar over epochs on stderr.
    """
    shape = _check_data(vectors, labels, shape)
    epochs, batch_size = check_positive_int(epochs, "epochs"), check_positive_int(batch_size, "batch_size")
    noise, seed = check_nonnegative(noise, "noise"), check_int(seed, "seed", low=0)
    train, test = holdout_split(len(vectors), seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the initialisation and the dropout masks
    model = FeatureClassifier(shape, int(labels.max()) + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    passes = range(epochs)
    if progress:
        from tqdm.auto import tqdm
        passes = tqdm(passes, desc="vector feature classifier", unit="epoch", file=sys.stderr, dynamic_ncols=True)
    for _ in passes:
        model.train()
        order = train[torch.randperm(len(train), generator=gen)]
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            rows = vectors[idx] + noise * torch.randn(len(idx), vectors.shape[1], generator=gen)
            # body/head rather than model(): forward() clamps to [-1, 1], and this recipe trains on unclamped noisy rows
            logits = model.head(model.body(rows.reshape(-1, *shape)))
            loss = nn.functional.cross_entropy(logits, labels[idx])
            if not torch.isfinite(loss):
                raise TrainingDivergedError(expected("a finite classifier loss", float(loss), "check the vectors"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(vectors[test].reshape(-1, *shape)).argmax(1) == labels[test]).float().mean())
    return model, accuracy


def load_vector_classifier(vectors: torch.Tensor, labels: torch.Tensor, *, name: str = "vectors",
                           shape: tuple[int, int, int] | None = None, seed: int = 0, epochs: int = 150,
                           cache_dir: str | Path | None = None, min_accuracy: float = 0.0,
                           verbose: bool = True) -> tuple[FeatureClassifier, float]:
    """The cached classifier of these rows (trained by :func:`train_vector_classifier` on first use) and its accuracy.

    The cache file is ``<name>_vec_<C>x<H>x<W>_v<FEATURE_VERSION>.<VECTOR_RECIPE_VERSION>_<hash>.safetensors``
    (and ``.json``) in ``cache_dir`` (default :func:`~flowzoo.vision.features.default_cache_dir`); the hash covers
    the rows, labels, shape, seed, epochs and both versions. A fresh classifier below ``min_accuracy`` raises
    :class:`~flowzoo.core.errors.TrainingDivergedError` instead of being cached.
    """
    from safetensors.torch import load_file, save_file

    shape = _check_data(vectors, labels, shape)
    seed, epochs = check_int(seed, "seed", low=0), check_positive_int(epochs, "epochs")
    min_accuracy = check_probability(min_accuracy, "min_accuracy")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(expected("a short name of letters, digits, - or _", repr(name), "pass e.g. name='digits'"))
    data = hashlib.sha256(vectors.detach().cpu().float().contiguous().numpy().tobytes())
    data.update(labels.detach().cpu().long().contiguous().numpy().tobytes())
    key = {"name": name, "shape": list(shape), "classes": int(labels.max()) + 1, "seed": seed, "epochs": epochs,
           "data_sha256": data.hexdigest(), "feature_version": FEATURE_VERSION, "recipe_version": VECTOR_RECIPE_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    tag = f"{name}_vec_{'x'.join(map(str, shape))}_v{FEATURE_VERSION}.{VECTOR_RECIPE_VERSION}_{digest}"
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    weights, meta = folder / f"{tag}.safetensors", folder / f"{tag}.json"
    if weights.is_file() and meta.is_file():
        model = FeatureClassifier(shape, key["classes"])
        model.load_state_dict(load_file(str(weights)))
        return model.eval(), float(json.loads(meta.read_text())["test_accuracy"])
    if verbose:
        print(f"training the {name} feature classifier once (cached in {folder})", file=sys.stderr, flush=True)
    model, accuracy = train_vector_classifier(vectors, labels, shape=shape, seed=seed, epochs=epochs, progress=verbose)
    if accuracy < min_accuracy:
        raise TrainingDivergedError(expected(f"test accuracy >= {min_accuracy}", f"{accuracy:.3f}",
                                             "train longer (epochs=) or check the labels"))
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    meta.write_text(json.dumps({"test_accuracy": accuracy, "key": key}))
    return model, accuracy


class VectorEvaluator(ImageEvaluator):
    """An :class:`~flowzoo.vision.features.ImageEvaluator` that takes flat rows (N, C·H·W) as well as images.

    Every metric of the parent (:meth:`fd`, :meth:`kid`, :meth:`precision_recall`, :meth:`class_accuracy`)
    accepts rows; :meth:`label_kl` adds mode coverage.

    Args:
        classifier: the feature network; its ``shape`` says how rows are reshaped.
        reference: the real rows (N, D) or images (N, C, H, W) in [−1, 1].
        accuracy: the classifier's own test accuracy, kept for reports.
    """

    def __init__(self, classifier: FeatureClassifier, reference: torch.Tensor, accuracy: float = float("nan")):
        if not isinstance(classifier, FeatureClassifier):
            raise ConfigError(expected("a FeatureClassifier", type(classifier).__name__,
                                       "build it with load_vector_classifier or FeatureClassifier"))
        super().__init__(classifier, reference, accuracy)

    @classmethod
    def digits(cls, *, cache_dir: str | Path | None = None, verbose: bool = True) -> "VectorEvaluator":
        """The digits-FID: evaluator against all 1797 digits with the cached (or freshly trained) classifier.

        A fresh classifier must reach :data:`DIGITS_MIN_ACCURACY` on its held-out fifth.
        """
        x, y = load_digits_vectors()
        classifier, accuracy = load_vector_classifier(x, y, name="digits", shape=DIGITS_SHAPE, cache_dir=cache_dir,
                                                      min_accuracy=DIGITS_MIN_ACCURACY, verbose=verbose)
        return cls(classifier, x, accuracy)

    @property
    def dim(self) -> int:
        """Length D = C·H·W of one row."""
        return math.prod(self.classifier.shape)

    def as_images(self, samples: torch.Tensor) -> torch.Tensor:
        """``samples`` as (N, C, H, W): rows (N, D) are reshaped, images of the classifier's shape pass through."""
        samples = check_tensor(samples, "samples", min_dim=2)
        if samples.dim() == 2 and samples.shape[1] == self.dim:
            return samples.reshape(len(samples), *self.classifier.shape)
        if tuple(samples.shape[1:]) == self.classifier.shape:
            return samples
        raise ShapeError(expected(f"rows (N, {self.dim}) or images (N, {', '.join(map(str, self.classifier.shape))})",
                                  f"shape {tuple(samples.shape)}",
                                  "score samples of the data the classifier was trained on"))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Feature rows (N, d) of rows (N, D) or images (N, C, H, W)."""
        return super().features(self.as_images(images))

    def class_accuracy(self, samples: torch.Tensor, labels: torch.Tensor) -> float:
        """Share of class-conditional ``samples`` that the classifier assigns to their requested ``labels``."""
        return super().class_accuracy(self.as_images(samples), labels)

    @torch.no_grad()
    def predict(self, samples: torch.Tensor) -> torch.Tensor:
        """The classifier's label (N,) of each sample."""
        images = self.as_images(samples)
        return torch.cat([self.classifier(images[s:s + 512]).argmax(1) for s in range(0, len(images), 512)])

    def label_kl(self, samples: torch.Tensor) -> float:
        """KL(histogram of predicted labels ‖ uniform over the K classes): 0 when all are equally frequent."""
        classes = self.classifier.num_classes
        p = torch.bincount(self.predict(samples), minlength=classes).double() / len(samples)
        p = p[p > 0]
        return float((p * (p * classes).log()).sum())
