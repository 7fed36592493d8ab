r"""LFM's bound on the Wasserstein distance of decoded latent samples (Dao et al., arXiv 2307.08698, Theorem).

**Bound** (LFM Theorem, the triangle inequality plus the decoder's Lipschitz constant :math:`L_D`):

.. math::
    W_2(p_{data}, D_\# \hat q) \le W_2(p_{data}, D_\# E_\# p_{data}) + L_D\, W_2(E_\# p_{data}, \hat q).

:func:`lfm_bound_terms` estimates each term on samples: the reconstruction term by the root-mean-square
reconstruction error (the identity coupling, an upper bound of that W2), :math:`L_D` by power iteration on the
decoder's Jacobian at latents (a local estimate, hence a lower bound of the global constant), the latent term by
the exact empirical W2 (:func:`flowzoo.core.analysis.wasserstein2`), and puts the measured pixel W2 beside them.
No time convention is involved: the terms compare data with finished samples (t = 1).

Example:
    >>> from flowzoo.vision.autoencoder import ConvAutoencoder
    >>> from flowzoo.vision.latent import LatentCodec
    >>> _ = torch.manual_seed(0)
    >>> codec = LatentCodec.fit(ConvAutoencoder((1, 8, 8), latent_channels=2, downsample=1, channels=4),
    ...                         torch.randn(32, 1, 8, 8))
    >>> terms = lfm_bound_terms(codec, torch.randn(16, 1, 8, 8), torch.randn(16, 2, 4, 4), iterations=5)
    >>> terms.n, terms.bound >= terms.recon_w2
    (16, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowzoo.core.analysis import wasserstein2
from flowzoo.core.errors import ShapeError, expected
from flowzoo.core.validation import check_positive_int, check_tensor
from flowzoo.vision.autoencoder import shape_text
from flowzoo.vision.datasets import ImageData
from flowzoo.vision.latent import LatentCodec

__all__ = ["decoder_lipschitz", "LFMBound", "lfm_bound_terms"]


def decoder_lipschitz(codec: LatentCodec, latents: torch.Tensor, *, iterations: int = 20,
                      generator: torch.Generator | None = None) -> float:
    r"""The largest spectral norm :math:`\|J_D(z)\|_2` of the decoder's Jacobian (in scaled coordinates) over the
    ``latents``, by power iteration on :math:`J^\top J` (forward- and reverse-mode products, one per latent)."""
    z = check_tensor(latents, "latents", min_dim=2).detach().float().to(codec.device)
    iterations = check_positive_int(iterations, "iterations")

    def unit(v: torch.Tensor) -> torch.Tensor:
        return v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (v.dim() - 1))

    v = unit(torch.randn(z.shape, generator=generator).to(z.device))
    _, pullback = torch.func.vjp(codec.decode, z)
    for _ in range(iterations):
        _, jv = torch.func.jvp(codec.decode, (z,), (v,))
        v = unit(pullback(jv)[0])
    _, jv = torch.func.jvp(codec.decode, (z,), (v,))
    return float(jv.detach().flatten(1).norm(dim=1).max())


@dataclass
class LFMBound:
    """LFM's bound terms (module docstring) beside the measured pixel W2; all on ``n`` points."""

    recon_w2: float
    lipschitz: float
    latent_w2: float
    bound: float
    measured_w2: float
    n: int


def lfm_bound_terms(codec: LatentCodec, data: ImageData | torch.Tensor, samples_latent: torch.Tensor, *,
                    max_points: int = 500, lipschitz_points: int = 32, iterations: int = 20,
                    generator: torch.Generator | None = None) -> LFMBound:
    """Estimate recon W2 + L_D × latent W2 and the measured W2(data, decoded samples) on up to ``max_points``
    images and generated latents (the first ones; pass them shuffled); :math:`L_D` from ``lipschitz_points``
    encoded data latents."""
    images = data.images if isinstance(data, ImageData) else check_tensor(data, "data", min_dim=4)
    samples = check_tensor(samples_latent, "samples_latent", min_dim=4).detach().float().cpu()
    if tuple(images.shape[1:]) != codec.shape or tuple(samples.shape[1:]) != codec.latent_shape:
        raise ShapeError(expected(f"images {shape_text(codec.shape)} and latents {shape_text(codec.latent_shape)}",
                                  f"{shape_text(images.shape[1:])} and {shape_text(samples.shape[1:])}",
                                  "pass the codec's data and latents from generate_latent"))
    n = min(check_positive_int(max_points, "max_points"), len(images), len(samples))
    x, samples = images[:n].float(), samples[:n]
    encoded = codec.encode(x)
    with torch.no_grad():
        reconstructed = torch.cat([codec.decode(encoded[s:s + 512]).cpu() for s in range(0, n, 512)])
        decoded = torch.cat([codec.decode(samples[s:s + 512]).cpu() for s in range(0, n, 512)])
    recon = float((x - reconstructed).flatten(1).pow(2).sum(1).mean().sqrt())
    points = encoded[:check_positive_int(lipschitz_points, "lipschitz_points")]
    lipschitz = decoder_lipschitz(codec, points, iterations=iterations, generator=generator)
    latent = wasserstein2(encoded, samples)
    return LFMBound(recon, lipschitz, latent, recon + lipschitz * latent, wasserstein2(x, decoded), n)
