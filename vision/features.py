r"""Feature networks for image metrics: a small classifier per data set (trained once, cached) and Inception-v3.

FID (Heusel et al., arXiv 1706.08500) compares Inception-v3 pool features, which need a large network and a
299×299 input; for the small images flowzoo trains on, the library instead trains a small classifier on the
data set itself and uses its penultimate layer (as the "digits-FID" of the research benchmarks): an MLP for
images of at most 16×16 pixels, a three-layer CNN otherwise. It is trained once on the ``"train"`` split,
checked on ``"test"`` (``min_accuracy``), and cached as safetensors under ``cache_dir`` (default
``$FLOWZOO_CACHE/vision`` or ``~/.cache/flowzoo/vision``), keyed by the data spec, the image shape, the
number of classes, the seed and :data:`FEATURE_VERSION`. Samples are clamped to [−1, 1] before featurising,
as image FID clamps to valid pixels.

:class:`ImageEvaluator` holds a classifier and the reference statistics and reports the Fréchet distance,
KID, precision/recall and the classifier accuracy of class-conditional samples (the share of samples the
classifier assigns to the class they were asked for). :func:`inception_features` computes real FID features
from a weights file the user supplies (nothing is downloaded). None of this depends on the time convention.

Example:
    >>> from flowzoo.vision.datasets import load_images
    >>> net = FeatureClassifier((1, 8, 8), num_classes=10)
    >>> net.features(load_images("digits", split="test").images[:5]).shape
    torch.Size([5, 64])
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, MissingDependencyError, ShapeError, TrainingDivergedError, expected
from flowzoo.core.validation import check_class_labels, check_positive_int, check_probability, check_tensor
from flowzoo.vision.datasets import ImageData, load_images
from flowzoo.vision.metrics import feature_statistics, frechet_distance, kid, precision_recall

__all__ = ["FeatureClassifier", "train_feature_classifier", "load_feature_classifier", "default_cache_dir",
           "ImageEvaluator", "generation_reference", "inception_features", "FEATURE_VERSION"]

FEATURE_VERSION = 1


def default_cache_dir() -> Path:
    """``$FLOWZOO_CACHE/vision`` when set, else ``~/.cache/flowzoo/vision``."""
    root = os.environ.get("FLOWZOO_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "flowzoo") / "vision"


class FeatureClassifier(nn.Module):
    """Image classifier whose :meth:`features` (penultimate activations) feed the Fréchet distance and KID.

    Args:
        shape: (C, H, W) of the images.
        num_classes: number of classes (at least 2).
        features: width of the feature layer.
    """

    def __init__(self, shape: tuple[int, int, int], num_classes: int, features: int | None = None) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ShapeError(expected("an image shape (C, H, W)", shape, "pass data.shape"))
        self.shape = tuple(int(s) for s in shape)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        if self.num_classes < 2:
            raise ConfigError(expected("at least 2 classes", num_classes, "train the classifier on labelled data"))
        c, h, w = self.shape
        if h * w <= 256:
            width = features or 64
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 256), nn.SiLU(), nn.Dropout(0.2),
                                      nn.Linear(256, width), nn.SiLU())
        else:
            width = features or 128
            self.body = nn.Sequential(
                nn.Conv2d(c, 16, 3, padding=1), nn.SiLU(), nn.Conv2d(16, 64, 3, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                nn.Dropout(0.2), nn.Linear(64 * 16, width), nn.SiLU())
        self.feature_dim = width
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(width, self.num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (N, feature_dim) of images (N, C, H, W) clamped to [−1, 1]."""
        if tuple(x.shape[1:]) != self.shape:
            raise ShapeError(expected(f"images of shape (N, {', '.join(map(str, self.shape))})",
                                      f"shape {tuple(x.shape)}", "featurise images of the data set it was trained on"))
        return self.body(x.float().clamp(-1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes)."""
        return self.head(self.features(x))


@torch.no_grad()
def _accuracy(model: FeatureClassifier, data: ImageData) -> float:
    model.eval()
    hits = sum(int((model(data.images[s:s + 512]).argmax(1) == data.labels[s:s + 512]).sum())
               for s in range(0, len(data), 512))
    return hits / len(data)


def train_feature_classifier(train: ImageData, test: ImageData, *, epochs: int | None = None, seed: int = 0,
                             batch_size: int = 128) -> tuple[FeatureClassifier, float]:
    """Train a :class:`FeatureClassifier` on ``train``; return it (eval mode) and its accuracy on ``test``.

    ``epochs`` defaults to 30 for the MLP and 6 for the CNN. AdamW with a one-cycle schedule; Gaussian input
    noise (σ = 0.1) makes the features tolerant of the slight blur of generated images.
    """
    for split in (train, test):
        if split.labels is None:
            raise ConfigError(expected("labelled images", f"unlabelled {split.name}",
                                       "use a data set with classes (a folder with one sub-folder per class)"))
    batch_size = check_positive_int(batch_size, "batch_size")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = FeatureClassifier(train.shape, max(train.num_classes, 2))
    is_mlp = isinstance(model.body[1], nn.Linear)
    epochs = check_positive_int(epochs, "epochs") if epochs is not None else (30 if is_mlp else 6)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    steps = epochs * -(-len(train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x = train.images[idx] + 0.1 * torch.randn(train.images[idx].shape, generator=gen)
            loss = nn.functional.cross_entropy(model(x), train.labels[idx])
            if not torch.isfinite(loss):
                raise TrainingDivergedError(expected("a finite classifier loss", float(loss), "check the images"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval(), _accuracy(model, test)


def load_feature_classifier(spec: str, *, cache_dir: str | Path | None = None, seed: int = 0,
                            epochs: int | None = None,
                            min_accuracy: float = 0.0, verbose: bool = True,
                            **load_kwargs) -> tuple[FeatureClassifier, float]:
    """The cached classifier of data set ``spec`` (trained and saved on first use) and its test accuracy.

    ``load_kwargs`` go to :func:`~flowzoo.vision.datasets.load_images` (``size``, ``pad``, ...) and are part of
    the cache key. A fresh classifier below ``min_accuracy`` raises instead of being cached.
    """
    from safetensors.torch import load_file, save_file

    min_accuracy = check_probability(min_accuracy, "min_accuracy")
    train, test = (load_images(spec, split=s, seed=seed, **load_kwargs) for s in ("train", "test"))
    key = json.dumps({"spec": spec, "shape": train.shape, "classes": train.num_classes, "seed": seed,
                      "epochs": epochs, "load": {k: str(v) for k, v in sorted(load_kwargs.items())},
                      "version": FEATURE_VERSION}, sort_keys=True)
    kind = spec.partition(":")[0]
    tag = f"{kind}_{'x'.join(map(str, train.shape))}_v{FEATURE_VERSION}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    weights, meta = folder / f"{tag}.safetensors", folder / f"{tag}.json"
    if weights.is_file() and meta.is_file():
        model = FeatureClassifier(train.shape, max(train.num_classes, 2))
        model.load_state_dict(load_file(str(weights)))
        return model.eval(), float(json.loads(meta.read_text())["test_accuracy"])
    if verbose:
        print(f"training the {kind} feature classifier once (cached in {folder})", flush=True)
    model, accuracy = train_feature_classifier(train, test, epochs=epochs, seed=seed)
    if accuracy < min_accuracy:
        raise TrainingDivergedError(expected(f"test accuracy >= {min_accuracy}", f"{accuracy:.3f}",
                                             "train longer (epochs=) or check the labels"))
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    meta.write_text(json.dumps({"test_accuracy": accuracy, "key": json.loads(key)}))
    return model, accuracy


def generation_reference(spec: str) -> str:
    """The reference set generated images of ``spec`` are scored against (:meth:`ImageEvaluator.for_dataset`):
    ``"train"`` for ``patches``, whose test crops come from another region of the photographs, else ``"test"``."""
    return "train" if spec.partition(":")[0] == "patches" else "test"


class ImageEvaluator:
    """Compare generated images with a reference set in a :class:`FeatureClassifier`'s feature space.

    Args:
        classifier: the feature network (its images' shape is checked).
        reference: the real images (N, C, H, W) in [−1, 1], e.g. the test split.
        accuracy: the classifier's own test accuracy, kept for reports.
    """

    def __init__(self, classifier: FeatureClassifier, reference: torch.Tensor, accuracy: float = float("nan")):
        self.classifier = classifier.eval()
        self.accuracy = accuracy
        self.reference = self.features(reference)
        self.mu, self.sigma = feature_statistics(self.reference)

    @classmethod
    def for_dataset(cls, spec: str, *, cache_dir: str | Path | None = None, verbose: bool = True,
                    reference: str = "test", **load_kwargs) -> "ImageEvaluator":
        """Evaluator of ``spec`` with the cached (or freshly trained) classifier, against ``reference``:

        * ``"test"``: the test split (restorations of test images, and data sets whose two splits share one
          distribution, such as MNIST);
        * ``"train"``: the distribution the generator learns, as CIFAR-10's FID uses the training set. For
          ``patches``, whose test crops come from other regions of the photographs (a content shift: the two
          regions are further apart in these features than the training crops are from noisy copies of
          themselves), a fresh draw of 1000 crops of the training region (seed + 1), not the training images
          themselves; for the other data sets the training split.
        """
        if reference not in ("test", "train"):
            raise ConfigError(expected("reference 'test' or 'train'", repr(reference),
                                       "pass reference='train' to compare generated images with the training data"))
        classifier, accuracy = load_feature_classifier(spec, cache_dir=cache_dir, verbose=verbose, **load_kwargs)
        if reference == "test":
            return cls(classifier, load_images(spec, split="test", **load_kwargs).images, accuracy)
        options = dict(load_kwargs)
        if generation_reference(spec) == "train":   # patches: fresh crops, not the generator's training images
            options.update(seed=options.get("seed", 0) + 1, count=1000)
        return cls(classifier, load_images(spec, split="train", **options).images, accuracy)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Feature rows (N, d) of images (N, C, H, W)."""
        images = check_tensor(images, "images", min_dim=4)
        return torch.cat([self.classifier.features(images[s:s + 512]) for s in range(0, len(images), 512)])

    def fd(self, samples: torch.Tensor) -> float:
        """Fréchet distance of ``samples`` to the reference set."""
        return frechet_distance(*feature_statistics(self.features(samples)), self.mu, self.sigma)

    def kid(self, samples: torch.Tensor, subsets: int = 50, subset_size: int = 1000, seed: int = 0) -> float:
        """Mean KID of ``samples`` against the reference set."""
        return kid(self.features(samples), self.reference, subsets=subsets, subset_size=subset_size,
                   generator=torch.Generator().manual_seed(seed))[0]

    def precision_recall(self, samples: torch.Tensor, k: int = 3) -> tuple[float, float]:
        """k-NN precision and recall of ``samples`` against the reference set."""
        return precision_recall(self.reference, self.features(samples), k=k)

    @torch.no_grad()
    def class_accuracy(self, samples: torch.Tensor, labels: torch.Tensor) -> float:
        """Share of class-conditional ``samples`` that the classifier assigns to their requested ``labels``."""
        labels = check_class_labels(labels, samples.shape[0], self.classifier.num_classes)
        if bool((labels == self.classifier.num_classes).any()):
            raise ConfigError(expected("real class labels", "the null class", "score conditional samples only"))
        logits = torch.cat([self.classifier(samples[s:s + 512]) for s in range(0, len(samples), 512)])
        return float((logits.argmax(1) == labels).double().mean())

    def scores(self, samples: torch.Tensor, labels: torch.Tensor, *, kid_subsets: int = 20) -> dict[str, float]:
        """FD, KID (subsets of up to 1000 samples) and class accuracy of class-conditional ``samples`` in one dict
        (``"fd"``, ``"kid"``, ``"accuracy"``), the three columns of the vision benchmarks' rows."""
        size = min(len(samples), len(self.reference), 1000)
        return {"fd": self.fd(samples), "kid": self.kid(samples, subsets=kid_subsets, subset_size=size),
                "accuracy": self.class_accuracy(samples.clamp(-1, 1), labels)}


def inception_features(images: torch.Tensor, weights: str | Path, batch_size: int = 64) -> torch.Tensor:
    """Inception-v3 pool features (N, 2048) of images in [−1, 1] for a real FID, from a local weights file.

    ``weights`` is either the TorchScript ``inception-2015-12-05.pt`` of the StyleGAN / clean-fid metrics
    (called as ``net(uint8_images, return_features=True)``) or a torchvision ``inception_v3`` state dict
    (needs torchvision; images resized to 299×299 and normalised with ImageNet statistics). Grey images are
    repeated to three channels. Pass both feature sets to :func:`~flowzoo.vision.metrics.feature_statistics`
    and :func:`~flowzoo.vision.metrics.frechet_distance`.
    """
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(expected("an Inception-v3 weights file", f"no file at {path}", "download "
                                   "inception-2015-12-05.pt (clean-fid / StyleGAN metrics) or torchvision's "
                                   "inception_v3 weights and pass its path"))
    images = check_tensor(images, "images", min_dim=4)
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    try:
        with warnings.catch_warnings():  # TorchScript is how these weights ship; its deprecation is not ours
            warnings.simplefilter("ignore", DeprecationWarning)
            net, scripted = torch.jit.load(str(path), map_location="cpu").eval(), True
    except RuntimeError:
        net, scripted = _torchvision_inception(path), False
    out = []
    with torch.no_grad():
        for s in range(0, len(images), check_positive_int(batch_size, "batch_size")):
            x = images[s:s + batch_size].float().clamp(-1, 1)
            if scripted:
                out.append(net(((x + 1) * 127.5).round().to(torch.uint8), return_features=True))
            else:
                x = nn.functional.interpolate((x + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False)
                mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
                out.append(net((x - mean) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)))
    return torch.cat(out).reshape(len(images), -1)


def _torchvision_inception(path: Path) -> nn.Module:
    try:
        from torchvision.models import inception_v3
    except ImportError as err:
        raise MissingDependencyError(expected("torchvision for a state-dict Inception file", str(err),
                                              "pip install torchvision, or pass the TorchScript file")) from err
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, ValueError) as err:
        raise ConfigError(expected(f"Inception-v3 weights in {path}", f"{type(err).__name__}: {str(err)[:200]}",
                                   "pass torchvision's inception_v3 state dict or the TorchScript file")) from err
    net.fc = nn.Identity()
    return net.eval()
