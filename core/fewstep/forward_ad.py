r"""Forward-mode derivatives of networks without the work that generic dual tensors waste.

MeanFlow's target needs the Jacobian-vector product :math:`\frac{d}{ds}u_\theta = J_x u\,v + \partial_s u` of a
whole network (:mod:`flowzoo.core.fewstep.meanflow`). PyTorch's forward-mode AD (``torch.autograd.forward_ad``, which
``torch.func.jvp`` also uses) computes it with one rule per operator, and two of those rules cost far more than the
derivative needs when only the activations carry a tangent (the weights are constants of the JVP):

* **convolutions**: the rule is :math:`\mathrm{conv}(\dot x, W) + \mathrm{conv}(x, \dot W)` with the weight's
  missing tangent filled in as zeros, so each convolution runs three times (primal, input tangent, zero weight
  tangent; counted with the profiler on torch 2.13). A convolution is linear in its input, so the tangent is
  :math:`\mathrm{conv}(\dot x, W)` without bias: two runs.
* **group normalisation** (every U-Net has it) is differentiated through a decomposition into many elementwise
  primitives. With :math:`\hat x = (x - \mu)/\sigma` per group, the closed form is
  :math:`\dot{\hat x} = (\dot x - \overline{\dot x} - \hat x\,\overline{\dot x\,\hat x})/\sigma` (bars: means over
  the group), then the affine scale.

:class:`LeanForwardAD` is a ``TorchFunctionMode`` that applies these two rules to ``F.conv*``,
``F.conv_transpose*``, ``F.linear`` and ``F.group_norm`` when the input is a dual tensor and the weights are not;
every other call, and those calls when a weight carries a tangent, keep PyTorch's own rules. The results equal
generic forward-mode AD to float rounding (tested); on a U-Net they make a dual forward markedly cheaper.
``python -m benchmarks.meanflow_unet_step`` measures the training step on a GPU, with and without these rules
(``benchmarks/results/meanflow_unet_step.json``). :func:`jvp` is the convenience: ``(out, tangent) = jvp(fn, primals, tangents)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch.autograd import forward_ad as fwAD
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["LeanForwardAD", "jvp"]

Tensor = torch.Tensor

# Functions linear in their first argument once the weights are fixed; the bias is argument 2 (or ``bias=``).
_LINEAR_IN_INPUT = frozenset({F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                              F.conv_transpose3d, F.linear})


def _tangent(value: object) -> Tensor | None:
    return fwAD.unpack_dual(value).tangent if isinstance(value, Tensor) else None


def _linear_in_input(func: Callable, args: Sequence, kwargs: dict) -> Tensor:
    primal, tangent = fwAD.unpack_dual(args[0])
    out = func(primal, *args[1:], **kwargs)
    rest, options = list(args[1:]), dict(kwargs)
    if len(rest) >= 2:
        rest[1] = None
    else:
        options["bias"] = None
    return fwAD.make_dual(out, func(tangent, *rest, **options))


def _group_norm(x: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
                eps: float = 1e-5) -> Tensor:
    primal, tangent = fwAD.unpack_dual(x)
    groups = primal.reshape(primal.shape[0], num_groups, -1)
    centered = groups - groups.mean(-1, keepdim=True)
    inv_std = torch.rsqrt((centered * centered).mean(-1, keepdim=True) + eps)
    normalized = centered * inv_std
    d_groups = tangent.reshape(groups.shape)
    d_normalized = inv_std * (d_groups - d_groups.mean(-1, keepdim=True)
                              - normalized * (d_groups * normalized).mean(-1, keepdim=True))
    out, d_out = normalized.reshape(primal.shape), d_normalized.reshape(primal.shape)
    channel = (1, -1) + (1,) * (primal.dim() - 2)
    if weight is not None:
        out, d_out = out * weight.reshape(channel), d_out * weight.reshape(channel)
    if bias is not None:
        out = out + bias.reshape(channel)
    return fwAD.make_dual(out, d_out)


class LeanForwardAD(TorchFunctionMode):
    """Inside ``fwAD.dual_level()``: convolutions, linear maps and group norms of dual activations with constant
    weights get their tangent with the least work (module docstring); everything else runs unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        lean = func in _LINEAR_IN_INPUT or func is F.group_norm
        if lean and args and _tangent(args[0]) is not None:
            others = [a for a in (*args[1:], *kwargs.values()) if isinstance(a, Tensor)]
            if all(_tangent(a) is None for a in others):
                if func is F.group_norm:
                    return _group_norm(*args, **kwargs)
                return _linear_in_input(func, args, kwargs)
        return func(*args, **kwargs)


def jvp(function: Callable[..., Tensor], primals: Sequence[Tensor], tangents: Sequence[Tensor],
        lean: bool = True) -> tuple[Tensor, Tensor]:
    """``(function(*primals), J · tangents)`` by forward-mode AD under :class:`LeanForwardAD` (``lean=False``:
    PyTorch's own rules, for comparison).

    Runs under the caller's grad mode (MeanFlow calls it under ``no_grad``: a target needs no graph). A tangent
    that does not reach the output comes back as zeros.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3, padding=1), torch.nn.GroupNorm(2, 4))
        >>> x, dx = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
        >>> out, d_out = jvp(net, (x,), (dx,))
        >>> reference = torch.func.jvp(net, (x,), (dx,))[1]
        >>> bool(torch.allclose(d_out, reference, atol=1e-5))
        True
    """
    with fwAD.dual_level(), (LeanForwardAD() if lean else contextlib.nullcontext()):
        out = function(*(fwAD.make_dual(p, t) for p, t in zip(primals, tangents)))
        primal, tangent = fwAD.unpack_dual(out)
    return primal, torch.zeros_like(primal) if tangent is None else tangent
