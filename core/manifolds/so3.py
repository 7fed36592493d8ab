r"""The rotation group SO(3) as an embedded manifold of 3×3 matrices (orientations of rigid bodies, frames).

Representation: a point is a rotation matrix of shape (3, 3) (a batch is (B, 3, 3)); a tangent vector at R is
:math:`U = R\,\hat\omega` with :math:`\hat\omega` skew-symmetric, stored as the 3×3 ambient matrix U. The metric
is the one induced by the ambient Frobenius inner product, :math:`\langle U, V\rangle = \mathrm{tr}(U^\top V)`,
which is bi-invariant; under it a rotation by angle θ lies at geodesic distance :math:`\sqrt2\,\theta` from the
identity (:meth:`SO3.angle` gives θ itself), and the total volume is :math:`16\sqrt2\,\pi^2`. Using the induced
metric keeps the loss an ambient squared error and the divergence the trace of the projected ambient Jacobian.

Closed forms (Rodrigues; Chen & Lipman, arXiv 2302.03660, use the same exp/log for their SO(3) experiments;
time 0 = source, 1 = data): :math:`\exp_R(U) = R\exp(R^\top U)`, :math:`\log_R(S) = R\log(R^\top S)`, and the
geodesic path :math:`R_t = R_0\exp(t\hat\omega)` has velocity :math:`\dot R_t = R_t\hat\omega`. The matrix
logarithm uses the antisymmetric part for angles below π/2 and the symmetric part (:math:`(1 - \cos\theta)
nn^\top`) above, so it stays accurate up to θ = π. The base distribution is the Haar measure, sampled from
uniform unit quaternions.

Example:
    >>> import torch
    >>> so3 = SO3()
    >>> R = so3.exp_algebra(torch.tensor([[0.0, 0.0, 0.5]]))          # 0.5 rad about z
    >>> round(so3.angle(torch.eye(3)[None], R).item(), 4), round(so3.dist(torch.eye(3)[None], R).item(), 4)
    (0.5, 0.7071)
"""

from __future__ import annotations

import math

import torch

from flowzoo.core.manifolds.base import Manifold, series_sinc
from flowzoo.core.validation import check_count

__all__ = ["SO3", "hat", "vee", "quaternion_to_matrix"]

Tensor = torch.Tensor


def hat(w: Tensor) -> Tensor:
    """The skew-symmetric matrix of a vector: ``hat(w) @ v == cross(w, v)``; shape (..., 3) -> (..., 3, 3)."""
    zero = torch.zeros_like(w[..., 0])
    x, y, z = w.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*w.shape[:-1], 3, 3)


def vee(a: Tensor) -> Tensor:
    """The inverse of :func:`hat` on skew-symmetric matrices (reads the lower triangle); (..., 3, 3) -> (..., 3)."""
    return torch.stack([a[..., 2, 1], a[..., 0, 2], a[..., 1, 0]], dim=-1)


def _skew(a: Tensor) -> Tensor:
    return 0.5 * (a - a.transpose(-1, -2))


def _vee_skew(a: Tensor) -> Tensor:
    """vee of the skew-symmetric part of a, without forming it."""
    return 0.5 * torch.stack([a[..., 2, 1] - a[..., 1, 2], a[..., 0, 2] - a[..., 2, 0],
                              a[..., 1, 0] - a[..., 0, 1]], dim=-1)


class SO3(Manifold):
    """SO(3): rotation matrices of shape (3, 3), tangent vectors R·Ω (Ω skew), Frobenius metric, Haar base.

    Example:
        >>> so3 = SO3()
        >>> R = so3.random_base(4, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(4, 3, 3), atol=1e-6))
        True
    """

    log_volume = math.log(16.0 * math.sqrt(2.0) * math.pi ** 2)

    def __init__(self):
        self.dim = 3
        self.point_shape = (3, 3)

    def describe(self) -> str:
        return "rotation group SO(3) (3x3 matrices R with R^T R = I, det R = 1)"

    # ---------------------------------------------------------------- the Lie algebra
    def exp_algebra(self, w: Tensor) -> Tensor:
        r"""Rodrigues' formula :math:`\exp(\hat w) = I + \frac{\sin\theta}{\theta}\hat w
        + \frac{1-\cos\theta}{\theta^2}\hat w^2`, θ = ‖w‖; (..., 3) -> (..., 3, 3)."""
        theta = w.norm(dim=-1)[..., None, None]
        k = hat(w)
        eye = torch.eye(3, dtype=w.dtype, device=w.device)
        return eye + series_sinc(theta) * k + 0.5 * series_sinc(0.5 * theta) ** 2 * (k @ k)

    def log_algebra(self, q: Tensor) -> Tensor:
        """The rotation vector w (axis × angle in [0, π]) with ``exp_algebra(w) == q``; (..., 3, 3) -> (..., 3)."""
        v = _vee_skew(q)                                 # sin(theta) n
        s = v.norm(dim=-1)
        cos = 0.5 * (q.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
        theta = torch.atan2(s, cos)
        tiny = torch.finfo(q.dtype).tiny
        ratio = torch.where(s < 1e-3, 1.0 + s * s / 6.0, theta / s.clamp_min(tiny))
        small_angle = ratio[..., None] * v
        # Above pi/2: the symmetric part is (1 - cos) n n^T; its largest column gives n, v gives the sign.
        sym = 0.5 * (q + q.transpose(-1, -2)) - cos[..., None, None] * torch.eye(3, dtype=q.dtype, device=q.device)
        column = sym.diagonal(dim1=-2, dim2=-1).argmax(dim=-1)
        n = torch.gather(sym, -1, column[..., None, None].expand(*sym.shape[:-1], 1)).squeeze(-1)
        n = n / n.norm(dim=-1, keepdim=True).clamp_min(tiny)
        n = torch.where((n * v).sum(-1, keepdim=True) < 0, -n, n)
        return torch.where((cos < 0)[..., None], theta[..., None] * n, small_angle)

    def angle(self, r: Tensor, s: Tensor) -> Tensor:
        """The rotation angle of :math:`R^\\top S` in [0, π] (the geodesic distance is √2 times it)."""
        q = r.transpose(-1, -2) @ s
        cos = 0.5 * (q.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
        return torch.atan2(_vee_skew(q).norm(dim=-1), cos)

    # ---------------------------------------------------------------- manifold
    def projx(self, x: Tensor) -> Tensor:
        # The nearest rotation in Frobenius norm: U diag(1, 1, det(U V^T)) V^T from the SVD, in float64 because a
        # float32 SVD leaves its result ~1e-6 off the group (a 3x3 SVD costs little either way).
        u, _, vh = torch.linalg.svd(x.double() if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else x)
        sign = torch.det(u @ vh)
        u = torch.cat([u[..., :2], u[..., 2:] * sign[..., None, None]], dim=-1)
        return (u @ vh).to(x.dtype)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return x @ _skew(x.transpose(-1, -2) @ u)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return x @ self.exp_algebra(_vee_skew(x.transpose(-1, -2) @ u))

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return x @ hat(self.log_algebra(x.transpose(-1, -2) @ y))

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return math.sqrt(2.0) * self.angle(x, y)

    def exp_curve(self, x: Tensor, u: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        w = _vee_skew(x.transpose(-1, -2) @ u)
        point = x @ self.exp_algebra(t[..., 0] * w)  # t is (..., 1, 1): drop one point dim
        return point, point @ hat(w)

    def random_base(self, n: int, *, generator: torch.Generator | None = None, device=None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
        n = check_count(n, "n")
        q = torch.randn(n, 4, generator=generator, device=device, dtype=dtype)
        return quaternion_to_matrix(q / q.norm(dim=-1, keepdim=True))

    def base_log_prob(self, x: Tensor) -> Tensor:
        return torch.full(x.shape[:-2], -self.log_volume, dtype=x.dtype, device=x.device)

    def distance_off(self, x: Tensor) -> Tensor:
        wide = x.double()  # measured in float64, so that float32 rounding is not mistaken for a distance
        return (wide - self.projx(wide)).flatten(start_dim=-2).norm(dim=-1).to(x.dtype)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices of unit quaternions (w, x, y, z); (..., 4) -> (..., 3, 3)."""
    w, x, y, z = q.unbind(-1)
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)
