r"""Images with per-pixel semantic maps: MNIST digits with their masks, seeded synthetic shapes, a continuous map
encoding, and the segmentation metrics (mean IoU, pixel accuracy).

Semantic image synthesis and segmentation flows (SymmFlow, Caetano et al., arXiv 2506.10634) treat a semantic
map as an image: each class gets a fixed code vector, the map becomes a continuous (B, K, H, W) tensor that a
flow can transport, and a generated map is read back by the nearest code (the paper's ``mask_to_class``, which
assigns every pixel to its nearest palette colour). :class:`MapCodec` offers the paper's colour code (classes
spread over a grid in [−1, 1]³, three channels whatever the number of classes) and a ±1 one-hot code (one
channel per class, decoded by argmax).

Two data sets, both :class:`SegmentationData` (images in [−1, 1], (N, H, W) integer maps):

* ``mnist-masks``: the 5000 real MNIST digits of :func:`~flowzoo.vision.datasets.load_images`; a pixel above
  ``threshold`` (of the [0, 1] intensity) is foreground and gets class 1 + digit, the rest class 0, so the map
  has 11 classes and carries the image's label.
* ``shapes``: RGB images generated from a seed, one to ``max_shapes`` flat or striped shapes (circle, square,
  triangle, cross) in saturated colours, drawn in order so that later shapes occlude earlier ones, on a grey
  textured background (stripes and noise with equal red, green and blue). The map holds the visible shape's
  class; the image-level multi-label is the set of classes with at least one visible pixel. Colour never tells
  the class: only the form does.

The metrics follow the usual semantic-segmentation convention (as in the PASCAL VOC and Cityscapes
benchmarks): IoU per class from the confusion counts accumulated over the whole set, averaged over the
classes that occur in the prediction or the target. No time variable appears here; the flows that use these
maps document their own time convention.

Example:
    >>> codec = MapCodec(3, encoding="onehot")
    >>> maps = torch.tensor([[[0, 1], [2, 2]]])
    >>> codec.encode(maps).shape, bool((codec.decode(codec.encode(maps)) == maps).all())
    (torch.Size([1, 3, 2, 2]), True)
    >>> mean_iou(maps, maps, 3), mean_iou(torch.tensor([[[1, 1], [1, 1]]]), torch.tensor([[[0, 0], [0, 0]]]), 3)
    (1.0, 0.0)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, DTypeError, ShapeError, expected
from flowzoo.core.validation import (check_int, check_nonnegative, check_positive_int, check_probability,
                                     check_tensor)
from flowzoo.vision.datasets import ImageData, load_images

__all__ = ["MapCodec", "SegmentationData", "load_segmentation", "mnist_masks", "make_shapes", "check_maps",
           "mean_iou", "pixel_accuracy", "SHAPE_CLASSES", "SEGMENTATION_SETS"]

SHAPE_CLASSES = ("background", "circle", "square", "triangle", "cross")
SEGMENTATION_SETS = ("mnist-masks", "shapes")
# Saturated colours in [-1, 1] (red, green, blue, yellow, magenta, cyan): every one has channels at least 1.2
# apart, so a shape pixel is never grey like the background, striped or not.
_COLOURS = np.array([[0.9, -0.7, -0.7], [-0.7, 0.9, -0.7], [-0.6, -0.6, 0.9], [0.9, 0.9, -0.7],
                     [0.9, -0.7, 0.9], [-0.7, 0.9, 0.9]], dtype=np.float32)


def check_maps(maps: object, num_classes: int, name: str = "maps",
               shape: tuple[int, int] | None = None) -> torch.Tensor:
    """``maps`` as an int64 (B, H, W) tensor of classes in [0, num_classes), or ShapeError / DTypeError /
    ConfigError; ``shape`` pins (H, W)."""
    if not isinstance(maps, torch.Tensor):
        raise DTypeError(expected(f"{name} as a torch.Tensor of class indices", type(maps).__name__,
                                  f"convert it with torch.as_tensor({name})"))
    if maps.is_floating_point() or maps.is_complex() or maps.dtype == torch.bool:
        raise DTypeError(expected(f"{name} as integer class indices", maps.dtype,
                                  "decode continuous maps with MapCodec.decode first"))
    if maps.dim() != 3 or maps.numel() == 0:
        raise ShapeError(expected(f"{name} of shape (B, H, W)", f"shape {tuple(maps.shape)}",
                                  "pass one class index per pixel, batch first"))
    if shape is not None and tuple(maps.shape[1:]) != tuple(shape):
        raise ShapeError(expected(f"{name} of size {shape[0]}x{shape[1]}", f"{maps.shape[1]}x{maps.shape[2]}",
                                  "resize the maps (nearest) to the images' size"))
    low, high = int(maps.min()), int(maps.max())
    if low < 0 or high >= num_classes:
        raise ConfigError(expected(f"{name} classes in [0, {num_classes})", f"values in [{low}, {high}]",
                                   f"pass num_classes > {high}, or remap the labels"))
    return maps.long()


def _colour_codes(num_classes: int) -> torch.Tensor:
    """Codes on the smallest grid {-1, ..., 1}^3 holding num_classes points, chosen greedily to be far apart
    (farthest-point order from black, the background colour of the paper's palettes)."""
    levels = max(2, math.ceil(num_classes ** (1 / 3) - 1e-9))
    grid = torch.tensor(list(itertools.product(np.linspace(-1.0, 1.0, levels).tolist(), repeat=3)))
    chosen = [0]
    nearest = (grid - grid[0]).norm(dim=1)
    for _ in range(num_classes - 1):
        index = int(torch.argmax(nearest))  # argmax takes the first of ties: deterministic
        chosen.append(index)
        nearest = torch.minimum(nearest, (grid - grid[index]).norm(dim=1))
    return grid[chosen]


class MapCodec:
    """A class map (B, H, W) ↔ a continuous map (B, K, H, W) that a flow can transport.

    Args:
        num_classes: number of classes (background included), at least 2.
        encoding: ``"colour"`` (three channels; each class a point of a grid in [−1, 1]³, as the paper's RGB
            palettes) or ``"onehot"`` (one channel per class, +1 for the class and −1 elsewhere).

    :meth:`decode` assigns each pixel to its nearest code, the exact inverse of :meth:`encode` and robust to
    noise below half of :attr:`min_distance`.

    Example:
        >>> codec = MapCodec(11)
        >>> codec.channels, round(codec.min_distance, 3)
        (3, 1.0)
    """

    def __init__(self, num_classes: int, encoding: str = "colour") -> None:
        self.num_classes = check_int(num_classes, "num_classes", low=2, fix="a map has at least two classes")
        if encoding not in ("colour", "onehot"):
            raise ConfigError(expected("encoding 'colour' or 'onehot'", repr(encoding), "pick one of the two"))
        self.encoding = encoding
        self.codes = _colour_codes(self.num_classes) if encoding == "colour" else 2 * torch.eye(self.num_classes) - 1
        self.channels = int(self.codes.shape[1])
        pairwise = torch.cdist(self.codes, self.codes) + 1e9 * torch.eye(self.num_classes)
        self.min_distance = float(pairwise.min())

    def __repr__(self) -> str:
        return f"MapCodec(num_classes={self.num_classes}, encoding={self.encoding!r})"

    def encode(self, maps: torch.Tensor, *, dequantize: float = 0.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Continuous maps (B, K, H, W) of class maps (B, H, W); ``dequantize`` > 0 adds uniform noise of that
        width (the paper's mask dequantisation, which keeps the map distribution from being degenerate)."""
        maps = check_maps(maps, self.num_classes)
        dequantize = check_nonnegative(dequantize, "dequantize")
        out = self.codes.to(maps.device)[maps].permute(0, 3, 1, 2).contiguous()
        if dequantize > 0:
            noise = torch.rand(out.shape, generator=generator, device=out.device, dtype=out.dtype)
            out = out + dequantize * (noise - 0.5)
        return out

    def scores(self, encoded: torch.Tensor) -> torch.Tensor:
        """Negative squared distances (B, num_classes, H, W) of each pixel to each class code."""
        encoded = check_tensor(encoded, "encoded map", min_dim=4)
        if encoded.dim() != 4 or encoded.shape[1] != self.channels:
            raise ShapeError(expected(f"an encoded map (B, {self.channels}, H, W)", f"shape {tuple(encoded.shape)}",
                                      f"encode maps with this codec ({self!r})"))
        codes = self.codes.to(encoded.device, encoded.dtype)
        return -(encoded.unsqueeze(1) - codes[None, :, :, None, None]).square().sum(2)

    def decode(self, encoded: torch.Tensor) -> torch.Tensor:
        """Class maps (B, H, W) int64: each pixel's nearest code."""
        return self.scores(encoded).argmax(1)


@dataclass(frozen=True)
class SegmentationData:
    """Images with per-pixel class maps and image-level labels.

    Attributes:
        images: float32 (N, C, H, W) in [−1, 1].
        maps: int64 (N, H, W), classes in [0, num_classes); class 0 is the background.
        labels: int64 (N,): the image's class (the digit; for shapes the class covering most pixels), in
            [0, num_classes − 1), i.e. the foreground class minus one.
        multilabels: bool (N, num_classes − 1): which foreground classes are visible.
        num_classes: classes of the maps, background included.
        class_names: one name per map class.
        name: the set and split, e.g. ``"shapes/train"``.
    """

    images: torch.Tensor
    maps: torch.Tensor
    labels: torch.Tensor
    multilabels: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]
    name: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def subset(self, index: torch.Tensor | slice) -> "SegmentationData":
        """The rows ``index`` as a new :class:`SegmentationData`."""
        return SegmentationData(self.images[index], self.maps[index], self.labels[index], self.multilabels[index],
                                self.num_classes, self.class_names, self.name)

    def as_image_data(self) -> ImageData:
        """The images with their image-level ``labels``, e.g. to train a feature classifier for the FD."""
        return ImageData(self.images, self.labels, self.num_classes - 1, self.name, "flowzoo.vision.segmentation",
                         self.class_names[1:])


def _multilabels(maps: torch.Tensor, num_classes: int) -> torch.Tensor:
    present = torch.zeros(maps.shape[0], num_classes, dtype=torch.bool)
    present.scatter_(1, maps.reshape(maps.shape[0], -1), True)
    return present[:, 1:]


def mnist_masks(split: str = "train", *, size: int | None = None, threshold: float = 0.5, seed: int = 0,
                test_fraction: float = 0.2) -> SegmentationData:
    """MNIST digits with their semantic maps: class 1 + digit where the intensity exceeds ``threshold``, else 0.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (the seeded split of :func:`~flowzoo.vision.datasets.load_images`).
        size: resize the digits to size × size first (the masks are thresholded after resizing).
        threshold: foreground level of the [0, 1] intensity, in (0, 1).
        seed, test_fraction: the split's.

    Example:
        >>> data = mnist_masks("test", size=16)
        >>> data.maps.shape, data.num_classes, bool((data.maps.amax((1, 2)) == data.labels + 1).all())
        (torch.Size([1000, 16, 16]), 11, True)
    """
    threshold = check_probability(threshold, "threshold", inclusive_low=False, inclusive_high=False)
    data = load_images("mnist", split=split, size=size, seed=seed, test_fraction=test_fraction)
    foreground = data.images[:, 0] > 2.0 * threshold - 1.0
    maps = torch.where(foreground, data.labels[:, None, None] + 1, torch.zeros((), dtype=torch.long))
    names = ("background",) + tuple(str(d) for d in range(10))
    return SegmentationData(data.images, maps, data.labels.clone(), _multilabels(maps, 11), 11, names,
                            f"mnist-masks/{split}")


def _shape_mask(kind: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if kind == 1:  # circle
        return dy * dy + dx * dx <= r * r
    if kind == 2:  # square, of the circle's area
        half = r * 0.886
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if kind == 3:  # triangle pointing up: below the two slanted edges, above the base
        return (dy <= 0.6 * r) & (np.abs(dx) <= (dy + r) * 0.577)  # equilateral: half-width = height / sqrt 3
    arm = max(r / 3.0, 0.75)  # cross
    return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))


def _shapes_image(gen: np.random.Generator, size: int, max_shapes: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    angle, freq = gen.uniform(0, np.pi), gen.uniform(0.3, 1.2)
    texture = 0.15 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + gen.uniform(0, 2 * np.pi))
    grey = gen.uniform(-0.6, 0.2) + texture + 0.05 * gen.standard_normal((size, size))
    image = np.repeat(grey[None], 3, axis=0).astype(np.float32)  # equal R, G, B: never a shape's colour
    labels = np.zeros((size, size), np.int64)
    for _ in range(int(gen.integers(1, max_shapes + 1))):
        kind = int(gen.integers(1, len(SHAPE_CLASSES)))
        r = gen.uniform(0.16, 0.3) * size
        cy, cx = gen.uniform(r * 0.7, size - r * 0.7, size=2)
        mask = _shape_mask(kind, yy, xx, cy, cx, r)
        colour = _COLOURS[int(gen.integers(len(_COLOURS)))]
        paint = np.broadcast_to(colour[:, None, None], image.shape).copy()
        if gen.random() < 0.5:  # stripes: darker every other band, still saturated
            band = (np.floor((xx + yy) / max(2.0, size / 10)) % 2).astype(bool)
            paint[:, band] = (paint[:, band] + 1.0) * 0.7 - 1.0
        image[:, mask] = paint[:, mask]
        labels[mask] = kind
    return np.clip(image, -1.0, 1.0), labels


def make_shapes(n: int, *, size: int = 32, max_shapes: int = 4, seed: int = 0,
                name: str = "shapes") -> SegmentationData:
    """``n`` synthetic RGB images of shapes with their class maps (module docstring), reproducible from ``seed``.

    Example:
        >>> data = make_shapes(8, size=16, seed=1)
        >>> data.images.shape, data.num_classes, bool((data.multilabels.sum(1) >= 1).all())
        (torch.Size([8, 3, 16, 16]), 5, True)
    """
    n = check_positive_int(n, "n")
    size = check_int(size, "size", low=8, fix="pass size >= 8 pixels")
    max_shapes = check_positive_int(max_shapes, "max_shapes")
    gen = np.random.default_rng([check_int(seed, "seed", low=0), size])
    images, maps = zip(*(_shapes_image(gen, size, max_shapes) for _ in range(n)))
    maps = torch.from_numpy(np.stack(maps))
    k = len(SHAPE_CLASSES)
    counts = torch.nn.functional.one_hot(maps.reshape(n, -1), k).sum(1)[:, 1:]
    return SegmentationData(torch.from_numpy(np.stack(images)), maps, counts.argmax(1), _multilabels(maps, k), k,
                            SHAPE_CLASSES, name)


def load_segmentation(spec: str, *, split: str = "train", size: int | None = None, seed: int = 0,
                      count: int | None = None) -> SegmentationData:
    """``"mnist-masks"`` (:func:`mnist_masks`) or ``"shapes"`` (:func:`make_shapes`: ``count`` images, default
    4000 train / 1000 test, size 32, the test split drawn from a different seed than the training one)."""
    if spec == "mnist-masks":
        return mnist_masks(split, size=size, seed=seed)
    if spec == "shapes":
        if split not in ("train", "test"):
            raise ConfigError(expected("split 'train' or 'test' for shapes", repr(split), "pass split='train'"))
        count = count if count is not None else (4000 if split == "train" else 1000)
        offset = 0 if split == "train" else 1_000_003
        return make_shapes(count, size=size or 32, seed=seed + offset, name=f"shapes/{split}")
    raise ConfigError(expected(f"a segmentation set in {SEGMENTATION_SETS}", repr(spec),
                               "pass 'mnist-masks' or 'shapes'"))


def _confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    num_classes = check_int(num_classes, "num_classes", low=1)
    target = check_maps(target, num_classes, "target")
    pred = check_maps(pred, num_classes, "pred", shape=tuple(target.shape[1:]))
    if pred.shape != target.shape:
        raise ShapeError(expected("pred and target of one shape", f"{tuple(pred.shape)} and {tuple(target.shape)}",
                                  "predict one map per target map"))
    flat = target.reshape(-1) * num_classes + pred.reshape(-1)
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    r"""Mean intersection over union of class maps (B, H, W): :math:`\frac{1}{|C|}\sum_{c\in C}
    \frac{TP_c}{TP_c + FP_c + FN_c}` with the counts summed over the whole batch and C the classes present in
    ``pred`` or ``target``.

    Example:
        >>> target = torch.tensor([[[0, 0], [1, 1]]])
        >>> mean_iou(torch.tensor([[[0, 1], [1, 1]]]), target, 2)  # class 0: 1/2, class 1: 2/3
        0.5833333333333333
    """
    counts = _confusion(pred, target, num_classes).double()
    tp = counts.diagonal()
    union = counts.sum(0) + counts.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean())


def pixel_accuracy(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Share of pixels whose predicted class equals the target's.

    Example:
        >>> pixel_accuracy(torch.tensor([[[0, 1], [1, 1]]]), torch.tensor([[[0, 0], [1, 1]]]), 2)
        0.75
    """
    counts = _confusion(pred, target, num_classes)
    return float(counts.diagonal().sum() / counts.sum())
