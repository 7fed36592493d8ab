r"""Training-speed options of image models: channels-last memory format and ``torch.compile`` with an eager fallback.

:func:`to_channels_last` converts a convolutional model (the U-Net) or an image batch to the channels-last memory
format, which tensor-core convolutions prefer; :func:`compile_model` wraps :func:`torch.compile` and falls back to
eager execution with one warning if compilation fails; :func:`prepare_for_training` applies channels-last and an
in-place compile to a model before the Trainer gets it (``python -m flowzoo.vision.train ... --channels_last
--compile``). bf16 autocast and the fused optimiser are the Trainer's (``--trainer.precision bf16``,
``--trainer.fused``); gradient checkpointing is the backbones' (``gradient_checkpointing=True``). Every option is
valid on a CPU and none changes a model's results beyond floating-point rounding. None involves time.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, FlowzooError, expected
from flowzoo.core.validation import check_bool

__all__ = ["to_channels_last", "CompiledModel", "compile_model", "prepare_for_training"]

Tensor = torch.Tensor


def to_channels_last(value: nn.Module | Tensor) -> nn.Module | Tensor:
    """A model or a 4-D image batch in the channels-last memory format (NHWC strides, same shape and values).

    Convolutions on recent GPUs (tensor cores) run faster on channels-last data; convert the model once and each
    batch before the forward. Other tensors come back unchanged. The values and the model's results are the same.

    Example:
        >>> x = to_channels_last(torch.randn(2, 3, 8, 8))
        >>> x.shape, x.is_contiguous(memory_format=torch.channels_last)
        (torch.Size([2, 3, 8, 8]), True)
    """
    if isinstance(value, nn.Module):
        return value.to(memory_format=torch.channels_last)
    if isinstance(value, Tensor):
        return value.contiguous(memory_format=torch.channels_last) if value.dim() == 4 else value
    raise ConfigError(expected("an nn.Module or a tensor", type(value).__name__, "pass the model or an image batch"))


class CompiledModel(nn.Module):
    """``model`` run through :func:`torch.compile`, or eagerly after a warning if compilation fails.

    Compilation happens at the first call, so that is where a missing compiler or an unsupported operation
    shows up; the failure is reported once as a ``RuntimeWarning`` and every later call runs ``model`` eagerly.
    Errors of the input itself (:class:`~flowzoo.core.errors.FlowzooError`) are raised, not swallowed.
    Parameters are the model's (``compiled.model`` is the original, for ``state_dict`` and checkpoints).
    """

    def __init__(self, model: nn.Module, **options):
        super().__init__()
        self.model = model
        self.options = dict(options)
        self.failure: str | None = None
        try:
            compiled = torch.compile(model, **options)
        except Exception as error:  # noqa: BLE001 - any failure means: run eagerly
            compiled = self._fall_back(error)
        self._set_compiled(compiled)

    def _set_compiled(self, compiled: Callable | None) -> None:
        # Kept out of the submodules: the compiled wrapper shares the model's parameters, and registering it
        # would list them twice in state_dict().
        object.__setattr__(self, "_compiled", compiled)

    def _fall_back(self, error: Exception) -> None:
        self.failure = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        warnings.warn(f"torch.compile failed ({self.failure}); running the model eagerly", RuntimeWarning,
                      stacklevel=3)
        return None

    def forward(self, *args, **kwargs):
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except FlowzooError:
                raise
            except Exception as error:  # noqa: BLE001 - a compiler failure: the eager model still works
                self._set_compiled(self._fall_back(error))
        return self.model(*args, **kwargs)


def compile_model(model: nn.Module, **options) -> CompiledModel:
    """``model`` wrapped by :class:`CompiledModel`: :func:`torch.compile` with ``options`` (e.g.
    ``mode="max-autotune"``, ``backend="inductor"``), falling back to eager execution with a warning.

    Example:
        >>> net = nn.Conv2d(1, 2, 3)
        >>> fast = compile_model(net, backend="eager")
        >>> bool(torch.equal(fast(torch.ones(1, 1, 4, 4)), net(torch.ones(1, 1, 4, 4))))
        True
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(expected("an nn.Module", type(model).__name__, "pass the network to compile"))
    return CompiledModel(model, **options)


def prepare_for_training(model: nn.Module, *, channels_last: bool = False, compile: bool = False,
                         **compile_options) -> nn.Module:
    """The training-speed options of an image model, applied in place; returns ``model``.

    ``channels_last`` converts the weights to the channels-last memory format (:func:`to_channels_last`); a
    convolution whose weight is channels-last also gives channels-last activations, so the batches need no
    conversion. ``compile`` compiles the module's forward in place (:meth:`torch.nn.Module.compile` with
    ``compile_options``): parameter names, ``state_dict`` and checkpoints stay those of the plain model, and
    copies (the EMA) run eagerly. Compilation happens at the first training step. Neither option changes
    the model's results beyond floating-point rounding.

    Example:
        >>> net = nn.Conv2d(1, 2, 3)
        >>> net is prepare_for_training(net, channels_last=True)
        True
        >>> net.weight.is_contiguous(memory_format=torch.channels_last)
        True
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(expected("an nn.Module", type(model).__name__, "pass the network to prepare"))
    if check_bool(channels_last, "channels_last"):
        to_channels_last(model)
    if check_bool(compile, "compile"):
        model.compile(**compile_options)
    return model
