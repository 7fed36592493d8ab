r"""Dispersive regularisers: losses that spread a batch of intermediate features apart.

A flow or diffusion network trained only on its regression target can map different conditions to almost the
same internal representation ("representation collapse"). A dispersive loss, added to the main objective with a
small weight, penalises features that sit close together in the batch. It needs no positive pairs: it is the
repulsive half of a contrastive loss. Three papers use it, each with its own formula, all collected here:

* **Diffuse and Disperse** (Wang & He, arXiv 2506.09027, the InfoNCE-L2 variant of its pseudo-code), kind ``"dd"``:

  .. math::  \mathcal L = \log \frac{1}{B^2}\sum_{i,j} \exp\!\big(-\|h_i - h_j\|^2 / (D\,\tau)\big),

  the squared distance divided by the feature size D, the diagonal (distance 0) included, τ = 1.
* **MP1** (arXiv 2507.10543, §"Dispersive loss"; code LogSSim/MP1), kind ``"mp1"``: the same
  log-mean-exp, but the squared distances are divided by their **maximum over the batch** instead of by D, τ = 1.
  The loss is therefore invariant to the scale of the features: it spreads them relative to one another and
  cannot be lowered by inflating them (tested).
* **DM1** (arXiv 2510.07865; code Guowei-Zou/dm1-release), kinds ``"infonce_l2"``, ``"infonce_cosine"``,
  ``"hinge"`` and ``"covariance"``:

  - ``"hinge"``: :math:`\mathrm{mean}_{i\ne j}\max(0, m - \|h_i - h_j\|)`, margin m = 1.
  - ``"covariance"`` (VICReg-style): with C the covariance of the batch,
    :math:`\mathrm{mean}_{k\ne l} C_{kl}^2 + \mathrm{mean}_k \mathrm{relu}(1 - C_{kk})`.
  - InfoNCE. DM1's code builds similarities :math:`s_{ij} = -\|h_i - h_j\|/\tau` (L2) or
    :math:`\cos(h_i, h_j)/\tau` (cosine), fills the diagonal with −1e9, **clamps s to [−10, 10]** and returns
    :math:`-\mathrm{mean}_i \log\sum_j e^{-s_{ij}}`. The clamp turns the −1e9 diagonal into −10, i.e. a
    constant :math:`e^{10}` term in every row: for L2 the loss is nearly flat for collapsed features
    (−log(e^{10} + B − 1)) and saturates once every distance exceeds 10τ; for cosine (:math:`|s| \le 1/\tau`) that constant
    swamps the informative terms and shrinks the gradient by roughly :math:`e^{-10 + 1/\tau}`. That exact
    behaviour is available as ``"infonce_l2_dm1"`` and ``"infonce_cosine_dm1"``.

    The default ``"infonce_l2"`` and ``"infonce_cosine"`` are the unclamped, well-posed forms of the same idea,
    our choice: :math:`\mathrm{mean}_i \log \mathrm{mean}_j \exp(-\|h_i - h_j\|/\tau)` with the diagonal
    included (so the loss is bounded below by −log B and cannot be driven to −∞ by inflating the features), and
    the uniformity loss :math:`\mathrm{mean}_i \log \mathrm{mean}_{j\ne i} \exp(\cos(h_i, h_j)/\tau)` on the unit
    sphere. Un-squared distances keep a unit-size gradient for nearly collapsed features, which is why DM1 uses
    them instead of D&D's squared ones.

Features of any shape (B, ...) are flattened to (B, D); a list of tensors (one per network level, as MP1 applies
the loss to every down-sampling block) gives the sum of the per-level losses. Every kind has a finite gradient
for identical features (distances use :math:`\sqrt{d^2 + \epsilon}` and the max-normalisation a floor).

Example:
    >>> import torch
    >>> spread = torch.eye(4)
    >>> collapsed = torch.ones(4, 4)
    >>> bool(dispersive_loss(spread, "mp1") < dispersive_loss(collapsed, "mp1"))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from flowzoo.core.errors import ConfigError, DTypeError, ShapeError, expected
from flowzoo.core.validation import check_positive

__all__ = ["dispersive_loss", "DISPERSIVE_KINDS", "DEFAULT_TEMPERATURES", "pairwise_sq_distances",
           "effective_rank", "mean_pairwise_distance"]

Tensor = torch.Tensor

_DM1_DIAGONAL = -1e9   # DM1 masks self-similarity with this value before its clamp
_DM1_CLAMP = 10.0
_SQRT_EPS = 1e-12      # keeps d/d(d²) sqrt finite at d = 0
_MAX_FLOOR = 1e-12     # MP1's max-normalisation of identical features (all distances 0)
_DIRECT_LIMIT = 1 << 22  # B²·D entries up to which distances are formed by explicit differences (exact at 0)


def pairwise_sq_distances(h: Tensor) -> Tensor:
    """Squared Euclidean distances (B, B) between the rows of ``h`` (B, D); the diagonal is exactly 0.

    Small problems use explicit differences (exactly 0 for identical rows, so collapsed features have a zero,
    finite gradient); large ones the Gram form ``|a|² + |b|² − 2a·b``, clamped at 0, to save memory.
    """
    b, d = h.shape
    if b * b * d <= _DIRECT_LIMIT:
        sq = (h[:, None, :] - h[None, :, :]).pow(2).sum(-1)
    else:
        norms = h.pow(2).sum(1)
        sq = (norms[:, None] + norms[None, :] - 2 * h @ h.t()).clamp_min(0)
    return sq * (1 - torch.eye(b, dtype=h.dtype, device=h.device))


def _distances(h: Tensor) -> Tensor:
    return torch.sqrt(pairwise_sq_distances(h) + _SQRT_EPS)


def _off_diagonal(b: int, like: Tensor) -> Tensor:
    return ~torch.eye(b, dtype=torch.bool, device=like.device)


def _mp1(h: Tensor, temperature: float, margin: float) -> Tensor:
    sq = pairwise_sq_distances(h)
    sq = sq / sq.max().clamp_min(_MAX_FLOOR)
    return torch.logsumexp((-sq / temperature).flatten(), 0) - math.log(sq.numel())


def _dd(h: Tensor, temperature: float, margin: float) -> Tensor:
    sq = pairwise_sq_distances(h) / h.shape[1]
    return torch.logsumexp((-sq / temperature).flatten(), 0) - math.log(sq.numel())


def _infonce_l2(h: Tensor, temperature: float, margin: float) -> Tensor:
    logits = -_distances(h) * (1 - torch.eye(h.shape[0], dtype=h.dtype, device=h.device)) / temperature
    return (torch.logsumexp(logits, 1) - math.log(h.shape[0])).mean()


def _cosine(h: Tensor) -> Tensor:
    unit = h / h.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return unit @ unit.t()


def _infonce_cosine(h: Tensor, temperature: float, margin: float) -> Tensor:
    b = h.shape[0]
    logits = (_cosine(h) / temperature).masked_fill(~_off_diagonal(b, h), float("-inf"))
    return (torch.logsumexp(logits, 1) - math.log(b - 1)).mean()


def _dm1_infonce(similarity: Tensor) -> Tensor:
    """DM1's exact reduction of a similarity matrix s (already divided by τ)."""
    b = similarity.shape[0]
    s = similarity.masked_fill(~_off_diagonal(b, similarity), _DM1_DIAGONAL).clamp(-_DM1_CLAMP, _DM1_CLAMP)
    return -torch.logsumexp(-s, 1).mean()


def _infonce_l2_dm1(h: Tensor, temperature: float, margin: float) -> Tensor:
    return _dm1_infonce(-_distances(h) / temperature)


def _infonce_cosine_dm1(h: Tensor, temperature: float, margin: float) -> Tensor:
    return _dm1_infonce(_cosine(h) / temperature)


def _hinge(h: Tensor, temperature: float, margin: float) -> Tensor:
    gaps = torch.relu(margin - _distances(h))
    return gaps[_off_diagonal(h.shape[0], h)].mean()


def _covariance(h: Tensor, temperature: float, margin: float) -> Tensor:
    centred = h - h.mean(0, keepdim=True)
    cov = centred.t() @ centred / (h.shape[0] - 1)
    variance = torch.diagonal(cov)
    d = h.shape[1]
    off = (cov.pow(2).sum() - variance.pow(2).sum()) / max(d * (d - 1), 1)
    return off + torch.relu(1 - variance).mean()


_LOSSES: dict[str, Callable[[Tensor, float, float], Tensor]] = {
    "mp1": _mp1,
    "dd": _dd,
    "infonce_l2": _infonce_l2,
    "infonce_l2_dm1": _infonce_l2_dm1,
    "infonce_cosine": _infonce_cosine,
    "infonce_cosine_dm1": _infonce_cosine_dm1,
    "hinge": _hinge,
    "covariance": _covariance,
}

DISPERSIVE_KINDS: tuple[str, ...] = tuple(_LOSSES)
"""Names accepted by :func:`dispersive_loss`."""

DEFAULT_TEMPERATURES: dict[str, float] = {
    "mp1": 1.0, "dd": 1.0, "infonce_l2": 0.5, "infonce_l2_dm1": 0.5, "infonce_cosine": 0.5,
    "infonce_cosine_dm1": 0.5, "hinge": 1.0, "covariance": 1.0,
}
"""τ of each kind when none is given: the papers' values (MP1 and D&D τ = 1, DM1 τ = 0.5); unused by hinge and
covariance."""


def _flatten(features: object, index: int | None) -> Tensor:
    where = "features" if index is None else f"features[{index}]"
    if not isinstance(features, Tensor):
        raise DTypeError(expected(f"{where} as a torch tensor (B, ...)", type(features).__name__,
                                  "pass the network's intermediate activations"))
    if not features.is_floating_point():
        raise DTypeError(expected(f"floating-point {where}", features.dtype, "convert with .float()"))
    if features.dim() < 2 or features.shape[0] < 2 or features[0].numel() == 0:
        raise ShapeError(expected(f"{where} of shape (B, ...) with B >= 2 samples and at least one feature",
                                  f"shape {tuple(features.shape)}",
                                  "a dispersive loss compares samples of a batch: use a batch of 2 or more"))
    return features.reshape(features.shape[0], -1)


def dispersive_loss(features: Tensor | Sequence[Tensor], kind: str = "mp1", temperature: float | None = None, *,
                    margin: float = 1.0) -> Tensor:
    """The dispersive loss of ``kind`` on a batch of features (lower = more spread out).

    Args:
        features: a tensor (B, ...) or a sequence of such tensors (e.g. one per U-Net level); each is flattened to
            (B, D); for a sequence the per-tensor losses are summed.
        kind: one of :data:`DISPERSIVE_KINDS` (see the module docstring for each formula and its source).
        temperature: τ; default :data:`DEFAULT_TEMPERATURES` [kind].
        margin: the hinge margin m.

    Returns:
        A scalar tensor with gradient.

    Raises:
        ConfigError: unknown kind, τ ≤ 0 or margin ≤ 0.
        DTypeError, ShapeError: non-float features, a batch of fewer than 2 samples, an empty sequence.

    Example:
        >>> h = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
        >>> round(dispersive_loss(h, "hinge", margin=1.5).item(), 4)   # pair (0, 1) is 0.5 inside: 2 · 0.5 / 6
        0.1667
    """
    if kind not in _LOSSES:
        raise ConfigError(expected(f"a dispersive kind in {list(DISPERSIVE_KINDS)}", repr(kind),
                                   "pick one of the listed names"))
    tau = DEFAULT_TEMPERATURES[kind] if temperature is None else temperature
    for name, value in (("temperature", tau), ("margin", margin)):
        check_positive(value, name, fix=f"pass e.g. {name}=0.5")
    if isinstance(features, Tensor):
        return _LOSSES[kind](_flatten(features, None), float(tau), float(margin))
    if not isinstance(features, Sequence) or len(features) == 0:
        received = "an empty sequence" if isinstance(features, Sequence) else type(features).__name__
        raise ShapeError(expected("a tensor or a non-empty sequence of tensors", received,
                                  "pass the features of at least one layer"))
    levels = [_LOSSES[kind](_flatten(f, i), float(tau), float(margin)) for i, f in enumerate(features)]
    return torch.stack(levels).sum()


def effective_rank(features: Tensor) -> float:
    r"""Participation ratio :math:`(\sum\lambda)^2/\sum\lambda^2` of the feature covariance (1: collapsed to a line).

    A diagnostic of representation collapse (DM1's "representation health"); features (B, ...) are flattened.
    """
    h = _flatten(features, None).detach().to(torch.float64)
    centred = h - h.mean(0, keepdim=True)
    eig = torch.linalg.svdvals(centred).pow(2)
    total = eig.pow(2).sum()
    return 0.0 if float(total) == 0.0 else float(eig.sum().pow(2) / total)


def mean_pairwise_distance(features: Tensor) -> float:
    """Mean Euclidean distance between distinct rows of the flattened features (a collapse diagnostic)."""
    h = _flatten(features, None).detach().to(torch.float64)
    dist = torch.sqrt(pairwise_sq_distances(h))
    return float(dist[_off_diagonal(h.shape[0], h)].mean())
