r"""Readers for image files in their original formats: CIFAR-10 python batches, MNIST IDX, image folders.

Each reader returns ``(images, labels, class_names)`` with ``images`` a uint8 array (N, C, H, W), ``labels`` an
int64 array (N,) or None, and never downloads anything: a missing file raises :class:`ImageFileError` naming
the file and where the user gets it. A truncated or malformed file raises the same error, naming the file and
what was expected of it.

* **CIFAR-10** (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images"), the "python
  version": ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` are pickled dicts whose ``data`` is a
  (10000, 3072) uint8 array (the 1024 red values of a 32×32 image, row-major, then green, then blue) and whose
  ``labels`` is a list of ints; ``batches.meta`` holds ``label_names``. Pickle can run code, so these files
  are read with an unpickler that only rebuilds numpy arrays, lists, dicts and strings.
* **MNIST IDX** (LeCun et al. 1998): a big-endian header ``0x00 0x00 <type> <ndim>`` followed by ``ndim``
  int32 sizes and the data; ``train-images-idx3-ubyte`` / ``t10k-images-idx3-ubyte`` and their
  ``-labels-idx1-ubyte`` partners, gzip-compressed (``.gz``) or not.
* **Image folder** (torchvision's ``ImageFolder`` layout): one sub-folder per class, PNG/JPEG/BMP files read
  with Pillow; every image must share one size and one channel count, else the first one that does not is
  named. Files directly in the folder (no sub-folders) form one unlabelled set.

Example:
    >>> import gzip, tempfile, numpy as np
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "t10k-labels-idx1-ubyte.gz"
    >>> path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])))
    31
    >>> read_idx(path).tolist()
    [7, 2, 1]
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path

import numpy as np

from flowzoo.core.errors import FlowzooError, expected

__all__ = ["ImageFileError", "read_idx", "read_mnist_idx", "read_cifar10", "read_image_folder",
           "IMAGE_SUFFIXES", "CIFAR10_URL", "MNIST_URL"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MNIST_URL = "https://yann.lecun.org/exdb/mnist/ (or any mirror of the four IDX files)"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
# A fix that works from the command line (--channels, passed on as the Pillow mode) and from Python.
_CONVERT_FIX = "convert every image to one channel count: --channels 1 or 3 (in Python mode='L' or mode='RGB')"


class ImageFileError(FlowzooError, ValueError):
    """An image file or folder is missing, truncated, malformed, or does not match the others."""


def _missing(path: Path, what: str, source: str) -> ImageFileError:
    return ImageFileError(expected(what, f"no file at {path}", f"download it from {source} and unpack it there"))


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (gzip-compressed or raw) as a numpy array of its declared type and shape."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, "an IDX file", MNIST_URL)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ImageFileError(expected(f"a complete gzip file at {path}", f"{type(err).__name__}: {err}",
                                      "download the file again (it is truncated or corrupted)")) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ImageFileError(expected(f"an IDX header (0x00 0x00 <type> <ndim>) in {path}",
                                      f"bytes {list(raw[:4])}", "pass an MNIST IDX file"))
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ImageFileError(expected(f"{ndim} dimension sizes after the header of {path}",
                                      f"a file of {len(raw)} bytes", "download the file again (it is truncated)"))
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    needed = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != needed:
        raise ImageFileError(expected(f"{needed} bytes in {path} (shape {shape}, {dtype.str})",
                                      f"{len(raw)} bytes", "download the file again (it is truncated or padded)"))
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise _missing(folder / stem, f"the MNIST file {stem}[.gz] in {folder}", MNIST_URL)


def read_mnist_idx(folder: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray, None]:
    """MNIST (or Fashion-MNIST) images (N, 1, 28, 28) uint8 and labels (N,) from the four IDX files in ``folder``."""
    folder = Path(folder)
    image_file, label_file = (_find(folder, stem) for stem in _MNIST_FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ImageFileError(expected(f"(N, H, W) uint8 images in {image_file}", f"{images.shape} {images.dtype}",
                                      "pass the idx3-ubyte image file"))
    if labels.ndim != 1 or len(labels) != len(images):
        raise ImageFileError(expected(f"{len(images)} labels in {label_file}", f"shape {labels.shape}",
                                      "pass the labels file that belongs to the images"))
    return images[:, None], labels.astype(np.int64), None


class _ArraysOnly(pickle.Unpickler):
    """Rebuilds numpy arrays and plain containers, refuses every other global (pickle can run code)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
                ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle's hook
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise _missing(path, f"the CIFAR-10 file {path.name}", CIFAR10_URL)
    try:
        with open(path, "rb") as handle:
            content = _ArraysOnly(io.BytesIO(handle.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ImageFileError(expected(f"a complete CIFAR-10 python batch in {path}", f"{type(err).__name__}: {err}",
                                      "download the batches again (this one is truncated or not a CIFAR file)"))
    if not isinstance(content, dict):
        raise ImageFileError(expected(f"a pickled dict in {path}", type(content).__name__, "pass a CIFAR-10 batch"))
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}


def read_cifar10(folder: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """CIFAR-10 images (N, 3, 32, 32) uint8, labels (N,) and class names from the python batches in ``folder``.

    ``folder`` is the unpacked ``cifar-10-batches-py`` directory (or its parent).
    """
    folder = Path(folder)
    if not (folder / "batches.meta").is_file() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    images, labels = [], []
    for name in _CIFAR_FILES[split]:
        batch = _unpickle(folder / name)
        data, batch_labels = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
            raise ImageFileError(expected(f"'data' as an (N, 3072) uint8 array in {folder / name}",
                                          getattr(data, "shape", type(data).__name__),
                                          "pass the CIFAR-10 python version (not CIFAR-100 or the binary one)"))
        if batch_labels is None or len(batch_labels) != len(data):
            raise ImageFileError(expected(f"{len(data)} 'labels' in {folder / name}",
                                          "none" if batch_labels is None else len(batch_labels),
                                          "download the batches again"))
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    names = None
    if (folder / "batches.meta").is_file():
        meta = _unpickle(folder / "batches.meta")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])] or None
    return np.concatenate(images), np.concatenate(labels), names


def _read_picture(path: Path, mode: str | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            picture.load()
            if mode is not None:
                picture = picture.convert(mode)
            elif picture.mode in ("1", "I;16", "I", "F"):
                picture = picture.convert("L")
            elif picture.mode == "P":
                picture = picture.convert("RGB")
            elif picture.mode not in ("L", "RGB"):
                raise ImageFileError(expected(f"a grey (L) or RGB image at {path}", f"mode {picture.mode}",
                                              _CONVERT_FIX))
            array = np.asarray(picture, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageFileError(expected(f"a readable image at {path}", f"{type(err).__name__}: {err}",
                                      "remove or replace the file")) from err
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def read_image_folder(folder: str | Path,
                      mode: str | None = None) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Every image under ``folder`` (one sub-folder per class, sorted names = labels 0, 1, ...).

    Args:
        folder: the root folder.
        mode: a Pillow mode ("L" or "RGB") every image is converted to; None keeps each file's own, and then
            they must all agree.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFileError(expected("a folder of images", f"no folder at {folder}", "check the path"))
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    groups = [(i, folder / c) for i, c in enumerate(classes)] if classes else [(None, folder)]
    files = [(label, f) for label, sub in groups for f in sorted(sub.iterdir())
             if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ImageFileError(expected(f"{'/'.join(IMAGE_SUFFIXES)} images in {folder}"
                                      + (" (one sub-folder per class)" if classes else ""), "none",
                                      "point at the folder that holds the images"))
    arrays, first = [], None
    for _, path in files:
        array = _read_picture(path, mode)
        if first is None:
            first = (path, array.shape)
        elif array.shape != first[1]:
            c, h, w = first[1]
            fix = ("resize the image files to one size" if array.shape[1:] != first[1][1:] else _CONVERT_FIX)
            raise ImageFileError(expected(f"every image {h}x{w} with {c} channel(s), as {first[0]}",
                                          f"{array.shape[1]}x{array.shape[2]} with {array.shape[0]} channel(s) "
                                          f"at {path}", fix))
        arrays.append(array)
    labels = np.asarray([label for label, _ in files], dtype=np.int64) if classes else None
    return np.stack(arrays), labels, classes or None
