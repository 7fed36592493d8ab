r"""Sparse voxel structures for two-stage 3D generation: occupancy grids, per-voxel offsets, a conv-3D VAE, meshes.

TRELLIS (Xiang et al., arXiv 2412.01506, §3.2) represents a shape as the set of *active* voxels of a grid that
the surface crosses plus one attribute vector per active voxel; its sparse-structure stage generates the occupancy
grid through the latent of a conv-3D VAE. This module builds those pieces at a size a CPU trains:

* :func:`voxelize`: the occupancy :math:`o \in \{0, 1\}^{S^3}` of the voxels of ``[-1, 1]^3`` that hold a surface
  point, and each active voxel's offset :math:`a = (\bar p - c) / h` from its centre c to the mean surface point
  :math:`\bar p` inside it, in voxel units (h = 2 / S, so a ∈ [−½, ½]³); :func:`devoxelize` inverts it to a
  point cloud :math:`\{c + h a\}`.
* :func:`make_shape_voxels`: a labelled data set of randomly rotated, scaled and warped synthetic shapes
  (:mod:`flowzoo.three_d.data`), voxelised.
* :class:`OccupancyVAE`: strided 3-D convolutions S³ → (S/4)³ × C and back, trained with
  :class:`OccupancyVAELoss`, a β-VAE objective (Kingma & Welling, arXiv 1312.6114) whose reconstruction term is a
  class-balanced binary cross-entropy (occupied voxels are a few per cent of the grid).
* :func:`occupancy_to_mesh`: marching cubes (Lewiner et al. 2003, scikit-image) at level ½ on the zero-padded
  grid, so every surface closes; :func:`is_watertight` checks that every edge is shared by exactly two faces.

No time convention applies here (no flow); the generator that uses these pieces is
:mod:`flowzoo.three_d.generator`. Rationale: a dense grid with an occupancy mask keeps every tensor batchable
while the attributes stay defined only where the surface is.

Example:
    >>> import numpy as np
    >>> from flowzoo.three_d.data import sample_surface
    >>> occupancy, offsets = voxelize(sample_surface("sphere", 2000, np.random.default_rng(0)) * 0.8, 16)
    >>> occupancy.shape, offsets.shape, bool(offsets.abs().max() <= 0.5)
    (torch.Size([16, 16, 16]), torch.Size([3, 16, 16, 16]), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError, expected
from flowzoo.core.validation import check_int, check_nonnegative, check_tensor

from flowzoo.three_d.data import SHAPES, random_deformation, sample_surface

__all__ = ["ShapeVoxels", "make_shape_voxels", "check_grid_size", "voxel_size", "voxel_centres", "voxelize",
           "devoxelize", "occupancy_iou",
           "occupancy_to_mesh", "is_watertight", "OccupancyVAE", "OccupancyVAELoss"]


def check_grid_size(size: object, name: str = "grid_size") -> int:
    """``size`` as an int that is a power of two ≥ 8 (the VAE halves it twice), else a ConfigError.

    Example:
        >>> check_grid_size(16)
        16
    """
    value = check_int(size, name, low=8, fix="pass a power of two such as 16 or 32")
    if value & (value - 1):
        raise ConfigError(expected(f"{name} a power of two ≥ 8", value, "pass e.g. 16 or 32"))
    return value


def voxel_size(size: int) -> float:
    """Edge length h = 2 / S of a voxel of the S³ grid over ``[-1, 1]^3``."""
    return 2.0 / check_grid_size(size)


def voxel_centres(size: int) -> torch.Tensor:
    """Voxel centres ``(3, S, S, S)``: channel d holds coordinate d of voxel (i, j, k), ``-1 + h (index + ½)``.

    Example:
        >>> voxel_centres(8)[:, 0, 0, 0].tolist()
        [-0.875, -0.875, -0.875]
    """
    h = voxel_size(size)
    axis = -1.0 + h * (torch.arange(size, dtype=torch.float32) + 0.5)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"))


def voxelize(points: object, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Occupancy ``(S, S, S)`` (float 0/1) and offsets ``(3, S, S, S)`` (voxel units, 0 where empty) of one cloud.

    Args:
        points: ``(N, 3)`` surface points (numpy or torch) inside ``[-1, 1]^3``; points outside are an error.
        size: grid size S (a power of two ≥ 8).
    """
    size = check_grid_size(size)
    pts = check_tensor(torch.as_tensor(np.asarray(points), dtype=torch.float32), "points", min_dim=2)
    if pts.dim() != 2 or pts.shape[1] != 3:
        raise ShapeError(expected("points of shape (N, 3)", f"shape {tuple(pts.shape)}", "pass one cloud"))
    if float(pts.abs().max()) > 1.0:
        raise ConfigError(expected("points inside [-1, 1]^3", f"max |coordinate| {float(pts.abs().max()):.3g}",
                                   "normalise the cloud first, e.g. flowzoo.three_d.ops.normalize_unit_sphere"))
    h = 2.0 / size
    index = ((pts + 1.0) / h).floor().long().clamp(0, size - 1)
    flat = (index[:, 0] * size + index[:, 1]) * size + index[:, 2]
    count = torch.zeros(size ** 3).index_add_(0, flat, torch.ones(len(flat)))
    total = torch.zeros(size ** 3, 3).index_add_(0, flat, pts)
    occupancy = (count > 0).float()
    centres = voxel_centres(size).reshape(3, -1).T
    offsets = (total / count.clamp(min=1)[:, None] - centres) / h * occupancy[:, None]
    return occupancy.reshape(size, size, size), offsets.clamp(-0.5, 0.5).T.reshape(3, size, size, size)


def devoxelize(occupancy: torch.Tensor, offsets: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Point clouds ``c + h a`` of the active voxels (occupancy > ½), one ``(n_b, 3)`` tensor per grid.

    ``occupancy`` is ``(B, S, S, S)`` or ``(B, 1, S, S, S)``; ``offsets`` ``(B, 3, S, S, S)`` in voxel units
    (None: the voxel centres).

    Example:
        >>> grid = torch.zeros(1, 8, 8, 8); grid[0, 0, 0, 0] = 1
        >>> devoxelize(grid)[0].tolist()
        [[-0.875, -0.875, -0.875]]
    """
    occupancy = check_tensor(occupancy, "occupancy", min_dim=4)
    occupancy = occupancy[:, 0] if occupancy.dim() == 5 else occupancy
    size = check_grid_size(occupancy.shape[-1], "the grid size")
    h = 2.0 / size
    position = voxel_centres(size).to(occupancy.device)[None] + (0.0 if offsets is None else h * offsets)
    return [position[b][:, occupancy[b] > 0.5].T.contiguous() for b in range(occupancy.shape[0])]


def occupancy_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Intersection over union of two batches of 0/1 grids, one value per grid ``(B,)`` (1 when both are empty).

    Example:
        >>> a = torch.tensor([[1.0, 1.0, 0.0]]); b = torch.tensor([[1.0, 0.0, 0.0]])
        >>> occupancy_iou(a, b).tolist()
        [0.5]
    """
    p, t = pred.flatten(1) > 0.5, target.flatten(1) > 0.5
    union = (p | t).sum(1)
    return torch.where(union > 0, (p & t).sum(1) / union.clamp(min=1), torch.ones_like(union, dtype=torch.float))


def occupancy_to_mesh(occupancy: object) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes mesh ``(vertices (V, 3) float32 in [-1, 1]^3, faces (F, 3) int64)`` of one ``(S, S, S)`` grid.

    The grid is zero-padded by one voxel, so the level-½ surface of any occupancy is closed. An empty grid gives
    an empty mesh.
    """
    grid = np.asarray(occupancy.detach().cpu() if isinstance(occupancy, torch.Tensor) else occupancy, np.float32)
    if grid.ndim != 3 or len(set(grid.shape)) != 1:
        raise ShapeError(expected("one cubic grid (S, S, S)", f"shape {grid.shape}", "pass occupancy[b]"))
    size = check_grid_size(grid.shape[0], "the grid size")
    if grid.max(initial=0.0) <= 0.5:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    from skimage.measure import marching_cubes  # optional heavy import, only for meshes

    vertices, faces, _, _ = marching_cubes(np.pad(grid, 1), level=0.5)
    h = 2.0 / size
    return (-1.0 + h * (vertices - 0.5)).astype(np.float32), faces.astype(np.int64)


def is_watertight(faces: object) -> bool:
    """True when every undirected edge of the triangle list ``(F, 3)`` is shared by exactly two faces.

    Example:
        >>> is_watertight(np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]]))   # a tetrahedron
        True
    """
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        return False
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool((counts == 2).all())


class OccupancyVAE(nn.Module):
    """A conv-3D VAE of occupancy grids: ``(B, 1, S, S, S)`` → latent ``(B, C, S/4, S/4, S/4)`` → logits.

    TRELLIS's sparse-structure VAE (arXiv 2412.01506, §3.3) at toy size: two stride-2 convolutions down and two
    transposed convolutions up, GroupNorm + SiLU between them.

    Args:
        grid_size: S, a power of two ≥ 8.
        latent_channels: C.
        width: channels of the first level (the second has twice as many).

    Example:
        >>> vae = OccupancyVAE(16, latent_channels=4, width=8)
        >>> mean, logvar = vae.encode(torch.zeros(2, 1, 16, 16, 16))
        >>> mean.shape, vae.decode(mean).shape
        (torch.Size([2, 4, 4, 4, 4]), torch.Size([2, 1, 16, 16, 16]))
    """

    def __init__(self, grid_size: int = 16, latent_channels: int = 4, width: int = 16):
        super().__init__()
        self.grid_size = check_grid_size(grid_size)
        self.latent_channels = check_int(latent_channels, "latent_channels", low=1, fix="pass e.g. 4")
        width = check_int(width, "width", low=4, fix="pass e.g. 16")
        self.width = width

        def block(c_in: int, c_out: int, conv: type = nn.Conv3d, **kw) -> nn.Sequential:
            return nn.Sequential(conv(c_in, c_out, kernel_size=4 if kw else 3, padding=1, **kw),
                                 nn.GroupNorm(min(4, c_out), c_out), nn.SiLU())

        self.encoder = nn.Sequential(block(1, width, stride=2), block(width, 2 * width, stride=2),
                                     nn.Conv3d(2 * width, 2 * self.latent_channels, 3, padding=1))
        self.decoder = nn.Sequential(block(self.latent_channels, 2 * width),
                                     block(2 * width, width, nn.ConvTranspose3d, stride=2),
                                     block(width, width, nn.ConvTranspose3d, stride=2),
                                     nn.Conv3d(width, 1, 3, padding=1))

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """Shape of one latent, ``(C, S/4, S/4, S/4)``."""
        side = self.grid_size // 4
        return (self.latent_channels, side, side, side)

    def _check(self, occupancy: torch.Tensor) -> torch.Tensor:
        occupancy = check_tensor(occupancy, "occupancy", min_dim=4)
        occupancy = occupancy[:, None] if occupancy.dim() == 4 else occupancy
        if tuple(occupancy.shape[1:]) != (1,) + (self.grid_size,) * 3:
            raise ShapeError(expected(f"occupancy of shape (B, 1, {self.grid_size}, {self.grid_size}, "
                                      f"{self.grid_size})", f"shape {tuple(occupancy.shape)}",
                                      "voxelize at the VAE's grid_size"))
        return occupancy

    def encode(self, occupancy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each ``(B, C, S/4, S/4, S/4)``."""
        mean, logvar = self.encoder(self._check(occupancy)).chunk(2, dim=1)
        return mean, logvar.clamp(-10.0, 5.0)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Occupancy logits ``(B, 1, S, S, S)``."""
        return self.decoder(latent)

    def forward(self, occupancy: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, mean, logvar)`` with the latent drawn by the reparameterisation trick."""
        mean, logvar = self.encode(occupancy)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return self.decode(mean + (0.5 * logvar).exp() * noise), mean, logvar


class OccupancyVAELoss:
    r"""β-VAE loss of an :class:`OccupancyVAE`: balanced BCE of the logits + β · KL(q(z|o) ‖ N(0, I)) per voxel.

    The batch is ``{"x1": occupancy (B, 1, S, S, S)}``. ``pos_weight`` multiplies the occupied voxels' term
    (None: the batch's empty / occupied ratio, capped at 20). Metrics: ``loss``, ``bce``, ``kl``, ``iou``.

    Example:
        >>> vae = OccupancyVAE(8, latent_channels=2, width=4)
        >>> loss, metrics = OccupancyVAELoss()(vae, {"x1": (torch.rand(3, 1, 8, 8, 8) > 0.9).float()})
        >>> sorted(metrics)
        ['bce', 'iou', 'kl', 'loss']
    """

    def __init__(self, beta: float = 1e-3, pos_weight: float | None = None):
        self.beta = check_nonnegative(beta, "beta", fix="use e.g. 1e-3")
        self.pos_weight = None if pos_weight is None else check_nonnegative(pos_weight, "pos_weight")

    def __call__(self, vae: OccupancyVAE, batch: dict, *, generator: torch.Generator | None = None):
        target = vae._check(batch["x1"])
        logits, mean, logvar = vae(target, generator=generator)
        occupied = float(target.mean())
        weight = self.pos_weight if self.pos_weight is not None else min(20.0, (1 - occupied) / max(occupied, 1e-3))
        bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(weight))
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1.0 - logvar).mean()
        loss = bce + self.beta * kl
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteError(expected("a finite VAE loss", value, "lower the learning rate"))
        iou = occupancy_iou((logits > 0).float(), target).mean().item()
        return loss, {"loss": value, "bce": bce.item(), "kl": kl.item(), "iou": iou}


@dataclass
class ShapeVoxels:
    """A labelled set of voxelised shapes: ``occupancy (N, 1, S, S, S)``, ``offsets (N, 3, S, S, S)`` (voxel
    units), ``labels (N,)`` (index into ``classes``) and ``surfaces (N, P, 3)`` (surface samples, for metrics)."""

    occupancy: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor
    surfaces: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))  # Haar-uniform on O(3) (Mezzadri 2007); fix the determinant to +1 below
    return q if np.linalg.det(q) > 0 else -q


def make_shape_voxels(n_per_class: int, classes: Sequence[str], grid_size: int, seed: int, *,
                      points: int = 4096, surface_points: int = 512, deformation: float = 0.05) -> ShapeVoxels:
    """Random rotations, scales in [0.7, 0.95] and smooth warps of each class's surface, voxelised.

    Example:
        >>> data = make_shape_voxels(1, ("sphere", "box"), 8, seed=0, points=500, surface_points=64)
        >>> data.occupancy.shape, data.labels.tolist(), data.surfaces.shape
        (torch.Size([2, 1, 8, 8, 8]), [0, 1], torch.Size([2, 64, 3]))
    """
    n_per_class = check_int(n_per_class, "n_per_class", low=1)
    classes = tuple(classes)
    if not classes or any(c not in SHAPES for c in classes):
        raise ConfigError(expected(f"classes from {SHAPES}", repr(classes), "pick e.g. ('sphere', 'box')"))
    rng = np.random.default_rng(seed)
    grids, attributes, labels, surfaces = [], [], [], []
    for _ in range(n_per_class):
        for label, shape in enumerate(classes):
            rotation, scale = _random_rotation(rng), rng.uniform(0.7, 0.95)
            warp = random_deformation(rng, amplitude=deformation)
            cloud = warp(sample_surface(shape, points + surface_points, rng) @ rotation.T)
            cloud = scale * cloud / max(1.0, float(np.abs(cloud).max()))
            occupancy, offsets = voxelize(cloud[:points], grid_size)
            grids.append(occupancy[None]); attributes.append(offsets); labels.append(label)
            surfaces.append(torch.as_tensor(cloud[points:], dtype=torch.float32))
    return ShapeVoxels(torch.stack(grids), torch.stack(attributes), torch.tensor(labels), torch.stack(surfaces),
                       classes)
