"""Batched point-cloud operations in plain torch: sampling, neighbourhoods, patches and normalisation.

Every function takes clouds laid out ``(B, N, 3)`` (channels last, as open3d and PyTorch3D store them; PointNet
code uses ``(B, 3, N)``: transpose first) and runs on whatever device the input lives on, CPU or CUDA, without
compiled extensions (PyG's ``fps``/``knn`` need pyg-lib, which is often not installable).

* :func:`farthest_point_sample`: iterative farthest-point sampling (PointNet++, Qi et al. 2017, arXiv
  1706.02413, §3.2): each new index maximises the distance to the points already chosen.
* :func:`knn`: k nearest neighbours by chunked ``torch.cdist`` + ``topk`` (memory O(chunk · N)).
* :func:`ball_query`: PointNet++'s grouping: up to ``max_samples`` points within ``radius`` of each centre, in
  index order, the missing slots padded with the first one found.
* :func:`gather_points`: rows of a ``(B, N, C)`` tensor picked by a ``(B, ...)`` index tensor.
* :func:`extract_patches` / :func:`merge_patches`: the patch-wise pipeline of point-cloud upsampling (PU-GAN,
  PUFM: arXiv 2501.15286): FPS seeds + their kNN patches, and back to one cloud by FPS over the union.
* :func:`normalize_unit_sphere` / :func:`denormalize`: centre on the centroid and scale so the farthest point
  lies on the unit sphere, and the inverse map.

No time convention applies here (no flow); the rationale for pure torch is that these run inside training
loops on batches, on the GPU when there is one.
"""

from __future__ import annotations

import torch

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.validation import check_int, check_positive, check_tensor

__all__ = ["check_points", "farthest_point_sample", "knn", "ball_query", "gather_points", "extract_patches",
           "merge_patches", "normalize_unit_sphere", "denormalize", "EXACT_CDIST"]

# cdist's matrix-product shortcut loses ~1e-3 on near-zero distances in float32 (identical points would not
# be at distance 0); the direct difference is exact and costs little at point-cloud sizes.
EXACT_CDIST = "donot_use_mm_for_euclid_dist"


def check_points(points: object, name: str = "points") -> torch.Tensor:
    """``points`` checked as a finite floating ``(B, N, 3)`` tensor with N ≥ 1.

    Example:
        >>> check_points(torch.zeros(2, 5, 3)).shape
        torch.Size([2, 5, 3])
    """
    points = check_tensor(points, name, min_dim=3)
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ShapeError(expected(f"{name} shaped (B, N, 3)", f"shape {tuple(points.shape)}",
                                  "add a batch dimension with x[None], or transpose (B, 3, N) with x.transpose(1, 2)"))
    return points


def farthest_point_sample(points: torch.Tensor, n: int, *, random_start: bool = False,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices ``(B, n)`` of ``n`` farthest-point samples of each cloud ``(B, N, 3)``.

    The first index is 0 (deterministic) unless ``random_start``, then it is drawn with ``generator``; each next
    index is the argmax of the distance to the chosen set (ties: the lowest index). ``generator`` is a CPU
    generator (the start is drawn on the CPU, then moved to the points' device).

    Example:
        >>> pts = torch.tensor([[[0.0, 0, 0], [0.1, 0, 0], [5.0, 0, 0], [2.0, 0, 0]]])
        >>> farthest_point_sample(pts, 3).tolist()
        [[0, 2, 3]]
    """
    points = check_points(points)
    batch, count, _ = points.shape
    n = check_int(n, "n", low=1, high=count, fix=f"ask for between 1 and {count} points")
    chosen = torch.empty(batch, n, dtype=torch.long, device=points.device)
    if random_start:
        start = torch.randint(count, (batch,), generator=generator, device="cpu").to(points.device)
    else:
        start = torch.zeros(batch, dtype=torch.long, device=points.device)
    nearest = torch.full((batch, count), float("inf"), dtype=points.dtype, device=points.device)
    rows = torch.arange(batch, device=points.device)
    current = start
    for i in range(n):
        chosen[:, i] = current
        dist = ((points - points[rows, current][:, None, :]) ** 2).sum(-1)
        nearest = torch.minimum(nearest, dist)
        current = nearest.argmax(dim=1)
    return chosen


def knn(query: torch.Tensor, points: torch.Tensor, k: int, *, exclude_self: bool = False,
        chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest ``points`` ``(B, N, 3)`` of each ``query`` point ``(B, M, 3)``.

    Returns ``(distances, indices)``, both ``(B, M, k)``, sorted by increasing Euclidean distance.
    ``exclude_self`` (query is points) drops each point's own index, the usual graph construction.
    Queries are processed ``chunk`` at a time so memory stays O(chunk · N).

    Example:
        >>> pts = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]]])
        >>> d, i = knn(pts, pts, 1, exclude_self=True)
        >>> i[..., 0].tolist(), d[..., 0].tolist()
        ([[1, 0, 1]], [[1.0, 1.0, 2.0]])
    """
    query, points = check_points(query, "query"), check_points(points)
    if query.shape[0] != points.shape[0]:
        raise ShapeError(expected("query and points with the same batch size", f"{query.shape[0]} and "
                                  f"{points.shape[0]}", "pair each query cloud with its point cloud"))
    if exclude_self and query.shape != points.shape:
        raise ShapeError(expected("query equal to points when exclude_self=True", f"shapes {tuple(query.shape)} "
                                  f"and {tuple(points.shape)}", "pass the same cloud twice or exclude_self=False"))
    available = points.shape[1] - int(exclude_self)
    k = check_int(k, "k", low=1, high=max(available, 1), fix=f"use k <= {available}")
    chunk = check_int(chunk, "chunk", low=1)
    extra = int(exclude_self)
    dists, idxs = [], []
    for start in range(0, query.shape[1], chunk):
        d = torch.cdist(query[:, start:start + chunk], points, compute_mode=EXACT_CDIST)
        if exclude_self:  # force a point's own slot first, whatever duplicates exist
            own = torch.arange(start, start + d.shape[1], device=d.device)
            d[:, torch.arange(d.shape[1], device=d.device), own] = -1.0
        top_d, top_i = d.topk(k + extra, dim=-1, largest=False)
        dists.append(top_d[..., extra:])
        idxs.append(top_i[..., extra:])
    return torch.cat(dists, dim=1), torch.cat(idxs, dim=1)


def ball_query(points: torch.Tensor, centres: torch.Tensor, radius: float,
               max_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PointNet++ ball query: for each centre ``(B, M, 3)``, the first ``max_samples`` indices (in index order)
    of ``points`` ``(B, N, 3)`` within Euclidean ``radius``.

    Returns ``(indices (B, M, max_samples), counts (B, M))``; unused slots repeat the first index found, as
    PointNet++'s grouping does. A centre with no point in its ball (counts 0) gets its nearest point instead,
    so every index is valid.

    Example:
        >>> pts = torch.tensor([[[0.0, 0, 0], [0.5, 0, 0], [3.0, 0, 0]]])
        >>> idx, cnt = ball_query(pts, pts[:, :1], radius=1.0, max_samples=3)
        >>> idx.tolist(), cnt.tolist()
        ([[[0, 1, 0]]], [[2]])
    """
    points, centres = check_points(points), check_points(centres, "centres")
    radius = check_positive(radius, "radius")
    max_samples = check_int(max_samples, "max_samples", low=1)
    count = points.shape[1]
    d = torch.cdist(centres, points, compute_mode=EXACT_CDIST)
    inside = d <= radius
    # Sort keys: inside points by their index, outside ones after all of them.
    order = torch.where(inside, torch.arange(count, device=d.device), count + torch.arange(count, device=d.device))
    take = min(max_samples, count)
    idx = order.topk(take, dim=-1, largest=False).values % count
    counts = inside.sum(-1).clamp(max=max_samples)
    first = torch.where(counts > 0, idx[..., 0], d.argmin(-1))
    slots = torch.arange(max_samples, device=d.device)
    if take < max_samples:
        idx = torch.cat([idx, first[..., None].expand(*idx.shape[:2], max_samples - take)], dim=-1)
    idx = torch.where(slots < counts[..., None], idx, first[..., None])
    return idx, counts


def gather_points(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``values`` ``(B, N, C)`` at ``index`` ``(B, ...)``: the result is ``(B, ..., C)``.

    Example:
        >>> vals = torch.arange(6.0).reshape(1, 3, 2)
        >>> gather_points(vals, torch.tensor([[2, 0]])).tolist()
        [[[4.0, 5.0], [0.0, 1.0]]]
    """
    if not isinstance(values, torch.Tensor) or values.dim() != 3:
        raise ShapeError(expected("values shaped (B, N, C)", getattr(values, "shape", type(values).__name__),
                                  "pass a batched tensor"))
    if not isinstance(index, torch.Tensor) or index.dtype != torch.long or index.shape[0] != values.shape[0]:
        raise ShapeError(expected("an int64 index tensor (B, ...) with the values' batch size",
                                  getattr(index, "shape", type(index).__name__), "pass indices from knn or FPS"))
    rows = torch.arange(values.shape[0], device=values.device).view(-1, *([1] * (index.dim() - 1)))
    return values[rows, index]


def extract_patches(points: torch.Tensor, n_patches: int, patch_size: int, *, random_start: bool = False,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping patches of each cloud: ``n_patches`` FPS seeds and the ``patch_size`` nearest points of each.

    Returns ``(patches (B, P, K, 3), indices (B, P, K))``; each patch's first point is its seed.

    Example:
        >>> pts = torch.rand(1, 64, 3, generator=torch.Generator().manual_seed(0))
        >>> patches, idx = extract_patches(pts, 4, 16)
        >>> patches.shape, bool((patches[0, 0, 0] == pts[0, 0]).all())
        (torch.Size([1, 4, 16, 3]), True)
    """
    points = check_points(points)
    patch_size = check_int(patch_size, "patch_size", low=1, high=points.shape[1],
                           fix=f"use a patch_size <= the cloud's {points.shape[1]} points")
    seeds = gather_points(points, farthest_point_sample(points, n_patches, random_start=random_start,
                                                        generator=generator))
    _, idx = knn(seeds, points, patch_size)
    return gather_points(points, idx), idx


def merge_patches(patches: torch.Tensor, n_points: int, *, random_start: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One cloud ``(B, n_points, 3)`` from patches ``(B, P, K, 3)``: FPS over the union of their points, which
    removes the duplicates of overlapping patches and evens out the density.

    Example:
        >>> pts = torch.rand(1, 64, 3, generator=torch.Generator().manual_seed(0))
        >>> merge_patches(extract_patches(pts, 8, 16)[0], 32).shape
        torch.Size([1, 32, 3])
    """
    if not isinstance(patches, torch.Tensor) or patches.dim() != 4 or patches.shape[-1] != 3:
        raise ShapeError(expected("patches shaped (B, P, K, 3)", getattr(patches, "shape", type(patches).__name__),
                                  "pass the patches extract_patches returned"))
    union = patches.reshape(patches.shape[0], -1, 3)
    idx = farthest_point_sample(union, n_points, random_start=random_start, generator=generator)
    return gather_points(union, idx)


def normalize_unit_sphere(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each cloud centred on its centroid and scaled so its farthest point has norm 1.

    Returns ``(normalised, centre (B, 1, 3), scale (B, 1, 1))`` with ``points = normalised · scale + centre``.
    A cloud of one repeated point keeps scale 1 (nothing to normalise).

    Example:
        >>> pts = torch.tensor([[[1.0, 0, 0], [3.0, 0, 0]]])
        >>> unit, centre, scale = normalize_unit_sphere(pts)
        >>> unit.tolist(), centre.tolist(), scale.tolist()
        ([[[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], [[[2.0, 0.0, 0.0]]], [[[1.0]]])
    """
    points = check_points(points)
    centre = points.mean(dim=1, keepdim=True)
    scale = (points - centre).norm(dim=-1).amax(dim=1).view(-1, 1, 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (points - centre) / scale, centre, scale


def denormalize(points: torch.Tensor, centre: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`normalize_unit_sphere`: ``points · scale + centre``.

    Example:
        >>> unit, c, s = normalize_unit_sphere(torch.tensor([[[1.0, 2, 3], [0.0, 0, 1]]]))
        >>> denormalize(unit, c, s).tolist()
        [[[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]]
    """
    points = check_points(points)
    if centre.shape != (points.shape[0], 1, 3) or scale.shape != (points.shape[0], 1, 1):
        raise ConfigError(expected("centre (B, 1, 3) and scale (B, 1, 1) from normalize_unit_sphere",
                                   f"{tuple(centre.shape)} and {tuple(scale.shape)}",
                                   "pass the centre and scale returned with the normalised cloud"))
    return points * scale + centre
