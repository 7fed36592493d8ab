r"""Set-level metrics of generated shapes: coverage, MMD and a Fréchet distance on a small point-cloud classifier.

* Coverage and MMD (Achlioptas et al., arXiv 1707.02392, §5): with a distance d between clouds (Chamfer or EMD,
  :mod:`flowzoo.three_d.metrics`), the generated set G and the reference set R,
  :math:`\mathrm{COV} = |\{\arg\min_{r \in R} d(g, r) : g \in G\}| / |R|` (the share of references that are some
  sample's nearest) and :math:`\mathrm{MMD} = \frac{1}{|R|}\sum_{r \in R} \min_{g \in G} d(g, r)` (how well the
  references are matched).
* Fréchet distance (Heusel et al., arXiv 1706.08500, Eq. 6) between Gaussians fitted to the features of G and R,
  :math:`\|\mu_G - \mu_R\|^2 + \mathrm{tr}(\Sigma_G + \Sigma_R - 2 (\Sigma_G \Sigma_R)^{1/2})`, with the features
  of :class:`PointNetClassifier` (Qi et al., arXiv 1612.00593: a shared per-point MLP and a max-pool), trained
  in-repo on the shape classes of :func:`flowzoo.three_d.voxels.make_shape_voxels` and cached on disk.

No time convention applies. Rationale: the classifier sees the same voxel-centre-plus-offset clouds the generator
emits, so its features measure shape, not sampling pattern.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> a, b = torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g)
    >>> frechet_distance(a, a) < 1e-6, frechet_distance(a, b + 3.0) > 30
    (True, True)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.validation import check_int, check_tensor

from flowzoo.three_d.metrics import chamfer_distance, earth_movers_distance
from flowzoo.three_d.voxels import devoxelize, make_shape_voxels

__all__ = ["resample_clouds", "pairwise_cloud_distances", "coverage_mmd", "frechet_distance", "PointNetClassifier",
           "train_shape_classifier", "load_shape_classifier", "default_cache_dir"]


def resample_clouds(clouds: Sequence[torch.Tensor], n: int, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """Each cloud ``(m_i, 3)`` drawn to exactly ``n`` points (without replacement when m_i ≥ n), ``(B, n, 3)``;
    an empty cloud becomes ``n`` copies of the origin.

    Example:
        >>> resample_clouds([torch.zeros(5, 3), torch.ones(2, 3)], 4).shape
        torch.Size([2, 4, 3])
    """
    n = check_int(n, "n", low=1)
    out = []
    for cloud in clouds:
        if len(cloud) == 0:
            out.append(torch.zeros(n, 3))
            continue
        index = (torch.randperm(len(cloud), generator=generator)[:n] if len(cloud) >= n
                 else torch.randint(len(cloud), (n,), generator=generator))
        out.append(cloud[index].float().cpu())
    return torch.stack(out)


def pairwise_cloud_distances(generated: torch.Tensor, reference: torch.Tensor, metric: str = "chamfer"
                             ) -> torch.Tensor:
    """``(G, R)`` matrix of Chamfer (squared, as in the module :mod:`~flowzoo.three_d.metrics`) or EMD distances."""
    generated, reference = check_tensor(generated, "generated", min_dim=3), check_tensor(reference, "reference",
                                                                                       min_dim=3)
    if metric not in ("chamfer", "emd"):
        raise ConfigError(expected('metric "chamfer" or "emd"', repr(metric), "pick one of them"))
    g, r = generated.shape[0], reference.shape[0]
    left = generated[:, None].expand(g, r, *generated.shape[1:]).reshape(g * r, *generated.shape[1:])
    right = reference[None].expand(g, r, *reference.shape[1:]).reshape(g * r, *reference.shape[1:])
    value = chamfer_distance(left, right) if metric == "chamfer" else earth_movers_distance(left, right)
    return value.reshape(g, r)


def coverage_mmd(distances: torch.Tensor) -> tuple[float, float]:
    """(COV, MMD) from a ``(G, R)`` distance matrix (module docstring).

    Example:
        >>> coverage_mmd(torch.tensor([[0.0, 2.0], [0.5, 3.0]]))
        (0.5, 1.0)
    """
    if distances.dim() != 2 or distances.numel() == 0:
        raise ShapeError(expected("a non-empty (G, R) matrix", f"shape {tuple(distances.shape)}", "pass d(g, r)"))
    covered = distances.argmin(dim=1).unique().numel() / distances.shape[1]
    return float(covered), float(distances.min(dim=0).values.mean())


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two ``(N, D)`` feature sets (module docstring)."""
    from scipy import linalg  # heavy import, only when a distance is computed

    a = check_tensor(features_a, "features_a", min_dim=2).double().cpu().numpy()
    b = check_tensor(features_b, "features_b", min_dim=2).double().cpu().numpy()
    if a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ShapeError(expected("two (N ≥ 2, D) feature sets of one D", f"{a.shape} and {b.shape}",
                                  "embed both sets with the same network"))
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * np.real(root))
    return float(max(value, 0.0))


class PointNetClassifier(nn.Module):
    """A small PointNet: per-point MLP 3 → width → 2·width, max-pool, then a linear head over K classes.

    Example:
        >>> net = PointNetClassifier(3, width=8)
        >>> net.features(torch.randn(2, 50, 3)).shape, net(torch.randn(2, 50, 3)).shape
        (torch.Size([2, 16]), torch.Size([2, 3]))
    """

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        self.num_classes = check_int(num_classes, "num_classes", low=2)
        self.point_mlp = nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2 * width), nn.ReLU(),
                                       nn.Linear(2 * width, 2 * width))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(2 * width, self.num_classes))

    def features(self, clouds: torch.Tensor) -> torch.Tensor:
        """Max-pooled point features ``(B, 2·width)`` of clouds ``(B, N, 3)``."""
        return self.point_mlp(clouds).max(dim=1).values

    def forward(self, clouds: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(clouds))


def default_cache_dir() -> Path:
    """``$FLOWZOO_CACHE/three_d`` when set, else ``~/.cache/flowzoo/three_d``."""
    root = os.environ.get("FLOWZOO_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "flowzoo") / "three_d"


def _clouds(classes: Sequence[str], grid_size: int, n_per_class: int, seed: int, points: int):
    data = make_shape_voxels(n_per_class, classes, grid_size, seed)
    return resample_clouds(devoxelize(data.occupancy, data.offsets), points,
                           torch.Generator().manual_seed(seed)), data.labels


def train_shape_classifier(classes: Sequence[str], grid_size: int = 16, *, n_per_class: int = 40, points: int = 256,
                           steps: int = 300, seed: int = 0) -> tuple[PointNetClassifier, float]:
    """Train a :class:`PointNetClassifier` on voxelised shapes; returns it and its held-out accuracy."""
    torch.manual_seed(seed)
    clouds, labels = _clouds(classes, grid_size, n_per_class, seed, points)
    test_clouds, test_labels = _clouds(classes, grid_size, max(4, n_per_class // 4), seed + 10_000, points)
    net = PointNetClassifier(len(tuple(classes)))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(check_int(steps, "steps", low=1)):
        rows = torch.randint(len(labels), (32,), generator=generator)
        loss = nn.functional.cross_entropy(net(clouds[rows]), labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(test_clouds).argmax(1) == test_labels).float().mean())
    return net, accuracy


def load_shape_classifier(classes: Sequence[str], grid_size: int = 16, *, cache_dir: str | Path | None = None,
                          seed: int = 0, **train_kwargs) -> tuple[PointNetClassifier, float]:
    """The cached classifier of ``classes`` at ``grid_size`` (trained and saved on first use) and its accuracy."""
    from safetensors.torch import load_file, save_file

    classes = tuple(classes)
    key = "-".join(classes) + f"_g{grid_size}_s{seed}_" + "_".join(f"{k}{v}" for k, v in sorted(train_kwargs.items()))
    path = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"pointnet_{key}.safetensors"
    net = PointNetClassifier(len(classes))
    if path.exists():
        state = load_file(str(path))
        accuracy = float(state.pop("accuracy"))
        net.load_state_dict(state)
        return net.eval(), accuracy
    net, accuracy = train_shape_classifier(classes, grid_size, seed=seed, **train_kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({**net.state_dict(), "accuracy": torch.tensor(accuracy)}, str(tmp))
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    return net, accuracy
