r"""One call from a minibatch to a training target: pair the batch, draw times, sample the path.

Conditional flow matching (Lipman et al., arXiv 2210.02747; with minibatch couplings, Tong et al., OT-CFM,
arXiv 2302.00482, Alg. 1-3) regresses a model on :math:`(t, x_t, \dot x_t)` where :math:`(x_0, x_1) \sim \pi`,
:math:`t \sim U(0, 1)` and :math:`x_t` lies on a conditional path. :func:`sample_conditional_flow` does the
three draws in one call, for training loops written by hand (the analogue of torchcfm's
``sample_location_and_conditional_flow`` and ``guided_sample_location_and_conditional_flow``); the losses of
:mod:`flowzoo.core.objectives` do the same steps internally. Time runs from 0 (source) to 1 (data).

Unlike a plan resampled with replacement, a flowzoo coupling returns the indices of the pairs it formed, so
labels follow their samples exactly (``cond0[index0]``, ``cond1[index1]``) and no source is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from flowzoo.core.couplings import Condition, Coupling, IndependentCoupling
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.paths.affine import CondOTPath, PathSample
from flowzoo.core.paths.interpolants import StochasticInterpolant
from flowzoo.core.paths.timesamplers import TimeSampler, UniformTime
from flowzoo.core.validation import check_pair, check_tensor, check_unit_time

__all__ = ["CoupledPathSample", "sample_conditional_flow"]

Tensor = torch.Tensor


@dataclass
class CoupledPathSample(PathSample):
    """A :class:`~flowzoo.core.paths.affine.PathSample` of paired batches, with what the pairing did.

    ``index0`` / ``index1`` give the rows of the input batches that form each pair (``x0 == input_x0[index0]``),
    ``weight`` the coupling's per-pair weights (None when it has none), and ``cond0`` / ``cond1`` the
    conditions re-indexed with the pairs (None when not given).
    """

    index0: Tensor | None = None
    index1: Tensor | None = None
    weight: Tensor | None = None
    cond0: Condition | None = None
    cond1: Condition | None = None


def _take(cond: Condition | None, index: Tensor) -> Condition | None:
    if cond is None:
        return None
    if isinstance(cond, Mapping):
        return {key: value[index] for key, value in cond.items()}
    return cond[index]


def sample_conditional_flow(
    x0: Tensor,
    x1: Tensor,
    *,
    path=None,
    coupling: Coupling | None = None,
    t: float | Tensor | None = None,
    cond0: Condition | None = None,
    cond1: Condition | None = None,
    time_sampler: TimeSampler | None = None,
    z: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> CoupledPathSample:
    """Pair ``x0`` with ``x1``, draw t, and return the point ``x_t`` of ``path`` with its target ``dx_t``.

    Args:
        x0: source samples (B0, ...), e.g. ``torch.randn_like(x1)``.
        x1: data samples (B, ...).
        path: a path with ``.sample(x0, x1, t)``; default :class:`~flowzoo.core.paths.affine.CondOTPath`.
            A :class:`~flowzoo.core.paths.interpolants.StochasticInterpolant` also draws its noise ``z``.
        coupling: a :class:`~flowzoo.core.couplings.base.Coupling` (e.g. ``ExactOTCoupling()``); None keeps
            the pairs as given (then x0 and x1 must have the same shape).
        t: times of the pairs, a number or shape (B,) in [0, 1]; None draws them from ``time_sampler``.
        cond0, cond1: labels (a tensor with the batch first, or a mapping of them) of x0 and x1; they are
            passed to the coupling (conditional couplings keep pairs within a label) and returned re-indexed.
        time_sampler: distribution of t when ``t`` is None; default U(0, 1).
        z: the noise of a stochastic interpolant, shaped like the paired x1 (drawn when None).
        generator: drives the draws of t and z (the coupling has its own generator).

    Returns:
        :class:`CoupledPathSample` with ``t``, ``x_t``, ``dx_t`` (the regression target), the paired ``x0``,
        ``x1``, ``z`` for a stochastic interpolant, and the pairing's indices, weights and conditions.

    Raises:
        ConfigError: a path without ``sample``, a coupling that is not callable, a bad time sampler or t.
        ShapeError, DTypeError, NonFiniteError: bad batches or conditions.

    Example:
        >>> from flowzoo.core.couplings import ExactOTCoupling
        >>> x0, x1 = torch.tensor([[0.0], [10.0]]), torch.tensor([[11.0], [1.0]])
        >>> s = sample_conditional_flow(x0, x1, coupling=ExactOTCoupling(), t=0.5, cond1=torch.tensor([7, 8]))
        >>> s.x_t.flatten().tolist(), s.dx_t.flatten().tolist(), s.cond1.tolist()
        ([10.5, 0.5], [1.0, 1.0], [7, 8])
    """
    path = CondOTPath() if path is None else path
    if not callable(getattr(path, "sample", None)):
        raise ConfigError(expected("a path with .sample(x0, x1, t)", type(path).__name__, "use e.g. CondOTPath()"))
    if coupling is None:
        check_pair(x0, x1, ("x0", "x1"))
        coupling = IndependentCoupling()
    if callable(coupling):
        pairing = coupling(x0, x1, cond0, cond1)
    else:
        raise ConfigError(expected("a coupling (x0, x1, cond0, cond1) -> Pairing", type(coupling).__name__,
                                   "use e.g. flowzoo.core.couplings.ExactOTCoupling()"))
    x0p, x1p = pairing.x0, pairing.x1
    if t is None:
        sampler = UniformTime() if time_sampler is None else time_sampler
        if not isinstance(sampler, TimeSampler):
            raise ConfigError(expected("a TimeSampler", type(sampler).__name__, "use e.g. UniformTime()"))
        t = sampler.sample(x1p.shape[0], device=x1p.device, generator=generator).to(x1p.dtype)
    else:
        t = check_unit_time(t, x1p)
    if isinstance(path, StochasticInterpolant):
        sample = path.sample(x0p, x1p, t, z=None if z is None else check_tensor(z, "z"), generator=generator)
    else:
        sample = path.sample(x0p, x1p, t)
    return CoupledPathSample(x0=sample.x0, x1=sample.x1, t=sample.t, x_t=sample.x_t, dx_t=sample.dx_t, z=sample.z,
                             index0=pairing.index0, index1=pairing.index1, weight=pairing.weight,
                             cond0=_take(cond0, pairing.index0), cond1=_take(cond1, pairing.index1))

