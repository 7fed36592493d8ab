r"""SourceFM: a norm-aligned Gaussian source and directionally-pruned sampling (Lee, Kim, Lee, "Is There a Better
Source Distribution than Gaussian?", TMLR 2025; code: github.com/kwanseokk/SourceFM).

Two changes to the Gaussian source of pixel flow matching, both built from the training images:

* **Norm alignment** (training and sampling). The source is :math:`x_0 = s\,z`, :math:`z \sim N(0, I_D)`, with
  :math:`s = \mathbb{E}\|x_1\| / \mathbb{E}\|z\|` so that :math:`\mathbb{E}\|x_0\| = \mathbb{E}\|x_1\|`. The data
  term is the mean norm of the flattened training images; the Gaussian term is the exact chi mean
  :math:`\mathbb{E}\|z\| = \sqrt2\,\Gamma(\tfrac{D+1}{2})/\Gamma(\tfrac D2)` (:func:`gaussian_mean_norm`). Both
  are computed, never hard-coded.
* **Directional pruning** (sampling only, post hoc). The training images (with their horizontal flips, when the
  run used flips) are flattened and L2-normalised; PCA on them gives :math:`2D` candidate axes
  :math:`\pm u_k`; the *pruning axes* are the candidates whose largest cosine similarity to any normalised image
  is at most ``max_similarity`` (0.01 in the paper): directions no image points towards. A noise draw is
  accepted only if :math:`\cos(z, a) \le \tau` for every pruning axis :math:`a` (rejection sampling), so the flow
  never starts in a data-free direction. The paper's :math:`\tau = 0.048` for :math:`D = 3072`; the default here
  keeps the same number of standard deviations of a random direction's cosine (:math:`\approx 1/\sqrt D`):
  :math:`\tau = 0.048\sqrt{3072/D}` (:func:`default_tau`). The acceptance rate (accepted / proposed draws, the
  paper's code's ``valid`` share) is counted and reported, because a low rate biases the source away from a
  Gaussian.
* **How many axes, and the threshold.** A draw's cosines with K orthonormal axes are nearly independent
  :math:`N(0, 1/D)`, so the all-axes test passes with probability about :math:`\Phi(\tau\sqrt D)^K`: at the
  paper's :math:`\tau` (2.66 standard deviations) each axis passes 99.6 % of draws, which leaves a usable rate
  for a few hundred axes, as on CIFAR-10, but not for thousands. Smooth data sets have thousands: on 3x32x32
  natural-image patches (crops of upscaled photographs, little high-frequency energy) 3912 of the 6144 candidates
  have no image above cosine 0.01, and the rate at the paper's :math:`\tau` is about :math:`e^{-15}`: no draw in
  a lifetime. So when ``tau`` is not given the threshold is *calibrated* (:func:`calibrated_tau`): the paper's
  rescaled :math:`\tau`, raised just enough that a ``min_acceptance`` share (default 5 %) of Gaussian probes
  passes. The axes (the paper's definition) are kept; the rate and the threshold used are reported.

Time runs from 0 (source) to 1 (data), the paper's and flowzoo's convention, so no mapping is needed. Rationale:
the Gaussian's omnidirectional coverage is kept (the paper finds density-fitted sources hurt); only its scale and
a few data-free directions change. :class:`SourceFMSource` is the one source object used by training batches
(:class:`SourceFMLoss`) and at sampling time (``sample(n, generator=)``).

Example:
    >>> data = torch.tensor([[3.0, 4.0], [0.0, 5.0]])          # both rows have norm 5
    >>> round(norm_alignment_scale(data) * gaussian_mean_norm(2), 4)
    5.0
    >>> source = SourceFMSource((2,), axes=torch.tensor([[1.0, 0.0]]), tau=0.0)
    >>> x = source.sample(100, generator=torch.Generator().manual_seed(0))
    >>> bool((x[:, 0] <= 0).all()), 0.3 < source.acceptance_rate < 0.7
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from flowzoo.core.errors import ConfigError, EmptyInputError, expected
from flowzoo.core.validation import check_positive_int, check_probability, check_tensor

__all__ = ["gaussian_mean_norm", "norm_alignment_scale", "default_tau", "calibrated_tau", "pca_candidate_axes",
           "select_pruning_axes", "pruning_axes", "SourceFMSource", "SourceFMLoss", "build_source"]

PAPER_TAU, PAPER_DIM = 0.048, 3072  # the paper's CIFAR-10 cosine threshold and dimension
MIN_ACCEPTANCE = 0.05  # the share of Gaussian draws a calibrated threshold lets through at least


def gaussian_mean_norm(dim: int) -> float:
    r"""The exact mean norm :math:`\sqrt2\,\Gamma(\frac{D+1}{2})/\Gamma(\frac D2)` of :math:`N(0, I_D)` (chi mean).

    Example:
        >>> round(gaussian_mean_norm(1), 6) == round(math.sqrt(2 / math.pi), 6)
        True
    """
    dim = check_positive_int(dim, "dim")
    return math.sqrt(2.0) * math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))


def _flat_data(data: object, name: str = "data") -> torch.Tensor:
    data = check_tensor(data, name, min_dim=2)
    return data.reshape(data.shape[0], -1).double()


def norm_alignment_scale(data: torch.Tensor) -> float:
    r"""The source scale :math:`s = \mathbb{E}\|x_1\| / \mathbb{E}\|z\|` of norm alignment (paper Sec. 5).

    Args:
        data: training images (N, ...) in the range the model learns (flowzoo: [−1, 1]).

    Example:
        >>> round(norm_alignment_scale(torch.ones(4, 1, 2, 2)) * gaussian_mean_norm(4), 6)
        2.0
    """
    flat = _flat_data(data)
    return float(flat.norm(dim=1).mean()) / gaussian_mean_norm(flat.shape[1])


def default_tau(dim: int) -> float:
    r"""The paper's cosine threshold 0.048 at :math:`D = 3072`, rescaled by :math:`\sqrt{3072/D}` (at most 1).

    Example:
        >>> default_tau(3072)
        0.048
    """
    return min(1.0, PAPER_TAU * math.sqrt(PAPER_DIM / check_positive_int(dim, "dim")))


def _largest_cosines(z: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    """The largest cosine of each flattened draw (N, D) with the unit ``axes`` (K, D), in chunks of draws."""
    return torch.cat([((chunk / chunk.norm(dim=1, keepdim=True).clamp_min(1e-12)) @ axes.to(chunk).T).amax(dim=1)
                      for chunk in z.split(512)])


def calibrated_tau(axes: torch.Tensor, min_acceptance: float = MIN_ACCEPTANCE, *, probes: int = 4000,
                   seed: int = 0) -> float:
    r"""The smallest threshold at least :func:`default_tau` that accepts a ``min_acceptance`` share of draws.

    ``probes`` seeded Gaussian draws give the distribution of a draw's largest cosine with the unit ``axes``
    (K, D); its ``min_acceptance`` quantile is the threshold that lets that share through. With few axes the
    paper's rescaled threshold already does, and is returned unchanged.

    Example:
        >>> calibrated_tau(torch.eye(1024)[:4], probes=500) == default_tau(1024)    # 4 axes: the paper's
        True
        >>> every = torch.cat([torch.eye(1024), -torch.eye(1024)])                 # 2048 axes: raised
        >>> calibrated_tau(every, probes=500) > default_tau(1024)
        True
    """
    axes = check_tensor(axes, "axes", min_dim=2).double()
    min_acceptance = check_probability(min_acceptance, "min_acceptance")
    check_positive_int(probes, "probes")
    paper = default_tau(axes.shape[1])
    if min_acceptance == 0:
        return paper
    unit = (axes / axes.norm(dim=1, keepdim=True).clamp_min(1e-12)).float()   # float32: a quantile, not a sum
    z = torch.randn(probes, axes.shape[1], generator=torch.Generator().manual_seed(seed))
    needed = float(torch.quantile(_largest_cosines(z, unit), min_acceptance))
    return min(1.0, max(paper, needed))


def _unit_rows(data: torch.Tensor, flip: bool) -> torch.Tensor:
    """Flattened, L2-normalised images (with their horizontal flips appended when ``flip``)."""
    images = check_tensor(data, "data", min_dim=2).double()
    if flip:
        if images.dim() < 3:
            raise ConfigError(expected("images (N, C, H, W) to flip", f"shape {tuple(images.shape)}",
                                       "pass flip=False for flat data"))
        images = torch.cat([images, images.flip(-1)])
    flat = images.reshape(images.shape[0], -1)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def pca_candidate_axes(unit_data: torch.Tensor) -> torch.Tensor:
    """The :math:`2D` candidates :math:`\\pm u_k` (rows) from PCA of the (centred) normalised data.

    Example:
        >>> pca_candidate_axes(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])).abs().sum(0).tolist()
        [2.0, 2.0]
    """
    unit_data = check_tensor(unit_data, "unit_data", min_dim=2).double()
    centred = unit_data - unit_data.mean(dim=0, keepdim=True)
    # The eigenvectors of the D x D covariance: all D axes, even where there are fewer images than pixels.
    _, vectors = torch.linalg.eigh(centred.T @ centred)
    axes = vectors.flip(-1).T  # largest variance first
    return torch.cat([axes, -axes])


def select_pruning_axes(unit_data: torch.Tensor, candidates: torch.Tensor, max_similarity: float) -> torch.Tensor:
    """The candidates whose largest cosine similarity to any normalised data row is at most ``max_similarity``.

    Example:
        >>> data = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
        >>> select_pruning_axes(data, torch.tensor([[-1.0, 0.0], [0.0, 1.0]]), 0.01).tolist()
        [[-1.0, 0.0]]
    """
    max_similarity = check_probability(max_similarity, "max_similarity")
    candidates = check_tensor(candidates, "candidates", min_dim=2).double()
    unit_candidates = candidates / candidates.norm(dim=1, keepdim=True).clamp_min(1e-12)
    largest = torch.cat([(chunk.double() @ unit_candidates.T).amax(dim=0, keepdim=True)
                         for chunk in unit_data.split(4096)]).amax(dim=0)
    return unit_candidates[largest <= max_similarity]


def pruning_axes(data: torch.Tensor, max_similarity: float = 0.01, *, flip: bool = False) -> torch.Tensor:
    """The pruning axes (K, D) of ``data`` (N, ...): PCA axes that no normalised image points towards.

    Args:
        data: training images, preprocessed as in training (range [−1, 1]).
        max_similarity: an axis is pruned when no image has a larger cosine with it (paper: 0.01).
        flip: append horizontal flips first (when training used flips).

    Example:
        >>> pruning_axes(torch.tensor([[1.0, 0.2], [1.0, -0.2]])).tolist() == [[-1.0, 0.0]]
        True
    """
    max_similarity = check_probability(max_similarity, "max_similarity")
    unit = _unit_rows(data, flip)
    return select_pruning_axes(unit, pca_candidate_axes(unit), max_similarity).float()


class SourceFMSource:
    """The SourceFM source: ``scale`` × a Gaussian, rejection-sampled away from pruning ``axes``.

    Args:
        shape: the shape of one sample, e.g. (C, H, W).
        scale: the norm-alignment scale (1: the standard Gaussian).
        axes: pruning axes (K, D) with D = prod(shape), or None for no pruning.
        tau: accept a draw only if its cosine with every axis is at most ``tau`` (None: :func:`calibrated_tau`
            for ``min_acceptance``, which is :func:`default_tau` unless there are too many axes for it).
        candidates: draws proposed per missing sample in each round.
        max_rounds: rounds of proposals before giving up (earlier when 20000 draws found none).
        min_acceptance: the share of draws a calibrated ``tau`` lets through (0: the paper's rescaled ``tau``).

    Attributes:
        proposed, accepted: draws proposed and accepted so far (``acceptance_rate`` = accepted / proposed).
    """

    def __init__(self, shape: Sequence[int], scale: float = 1.0, axes: torch.Tensor | None = None,
                 tau: float | None = None, candidates: int = 4, max_rounds: int = 1000,
                 min_acceptance: float = MIN_ACCEPTANCE) -> None:
        self.shape = tuple(check_positive_int(v, "shape") for v in shape)
        dim = math.prod(self.shape)
        self.scale = float(scale)
        if not math.isfinite(self.scale) or self.scale <= 0:
            raise ConfigError(expected("a positive finite source scale", scale, "compute it with norm_alignment_scale"))
        if axes is not None:
            axes = check_tensor(axes, "axes", min_dim=2, allow_empty=True).float()
            if axes.dim() != 2 or axes.shape[1] != dim:
                raise ConfigError(expected(f"pruning axes of shape (K, {dim})", f"shape {tuple(axes.shape)}",
                                           "compute them with pruning_axes on images of this shape"))
            axes = axes / axes.norm(dim=1, keepdim=True).clamp_min(1e-12) if len(axes) else None
        self.axes = axes
        self.min_acceptance = check_probability(min_acceptance, "min_acceptance")
        if tau is None:
            tau = default_tau(dim) if axes is None else calibrated_tau(axes, self.min_acceptance)
        self.tau = check_probability(tau, "tau")
        self.candidates = check_positive_int(candidates, "candidates")
        self.max_rounds = check_positive_int(max_rounds, "max_rounds")
        self.proposed = self.accepted = 0

    @property
    def acceptance_rate(self) -> float:
        """Share of proposed Gaussian draws that passed the pruning test (1.0 without pruning or draws)."""
        return self.accepted / self.proposed if self.proposed else 1.0

    def accepts(self, z: torch.Tensor) -> torch.Tensor:
        """Whether each flattened draw (N, D) has cosine ≤ tau with every pruning axis."""
        if self.axes is None:
            return torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
        return _largest_cosines(z, self.axes) <= self.tau

    def sample(self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``n`` source samples of shape ``(n, *shape)``; draws come from ``generator`` (CPU) and move to ``device``."""
        n = check_positive_int(n, "n")
        dim = math.prod(self.shape)
        kept: list[torch.Tensor] = []
        found = 0
        for _ in range(self.max_rounds):
            pool = (n - found) * (1 if self.axes is None else self.candidates)
            z = torch.randn(pool, dim, generator=generator)
            passed = self.accepts(z)
            self.proposed += pool
            self.accepted += int(passed.sum())
            z = z[passed][: n - found]
            kept.append(z)
            found += len(z)
            if self.accepted == 0 and self.proposed >= 20000:
                break   # hopeless at this threshold: say so now rather than after max_rounds
            if found == n:
                x = torch.cat(kept).reshape(n, *self.shape) * self.scale
                return x.to(device=device, dtype=dtype)
        raise ConfigError(expected(f"a pruned source that accepts draws (tau {self.tau:.4g}, "
                                   f"{len(self.axes)} axes)", f"{found} of {n} accepted, {self.accepted} of "
                                   f"{self.proposed} draws in all", "raise tau (or leave it to the calibration) "
                                   "or lower max_similarity (fewer pruning axes)"))

    def state(self) -> dict[str, Any]:
        """What rebuilds this source: ``SourceFMSource(**source.state())``."""
        return {"shape": list(self.shape), "scale": self.scale, "axes": self.axes, "tau": self.tau,
                "candidates": self.candidates, "max_rounds": self.max_rounds, "min_acceptance": self.min_acceptance}


class SourceFMLoss:
    """A flow-matching loss whose batches draw ``x0`` from a :class:`SourceFMSource` (norm-aligned training).

    ``loss(model, batch)`` adds ``batch["x0"] = source.sample(B)`` (on the data's device and dtype) and calls
    ``base``; a coupling inside ``base`` (e.g. exact OT) then pairs those source draws with the images.

    Example:
        >>> from flowzoo.core.objectives import FlowMatchingLoss
        >>> loss = SourceFMLoss(FlowMatchingLoss(), SourceFMSource((2,), scale=3.0))
        >>> value, metrics = loss(lambda x, t: torch.zeros_like(x), {"x1": torch.zeros(4, 2)})
        >>> metrics["source_scale"]
        3.0
    """

    def __init__(self, base: Callable, source: SourceFMSource) -> None:
        self.base = base
        self.source = source

    def __call__(self, model: Callable, batch: Mapping[str, torch.Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        x1 = check_tensor(batch["x1"], 'batch["x1"]', finite=False) if isinstance(batch, Mapping) and "x1" in batch \
            else None
        if x1 is None:
            return self.base(model, batch, generator=generator)  # the base loss raises its own error
        x0 = self.source.sample(x1.shape[0], generator=generator if generator is None or
                                generator.device.type == "cpu" else None, device=x1.device, dtype=x1.dtype)
        loss, metrics = self.base(model, {**batch, "x0": x0}, generator=generator)
        return loss, {**metrics, "source_scale": self.source.scale}


def build_source(images: torch.Tensor, *, norm_align: bool = True, prune: bool = False, max_similarity: float = 0.01,
                 tau: float | None = None, flip: bool = False, scale: float | None = None,
                 min_acceptance: float = MIN_ACCEPTANCE) -> SourceFMSource:
    """The SourceFM source of a training set ``images`` (N, C, H, W).

    Args:
        images: the training images as the model sees them ([−1, 1]); must be non-empty.
        norm_align: scale the Gaussian by :func:`norm_alignment_scale` (ignored when ``scale`` is given).
        prune: reject draws close to :func:`pruning_axes` (sampling time).
        max_similarity: the pruning-axis threshold on the largest data cosine, in [0, 1].
        tau: the acceptance threshold (None: :func:`calibrated_tau`, the paper's rescaled threshold unless the
            axes are too many for a ``min_acceptance`` share of draws to pass).
        flip: compute the axes on the images and their horizontal flips (as training augmented them).
        scale: a stored scale (e.g. from a checkpoint) instead of recomputing it.
        min_acceptance: the share of draws a calibrated threshold lets through (0: the paper's rescaled one).

    Example:
        >>> source = build_source(torch.rand(20, 1, 4, 4) * 2 - 1, prune=True)
        >>> source.sample(3).shape
        torch.Size([3, 1, 4, 4])
    """
    if not isinstance(images, torch.Tensor) or images.numel() == 0 or images.dim() < 2:
        raise EmptyInputError(expected("a non-empty image tensor (N, C, H, W) to build the source from",
                                       f"shape {tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}",
                                       "load the training split first"))
    max_similarity = check_probability(max_similarity, "max_similarity")
    if scale is None:
        scale = norm_alignment_scale(images) if norm_align else 1.0
    axes = pruning_axes(images, max_similarity, flip=flip) if prune else None
    return SourceFMSource(tuple(images.shape[1:]), scale=scale, axes=axes, tau=tau, min_acceptance=min_acceptance)
