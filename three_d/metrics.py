"""Point-cloud and scene-flow metrics, batched in torch, one value per cloud.

Clouds are ``(B, N, 3)``; every metric returns a ``(B,)`` tensor (average it for a table). Definitions:

* :func:`chamfer_distance`: CD(X, Y) = mean_x min_y d(x, y) + mean_y min_x d(x, y), with d the Euclidean
  distance (``squared=False``) or its square (``squared=True``, the usual training loss; PU-GAN and PUFM,
  arXiv 2501.15286, report the sum of the two directional means of squared distances).
* :func:`hausdorff_distance`: max(max_x min_y ‖x − y‖, max_y min_x ‖x − y‖).
* :func:`earth_movers_distance`: EMD(X, Y) = min over bijections σ of mean_i ‖x_i − y_σ(i)‖ for equal-size
  sets: exact (Hungarian / Jonker–Volgenant through ``flowzoo.core.couplings.solve_assignment``) for small
  sets, entropic (log-domain Sinkhorn, Cuturi 2013, arXiv 1306.0895) for large ones;
  :func:`emd_assignment` returns the bijection itself (PUFM's pre-alignment of the target to the source).
* :func:`nn_uniformity`: coefficient of variation (std / mean) of each point's distance to its nearest
  neighbour: 0 for a perfectly even spacing, larger for clumps and holes. A simpler stand-in for PU-GAN's
  disk-based uniformity (arXiv 1811.11286, Eq. 6), which needs geodesic disks on the true surface.
* :func:`point_to_mesh_distance`: each point's exact Euclidean distance to a triangle mesh (closest point on a
  triangle by Voronoi-region tests, Ericson, Real-Time Collision Detection §5.1.5), in torch, or through open3d's
  ``RaycastingScene`` (a BVH, fast for large meshes; ``backend="open3d"``): P2F when the mesh is the true surface.
* :func:`scene_flow_metrics`: FlowNet3D (arXiv 1806.01411) / SCOOP (arXiv 2211.14020) definitions with
  e = ‖f̂ − f‖ and r = e / (‖f‖ + 1e-4): EPE3D = mean e; Acc3DS = share with e < 0.05 m or r < 5 %;
  Acc3DR = share with e < 0.1 m or r < 10 %; Outliers = share with e > 0.3 m or r > 10 %.

No time convention applies (no flow in time); everything stays in torch so metrics run on the GPU during
evaluation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flowzoo.core.couplings import log_sinkhorn, solve_assignment
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.validation import check_int, check_positive, check_tensor

from flowzoo.three_d.io import require_open3d
from flowzoo.three_d.ops import EXACT_CDIST, check_points, knn

__all__ = ["chamfer_distance", "hausdorff_distance", "emd_assignment", "earth_movers_distance", "nn_uniformity",
           "point_to_mesh_distance", "scene_flow_metrics"]

EXACT_EMD_MAX_POINTS = 2048  # above this, "auto" switches from the exact assignment to Sinkhorn


def _pair(x: object, y: object) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = check_points(x, "x"), check_points(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ShapeError(expected("x and y with the same batch size", f"{x.shape[0]} and {y.shape[0]}",
                                  "compare cloud i of x with cloud i of y"))
    return x, y


def _nearest(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Distance of each point of x to its nearest point of y, (B, N)."""
    return knn(x, y, 1)[0][..., 0]


def chamfer_distance(x: torch.Tensor, y: torch.Tensor, *, squared: bool = True) -> torch.Tensor:
    """Chamfer distance per cloud pair ``(B,)``: the two directional means of nearest-neighbour distances, summed.

    Example:
        >>> x = torch.zeros(1, 1, 3); y = torch.tensor([[[0.0, 0, 2.0]]])
        >>> chamfer_distance(x, y).tolist(), chamfer_distance(x, y, squared=False).tolist()
        ([8.0], [4.0])
    """
    x, y = _pair(x, y)
    forward, backward = _nearest(x, y), _nearest(y, x)
    if squared:
        forward, backward = forward ** 2, backward ** 2
    return forward.mean(dim=1) + backward.mean(dim=1)


def hausdorff_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Symmetric Hausdorff distance per cloud pair ``(B,)``.

    Example:
        >>> x = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]]); y = torch.tensor([[[0.0, 0, 0], [4.0, 0, 0]]])
        >>> hausdorff_distance(x, y).tolist()
        [3.0]
    """
    x, y = _pair(x, y)
    return torch.maximum(_nearest(x, y).amax(dim=1), _nearest(y, x).amax(dim=1))


def _equal_sizes(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ShapeError(expected("x and y with the same number of points for EMD", f"shapes {tuple(x.shape)} and "
                                  f"{tuple(y.shape)}", "resample one cloud with farthest_point_sample first"))


def emd_assignment(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact optimal bijection ``(B, N)``: ``y[b, σ[b, i]]`` is matched to ``x[b, i]`` (minimum total
    Euclidean distance).

    Example:
        >>> x = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]]); y = torch.tensor([[[1.1, 0, 0], [0.1, 0, 0]]])
        >>> emd_assignment(x, y).tolist()
        [[1, 0]]
    """
    x, y = _pair(x, y)
    _equal_sizes(x, y)
    rows = [solve_assignment(torch.cdist(x[b], y[b], compute_mode=EXACT_CDIST).double(), solver="scipy")
            for b in range(x.shape[0])]
    return torch.as_tensor(np.stack(rows), dtype=torch.long, device=x.device)


def _sinkhorn_emd(x: torch.Tensor, y: torch.Tensor, reg: float, max_iter: int) -> torch.Tensor:
    """Entropic EMD: Σ_ij π_ij C_ij · N with π the Sinkhorn plan for the Euclidean cost (uniform marginals)."""
    values = []
    for b in range(x.shape[0]):
        cost = torch.cdist(x[b], y[b], compute_mode=EXACT_CDIST).double()
        scale = float(cost.max().clamp(min=1e-12))  # regularise relative to the cost's range
        epsilon = reg * scale
        g = log_sinkhorn(cost, epsilon, max_iter, 1e-6) / epsilon
        f = -math.log(cost.shape[0]) - torch.logsumexp(g[None, :] - cost / epsilon, dim=1)
        plan = (f[:, None] + g[None, :] - cost / epsilon).exp()
        values.append((plan * cost).sum() / plan.sum())
    return torch.stack(values).to(x.dtype)


def earth_movers_distance(x: torch.Tensor, y: torch.Tensor, *, method: str = "auto", reg: float = 0.01,
                          max_iter: int = 500) -> torch.Tensor:
    """EMD per cloud pair ``(B,)``: the mean Euclidean distance under the optimal bijection.

    ``method``: ``"exact"`` (assignment), ``"sinkhorn"`` (entropic, ``reg`` relative to the largest cost; it
    over-estimates EMD slightly and shrinks to it as ``reg`` → 0) or ``"auto"`` (exact up to
    ``EXACT_EMD_MAX_POINTS`` points).

    Example:
        >>> x = torch.rand(1, 16, 3, generator=torch.Generator().manual_seed(0))
        >>> round(earth_movers_distance(x, x + torch.tensor([0.0, 0.0, 0.5])).item(), 6)
        0.5
    """
    x, y = _pair(x, y)
    _equal_sizes(x, y)
    if method not in ("auto", "exact", "sinkhorn"):
        raise ConfigError(expected('method in ("auto", "exact", "sinkhorn")', repr(method), "pick one of them"))
    reg = check_positive(reg, "reg")
    max_iter = check_int(max_iter, "max_iter", low=1)
    if method == "sinkhorn" or (method == "auto" and x.shape[1] > EXACT_EMD_MAX_POINTS):
        return _sinkhorn_emd(x, y, reg, max_iter)
    matched = emd_assignment(x, y)
    y_matched = y[torch.arange(y.shape[0], device=y.device)[:, None], matched]
    return (x - y_matched).norm(dim=-1).mean(dim=1)


def nn_uniformity(points: torch.Tensor) -> torch.Tensor:
    """Coefficient of variation of nearest-neighbour distances per cloud ``(B,)`` (lower is more uniform).

    Example:
        >>> grid = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
        >>> pts = torch.cat([grid.reshape(1, 16, 2), torch.zeros(1, 16, 1)], dim=-1)
        >>> nn_uniformity(pts).tolist()
        [0.0]
    """
    points = check_points(points)
    if points.shape[1] < 2:
        raise ShapeError(expected("clouds of at least 2 points", f"{points.shape[1]}", "pass a larger cloud"))
    nearest = knn(points, points, 1, exclude_self=True)[0][..., 0]
    return nearest.std(dim=1, unbiased=False) / nearest.mean(dim=1).clamp(min=1e-12)


def _closest_on_triangles(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Closest points on triangles (a, b, c) to points p, all broadcast to (..., 3) (Ericson §5.1.5)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    tiny = torch.finfo(p.dtype).tiny
    # The interior (face region) is the default; each vertex / edge region overrides it where it applies.
    denom = (va + vb + vc).clamp(min=tiny)
    result = a + ab * (vb / denom)[..., None] + ac * (vc / denom)[..., None]
    edge_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    w_bc = ((d4 - d3) / ((d4 - d3) + (d5 - d6)).clamp(min=tiny))[..., None]
    result = torch.where(edge_bc[..., None], b + w_bc * (c - b), result)
    edge_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    result = torch.where(edge_ac[..., None], a + (d2 / (d2 - d6).clamp(min=tiny))[..., None] * ac, result)
    edge_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    result = torch.where(edge_ab[..., None], a + (d1 / (d1 - d3).clamp(min=tiny))[..., None] * ab, result)
    result = torch.where(((d6 >= 0) & (d5 <= d6))[..., None], c, result)
    result = torch.where(((d3 >= 0) & (d4 <= d3))[..., None], b, result)
    return torch.where(((d1 <= 0) & (d2 <= 0))[..., None], a, result)


def _raycasting_distance(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """open3d's unsigned distance of each point to the mesh (its BVH's closest-point query), float32 on the CPU."""
    o3d = require_open3d()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.detach().cpu().float().numpy()),
                        o3d.core.Tensor(faces.detach().cpu().numpy().astype(np.uint32)))
    query = o3d.core.Tensor(points.detach().reshape(-1, 3).cpu().float().numpy())
    distance = torch.from_numpy(scene.compute_distance(query).numpy())
    return distance.to(device=points.device, dtype=points.dtype).reshape(points.shape[:2])


def point_to_mesh_distance(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, *,
                           chunk: int = 256, backend: str = "torch") -> torch.Tensor:
    """Each point's Euclidean distance to the nearest triangle of one mesh: ``(B, N)`` for points ``(B, N, 3)``,
    vertices ``(V, 3)`` and integer faces ``(F, 3)``. ``backend="torch"`` tests every triangle (memory
    O(chunk · F), differentiable, any device); ``"open3d"`` queries open3d's ``RaycastingScene`` (a BVH: fast for
    meshes of many triangles; float32, no gradient).

    Example:
        >>> verts = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 1, 0]]); faces = torch.tensor([[0, 1, 2]])
        >>> point_to_mesh_distance(torch.tensor([[[0.2, 0.2, 0.5], [2.0, 0.0, 0.0]]]), verts, faces).tolist()
        [[0.5, 1.0]]
    """
    points = check_points(points)
    vertices = check_tensor(vertices, "vertices", min_dim=2)
    if vertices.dim() != 2 or vertices.shape[1] != 3:
        raise ShapeError(expected("vertices shaped (V, 3)", f"shape {tuple(vertices.shape)}", "pass one mesh"))
    if (not isinstance(faces, torch.Tensor) or faces.dim() != 2 or faces.shape[1] != 3 or faces.numel() == 0
            or faces.is_floating_point() or int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]):
        raise ShapeError(expected("integer triangle faces (F, 3) indexing the vertices", getattr(
            faces, "shape", type(faces).__name__), "pass a triangle mesh (F >= 1) with indices < len(vertices)"))
    chunk = check_int(chunk, "chunk", low=1)
    if backend not in ("torch", "open3d"):
        raise ConfigError(expected('backend in ("torch", "open3d")', repr(backend), "pick one of them"))
    if backend == "open3d":
        return _raycasting_distance(points, vertices, faces)
    tri = vertices.to(points.dtype)[faces.long()]  # (F, 3, 3)
    flat = points.reshape(-1, 3)
    out = []
    for start in range(0, flat.shape[0], chunk):
        p = flat[start:start + chunk, None, :]
        closest = _closest_on_triangles(p, tri[None, :, 0], tri[None, :, 1], tri[None, :, 2])
        out.append((p - closest).norm(dim=-1).amin(dim=1))
    return torch.cat(out).reshape(points.shape[:2])


def scene_flow_metrics(pred: torch.Tensor, target: torch.Tensor,
                       mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """EPE3D, Acc3DS, Acc3DR and Outliers per scene ``(B,)`` for flows ``(B, N, 3)`` in metres; ``mask``
    ``(B, N)`` (bool) keeps only the valid points (e.g. non-occluded ones).

    Example:
        >>> gt = torch.tensor([[[1.0, 0, 0], [1.0, 0, 0]]]); pred = torch.tensor([[[1.0, 0, 0], [1.0, 0.5, 0]]])
        >>> {k: v.tolist() for k, v in scene_flow_metrics(pred, gt).items()}
        {'EPE3D': [0.25], 'Acc3DS': [0.5], 'Acc3DR': [0.5], 'Outliers': [0.5]}
    """
    pred, target = _pair(pred, target)
    if pred.shape != target.shape:
        raise ShapeError(expected("pred and target flows of the same shape", f"{tuple(pred.shape)} and "
                                  f"{tuple(target.shape)}", "predict one flow vector per point of frame 1"))
    if mask is None:
        mask = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
    elif not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != pred.shape[:2]:
        raise ShapeError(expected(f"a bool mask shaped {tuple(pred.shape[:2])}", getattr(mask, "shape", mask),
                                  "pass one flag per point"))
    error = (pred - target).norm(dim=-1)
    relative = error / (target.norm(dim=-1) + 1e-4)
    weight = mask.to(pred.dtype)
    count = weight.sum(dim=1).clamp(min=1.0)

    def share(flags: torch.Tensor) -> torch.Tensor:
        return (flags.to(pred.dtype) * weight).sum(dim=1) / count

    return {"EPE3D": (error * weight).sum(dim=1) / count,
            "Acc3DS": share((error < 0.05) | (relative < 0.05)),
            "Acc3DR": share((error < 0.1) | (relative < 0.1)),
            "Outliers": share((error > 0.3) | (relative > 0.1))}
