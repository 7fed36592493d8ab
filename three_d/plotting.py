"""Headless figures of point clouds and scene flows (matplotlib 3-D scatter, Agg backend, PNG).

The figures point-cloud papers show: side-by-side panels of clouds (sparse input / upsampled / ground truth, as
in PUFM, arXiv 2501.15286, Fig. 1) and a scene's two frames with flow arrows (SCOOP, arXiv 2211.14020, Fig. 1).
matplotlib rather than open3d's renderer because the latter needs a GPU context (Vulkan) and is slow headless.
Points are coloured by height; every panel shares one view and equal axis scales so shapes are not distorted.

Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = plot_point_clouds({"random": np.random.default_rng(0).normal(size=(50, 3))},
    ...                              os.path.join(tmp, "c.png"))
    ...     os.path.getsize(path) > 0
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from flowzoo.core.analysis import require_matplotlib
from flowzoo.core.errors import ConfigError, ShapeError, expected

__all__ = ["plot_point_clouds", "plot_scene_flow"]


def _as_points(values: object, name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
        raise ShapeError(expected(f"{name} as a non-empty (N, 3) array", f"shape {array.shape}",
                                  "pass one cloud, without a batch dimension"))
    return array.astype(np.float64)


def _equal_axes(ax, points: np.ndarray, view: tuple[float, float]) -> None:
    centre = (points.max(0) + points.min(0)) / 2
    half = max(float((points.max(0) - points.min(0)).max()) / 2, 1e-6)
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_zlim(centre[2] - half, centre[2] + half)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=view[0], azim=view[1])
    ax.set_axis_off()


def plot_point_clouds(panels: Mapping[str, object], path: str | Path, *, point_size: float = 2.0,
                      view: tuple[float, float] = (20.0, 35.0), title: str | None = None, dpi: int = 80) -> Path:
    """One 3-D scatter panel per entry of ``panels`` (title → ``(N, 3)`` array or tensor), side by side; writes
    and returns the PNG ``path``."""
    if not isinstance(panels, Mapping) or not panels:
        raise ConfigError(expected("panels as a non-empty mapping title -> (N, 3) points", type(panels).__name__,
                                   'pass e.g. {"input": sparse, "ground truth": dense}'))
    clouds = {name: _as_points(points, name) for name, points in panels.items()}
    plt = require_matplotlib()
    fig = plt.figure(figsize=(3.0 * len(clouds), 3.2), dpi=dpi)
    for i, (name, pts) in enumerate(clouds.items()):
        ax = fig.add_subplot(1, len(clouds), i + 1, projection="3d")
        ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=point_size, c=pts[:, 2], cmap="viridis", linewidths=0)
        _equal_axes(ax, pts, view)
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_scene_flow(pc1: object, pc2: object, path: str | Path, *, flows: Mapping[str, object] | None = None,
                    max_arrows: int = 300, view: tuple[float, float] = (55.0, -60.0), dpi: int = 80,
                    seed: int = 0) -> Path:
    """Frame 1 (blue) and frame 2 (orange) of a scene, with one panel per flow in ``flows`` (title → ``(N, 3)``
    flow of frame 1's points) drawn as arrows on a random subset of ``max_arrows`` points; writes the PNG."""
    first, second = _as_points(pc1, "pc1"), _as_points(pc2, "pc2")
    flows = {"frames": None} if not flows else {name: _as_points(f, name) for name, f in flows.items()}
    for name, flow in flows.items():
        if flow is not None and flow.shape != first.shape:
            raise ShapeError(expected(f"flow {name!r} shaped like pc1 {first.shape}", flow.shape,
                                      "pass one flow vector per point of frame 1"))
    plt = require_matplotlib()
    fig = plt.figure(figsize=(4.0 * len(flows), 4.0), dpi=dpi)
    both = np.concatenate([first, second])
    pick = np.random.default_rng(seed).choice(len(first), size=min(max_arrows, len(first)), replace=False)
    for i, (name, flow) in enumerate(flows.items()):
        ax = fig.add_subplot(1, len(flows), i + 1, projection="3d")
        ax.scatter(*first.T, s=1.0, c="tab:blue", linewidths=0, label="frame 1")
        ax.scatter(*second.T, s=1.0, c="tab:orange", linewidths=0, label="frame 2")
        if flow is not None:
            ax.quiver(*first[pick].T, *flow[pick].T, color="black", linewidth=0.5, arrow_length_ratio=0.2)
        _equal_axes(ax, both, view)
        ax.set_title(name, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
