"""Per-dimension min/max normalisation of robot observations and actions to [-1, 1].

The "limits" scaling of Diffusion Policy / DP3's ``LinearNormalizer``. Policies train and predict in the
normalised space; a :class:`Normalizer` is fitted on a demonstration
dataset (:mod:`flowzoo.robotics.data`), stored with it and with every policy checkpoint as JSON
(:meth:`Normalizer.to_dict`), and maps predicted actions back to environment units. Only the keys in
:data:`NORMALIZED_KEYS` (``action``, ``state``, ``agent_pos``) are scaled; point clouds pass unchanged.

Both names are also importable from :mod:`flowzoo.robotics.data`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from flowzoo.core.errors import ConfigError, EmptyInputError, ShapeError, expected

__all__ = ["Normalizer", "NORMALIZED_KEYS"]

NORMALIZED_KEYS = ("action", "state", "agent_pos")
# Below this range a dimension counts as constant: it is shifted to 0 instead of scaled (no division by ~0).
_CONSTANT_RANGE = 1e-6


class Normalizer:
    """Per-dimension min/max scaling to [-1, 1] of ``action``, ``state`` and ``agent_pos``; identity elsewhere.

    ``normalize(x) = (x - min) * 2 / (max - min) - 1`` on the last axis. A dimension whose range is below 1e-6
    (constant in the data) is only shifted: ``x - min``, so it maps to 0 and back exactly. Works on numpy
    arrays and torch tensors of any leading shape; keys without statistics (point clouds) pass unchanged.
    """

    def __init__(self, stats: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._scale: dict[str, np.ndarray] = {}
        self._offset: dict[str, np.ndarray] = {}
        self.stats: dict[str, dict[str, np.ndarray]] = {}
        for key, entry in (stats or {}).items():
            low = np.asarray(entry["min"], dtype=np.float64).reshape(-1)
            high = np.asarray(entry["max"], dtype=np.float64).reshape(-1)
            if low.shape != high.shape or not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
                raise ConfigError(expected(f"finite min/max of equal length for {key!r}",
                                           f"min {low.tolist()} max {high.tolist()}", "refit the normaliser"))
            if np.any(high < low):
                raise ConfigError(expected(f"max >= min for {key!r}", f"min {low.tolist()} max {high.tolist()}",
                                           "refit the normaliser"))
            span = high - low
            constant = span < _CONSTANT_RANGE
            scale = np.where(constant, 1.0, 2.0 / np.where(constant, 1.0, span))
            self._scale[key] = scale
            self._offset[key] = np.where(constant, -low, -1.0 - low * scale)
            self.stats[key] = {"min": low, "max": high}

    @classmethod
    def fit(cls, arrays: Mapping[str, np.ndarray], keys: Sequence[str] = NORMALIZED_KEYS) -> "Normalizer":
        """Statistics over the first axes of each array in ``keys`` (others are left as identity)."""
        stats = {}
        for key in keys:
            if key in arrays:
                flat = np.asarray(arrays[key], dtype=np.float64)
                flat = flat.reshape(-1, flat.shape[-1])
                if flat.shape[0] == 0:
                    raise EmptyInputError(expected(f"at least one {key!r} value to fit", "none", "collect data"))
                stats[key] = {"min": flat.min(axis=0), "max": flat.max(axis=0)}
        return cls(stats)

    def _coefficients(self, key: str, x: Any) -> tuple[Any, Any] | None:
        if key not in self._scale:
            return None
        scale, offset = self._scale[key], self._offset[key]
        if x.shape[-1] != scale.shape[0]:
            raise ShapeError(expected(f"{key!r} with last dimension {scale.shape[0]}", tuple(x.shape),
                                      "normalise data of the task the statistics came from"))
        if isinstance(x, torch.Tensor):
            dtype = x.dtype if x.is_floating_point() else torch.float32
            return (torch.as_tensor(scale, dtype=dtype, device=x.device),
                    torch.as_tensor(offset, dtype=dtype, device=x.device))
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        return scale.astype(dtype), offset.astype(dtype)

    def normalize(self, key: str, x: Any) -> Any:
        """Map ``x`` (numpy or torch, last axis = the key's dimensions) to the normalised range."""
        x = x if isinstance(x, torch.Tensor) else np.asarray(x)
        coefficients = self._coefficients(key, x)
        return x if coefficients is None else x * coefficients[0] + coefficients[1]

    def unnormalize(self, key: str, x: Any) -> Any:
        """Inverse of :meth:`normalize`."""
        x = x if isinstance(x, torch.Tensor) else np.asarray(x)
        coefficients = self._coefficients(key, x)
        return x if coefficients is None else (x - coefficients[1]) / coefficients[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able statistics: ``{key: {"min": [...], "max": [...]}}``."""
        return {key: {"min": s["min"].tolist(), "max": s["max"].tolist()} for key, s in self.stats.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Normalizer":
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping) or any(not isinstance(v, Mapping) or {"min", "max"} - set(v)
                                                for v in data.values()):
            raise ConfigError(expected("normaliser statistics {key: {'min': [...], 'max': [...]}}",
                                       repr(data)[:200], "use Normalizer.to_dict() output"))
        return cls(data)

    def __repr__(self) -> str:
        return f"Normalizer(keys={sorted(self.stats)})"
