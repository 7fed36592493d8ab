"""The original-format readers on files written here in those formats, and their errors on bad files."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from flowzoo.vision.datasets import load_images
from flowzoo.vision.readers import ImageFileError, read_cifar10, read_idx, read_image_folder, read_mnist_idx

PIL = pytest.importorskip("PIL.Image")


pytestmark = pytest.mark.usefixtures("one_thread")


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding (big-endian header, then the data) of a uint8 array."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, rng, n=(12, 5), compress=True):
    arrays = {}
    for split, count in zip(("train", "t10k"), n):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        arrays[split] = (images, labels)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            raw = idx_bytes(array)
            path = folder / f"{split}-{kind}{'.gz' if compress else ''}"
            path.write_bytes(gzip.compress(raw) if compress else raw)
    return arrays


def write_cifar(folder, rng, per_batch=4):
    """Six CIFAR-10 python batches as the original (Python 2 style: bytes keys, protocol 2) plus the meta file."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        written[name] = (data, labels)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * per_batch}, handle, protocol=2)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, handle, protocol=2)
    return written


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_round_trip(tmp_path, compress):
    arrays = write_mnist(tmp_path, np.random.default_rng(0), compress=compress)
    images, labels, _ = read_mnist_idx(tmp_path, "train")
    assert images.shape == (12, 1, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:, 0], arrays["train"][0])
    np.testing.assert_array_equal(labels, arrays["train"][1])
    data = load_images(f"mnist:{tmp_path}", split="test")
    assert data.images.shape == (5, 1, 28, 28) and data.num_classes >= 1
    expected = arrays["t10k"][0].astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(data.images[:, 0].numpy(), expected, atol=1e-6)


def test_idx_other_types_and_errors(tmp_path):
    path = tmp_path / "f.idx"
    path.write_bytes(bytes([0, 0, 0x0D, 2]) + np.asarray([2, 3], ">i4").tobytes() + np.arange(6, dtype=">f4").tobytes())
    np.testing.assert_array_equal(read_idx(path), np.arange(6, dtype=np.float32).reshape(2, 3))
    path.write_bytes(b"\x08\x03hello")
    with pytest.raises(ImageFileError, match="IDX header"):
        read_idx(path)


def test_truncated_idx_names_the_file(tmp_path):
    write_mnist(tmp_path, np.random.default_rng(1), compress=False)
    victim = tmp_path / "train-images-idx3-ubyte"
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(ImageFileError, match="train-images-idx3-ubyte") as info:
        read_mnist_idx(tmp_path, "train")
    assert "truncated" in str(info.value)


def test_truncated_gzip_idx_names_the_file(tmp_path):
    write_mnist(tmp_path, np.random.default_rng(2))
    victim = tmp_path / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:15])
    with pytest.raises(ImageFileError, match="t10k-labels-idx1-ubyte.gz"):
        load_images(f"mnist:{tmp_path}", split="test")


def test_missing_mnist_says_where_to_get_it(tmp_path):
    with pytest.raises(ImageFileError, match="download"):
        load_images(f"mnist:{tmp_path}")


def test_cifar10_round_trip(tmp_path):
    written = write_cifar(tmp_path / "cifar-10-batches-py", np.random.default_rng(3))
    images, labels, names = read_cifar10(tmp_path)  # the parent folder works too
    assert images.shape == (20, 3, 32, 32) and names[3] == "cat"
    first, first_labels = written["data_batch_1"]
    # the original layout: 1024 red values (row-major), then green, then blue
    np.testing.assert_array_equal(images[0, 1].ravel(), first[0, 1024:2048])
    np.testing.assert_array_equal(labels[:4], first_labels)
    test = load_images(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", split="test")
    assert test.images.shape == (4, 3, 32, 32) and test.num_classes == 10 and test.class_names[0] == "airplane"


def test_truncated_cifar_names_the_file(tmp_path):
    folder = tmp_path / "cifar"
    write_cifar(folder, np.random.default_rng(4))
    victim = folder / "data_batch_3"
    victim.write_bytes(victim.read_bytes()[:500])
    with pytest.raises(ImageFileError, match="data_batch_3"):
        read_cifar10(folder, "train")


def test_cifar_pickle_with_code_is_refused(tmp_path):
    folder = tmp_path / "cifar"
    write_cifar(folder, np.random.default_rng(5))
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": print}, handle, protocol=2)
    with pytest.raises(ImageFileError, match="not allowed"):
        read_cifar10(folder, "test")


def test_missing_cifar_says_where_to_get_it(tmp_path):
    with pytest.raises(ImageFileError, match="cifar-10-python.tar.gz"):
        load_images(f"cifar10:{tmp_path}")


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(array).save(path)


def test_image_folder_classes_and_pixels(tmp_path):
    rng = np.random.default_rng(6)
    pictures = {}
    for cls in ("cat", "dog"):
        for i in range(3):
            array = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            save_png(tmp_path / cls / f"{i}.png", array)
            pictures[(cls, i)] = array
    images, labels, names = read_image_folder(tmp_path)
    assert images.shape == (6, 3, 6, 5) and names == ["cat", "dog"]
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(images[4].transpose(1, 2, 0), pictures[("dog", 1)])
    data = load_images(f"folder:{tmp_path}", split="all")
    assert data.num_classes == 2 and data.images.shape == (6, 3, 6, 5)


def test_image_folder_reads_jpeg_and_flat_folders(tmp_path):
    for i in range(2):
        PIL.fromarray(np.full((4, 4), 100 * i, np.uint8)).save(tmp_path / f"{i}.jpg", quality=95)
    images, labels, names = read_image_folder(tmp_path)
    assert images.shape == (2, 1, 4, 4) and labels is None and names is None
    assert abs(int(images[1].mean()) - 100) <= 2


def test_image_folder_mixed_sizes_names_the_file(tmp_path):
    save_png(tmp_path / "a" / "0.png", np.zeros((8, 8), np.uint8))
    save_png(tmp_path / "a" / "1.png", np.zeros((8, 9), np.uint8))
    with pytest.raises(ImageFileError, match=r"8x8.*8x9 with 1 channel\(s\) at .*1\.png"):
        load_images(f"folder:{tmp_path}")


def test_image_folder_mixed_channels_names_the_file(tmp_path):
    save_png(tmp_path / "a" / "0.png", np.zeros((8, 8), np.uint8))
    save_png(tmp_path / "b" / "0.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageFileError, match=r"1 channel\(s\).*3 channel\(s\) at .*b.0\.png"):
        read_image_folder(tmp_path)
    images, _, _ = read_image_folder(tmp_path, mode="RGB")  # the fix the message offers
    assert images.shape == (2, 3, 8, 8)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "notes.txt").write_text("no images")
    with pytest.raises(ImageFileError, match="images in"):
        load_images(f"folder:{tmp_path}")
    with pytest.raises(ImageFileError, match="no folder"):
        read_image_folder(tmp_path / "nowhere")


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageFileError, match="broken.png"):
        read_image_folder(tmp_path)
