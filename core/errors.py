"""Exceptions raised by flowzoo.

Every error says three things: what was expected, what was received, and how to fix it.
Use :func:`expected` to build such a message so that all errors read the same way.

Example:
    >>> from flowzoo.core.errors import ShapeError, expected
    >>> err = ShapeError(expected("x0 and x1 with the same shape", "(4, 2) and (4, 3)",
    ...                           "sample the source with the data's shape"))
    >>> print(err)
    expected x0 and x1 with the same shape; received (4, 2) and (4, 3). Fix: sample the source with the data's shape
"""

from __future__ import annotations

__all__ = [
    "FlowzooError",
    "ShapeError",
    "DTypeError",
    "NonFiniteError",
    "EmptyInputError",
    "ConfigError",
    "CheckpointError",
    "TrainingDivergedError",
    "MissingDependencyError",
    "expected",
]


def expected(what: str, received: object, fix: str | None = None) -> str:
    """Format the standard message: ``expected ...; received ... . Fix: ...``."""
    message = f"expected {what}; received {received}."
    if fix:
        message += f" Fix: {fix}"
    return message


class FlowzooError(Exception):
    """Base class of every error that flowzoo raises on purpose."""


class ShapeError(FlowzooError, ValueError):
    """A tensor's shape does not fit the call."""


class DTypeError(FlowzooError, TypeError):
    """A tensor's dtype does not fit the call (e.g. integers where floats are needed)."""


class NonFiniteError(FlowzooError, ValueError):
    """An input holds NaN or Inf."""


class EmptyInputError(FlowzooError, ValueError):
    """An input batch has no samples."""


class ConfigError(FlowzooError, ValueError):
    """A configuration has an unknown field, a wrong type or an invalid value."""


class CheckpointError(FlowzooError, RuntimeError):
    """A checkpoint is missing, incomplete or corrupted."""


class TrainingDivergedError(FlowzooError, RuntimeError):
    """The loss became NaN or Inf; the run stopped and the last good checkpoint is kept."""


class MissingDependencyError(FlowzooError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
