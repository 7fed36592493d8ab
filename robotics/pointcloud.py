r"""Point-cloud observations from a MuJoCo depth camera, as DP3 and MP1 use them.

DP3 (Ze et al., "3D Diffusion Policy", arXiv 2403.03954) and MP1 (arXiv 2507.10543) observe a
single-view depth image back-projected to 3-D, cropped to the workspace and farthest-point sampled to N = 512
(or 256) points, xyz only. This module does each step as a pure function, plus :class:`DepthPointCloud` that
renders a MuJoCo camera and chains them.

**Back-projection.** MuJoCo cameras look down their local :math:`-z` axis with :math:`+y` up and :math:`+x` to
the right; ``fovy`` is the vertical field of view, pixels are square, so the focal length in pixels is
:math:`f = (H/2)/\tan(\mathrm{fovy}/2)`. The depth image holds the distance :math:`d` along the optical axis
(what ``mujoco.Renderer`` returns with depth rendering on: metres, not the OpenGL z-buffer). Pixel (row i,
column j), row 0 at the top, has its centre at :math:`u = j + \tfrac12 - W/2`, :math:`v = i + \tfrac12 - H/2`
and is seen at

.. math::  p_{\rm cam} = \big(u\,d/f,\; -v\,d/f,\; -d\big), \qquad p_{\rm world} = c + R\,p_{\rm cam},

with :math:`c` the camera position (``data.cam_xpos``) and :math:`R` its orientation (``data.cam_xmat``
reshaped to 3×3, columns = camera axes in the world frame).

**Farthest point sampling** (Eldar et al. 1997; as in PointNet++): start from one point chosen by the seed,
then repeatedly add the point farthest from the chosen set. Written in plain torch (pyg-lib's ``fps`` is not
installable here).

**Caching.** Rendering is the slow part on a CPU, so the point cloud of every step is rendered once, during
collection (:mod:`flowzoo.robotics.collect`), and stored in the dataset; training reads the stored clouds and
never renders.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import weakref
from collections.abc import Sequence

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, EmptyInputError, MissingDependencyError, ShapeError, expected
from flowzoo.core.validation import check_int, check_positive_int

__all__ = [
    "headless_gl_default",
    "METAWORLD_CAMERA",
    "METAWORLD_WORKSPACE",
    "depth_to_points",
    "crop",
    "farthest_point_sample",
    "DepthPointCloud",
    "open_renderer",
]


def headless_gl_default() -> None:
    """On a Linux machine without a display, make MuJoCo render offscreen through EGL unless told otherwise.

    MuJoCo picks its OpenGL backend when it is first imported, so this runs when this module is imported
    (before :mod:`mujoco` normally is). An explicit ``MUJOCO_GL`` is never overridden.
    """
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if sys.platform.startswith("linux") and headless:
        os.environ.setdefault("MUJOCO_GL", "egl")


headless_gl_default()

# The "corner4" camera looks over the table from its front-right corner; its cropped clouds show the gripper and
# the objects of reach, button-press, drawer-close, door-open, push and pick-place (checked by plotting them).
# It is rolled upside down in Meta-World's model, which does not matter for world-frame points.
METAWORLD_CAMERA = "corner4"
# Table-top workspace: above the table surface (z = 0, so the table itself is dropped), in front of the table's
# back rim (y = 0.98) and below the upper arm links (z > 0.5), which would otherwise take a large share of the
# sampled points without telling the policy anything the proprioceptive state does not.
METAWORLD_WORKSPACE: tuple[tuple[float, float, float], tuple[float, float, float]] = (
    (-0.6, 0.25, 0.003),
    (0.6, 0.97, 0.5),
)


def _as_float_array(value: object, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float64)
    if shape is not None and array.shape != shape:
        raise ShapeError(expected(f"{name} of shape {shape}", tuple(array.shape), f"pass {name} as {shape}"))
    return array


def depth_to_points(depth: np.ndarray, fovy: float, cam_pos: Sequence[float] | np.ndarray,
                    cam_mat: Sequence[float] | np.ndarray) -> np.ndarray:
    """Back-project a depth image to world-frame points, one per pixel in row-major order.

    Args:
        depth: (H, W) distances along the camera's optical axis, in metres.
        fovy: vertical field of view in degrees (``model.cam_fovy[camera_id]``).
        cam_pos: camera position in the world, (3,) (``data.cam_xpos[camera_id]``).
        cam_mat: camera orientation, (3, 3) or its row-major (9,) flattening (``data.cam_xmat[camera_id]``).

    Returns:
        (H*W, 3) float32 world coordinates; pixel (i, j) is row ``i * W + j``.

    Infinite depth (a ray that hits nothing) gives non-finite points; :func:`crop` drops them.

    Raises:
        ShapeError: depth is not 2-D or the camera pose has the wrong size.
        ConfigError: fovy is not in (0, 180) degrees.
    """
    depth = _as_float_array(depth, "depth")
    if depth.ndim != 2 or depth.size == 0:
        raise ShapeError(expected("a non-empty (H, W) depth image", tuple(depth.shape), "pass one depth frame"))
    if not (isinstance(fovy, (int, float)) and 0.0 < float(fovy) < 180.0):
        raise ConfigError(expected("fovy in degrees in (0, 180)", fovy, "pass model.cam_fovy[camera_id]"))
    position = _as_float_array(cam_pos, "cam_pos", (3,))
    rotation = _as_float_array(cam_mat, "cam_mat")
    if rotation.shape == (9,):
        rotation = rotation.reshape(3, 3)
    if rotation.shape != (3, 3):
        raise ShapeError(expected("cam_mat of shape (3, 3) or (9,)", tuple(rotation.shape),
                                  "pass data.cam_xmat[camera_id]"))
    height, width = depth.shape
    focal = (height / 2.0) / math.tan(math.radians(float(fovy)) / 2.0)
    u = np.arange(width, dtype=np.float64) + 0.5 - width / 2.0
    v = np.arange(height, dtype=np.float64) + 0.5 - height / 2.0
    x_cam = u[None, :] * depth / focal
    y_cam = -v[:, None] * depth / focal
    camera_points = np.stack([x_cam, y_cam, -depth], axis=-1).reshape(-1, 3)
    return (camera_points @ rotation.T + position).astype(np.float32)


def crop(points: np.ndarray | torch.Tensor, low: Sequence[float], high: Sequence[float]
         ) -> np.ndarray | torch.Tensor:
    """Keep the points inside the axis-aligned box ``low <= p <= high`` (bounds included); drop non-finite ones.

    Args:
        points: (N, 3) numpy array or tensor.
        low: (3,) lower corner.
        high: (3,) upper corner, each coordinate >= ``low``'s.

    Returns:
        (M, 3) of the same type and dtype, M <= N, in the input order.
    """
    low_arr = _as_float_array(low, "low", (3,))
    high_arr = _as_float_array(high, "high", (3,))
    if np.any(high_arr < low_arr):
        raise ConfigError(expected("a box with high >= low in every coordinate", f"low={low_arr.tolist()}, "
                                   f"high={high_arr.tolist()}", "swap or fix the bounds"))
    if points.ndim != 2 or points.shape[1] != 3:
        raise ShapeError(expected("points of shape (N, 3)", tuple(points.shape), "pass xyz points"))
    if isinstance(points, torch.Tensor):
        lo = torch.as_tensor(low_arr, dtype=points.dtype, device=points.device)
        hi = torch.as_tensor(high_arr, dtype=points.dtype, device=points.device)
        inside = ((points >= lo) & (points <= hi)).all(dim=1)
        return points[inside]
    points = np.asarray(points)
    inside = np.all((points >= low_arr.astype(points.dtype)) & (points <= high_arr.astype(points.dtype)), axis=1)
    return points[inside]


def farthest_point_sample(points: np.ndarray | torch.Tensor, n: int, *, seed: int | None = 0,
                          generator: torch.Generator | None = None) -> np.ndarray | torch.Tensor:
    """Choose ``n`` points by farthest point sampling.

    The first point is drawn uniformly (from ``generator`` if given, else from ``seed``); each next point is
    the one whose distance to the chosen set is largest. With fewer than ``n`` distinct candidates the result
    repeats points (all M points first, then FPS order again), so the output always has ``n`` rows.

    Args:
        points: (M, 3) (or (M, D)) numpy array or tensor, M >= 1.
        n: number of points to return, >= 1.
        seed: seed of the first pick when no generator is given.
        generator: torch generator of the first pick.

    Returns:
        (n, D) of the same type and dtype as ``points``.

    Raises:
        EmptyInputError: ``points`` is empty (e.g. the crop box missed the scene).
    """
    check_positive_int(n, "n", fix="ask for at least one point")
    is_numpy = not isinstance(points, torch.Tensor)
    tensor = torch.as_tensor(np.asarray(points)) if is_numpy else points
    if tensor.ndim != 2:
        raise ShapeError(expected("points of shape (M, D)", tuple(tensor.shape), "pass one cloud at a time"))
    count = tensor.shape[0]
    if count == 0:
        raise EmptyInputError(expected("at least one point to sample from", "0 points",
                                       "widen the crop box or check that the camera sees the workspace"))
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    work = tensor.detach().to(torch.float32)
    first = int(torch.randint(count, (1,), generator=generator).item())
    steps = min(n, count)
    chosen = torch.empty(steps, dtype=torch.long)
    chosen[0] = first
    nearest = ((work - work[first]) ** 2).sum(dim=1)
    for k in range(1, steps):
        index = torch.argmax(nearest)
        chosen[k] = index
        nearest = torch.minimum(nearest, ((work - work[index]) ** 2).sum(dim=1))
    if steps < n:
        chosen = chosen.repeat(math.ceil(n / steps))[:n]
    picked = tensor[chosen.to(tensor.device)]
    return picked.numpy() if is_numpy else picked


_OPEN_RENDERERS: "weakref.WeakSet[object]" = weakref.WeakSet()
_EXIT_HOOK_REGISTERED = False


def _close_open_renderers() -> None:
    for renderer in list(_OPEN_RENDERERS):
        try:
            renderer.close()
        except Exception:  # a context that is already gone has nothing left to free
            pass


def _register_exit_hook() -> None:
    # OpenGL contexts freed during interpreter teardown raise from __del__. MuJoCo's EGL module registers its
    # own exit hook (terminating the display) when the first context is made; hooks run last-in first-out,
    # so registering ours after that one frees our contexts while the display still exists.
    global _EXIT_HOOK_REGISTERED
    if not _EXIT_HOOK_REGISTERED:
        atexit.register(_close_open_renderers)
        _EXIT_HOOK_REGISTERED = True


def open_renderer(model: object, size: int) -> object:
    """A square ``mujoco.Renderer`` with shadows and reflections off; a clear error if OpenGL is unusable.

    The renderer is closed at interpreter exit if its owner has not closed it.
    """
    import mujoco

    try:
        renderer = mujoco.Renderer(model, size, size)
    except mujoco.FatalError as error:
        raise MissingDependencyError(expected(
            "an offscreen OpenGL context for MuJoCo", f"{error} (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r})",
            "set MUJOCO_GL=egl (or osmesa after apt-get install libosmesa6) before mujoco is first imported, "
            "e.g. import flowzoo.robotics before mujoco")) from error
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    _OPEN_RENDERERS.add(renderer)
    _register_exit_hook()
    return renderer


class DepthPointCloud:
    """Render a MuJoCo camera's depth and turn it into an N-point world-frame cloud.

    Shadows and reflections are switched off and ``model.vis.quality.offsamples`` is set to 0 (no
    multisampling), which makes a Meta-World frame ~10x cheaper on a CPU and does not change depth.

    Args:
        model: ``mujoco.MjModel``.
        camera: camera name.
        size: square image size in pixels.
        num_points: N, points per cloud.
        workspace: ``(low, high)`` crop box in world coordinates.
        seed: seed of the FPS start point (fixed, so equal scenes give equal clouds).

    Example (needs mujoco)::

        cloud = DepthPointCloud(env.unwrapped.model, "corner4", size=84, num_points=512)
        points = cloud(env.unwrapped.data)      # (512, 3) float32
        cloud.close()
    """

    def __init__(self, model: object, camera: str, *, size: int = 84, num_points: int = 512,
                 workspace: tuple[Sequence[float], Sequence[float]] = METAWORLD_WORKSPACE, seed: int = 0) -> None:
        try:
            import mujoco
        except ImportError as error:
            raise MissingDependencyError(expected("mujoco for depth rendering", f"ImportError: {error}",
                                                  "pip install 'flowzoo[robotics]'")) from error
        check_int(size, "render size", low=8, fix="use e.g. 84 or 128")
        camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if camera_id < 0:
            names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
            raise ConfigError(expected(f"a camera of the model, one of {names}", repr(camera), "pick one of them"))
        self._mujoco = mujoco
        self.camera = camera
        self.camera_id = camera_id
        self.size = size
        self.num_points = num_points
        self.workspace = (tuple(float(v) for v in workspace[0]), tuple(float(v) for v in workspace[1]))
        self.seed = seed
        self.model = model
        model.vis.quality.offsamples = 0
        # The offscreen buffer must hold the image; Meta-World's default (640x480) does.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, size)
        self._renderer = open_renderer(model, size)
        self._renderer.enable_depth_rendering()

    def depth(self, data: object) -> np.ndarray:
        """The (size, size) depth image of ``data``'s current state, in metres along the optical axis."""
        if self._renderer is None:
            raise RuntimeError("DepthPointCloud was closed; create a new one")
        self._renderer.update_scene(data, camera=self.camera)
        return self._renderer.render().copy()

    def points(self, data: object) -> np.ndarray:
        """All cropped world-frame points of the current depth image, (M, 3) float32."""
        raw = depth_to_points(self.depth(data), float(self.model.cam_fovy[self.camera_id]),
                              data.cam_xpos[self.camera_id], data.cam_xmat[self.camera_id])
        return crop(raw, *self.workspace)

    def __call__(self, data: object) -> np.ndarray:
        """The N-point cloud of ``data``'s current state, (num_points, 3) float32."""
        return farthest_point_sample(self.points(data), self.num_points, seed=self.seed)

    def close(self) -> None:
        """Free the OpenGL context (idempotent)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __del__(self) -> None:  # a renderer left for the interpreter's shutdown can fail noisily
        try:
            self.close()
        except Exception:
            pass
