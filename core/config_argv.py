"""Command-line tokens of :mod:`flowzoo.core.config` (internal): negative numbers as values, and metavars.

argparse takes a token that starts with ``-`` for an option unless it looks like ``-1`` or ``-.5``; these helpers
attach such values to their option before argparse sees them, and name an option's value in ``--help``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from flowzoo.core.config_types import is_sequence_type, strip_optional, type_name

__all__ = ["is_negative_number", "attach_negative_numbers", "metavar_of"]


def metavar_of(tp: Any) -> str:
    """How ``--help`` names the value of an option annotated ``tp`` (``INT``, ``FLOAT``, ``{a,b}``, ...).

    Example:
        >>> metavar_of(int)
        'INT'
    """
    tp = strip_optional(tp)
    if is_sequence_type(tp):
        inner = [a for a in typing.get_args(tp) if a is not Ellipsis]
        tp = inner[0] if len(set(inner)) == 1 else Any
    shown = type_name(tp).replace(" ", "") if tp is not Any else "value"
    return shown if shown.startswith("{") else shown.upper()


def is_negative_number(token: str) -> bool:
    """Whether ``token`` is a negative number (``-1``, ``-1e-3``, ``-1_000``), not an option name.

    Example:
        >>> is_negative_number("-1e-3"), is_negative_number("--steps")
        (True, False)
    """
    if not token.startswith("-"):
        return False
    try:
        float(token.replace("_", ""))
    except ValueError:
        return False
    return True


def attach_negative_numbers(argv: list[str], table: Mapping[str, tuple[Any, dataclasses.Field, Any]]) -> list[str]:
    """Rewrite ``--opt -1e-3`` as ``--opt=-1e-3`` (and a list option's values as ``--opt=a,b``).

    argparse reads a token that starts with ``-`` as an option unless it looks like ``-1`` or ``-.5``, so
    ``--trainer.lr -1e-3`` would fail with "expected one argument"; attached with ``=`` it is a value. ``table``
    maps option names to ``(annotation, field, default)`` (:func:`flowzoo.core.config.config_fields`).

    Example:
        >>> attach_negative_numbers(["--lr", "-1e-3"], {"lr": (float, None, 0.0)})
        ['--lr=-1e-3']
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token[2:] if token.startswith("--") and "=" not in token else None
        if name in table:
            j = i + 1
            if is_sequence_type(table[name][0]):
                while j < len(argv) and (not argv[j].startswith("-") or is_negative_number(argv[j])):
                    j += 1
            elif j < len(argv) and is_negative_number(argv[j]):
                j += 1
            values = argv[i + 1:j]
            if any(is_negative_number(v) for v in values):
                out.append(f"{token}={','.join(values)}")
                i = j
                continue
        out.append(token)
        i += 1
    return out
