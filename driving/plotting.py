"""Bird's-eye-view figures of driving scenes with planned trajectories (headless, PNG).

The figure GoalFlow (arXiv 2503.05689, Fig. 1 and 5) uses to show its method: the drivable area and lanes,
the other vehicles now and where they go, the expert plan, every sampled plan, the chosen plan and the goal
point, in the ego frame (x forward drawn upwards, y left drawn leftwards, as in :mod:`flowzoo.driving.raster`).

Example:
    >>> import tempfile, os
    >>> from flowzoo.driving.data import generate_scenes, scene_arrays
    >>> scene = scene_arrays(generate_scenes(1, seed=0), 0)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = plot_scene(scene, os.path.join(tmp, "scene.png"))
    ...     os.path.getsize(path) > 0
    True
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowzoo.core.analysis import require_matplotlib
from flowzoo.driving.geometry import box_corners
from flowzoo.driving.metrics import ego_boxes

__all__ = ["plot_scene"]


def _draw_box(ax, box: np.ndarray, **style) -> None:
    corners = box_corners(box)
    ax.fill(-corners[:, 1], corners[:, 0], **style)


def plot_scene(scene: dict[str, np.ndarray], path: str | Path, *, samples: np.ndarray | None = None,
               chosen: np.ndarray | None = None, goal: np.ndarray | None = None, expert: bool = True,
               extent: tuple[float, float, float, float] = (-16.0, 60.0, -30.0, 30.0), title: str | None = None,
               ) -> Path:
    """Draw one scene (as from :func:`flowzoo.driving.data.scene_arrays`) and write a PNG.

    Args:
        scene: the scene's arrays (``drivable``, ``lanes``, ``agent_boxes``, ``agent_futures``, ``trajectory``).
        path: the PNG to write.
        samples: ``(S, T, 2+)`` sampled plans, drawn thin.
        chosen: ``(T, 2+)`` the selected plan, drawn thick.
        goal: ``(2+,)`` the goal point (default: the expert's goal when ``expert``).
        expert: draw the expert's trajectory (the data set's) dashed.
        extent: (x behind, x ahead, y right, y left) in metres.
        title: the figure title.
    """
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(4.2, 5.0), dpi=90)
    ring = np.asarray(scene["drivable"], dtype=float)
    ring = ring[~np.isnan(ring).any(-1)]
    ax.fill(-ring[:, 1], ring[:, 0], color="0.85", zorder=0)
    for lane in scene.get("lanes", []):
        lane = np.asarray(lane, dtype=float)
        lane = lane[~np.isnan(lane).any(-1)]
        ax.plot(-lane[:, 1], lane[:, 0], color="white", lw=0.8, ls="--", zorder=1)
    boxes = np.asarray(scene.get("agent_boxes", np.zeros((0, 5))), dtype=float).reshape(-1, 5)
    futures = np.asarray(scene.get("agent_futures", np.zeros((0, 8, 3))), dtype=float)
    for box, future in zip(boxes, futures):
        for pose in future:
            _draw_box(ax, np.concatenate([pose, box[3:]]), color="tab:blue", alpha=0.08, zorder=2)
        _draw_box(ax, box, color="tab:blue", alpha=0.9, zorder=3)
    _draw_box(ax, ego_boxes(np.zeros(3)), color="tab:red", zorder=4)
    if samples is not None:
        samples = np.asarray(samples, dtype=float)
        for k, plan in enumerate(samples):  # one legend entry for all of them
            ax.plot(-plan[:, 1], plan[:, 0], color="tab:purple", lw=0.8, alpha=0.45, zorder=5,
                    label=f"samples ({len(samples)})" if k == 0 else None)
    if expert and "trajectory" in scene:
        truth = np.asarray(scene["trajectory"], dtype=float)
        ax.plot(-truth[:, 1], truth[:, 0], "o--", color="black", lw=1.2, ms=2.5, zorder=6, label="expert")
        goal = truth[-1] if goal is None else goal
    if chosen is not None:
        chosen = np.asarray(chosen, dtype=float)
        ax.plot(-chosen[:, 1], chosen[:, 0], "-", color="tab:green", lw=2.2, zorder=7, label="chosen")
    if goal is not None:
        ax.plot(-goal[1], goal[0], "*", color="gold", mec="black", ms=13, zorder=8, label="goal")
    ax.set_xlim(-extent[3], -extent[2])
    ax.set_ylim(extent[0], extent[1])
    ax.set_aspect("equal")
    ax.xaxis.set_major_formatter(lambda value, _: f"{0.0 - value:g}")  # -y is drawn: ticks read y, "0" not "-0"
    ax.set_xlabel("← left     y (m)     right →")
    ax.set_ylabel("x (m), forward")
    if title:
        ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
