r"""Degradation operators for image inverse problems: :math:`y = A x + \sigma_y \varepsilon`.

Every restoration method of :mod:`flowzoo.vision` (FLAIR, DPS-style guidance, projection, the pseudo-inverse
baseline) and a user's own operator meet through one interface, :class:`Operator`:

* ``forward(x)`` applies :math:`A` to images (B, C, H, W) and returns the measurement (its own shape);
* ``adjoint(y)`` applies :math:`A^\top`, with :math:`\langle A x, y\rangle = \langle x, A^\top y\rangle`
  (checked once by :func:`check_adjoint`, which every solver calls before it starts);
* ``pinv(y)`` applies the Moore–Penrose pseudo-inverse :math:`A^+` (the "measurement's pseudo-inverse"
  baseline, and the data-consistency projection :math:`x + A^+(y - A x)` onto :math:`\{x : A x = y\}`);
* ``measure(x, generator)`` draws :math:`y = A x + \sigma_y \varepsilon`;
* ``measurement_shape(shape)`` is the shape (C, H, W) of :math:`A x` for images of ``shape`` (what a user must
  supply when the image is already degraded).

A user's operator may leave ``pinv`` out: :func:`has_pseudo_inverse` then says so, calling ``pinv`` raises a
:class:`ConfigError` instead of failing deep inside a solver, and only the solvers that need :math:`A` and
:math:`A^\top` alone (DPS) accept it. :func:`check_pseudo_inverse` checks once that a ``pinv`` is a right inverse
on the range, :math:`A A^+ (A x) = A x`, which the projection :math:`x + A^+(y - Ax)` needs to land on
:math:`\{x : Ax = y\}`.

The operators are those of the inverse-problem literature that FLAIR (arXiv 2506.02680, §4) and DPS (Chung et
al., arXiv 2209.14687, §4) evaluate on: random-pixel and box inpainting (a pixel mask, :math:`A = A^\top = A^+ =
\mathrm{diag}(m)` on the image grid), average-pool super-resolution by an integer factor f (:math:`A` averages f×f
blocks, :math:`A^\top y` spreads each value over its block divided by f², :math:`A^+ y` repeats it, so that
:math:`A A^+ = I`), and Gaussian / motion blur as a circular convolution (diagonal in the Fourier basis: the
adjoint multiplies by the conjugate transfer function, the pseudo-inverse divides by it where
:math:`|\hat k| > \epsilon` and zeroes the rest, a truncated SVD; by default :math:`\epsilon = \max(10^{-3},
\sigma_y)`, so that no kept frequency amplifies the measurement noise above the signal it carries). Circular boundaries keep all three exact; a zero-padded blur
would have no closed-form pseudo-inverse.

Images live in [−1, 1] (data at t = 1); operators do not involve time.

Example:
    >>> import torch
    >>> op = AveragePoolDownsample(2)
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> op(x).squeeze().tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    >>> torch.allclose(op(op.pinv(op(x))), op(x))
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.validation import check_int, check_nonnegative, check_positive, check_probability, check_tensor

__all__ = ["Operator", "Inpainting", "random_inpainting", "box_inpainting", "AveragePoolDownsample",
           "CircularBlur", "gaussian_kernel", "motion_kernel", "gaussian_blur", "motion_blur", "check_adjoint",
           "has_pseudo_inverse", "check_pseudo_inverse", "build_operator", "OPERATORS"]

Tensor = torch.Tensor


def _images(x: object, name: str) -> Tensor:
    x = check_tensor(x, name, min_dim=4, finite=False)   # solvers call operators every step: no sync here
    if x.dim() != 4:
        raise ShapeError(expected(f"{name} as images (B, C, H, W)", f"shape {tuple(x.shape)}",
                                  "add a batch dimension, e.g. x[None]"))
    return x


def _plane(x: object, name: str, dims: tuple[int, ...]) -> Tensor:
    x = check_tensor(x, name, min_dim=2, floating=False)
    if x.dim() not in dims:
        raise ShapeError(expected(f"{name} with {' or '.join(map(str, dims))} dimensions", f"shape {tuple(x.shape)}",
                                  "pass an (H, W) array"))
    return x


class Operator:
    """A linear measurement :math:`A` with its adjoint and pseudo-inverse, plus Gaussian noise of std ``noise_std``.

    Subclasses implement :meth:`forward`, :meth:`adjoint` and :meth:`pinv` on batches (B, C, H, W).
    """

    name = "operator"

    def __init__(self, noise_std: float = 0.0):
        self.noise_std = check_nonnegative(noise_std, "noise_std", fix="pass e.g. noise_std=0.05 (images in [-1, 1])")

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def adjoint(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def pinv(self, y: Tensor) -> Tensor:
        """:math:`A^+ y`; an operator that does not override it has none (:func:`has_pseudo_inverse` is False)."""
        raise ConfigError(expected(f"a pseudo-inverse A^+ for {type(self).__name__} (operator {self.name!r})",
                                   "an operator that does not implement pinv",
                                   "implement pinv(y), or restore with a method that needs only forward and "
                                   "adjoint (dps)"))

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def measurement_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape (C', H', W') of :math:`A x` for images of ``shape`` (C, H, W), e.g. (C, H/f, W/f) for ×f SR."""
        return tuple(self.forward(torch.zeros(1, *shape)).shape[1:])

    def measure(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """:math:`y = A x + \\sigma_y \\varepsilon` for clean images ``x`` (B, C, H, W)."""
        y = self.forward(check_tensor(x, "x", min_dim=4))
        if self.noise_std > 0:
            y = y + self.noise_std * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        return y

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        r"""The closest image to ``x`` that explains ``y`` exactly: :math:`x + A^+(y - A x)`."""
        return x + self.pinv(y - self.forward(x))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(noise_std={self.noise_std})"


class Inpainting(Operator):
    """Keep the pixels where ``mask`` is 1 and zero the rest; ``mask`` is (H, W) or (C, H, W) of zeros and ones.

    The measurement keeps the image's shape (missing pixels are 0), so :math:`A = A^\\top = A^+ = \\mathrm{diag}(m)`.
    """

    name = "inpaint"

    def __init__(self, mask: Tensor, noise_std: float = 0.0):
        super().__init__(noise_std)
        mask = _plane(mask, "mask", (2, 3))
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ConfigError(expected("a mask of zeros and ones", "other values", "pass (mask > 0.5).float()"))
        self.mask = mask.float() if mask.dim() == 3 else mask.float()[None]

    def _check(self, x: Tensor, name: str) -> Tensor:
        x = _images(x, name)
        c, h, w = self.mask.shape
        if tuple(x.shape[-2:]) != (h, w) or c not in (1, x.shape[1]):
            raise ShapeError(expected(f"{name} of images {h}x{w} (the mask's size)", f"shape {tuple(x.shape)}",
                                      "build the mask for these images' height and width"))
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self._check(x, "x") * self.mask.to(x)

    def adjoint(self, y: Tensor) -> Tensor:
        return self._check(y, "y") * self.mask.to(y)

    def pinv(self, y: Tensor) -> Tensor:
        return self.adjoint(y)


def random_inpainting(size: int | Sequence[int], missing: float = 0.7, *, seed: int = 0,
                      noise_std: float = 0.0) -> Inpainting:
    """Random-pixel inpainting: a share ``missing`` of the pixels (the same in every channel) is dropped."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    check_probability(missing, "missing", inclusive_low=False, inclusive_high=False)
    keep = torch.rand(h, w, generator=torch.Generator().manual_seed(seed)) >= missing
    return Inpainting(keep.float(), noise_std)


def box_inpainting(size: int | Sequence[int], box: float = 0.5, *, noise_std: float = 0.0) -> Inpainting:
    """Box inpainting: a centred square covering ``box`` of the height and width is missing."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    check_probability(box, "box", inclusive_low=False, inclusive_high=False)
    bh, bw = max(1, round(h * box)), max(1, round(w * box))
    mask = torch.ones(h, w)
    mask[(h - bh) // 2:(h - bh) // 2 + bh, (w - bw) // 2:(w - bw) // 2 + bw] = 0
    return Inpainting(mask, noise_std)


class AveragePoolDownsample(Operator):
    """Super-resolution's measurement: the mean of each ``factor`` × ``factor`` block (H and W divisible by it)."""

    name = "sr"

    def __init__(self, factor: int, noise_std: float = 0.0):
        super().__init__(noise_std)
        self.factor = check_int(factor, "factor", low=2, fix="pass factor=2 or 4")

    def forward(self, x: Tensor) -> Tensor:
        x = _images(x, "x")
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ShapeError(expected(f"images whose height and width divide by the factor {self.factor}",
                                      f"shape {tuple(x.shape)}", "pad or crop the images first"))
        return F.avg_pool2d(x, self.factor)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.pinv(y) / self.factor ** 2

    def pinv(self, y: Tensor) -> Tensor:
        return F.interpolate(_images(y, "y"), scale_factor=self.factor, mode="nearest")

    def __repr__(self) -> str:
        return f"AveragePoolDownsample(factor={self.factor}, noise_std={self.noise_std})"


def gaussian_kernel(sigma: float, size: int | None = None) -> Tensor:
    """A normalised 2-D Gaussian kernel (size × size, odd; default ⌈3σ⌉ on each side of the centre)."""
    sigma = check_positive(sigma, "sigma")
    size = size or 2 * math.ceil(3 * sigma) + 1
    check_int(size, "size", low=1)
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    k = g[:, None] * g[None, :]
    return (k / k.sum()).float()


def motion_kernel(length: int, angle: float = 0.0) -> Tensor:
    """A normalised linear motion-blur kernel: a line of ``length`` pixels at ``angle`` degrees, anti-aliased."""
    length = check_int(length, "length", low=1)
    size = length if length % 2 else length + 1
    c = (size - 1) / 2
    k = torch.zeros(size, size, dtype=torch.float64)
    theta = math.radians(angle)
    for s in torch.linspace(-(length - 1) / 2, (length - 1) / 2, 8 * length).tolist():
        x, y = c + s * math.cos(theta), c - s * math.sin(theta)
        x0, y0 = math.floor(x), math.floor(y)
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            xi, yi = x0 + dx, y0 + dy
            if 0 <= xi < size and 0 <= yi < size:
                k[yi, xi] += (1 - abs(x - xi)) * (1 - abs(y - yi))
    return (k / k.sum()).float()


class CircularBlur(Operator):
    r"""Convolution with ``kernel`` (centred, odd size) under circular boundaries, done in the Fourier domain.

    ``eps``: frequencies whose transfer function has :math:`|\hat k| \le` ``eps`` are treated as lost by
    :meth:`pinv` (the truncated pseudo-inverse), which keeps the inverse filter bounded. The default (``None``)
    truncates at the noise level, :math:`\max(10^{-3}, \sigma_y)`: a Gaussian blur's transfer function falls far
    below :math:`\sigma_y` within the grid, and dividing the noise by those gains buries the image (the measured
    effect is in the vision docs' inverse-problem section). :meth:`noise_gain` reports the amplification a given
    ``eps`` leaves.
    """

    name = "deblur"

    def __init__(self, kernel: Tensor, noise_std: float = 0.0, eps: float | None = None):
        super().__init__(noise_std)
        kernel = _plane(kernel, "kernel", (2,)).float()
        if kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
            raise ShapeError(expected("a kernel of odd height and width (centred)", f"shape {tuple(kernel.shape)}",
                                      "pad the kernel with a row/column of zeros"))
        eps = max(1e-3, self.noise_std) if eps is None else check_positive(eps, "eps")
        self.kernel, self.eps = kernel.float(), eps
        self._transfer: dict[tuple, Tensor] = {}

    def transfer(self, height: int, width: int, device: torch.device | None = None) -> Tensor:
        """The kernel's transfer function on an H × W grid (the kernel centred at pixel (0, 0), wrapped)."""
        key = (height, width, str(device))
        if key not in self._transfer:
            kh, kw = self.kernel.shape
            if kh > height or kw > width:
                raise ShapeError(expected(f"images at least as large as the kernel ({kh}x{kw})",
                                          f"{height}x{width}", "use a smaller kernel"))
            padded = torch.zeros(height, width, device=device)
            padded[:kh, :kw] = self.kernel.to(device)
            padded = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
            self._transfer[key] = torch.fft.fft2(padded)
        return self._transfer[key]

    def _filter(self, x: Tensor, response: Tensor) -> Tensor:
        return torch.fft.ifft2(torch.fft.fft2(x) * response).real.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        x = _images(x, "x")
        return self._filter(x, self.transfer(*x.shape[-2:], x.device))

    def adjoint(self, y: Tensor) -> Tensor:
        y = _images(y, "y")
        return self._filter(y, self.transfer(*y.shape[-2:], y.device).conj())

    def pinv(self, y: Tensor) -> Tensor:
        y = _images(y, "y")
        k = self.transfer(*y.shape[-2:], y.device)
        kept = k.abs() > self.eps
        inverse = torch.where(kept, 1.0 / torch.where(kept, k, torch.ones_like(k)), torch.zeros_like(k))
        return self._filter(y, inverse)

    def noise_gain(self, height: int, width: int) -> float:
        r"""Per-pixel standard deviation of :meth:`pinv` applied to unit white noise on an H × W grid,
        :math:`\sqrt{\frac{1}{HW}\sum_{|\hat k| > \epsilon} |\hat k|^{-2}}`; multiply by :math:`\sigma_y` for the
        noise left in the pseudo-inverse of a measurement."""
        k = self.transfer(height, width).abs()
        kept = k > self.eps
        return float(((1.0 / k[kept] ** 2).sum() / k.numel()).sqrt())

    def __repr__(self) -> str:
        return f"CircularBlur(kernel={tuple(self.kernel.shape)}, noise_std={self.noise_std}, eps={self.eps})"


def gaussian_blur(sigma: float = 1.5, *, size: int | None = None, noise_std: float = 0.0) -> CircularBlur:
    """Gaussian deblurring's operator (σ in pixels)."""
    return CircularBlur(gaussian_kernel(sigma, size), noise_std)


def motion_blur(length: int = 7, angle: float = 0.0, *, noise_std: float = 0.0) -> CircularBlur:
    """Motion deblurring's operator (a line of ``length`` pixels at ``angle`` degrees)."""
    return CircularBlur(motion_kernel(length, angle), noise_std)


def check_adjoint(op: Operator, shape: Sequence[int], *, trials: int = 3, rtol: float = 1e-4,
                  generator: torch.Generator | None = None) -> None:
    r"""Check :math:`\langle A x, y\rangle = \langle x, A^\top y\rangle` on random x, y for images of ``shape``
    (C, H, W); raises :class:`ConfigError` with the measured mismatch when a user's operator gets it wrong."""
    generator = generator or torch.Generator().manual_seed(0)
    for _ in range(check_int(trials, "trials", low=1)):
        x = torch.randn(1, *shape, generator=generator, dtype=torch.float64)
        ax = op.forward(x.float()).double()
        y = torch.randn(ax.shape, generator=generator, dtype=torch.float64)
        aty = op.adjoint(y.float()).double()
        if aty.shape != x.shape:
            raise ShapeError(expected(f"{type(op).__name__}.adjoint to return images shaped {tuple(x.shape)}",
                                      f"{tuple(aty.shape)}", "make adjoint map measurements back to image space"))
        lhs, rhs = float((ax * y).sum()), float((x * aty).sum())
        if abs(lhs - rhs) > rtol * max(1.0, abs(lhs), abs(rhs)) * 10:
            raise ConfigError(expected(f"{type(op).__name__}.adjoint to satisfy <A x, y> = <x, A^T y>",
                                       f"<A x, y> = {lhs:.6g} but <x, A^T y> = {rhs:.6g}",
                                       "fix adjoint (for a convolution: the flipped kernel; for a pooling: spread "
                                       "divided by the block size)"))


def has_pseudo_inverse(op: Operator) -> bool:
    """Whether ``op`` implements :math:`A^+` (``pinv``), which projection, the pseudo-inverse baseline and FLAIR's
    pixel-space start need.

    Example:
        >>> has_pseudo_inverse(AveragePoolDownsample(2)), has_pseudo_inverse(Operator())
        (True, False)
    """
    pinv = getattr(type(op), "pinv", None)
    return callable(pinv) and pinv is not Operator.pinv


def check_pseudo_inverse(op: Operator, shape: Sequence[int], *, trials: int = 2, rtol: float = 1e-2,
                         generator: torch.Generator | None = None) -> None:
    r"""Check that ``op.pinv`` exists and is a right inverse on the range, :math:`\|A A^+ (A x) - A x\| \le`
    ``rtol`` :math:`\|A x\|`, for random images of ``shape`` (C, H, W); raises :class:`ConfigError` otherwise.

    The tolerance leaves room for a truncated inverse (:class:`CircularBlur` drops frequencies below its ``eps``).
    """
    if not has_pseudo_inverse(op):
        op.pinv(torch.zeros(1, *op.measurement_shape(shape)))     # raises the operator's own ConfigError
    generator = generator or torch.Generator().manual_seed(0)
    for _ in range(check_int(trials, "trials", low=1)):
        ax = op.forward(torch.randn(1, *shape, generator=generator))
        back = op.pinv(ax)
        if tuple(back.shape[1:]) != tuple(shape):
            raise ShapeError(expected(f"{type(op).__name__}.pinv to return images shaped {tuple(shape)}",
                                      f"{tuple(back.shape[1:])}", "make pinv map measurements back to image space"))
        error = float((op.forward(back) - ax).norm()) / max(float(ax.norm()), 1e-12)
        if error > rtol:
            raise ConfigError(expected(f"{type(op).__name__}.pinv to be a right inverse on the range "
                                       f"(A A^+ A x = A x within {rtol:g})", f"relative error {error:.3g}",
                                       "fix pinv (for an average pooling: repeat each value, without the adjoint's "
                                       "1/f^2), or restore with dps, which needs only forward and adjoint"))


OPERATORS = ("inpaint", "inpaint_box", "sr2", "sr4", "deblur", "motion")
"""Task names :func:`build_operator` knows (the ``--task`` of the restoration command)."""


def build_operator(task: str, size: int | Sequence[int], *, noise_std: float = 0.0, seed: int = 0) -> Operator:
    """The operator of a named task for images of ``size`` (an int for square images, or (H, W)).

    Example:
        >>> build_operator("sr4", 32)
        AveragePoolDownsample(factor=4, noise_std=0.0)
    """
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    largest_odd = min(h, w) - (1 - min(h, w) % 2)            # small images get a truncated kernel
    builders = {
        "inpaint": lambda: random_inpainting(size, 0.7, seed=seed, noise_std=noise_std),
        "inpaint_box": lambda: box_inpainting(size, 0.5, noise_std=noise_std),
        "sr2": lambda: AveragePoolDownsample(2, noise_std),
        "sr4": lambda: AveragePoolDownsample(4, noise_std),
        "deblur": lambda: gaussian_blur(1.5, size=min(11, largest_odd), noise_std=noise_std),
        "motion": lambda: motion_blur(min(7, largest_odd), 30.0, noise_std=noise_std),
    }
    if task not in builders:
        raise ConfigError(expected(f"a task in {OPERATORS}", repr(task), "pass e.g. --task sr4"))
    return builders[task]()
