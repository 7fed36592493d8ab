"""Type handling of :mod:`flowzoo.core.config` (internal): names, coercion and checks of annotated values.

Command-line strings and YAML values are converted to a field's annotation by :func:`coerce`, which
raises :class:`Mismatch` when a value does not fit; the config module turns that into a
ConfigError naming the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = ["Mismatch", "coerce", "type_name", "strip_optional", "union_args", "is_dataclass_type",
           "is_sequence_type"]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NONE = {"none", "null", "~"}


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def union_args(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) is Union or isinstance(tp, types.UnionType):
        return typing.get_args(tp)
    return None


def strip_optional(tp: Any) -> Any:
    args = union_args(tp)
    if args is not None:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def type_name(tp: Any) -> str:
    if tp is type(None):
        return "none"
    if typing.get_origin(tp) is Literal:
        return "{" + ",".join(str(c) for c in typing.get_args(tp)) + "}"
    args = union_args(tp)
    if args is not None:
        return " | ".join(type_name(a) for a in args)
    origin = typing.get_origin(tp)
    if origin in (list, tuple, Sequence):
        inner = typing.get_args(tp)
        if origin is tuple and inner and inner[-1] is not Ellipsis:
            return "tuple[" + ", ".join(type_name(a) for a in inner) + "]"
        return f"{'list' if origin is not tuple else 'tuple'}[{type_name(inner[0]) if inner else 'any'}]"
    if origin in (dict, Mapping):
        return "dict"
    return getattr(tp, "__name__", str(tp))


def is_sequence_type(tp: Any) -> bool:
    return typing.get_origin(strip_optional(tp)) in (list, tuple, Sequence)


class Mismatch(Exception):
    """Internal: a value does not fit a type (turned into ConfigError with the field's name)."""


def coerce(value: Any, tp: Any, from_text: bool) -> Any:
    """Return ``value`` converted to ``tp`` or raise :class:`Mismatch`.

    ``from_text`` marks command-line strings, which may spell any scalar; YAML values arrive typed,
    but strings are still parsed for numbers because YAML 1.1 reads ``1e-3`` as a string.
    """
    if tp is Any or tp is typing.Any:
        return value
    if tp is type(None):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        raise Mismatch
    args = union_args(tp)
    if args is not None:
        return _coerce_union(value, args, from_text)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return _coerce_literal(value, typing.get_args(tp))
    if origin in (list, tuple, Sequence):
        return _coerce_sequence(value, tp, from_text)
    if origin in (dict, Mapping) or tp is dict:
        return _coerce_mapping(value)
    scalar = _SCALARS.get(tp)
    if scalar is not None:
        return scalar(value)
    if is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        raise Mismatch  # mappings for nested configs are built by flowzoo.core.config
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise Mismatch


def _coerce_union(value: Any, args: tuple[Any, ...], from_text: bool) -> Any:
    if type(None) in args and (value is None or (from_text and _spells_none(value))):
        return None
    # Non-None members first so that the text "none" only means None when nothing else fits.
    for member in sorted(args, key=lambda a: a is type(None)):
        try:
            return coerce(value, member, from_text)
        except Mismatch:
            continue
    raise Mismatch


def _coerce_literal(value: Any, choices: tuple[Any, ...]) -> Any:
    for choice in choices:
        if value == choice and type(value) is type(choice):
            return choice
        if isinstance(value, str) and not isinstance(choice, str) and value.strip() == str(choice):
            return choice
    raise Mismatch


def _coerce_mapping(value: Any) -> dict:
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if not isinstance(value, Mapping):
        raise Mismatch
    return dict(value)


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise Mismatch


def _coerce_int(value: Any) -> int:
    if isinstance(value, bool):
        raise Mismatch
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            value = _parse_float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise Mismatch


def _coerce_float(value: Any) -> float:
    if isinstance(value, bool):
        raise Mismatch
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return _parse_float(value)
    raise Mismatch


def _coerce_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    raise Mismatch


def _coerce_path(value: Any) -> Path:
    if isinstance(value, (str, Path)):
        return Path(value)
    raise Mismatch


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str, Path: _coerce_path}


def _spells_none(value: Any) -> bool:
    if isinstance(value, list) and len(value) == 1:  # a list option given as `--name none`
        value = value[0]
    return isinstance(value, str) and value.strip().lower() in _NONE


def _parse_float(text: str) -> float:
    try:
        return float(text.strip().replace("_", ""))
    except ValueError:
        raise Mismatch from None


def _coerce_sequence(value: Any, tp: Any, from_text: bool) -> Any:
    origin = typing.get_origin(tp)
    inner = typing.get_args(tp)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = yaml.safe_load(text)
        else:
            value = [part for part in text.split(",") if part.strip()] if text else []
    elif from_text and isinstance(value, (list, tuple)):
        # Command-line tokens: each may itself be a comma-separated list.
        value = [part for token in value for part in str(token).split(",") if part.strip()]
    if not isinstance(value, (list, tuple)):
        raise Mismatch
    if origin is tuple and inner and inner[-1] is not Ellipsis:
        if len(value) != len(inner):
            raise Mismatch
        return tuple(coerce(v, t, from_text) for v, t in zip(value, inner))
    element = inner[0] if inner else Any
    items = [coerce(v, element, from_text) for v in value]
    return tuple(items) if origin is tuple else items
