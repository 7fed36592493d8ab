r"""Image-generation metrics: Fréchet distance, KID, k-NN precision/recall, PSNR, SSIM, and sample grids.

* **Fréchet distance** (FID's formula; Heusel et al., arXiv 1706.08500, eq. 6) between Gaussians fitted to
  two feature sets: :math:`d^2 = \|\mu_1-\mu_2\|^2 + \operatorname{tr}(\Sigma_1+\Sigma_2-2(\Sigma_1\Sigma_2)^{1/2})`.
* **KID** (Bińkowski et al., arXiv 1801.01401, eq. 2 with the kernel of §4): the unbiased estimator of the
  squared MMD with the cubic polynomial kernel :math:`k(a,b)=(a^\top b/d+1)^3`, averaged over random
  subsets. Unlike FID it is unbiased, so two samples of one distribution give values around 0 (negative ones
  included) whatever their size.
* **Precision / recall** on the k-NN manifold (Kynkäänniemi et al., arXiv 1904.06991, eqs. 1–3): a set's
  manifold is the union of balls around its points with radius the distance to the k-th nearest neighbour;
  precision is the share of generated points inside the real manifold, recall the share of real points inside
  the generated one.
* **PSNR** :math:`=10\log_{10}(L^2/\mathrm{MSE})` per image, with L the data range (2 for [−1, 1]).
* **SSIM** (Wang et al., IEEE TIP 2004, eq. 13) with the 11-tap Gaussian window of σ = 1.5, K1 = 0.01,
  K2 = 0.03, population (co)variances, averaged over the valid window positions and the channels (the same
  convention as ``skimage.metrics.structural_similarity(gaussian_weights=True, use_sample_covariance=False)``).

None of these depend on time; the generated images are whatever a sampler returned at t = 1 (data).

Example:
    >>> import torch
    >>> x = torch.rand(2, 1, 16, 16) * 2 - 1
    >>> ssim(x, x).tolist(), psnr(x, x).tolist()
    ([1.0, 1.0], [inf, inf])
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError, expected
from flowzoo.core.validation import check_int, check_positive, check_positive_int, check_tensor

__all__ = ["feature_statistics", "frechet_distance", "kid", "precision_recall", "psnr", "ssim", "image_grid",
           "save_image_grid", "log_image_grid"]


def _features(x: object, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    x = check_tensor(x, name, min_dim=2)
    return x.detach().reshape(x.shape[0], -1).cpu().double()


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of an (n, d) feature matrix, in float64."""
    f = _features(features, "features").numpy()
    if f.shape[0] < 2:
        raise ShapeError(expected("at least two feature rows", f"shape {f.shape}", "pass more samples"))
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    r"""Squared Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2), the quantity FID reports.

    The square root of Σ1Σ2 is taken in float64 (``scipy.linalg.sqrtm``); when it is not finite (a singular
    product, e.g. fewer samples than features) ε·I is added to both covariances; an imaginary part below 1e-3
    of the traces is rounding and dropped, a larger one raises; the result is clipped at 0.

    Example:
        >>> round(frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2)), 6)  # 2 + 2·(2−1)²
        4.0
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ShapeError(expected("means (d,) and covariances (d, d) of one d",
                                  f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}",
                                  "compute both with feature_statistics on the same features"))
    if not all(np.isfinite(v).all() for v in (mu1, mu2, sigma1, sigma2)):
        raise NonFiniteError(expected("finite statistics", "NaN/Inf", "check the samples for NaN"))
    eps = check_positive(eps, "eps")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(d)
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        scale = max(abs(np.trace(sigma1)) + abs(np.trace(sigma2)), 1e-12)
        if np.abs(np.diagonal(covmean).imag).max() > 1e-3 * scale:
            raise NonFiniteError(expected("a real sqrt(sigma1 @ sigma2)",
                                          f"imaginary part {np.abs(covmean.imag).max():.3g}",
                                          "pass symmetric positive semi-definite covariances"))
        covmean = covmean.real
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)), 0.0)


def kid(features_x: torch.Tensor, features_y: torch.Tensor, *, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """Kernel Inception Distance: mean and standard deviation over subsets of the unbiased MMD² estimate.

    Each subset draws ``min(subset_size, n_x, n_y)`` rows of each set without replacement.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> mean, std = kid(torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g) + 1.0, subsets=10)
        >>> mean > 10 * std
        True
    """
    fx, fy = _features(features_x, "features_x"), _features(features_y, "features_y")
    if fx.shape[1] != fy.shape[1]:
        raise ShapeError(expected("two feature sets of one dimension", f"{fx.shape[1]} and {fy.shape[1]}",
                                  "featurise both with the same network"))
    subsets, subset_size = check_positive_int(subsets, "subsets"), check_positive_int(subset_size, "subset_size")
    m = min(subset_size, fx.shape[0], fy.shape[0])
    if m < 2:
        raise ShapeError(expected("at least two rows in each feature set", f"{fx.shape[0]} and {fy.shape[0]}",
                                  "pass more samples"))
    d = fx.shape[1]
    values = []
    for _ in range(subsets):
        a = fx[torch.randperm(fx.shape[0], generator=generator)[:m]]
        b = fy[torch.randperm(fy.shape[0], generator=generator)[:m]]
        kxx, kyy, kxy = ((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        values.append(float(within - 2.0 * kxy.mean()))
    return float(np.mean(values)), float(np.std(values))


def _knn_radii(points: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    radii = []
    for start in range(0, points.shape[0], chunk):
        dist = torch.cdist(points[start:start + chunk], points)
        radii.append(dist.kthvalue(k + 1, dim=1).values)  # the 0-th neighbour is the point itself
    return torch.cat(radii)


def _coverage(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    inside = [(torch.cdist(queries[s:s + chunk], centres) <= radii[None]).any(1) for s in range(0, len(queries), chunk)]
    return float(torch.cat(inside).double().mean())


def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, *, k: int = 3,
                     chunk: int = 1024) -> tuple[float, float]:
    """k-NN manifold precision (fake inside real) and recall (real inside fake), each in [0, 1].

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> real = torch.randn(300, 2, generator=g)
        >>> precision_recall(real, real + 100.0)
        (0.0, 0.0)
    """
    real, fake = _features(real_features, "real_features"), _features(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ShapeError(expected("two feature sets of one dimension", f"{real.shape[1]} and {fake.shape[1]}",
                                  "featurise both with the same network"))
    k, chunk = check_positive_int(k, "k"), check_positive_int(chunk, "chunk")
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ShapeError(expected(f"more than k = {k} rows in each set", f"{real.shape[0]} and {fake.shape[0]}",
                                  "pass more samples or lower k"))
    precision = _coverage(fake, real, _knn_radii(real, k, chunk), chunk)
    recall = _coverage(real, fake, _knn_radii(fake, k, chunk), chunk)
    return precision, recall


def _image_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = check_tensor(x, "x", min_dim=4), check_tensor(y, "y", min_dim=4)
    if x.shape != y.shape or x.dim() != 4:
        raise ShapeError(expected("two image batches (N, C, H, W) of one shape",
                                  f"{tuple(x.shape)} and {tuple(y.shape)}",
                                  "compare each image with its reference"))
    return x.detach().double(), y.detach().double()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image pair, (N,) (inf where they are identical).

    Example:
        >>> psnr(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.2)).round().tolist()  # 10 log10(4 / 0.04)
        [20.0]
    """
    x, y = _image_pair(x, y)
    data_range = check_positive(data_range, "data_range")
    mse = (x - y).pow(2).mean((1, 2, 3))
    return (10.0 * torch.log10(data_range ** 2 / mse)).float()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity of each image pair, (N,), in [−1, 1] (1 for identical images).

    ``window`` (odd) must not exceed the image: pass e.g. ``window=7`` for 8×8 images.
    """
    x, y = _image_pair(x, y)
    data_range, sigma = check_positive(data_range, "data_range"), check_positive(sigma, "sigma")
    window = check_int(window, "window", low=1)
    if window % 2 == 0 or window > min(x.shape[-2:]):
        raise ConfigError(expected(f"an odd window <= the image size {min(x.shape[-2:])}", window,
                                   "pass an odd window no larger than the images"))
    taps = torch.arange(window, dtype=torch.float64) - window // 2
    g = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    channels = x.shape[1]
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, window, window)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(z, kernel, groups=channels)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return index.mean((1, 2, 3)).float()


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile (N, C, H, W) images in [−1, 1] into one uint8 (C, H', W') grid, ``nrow`` images per row.

    Example:
        >>> image_grid(torch.zeros(6, 1, 4, 4), nrow=3).shape  # 2 rows x 3 columns, 2-pixel borders
        torch.Size([1, 14, 20])
    """
    images = check_tensor(images, "images", min_dim=4)
    if images.dim() != 4:
        raise ShapeError(expected("images (N, C, H, W)", f"shape {tuple(images.shape)}", "pass a batch of images"))
    n, c, h, w = images.shape
    nrow = check_positive_int(nrow, "nrow") if nrow is not None else math.ceil(math.sqrt(n))
    padding = check_int(padding, "padding", low=0)
    rows = math.ceil(n / nrow)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    grid = torch.zeros(c, rows * (h + padding) + padding, nrow * (w + padding) + padding, dtype=torch.uint8)
    for i in range(n):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[:, top:top + h, left:left + w] = pixels[i]
    return grid


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, padding: int = 2,
                    scale: int = 1) -> Path:
    """Write :func:`image_grid` as a PNG (``scale`` repeats each pixel, for small images); returns the path."""
    from PIL import Image

    scale = check_positive_int(scale, "scale")
    grid = image_grid(images, nrow, padding).repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(expected("a .png path", str(path), "name the file *.png"))
    path.parent.mkdir(parents=True, exist_ok=True)
    array = grid.permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path


def log_image_grid(writer: object, tag: str, images: torch.Tensor, step: int, nrow: int | None = None) -> None:
    """Add :func:`image_grid` to a TensorBoard ``SummaryWriter`` (``writer.add_image``) at ``step``."""
    if not hasattr(writer, "add_image"):
        raise ConfigError(expected("a TensorBoard SummaryWriter", type(writer).__name__,
                                   "pass torch.utils.tensorboard.SummaryWriter(log_dir)"))
    writer.add_image(tag, image_grid(images, nrow), check_int(step, "step", low=0), dataformats="CHW")
