"""Bird's-eye-view rasters and the ego-state vector: the scene input of a GoalFlow planner.

GoalFlow (arXiv 2503.05689) encodes cameras and LiDAR into a BEV feature map with TransFuser and supervises it
with an HD-map BEV segmentation; with synthetic scenes the map itself is the input: a ``(C, H, W)`` uint8 raster
in the ego frame (x forward, y left) with the channels :data:`CHANNELS`:

* ``drivable``: 255 inside the drivable polygon;
* ``lanes``: 255 on lane centrelines;
* ``agents_now``: 255 inside other vehicles' current boxes;
* ``agents_future``: their boxes at the plan times, brighter the sooner (255 at the first step, fading to
  255/HORIZON at the last), the maximum where they overlap.

Row 0 is the far front (largest x) and column 0 the far left (largest y), so the image reads like the road
seen from above with the ego driving up. The ego state is ``(speed m/s, longitudinal acceleration m/s², yaw
rate rad/s)``, NAVSIM's ego status without the driving command (kept apart in the data set, so a planner opts
in to it).

Example:
    >>> import numpy as np
    >>> from flowzoo.driving.scenes import sample_scene
    >>> bev = rasterize_scene(sample_scene(np.random.default_rng(0)))
    >>> bev.shape, bev.dtype, bool(bev[0].max() == 255)
    ((4, 64, 64), dtype('uint8'), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int
from flowzoo.driving.geometry import arc_lengths, box_corners, points_in_boxes, points_inside, resample_polyline
from flowzoo.driving.scenes import HORIZON, Scene

__all__ = ["CHANNELS", "RasterSpec", "pixel_centres", "rasterize", "rasterize_scene", "ego_state"]

CHANNELS = ("drivable", "lanes", "agents_now", "agents_future")


@dataclass(frozen=True)
class RasterSpec:
    """Size and metric extent of the raster.

    Attributes:
        size: pixels per side (the raster is square).
        x_range: (behind, ahead) metres covered along x; the default puts the ego a quarter from the bottom.
        y_range: (right, left) metres covered along y.
    """

    size: int = 64
    x_range: tuple[float, float] = (-16.0, 48.0)
    y_range: tuple[float, float] = (-32.0, 32.0)

    def __post_init__(self) -> None:
        check_int(self.size, "raster size", low=4)
        for name, (low, high) in (("x_range", self.x_range), ("y_range", self.y_range)):
            if not float(low) < float(high):
                raise ConfigError(expected(f"{name} as (low, high) with low < high", (low, high),
                                           "e.g. x_range=(-16, 48)"))

    @property
    def resolution(self) -> tuple[float, float]:
        """Metres per pixel along x (rows) and y (columns)."""
        return ((self.x_range[1] - self.x_range[0]) / self.size, (self.y_range[1] - self.y_range[0]) / self.size)


def pixel_centres(spec: RasterSpec) -> np.ndarray:
    """``(H, W, 2)`` ego-frame (x, y) of every pixel centre.

    Example:
        >>> pixel_centres(RasterSpec(size=4, x_range=(0, 4), y_range=(-2, 2)))[0, 0].tolist()
        [3.5, 1.5]
    """
    rx, ry = spec.resolution
    x = spec.x_range[1] - (np.arange(spec.size) + 0.5) * rx
    y = spec.y_range[1] - (np.arange(spec.size) + 0.5) * ry
    return np.stack(np.meshgrid(x, y, indexing="ij"), axis=-1)


def _lane_pixels(lanes: list[np.ndarray], spec: RasterSpec) -> np.ndarray:
    image = np.zeros((spec.size, spec.size), dtype=np.uint8)
    step = min(spec.resolution) / 2
    for lane in lanes:
        lane = np.asarray(lane, dtype=float)
        lane = lane[~np.isnan(lane).any(-1)]
        if len(lane) < 2:
            continue
        points = resample_polyline(lane, max(int(arc_lengths(lane)[-1] / step), 1) + 1)
        rows = np.floor((spec.x_range[1] - points[:, 0]) / spec.resolution[0]).astype(int)
        cols = np.floor((spec.y_range[1] - points[:, 1]) / spec.resolution[1]).astype(int)
        keep = (rows >= 0) & (rows < spec.size) & (cols >= 0) & (cols < spec.size)
        image[rows[keep], cols[keep]] = 255
    return image


def _box_windows(boxes: np.ndarray, spec: RasterSpec) -> np.ndarray:
    """``(B, 4)`` first row, end row, first column, end column of the pixels whose centres may lie in each box:
    its axis-aligned bounds, a pixel wider on each side so that rounding never drops a pixel the exact test keeps
    (an infinite or NaN box gets the whole raster)."""
    corners = box_corners(boxes)
    rx, ry = spec.resolution
    with np.errstate(invalid="ignore"):
        rows = np.floor((spec.x_range[1] - corners[..., 0].max(-1)) / rx - 0.5) - 1, \
            np.ceil((spec.x_range[1] - corners[..., 0].min(-1)) / rx - 0.5) + 2
        cols = np.floor((spec.y_range[1] - corners[..., 1].max(-1)) / ry - 0.5) - 1, \
            np.ceil((spec.y_range[1] - corners[..., 1].min(-1)) / ry - 0.5) + 2
    windows = np.stack([rows[0], rows[1], cols[0], cols[1]], -1)
    windows[~np.isfinite(boxes).all(-1)] = [0, spec.size, 0, spec.size]
    return np.clip(windows, 0, spec.size).astype(int)


def _paint_boxes(grid: np.ndarray, boxes: np.ndarray, values: np.ndarray, spec: RasterSpec) -> np.ndarray:
    """``(H, W)`` uint8: the largest ``values[b]`` over the boxes whose (point-in-box) test holds at each pixel
    centre of ``grid`` (0 elsewhere).

    The exact test runs only on each box's window of pixels (a car covers a few of the 4096), which gives the
    same image as testing every pixel against every box at a fraction of the cost."""
    image = np.zeros(grid.shape[:2], dtype=np.uint8)
    for box, value, (r0, r1, c0, c1) in zip(boxes, values, _box_windows(boxes, spec)):
        window = grid[r0:r1, c0:c1]
        if window.size:
            inside = points_in_boxes(window.reshape(-1, 2), box[None]).reshape(window.shape[:2])
            np.maximum(image[r0:r1, c0:c1], np.where(inside, value, 0).astype(np.uint8), out=image[r0:r1, c0:c1])
    return image


def rasterize(drivable, lanes: list[np.ndarray], agent_boxes: np.ndarray, agent_futures: np.ndarray,
              spec: RasterSpec = RasterSpec()) -> np.ndarray:
    """The ``(len(CHANNELS), H, W)`` uint8 BEV raster of a scene given as geometry.

    Args:
        drivable: the drivable area (shapely polygon).
        lanes: lane centrelines, each ``(K, 2)`` (NaN rows ignored).
        agent_boxes: ``(A, 5)`` current boxes ``(x, y, θ, length, width)``.
        agent_futures: ``(A, T, 3)`` future poses; the boxes keep their current size.
        spec: raster size and extent.
    """
    centres = pixel_centres(spec).reshape(-1, 2)
    shape = (spec.size, spec.size)
    bev = np.zeros((len(CHANNELS), *shape), dtype=np.uint8)
    bev[0] = np.where(points_inside(drivable, centres), 255, 0).reshape(shape)
    bev[1] = _lane_pixels(lanes, spec)
    agent_boxes = np.asarray(agent_boxes, dtype=float).reshape(-1, 5)
    if len(agent_boxes):
        grid = pixel_centres(spec)
        bev[2] = _paint_boxes(grid, agent_boxes, np.full(len(agent_boxes), 255, dtype=np.uint8), spec)
        futures = np.asarray(agent_futures, dtype=float)
        steps = futures.shape[1]
        sizes = np.broadcast_to(agent_boxes[:, None, 3:5], futures.shape[:-1] + (2,))
        boxes = np.concatenate([futures, sizes], -1)
        brightness = np.round(255 * (1 - np.arange(steps) / max(steps, HORIZON))).astype(np.uint8)
        values = np.broadcast_to(brightness, (len(agent_boxes), steps))
        bev[3] = _paint_boxes(grid, boxes.reshape(-1, 5), values.reshape(-1), spec)
    return bev


def rasterize_scene(scene: Scene, spec: RasterSpec = RasterSpec()) -> np.ndarray:
    """:func:`rasterize` of a :class:`~flowzoo.driving.scenes.Scene`."""
    return rasterize(scene.drivable, scene.lanes, scene.agent_boxes, scene.agent_futures, spec)


def ego_state(scene: Scene) -> np.ndarray:
    """``(3,)`` float32 ego state: speed, longitudinal acceleration, yaw rate."""
    return np.array([scene.ego_speed, scene.ego_accel, scene.ego_yaw_rate], dtype=np.float32)
