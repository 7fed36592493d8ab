r"""Optical flow for video editing and evaluation: warping, occlusion, error measures, classical estimators and
ReynoldsFlow's training-free flow.

Conventions: frames are (B, C, H, W) float tensors; a flow is (B, 2, H, W) in pixels, channel 0 the x (column)
displacement and channel 1 the y (row) displacement, and ``flow[p]`` sends pixel p of the *first* frame to
``p + flow[p]`` in the second (forward flow, OpenCV's convention).

* :func:`warp` — backward warping :math:`\hat I_1(p) = I_2(p + F_{1\to2}(p))` (bilinear);
* :func:`occlusion_mask` — forward–backward consistency (Sundaram, Brox, Keutzer, ECCV 2010; the thresholds of
  Meister et al., arXiv 1711.07837): p is occluded when
  :math:`|F_{12}(p) + F_{21}(p + F_{12}(p))|^2 > \alpha(|F_{12}|^2 + |F_{21}(p + F_{12})|^2) + \beta`;
* :func:`warping_error` — FlowVid's temporal-consistency measure :math:`\mathbb{E}\,|M \odot (W(\hat y_{t+1}) -
  \hat y_t)|` over visible pixels; :func:`endpoint_error` — EPE against a ground-truth flow;
* :func:`dis_flow`, :func:`farneback_flow` — OpenCV's DIS (Kroeger et al., ECCV 2016) and Farnebäck
  (SCIA 2003) estimators (``opencv-python-headless``, part of the ``vision`` extra);
* :func:`horn_schunck` — brightness-constancy flow (Horn & Schunck, 1981) in torch;
* :func:`reynolds_flow` — ReynoldsFlow (Chen & Wu, arXiv 2503.04500): the Reynolds transport theorem turns
  brightness constancy :math:`\partial_t f + v\cdot\nabla f = 0` into the continuity equation
  :math:`\partial_t f + \nabla\cdot(f v) = 0`; with :math:`v = v_o + \nabla\phi`, :math:`v_o` the
  brightness-constancy flow, the irrotational correction solves
  :math:`\nabla\cdot(f\nabla\phi) = -(\partial_t f + \nabla\cdot(f v_o))`. Here the coefficient f is replaced by its
  mean :math:`\bar f` (regularised away from 0), so the Poisson equation is solved exactly in the Fourier domain with
  periodic boundaries; :func:`reynolds_encoding` stacks :math:`[|v_o|, |v_r|, f]` as three channels
  (ReynoldsFlow+).

Flows carry no flow-matching time; video frames are indexed, not timed.

Example:
    >>> import torch
    >>> frame = torch.rand(1, 1, 8, 8)
    >>> shifted = torch.roll(frame, shifts=2, dims=-1)          # content moves 2 px to the right
    >>> flow = torch.zeros(1, 2, 8, 8); flow[:, 0] = 2.0
    >>> bool(torch.allclose(warp(shifted, flow)[..., :6], frame[..., :6], atol=1e-5))
    True
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from flowzoo.core.errors import MissingDependencyError, ShapeError, expected
from flowzoo.core.validation import check_int, check_positive, check_tensor

__all__ = ["pixel_grid", "warp", "occlusion_mask", "warping_error", "endpoint_error", "dis_flow", "farneback_flow",
           "horn_schunck", "reynolds_flow", "reynolds_encoding"]

Tensor = torch.Tensor


def _frames(x: object, name: str) -> Tensor:
    x = check_tensor(x, name, min_dim=4)
    if x.dim() != 4:
        raise ShapeError(expected(f"{name} as frames (B, C, H, W)", f"shape {tuple(x.shape)}", "add a batch dimension"))
    return x


def _flow(flow: object, like: Tensor, name: str = "flow") -> Tensor:
    flow = _frames(flow, name)
    if flow.shape[1] != 2 or flow.shape[-2:] != like.shape[-2:] or flow.shape[0] not in (1, like.shape[0]):
        raise ShapeError(expected(f"{name} of shape (B, 2, {like.shape[-2]}, {like.shape[-1]})",
                                  f"shape {tuple(flow.shape)}", "estimate the flow on frames of this size"))
    return flow


def pixel_grid(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """(1, 2, H, W) pixel coordinates (x, y)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                            torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys])[None]


def warp(image: Tensor, flow: Tensor, padding: str = "border") -> Tensor:
    r"""Backward-warp ``image`` (the second frame) to the first: :math:`\hat I_1(p) = I_2(p + F_{1\to2}(p))`."""
    image = _frames(image, "image")
    flow = _flow(flow, image)
    h, w = image.shape[-2:]
    target = pixel_grid(h, w, image.device) + flow
    grid = torch.stack([2 * target[:, 0] / max(w - 1, 1) - 1, 2 * target[:, 1] / max(h - 1, 1) - 1], dim=-1)
    grid = grid.expand(image.shape[0], -1, -1, -1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode=padding, align_corners=True)


def occlusion_mask(forward: Tensor, backward: Tensor, alpha: float = 0.01, beta: float = 0.5) -> Tensor:
    """(B, 1, H, W) boolean: True where the first frame's pixel is occluded (or leaves the frame) in the second."""
    forward = _frames(forward, "forward")
    backward = _flow(backward, forward, "backward")
    back_at_target = warp(backward, forward)
    mismatch = ((forward + back_at_target) ** 2).sum(1, keepdim=True)
    scale = (forward ** 2).sum(1, keepdim=True) + (back_at_target ** 2).sum(1, keepdim=True)
    h, w = forward.shape[-2:]
    target = pixel_grid(h, w, forward.device) + forward
    outside = ((target[:, :1] < 0) | (target[:, :1] > w - 1) | (target[:, 1:] < 0) | (target[:, 1:] > h - 1))
    return (mismatch > alpha * scale + beta) | outside


def warping_error(frames: Tensor, flows: Tensor, occluded: Tensor | None = None) -> float:
    r"""Mean :math:`|W_{t\to t+1}(\hat y_{t+1}) - \hat y_t|` over consecutive frames and visible pixels.

    ``frames`` (T, C, H, W) of one video; ``flows`` (T − 1, 2, H, W) forward flows of the *source* video;
    ``occluded`` (T − 1, 1, H, W) booleans (None: every pixel counts).
    """
    frames = _frames(frames, "frames")
    if flows.shape[0] != frames.shape[0] - 1:
        raise ShapeError(expected(f"{frames.shape[0] - 1} flows for {frames.shape[0]} frames", f"{flows.shape[0]}",
                                  "pass the flow between each pair of consecutive frames"))
    error = (warp(frames[1:], flows) - frames[:-1]).abs().mean(1, keepdim=True)
    if occluded is None:
        return float(error.mean())
    visible = (~occluded).float()
    return float((error * visible).sum() / visible.sum().clamp_min(1.0))


def endpoint_error(flow: Tensor, truth: Tensor, mask: Tensor | None = None) -> float:
    """Mean Euclidean distance between two flows (over ``mask`` when given)."""
    flow = _frames(flow, "flow")
    truth = _flow(truth, flow, "truth")
    epe = (flow - truth).norm(dim=1, keepdim=True)
    if mask is None:
        return float(epe.mean())
    m = mask.float()
    return float((epe * m).sum() / m.sum().clamp_min(1.0))


def _gray_uint8(frame: Tensor) -> np.ndarray:
    frame = frame.detach().float().mean(0) if frame.dim() == 3 else frame.detach().float()
    lo, hi = -1.0 if float(frame.min()) < 0 else 0.0, 1.0
    return np.clip((frame.cpu().numpy() - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)


def _cv2():
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError(expected("OpenCV for DIS / Farnebäck flow", "no module cv2",
                                              'pip install "flowzoo[vision]" (opencv-python-headless)')) from None
    return cv2


def _opencv_flow(first: Tensor, second: Tensor, compute) -> Tensor:
    first, second = _frames(first, "first"), _frames(second, "second")
    if first.shape != second.shape:
        raise ShapeError(expected("two frame batches of one shape", f"{tuple(first.shape)} and {tuple(second.shape)}",
                                  "resize the frames to one size"))
    flows = [torch.from_numpy(compute(_gray_uint8(a), _gray_uint8(b))).permute(2, 0, 1) for a, b in zip(first, second)]
    return torch.stack(flows).float()


def dis_flow(first: Tensor, second: Tensor, preset: str = "medium") -> Tensor:
    """OpenCV's DIS optical flow from ``first`` to ``second`` (frames in [−1, 1] or [0, 1]; grey-scale inside)."""
    cv2 = _cv2()
    presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
    if preset not in presets:
        raise ShapeError(expected(f"a DIS preset in {sorted(presets)}", repr(preset), "pass preset='medium'"))
    dis = cv2.DISOpticalFlow_create(presets[preset])
    return _opencv_flow(first, second, lambda a, b: dis.calc(a, b, None))


def farneback_flow(first: Tensor, second: Tensor, levels: int = 3, window: int = 9) -> Tensor:
    """OpenCV's Farnebäck dense flow from ``first`` to ``second``."""
    cv2 = _cv2()
    check_int(levels, "levels", low=1)
    check_int(window, "window", low=3)
    return _opencv_flow(first, second, lambda a, b: cv2.calcOpticalFlowFarneback(
        a, b, None, 0.5, levels, window, 3, 5, 1.1, 0))


def _gradients(first: Tensor, second: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    mean = 0.5 * (first + second)
    kx = torch.tensor([[[[-0.5, 0.0, 0.5]]]], dtype=mean.dtype, device=mean.device)
    ix = F.conv2d(F.pad(mean, (1, 1, 0, 0), mode="replicate"), kx)
    iy = F.conv2d(F.pad(mean, (0, 0, 1, 1), mode="replicate"), kx.transpose(-1, -2))
    return ix, iy, second - first


def horn_schunck(first: Tensor, second: Tensor, alpha: float = 0.5, iterations: int = 200) -> Tensor:
    """Horn–Schunck flow (grey-scale frames; smoothness weight ``alpha``, Jacobi iterations)."""
    first, second = _frames(first, "first").mean(1, keepdim=True), _frames(second, "second").mean(1, keepdim=True)
    ix, iy, it = _gradients(first, second)
    check_positive(alpha, "alpha")
    kernel = torch.tensor([[1, 2, 1], [2, 0, 2], [1, 2, 1]], dtype=first.dtype, device=first.device)[None, None] / 12
    u, v = torch.zeros_like(first), torch.zeros_like(first)
    denominator = alpha ** 2 + ix ** 2 + iy ** 2
    for _ in range(check_int(iterations, "iterations", low=1)):
        u_bar = F.conv2d(F.pad(u, (1, 1, 1, 1), mode="replicate"), kernel)
        v_bar = F.conv2d(F.pad(v, (1, 1, 1, 1), mode="replicate"), kernel)
        common = (ix * u_bar + iy * v_bar + it) / denominator
        u, v = u_bar - ix * common, v_bar - iy * common
    return torch.cat([u, v], dim=1)


def _divergence(field: Tensor) -> Tensor:
    gx = 0.5 * (torch.roll(field[:, :1], -1, dims=-1) - torch.roll(field[:, :1], 1, dims=-1))
    gy = 0.5 * (torch.roll(field[:, 1:], -1, dims=-2) - torch.roll(field[:, 1:], 1, dims=-2))
    return gx + gy


def reynolds_flow(first: Tensor, second: Tensor, *, base: Tensor | None = None, eps: float = 1e-2,
                  alpha: float = 0.5, iterations: int = 200) -> tuple[Tensor, Tensor]:
    r"""``(v_o, v_r)``: the brightness-constancy flow (``base``, default :func:`horn_schunck`) and ReynoldsFlow's
    irrotational correction :math:`v_r = \nabla\phi`, :math:`\bar f\,\Delta\phi = -(\partial_t f + \nabla\cdot(f v_o))`
    solved with the FFT (periodic boundaries; :math:`\bar f` floored at ``eps``)."""
    first, second = _frames(first, "first").mean(1, keepdim=True), _frames(second, "second").mean(1, keepdim=True)
    v_o = horn_schunck(first, second, alpha, iterations) if base is None else _flow(base, first, "base")
    f = 0.5 * (first + second)
    residual = (second - first) + _divergence(f * v_o)
    h, w = f.shape[-2:]
    ky = torch.fft.fftfreq(h, device=f.device).reshape(h, 1)
    kx = torch.fft.fftfreq(w, device=f.device).reshape(1, w)
    # the spectrum of the central-difference Laplacian matches the divergence and gradient used here
    laplacian = -(torch.sin(2 * torch.pi * kx) ** 2 + torch.sin(2 * torch.pi * ky) ** 2)
    laplacian[laplacian.abs() < 1e-12] = 1.0
    f_bar = f.abs().mean(dim=(-2, -1), keepdim=True).clamp_min(check_positive(eps, "eps"))
    phi_hat = torch.fft.fft2(-residual / f_bar) / laplacian
    phi_hat[..., 0, 0] = 0
    phi = torch.fft.ifft2(phi_hat).real
    grad_x = 0.5 * (torch.roll(phi, -1, dims=-1) - torch.roll(phi, 1, dims=-1))
    grad_y = 0.5 * (torch.roll(phi, -1, dims=-2) - torch.roll(phi, 1, dims=-2))
    return v_o, torch.cat([grad_x, grad_y], dim=1)


def reynolds_encoding(frame: Tensor, v_o: Tensor, v_r: Tensor, power: float = 1.0) -> Tensor:
    """ReynoldsFlow+'s three channels ``[|v_o|, |v_r|, f^power]``, each scaled to [0, 1] per image."""
    frame = _frames(frame, "frame").mean(1, keepdim=True)
    channels = [v_o.norm(dim=1, keepdim=True), v_r.norm(dim=1, keepdim=True), frame.clamp_min(0) ** power]
    scaled = []
    for c in channels:
        lo = c.amin(dim=(-2, -1), keepdim=True)
        hi = c.amax(dim=(-2, -1), keepdim=True)
        scaled.append((c - lo) / (hi - lo).clamp_min(1e-8))
    return torch.cat(scaled, dim=1)
