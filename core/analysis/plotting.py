"""Plots that a person would rather look at than read: samples and trajectories.

matplotlib is optional (extra ``viz``); every function raises
:class:`~flowzoo.core.errors.MissingDependencyError` naming the extra when it is missing.
Figures are written headless (Agg backend) as PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from flowzoo.core.errors import MissingDependencyError, ShapeError, expected

__all__ = ["plot_samples_2d", "require_matplotlib"]


def require_matplotlib():
    """Return ``matplotlib.pyplot`` with the Agg backend, or raise naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            expected("matplotlib for plots", "an environment without it", "pip install 'flowzoo[viz]'")
        ) from err
    return plt


def plot_samples_2d(
    panels: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    trajectories: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    title: str | None = None,
    limits: Sequence[float] | None = None,
) -> Path:
    """Scatter 2-D point sets side by side and save the figure as PNG.

    Args:
        panels: title -> (N, 2) points, one panel each (e.g. ``{"1 step": x, "100 steps": y}``).
        path: where to write the PNG (parent folders are created).
        trajectories: optional (T, N, 2) paths drawn faintly on the last panel.
        reference: optional (M, 2) target samples drawn in grey under every panel.
        title: figure title.
        limits: ``(lo, hi)`` for both axes; chosen from the data when omitted.

    Returns:
        The path of the written PNG.
    """
    for name, points in panels.items():
        if points.dim() != 2 or points.shape[1] != 2:
            raise ShapeError(expected(f"panel {name!r} as (N, 2) points", tuple(points.shape),
                                      "plot only 2-D samples, or project them first"))
    plt = require_matplotlib()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    if limits is None:
        stacked = torch.cat([p.detach().float().cpu() for p in panels.values()])
        finite = stacked[torch.isfinite(stacked).all(dim=1)]
        lo, hi = (finite.quantile(0.005).item(), finite.quantile(0.995).item()) if len(finite) else (-5, 5)
        pad = 0.1 * (hi - lo + 1e-6)
        limits = (lo - pad, hi + pad)
    for ax, (name, points) in zip(axes[0], panels.items()):
        if reference is not None:
            ref = reference.detach().float().cpu()
            ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.8", linewidths=0)
        pts = points.detach().float().cpu()
        ax.scatter(pts[:, 0], pts[:, 1], s=2, c="tab:blue", linewidths=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(*limits)
        ax.set_ylim(*limits)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if trajectories is not None:
        traj = trajectories.detach().float().cpu()
        ax = axes[0][-1]
        for i in range(min(traj.shape[1], 64)):
            ax.plot(traj[:, i, 0], traj[:, i, 1], c="tab:orange", lw=0.5, alpha=0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
