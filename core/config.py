"""Dataclass configs: loaded from YAML, overridden from the command line with the same names.

One dataclass describes an entrypoint. Its fields are the options; nested dataclasses become dotted
names (``trainer.lr`` in code, ``--trainer.lr 1e-3`` on the command line, ``trainer: {lr: 1e-3}`` in
YAML). Help texts come from ``field(metadata={"help": ...})``. Values are resolved in the order
**defaults < YAML (``--config FILE``) < command line**, and every value is type-checked before
anything runs: an unknown name or a wrong type raises :class:`~flowzoo.core.errors.ConfigError`
saying what was expected, what was received and how to fix it (with the closest known name).

Supported field types: ``int``, ``float``, ``bool`` (``true/false/1/0/yes/no/on/off``), ``str``,
``pathlib.Path``, ``Optional[...]`` / ``X | None`` (``none`` or ``null`` on the command line),
unions of those (tried in order), ``Literal[...]`` (choices), ``list[X]`` / ``tuple[X, ...]`` /
``tuple[X, Y]`` of scalars (``--betas 0.9 0.999`` or ``--betas 0.9,0.999``), ``dict`` (YAML mapping)
and nested dataclasses.

Example:
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Opt:
    ...     lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    ...     betas: tuple[float, float] = (0.9, 0.999)
    >>> @dataclass
    ... class Run:
    ...     name: str = "demo"
    ...     opt: Opt = field(default_factory=Opt)
    >>> cfg = parse_config(Run, ["--opt.lr", "0.01", "--opt.betas", "0.8", "0.9"])
    >>> cfg.opt.lr, cfg.opt.betas
    (0.01, (0.8, 0.9))
    >>> parse_config(Run, ["--opt.lrr", "0.01"])
    Traceback (most recent call last):
    ...
    flowzoo.core.errors.ConfigError: expected a known option; received --opt.lrr. Fix: did you mean --opt.lr? (run with --help to list every option)
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from flowzoo.core.config_argv import attach_negative_numbers, metavar_of
from flowzoo.core.config_types import (
    Mismatch,
    coerce,
    is_dataclass_type,
    is_sequence_type,
    strip_optional,
    type_name,
)
from flowzoo.core.errors import ConfigError, expected

__all__ = [
    "DEFAULT_THREADS",
    "COMMON_OPTIONS_HELP",
    "option_help",
    "parse_config",
    "config_to_dict",
    "config_from_dict",
    "save_config",
    "load_config",
    "validate_config",
    "config_fields",
]

T = TypeVar("T")

DEFAULT_THREADS = 1
"""torch CPU threads of a command when neither ``--threads`` nor ``OMP_NUM_THREADS`` says otherwise: small flow
models step fastest on one thread, and torch's default of one per core slows them badly on a loaded machine."""

COMMON_OPTIONS_HELP = (f"Every flowzoo command also takes --threads N (torch CPU threads; default {DEFAULT_THREADS}, "
                       "or OMP_NUM_THREADS when set) and --debug (show the full traceback of an error).")


def option_help(text: str) -> dict[str, str]:
    """Field metadata giving an option its ``--help`` line: ``field(default=..., metadata=option_help("..."))``."""
    return {"help": text}


# ----------------------------------------------------------------------------- field table
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except NameError as error:
        # A class defined inside a function (or a doctest) names types that only the calling
        # frames know: resolve the annotations there.
        namespace: dict[str, Any] = {}
        frame = sys._getframe(1)
        while frame is not None:
            for scope in (frame.f_globals, frame.f_locals):
                for key, value in scope.items():
                    namespace.setdefault(key, value)
            frame = frame.f_back
        try:
            return typing.get_type_hints(cls, localns=namespace)
        except Exception:
            pass
        raise ConfigError(expected(f"resolvable type annotations on {cls.__name__}", repr(error),
                                   "import every type used in the dataclass's annotations")) from error


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def config_fields(cls: type, prefix: str = "", defaults: Any = None) -> dict[str, tuple[Any, dataclasses.Field, Any]]:
    """Map every leaf option of ``cls`` (dotted name) to ``(type, field, default)``.

    Nested dataclasses recurse; a nested field's default instance supplies its options' defaults
    (``trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(steps=10))`` shows 10).
    """
    if not is_dataclass_type(cls):
        raise ConfigError(expected("a dataclass type", repr(cls), "decorate the config class with @dataclass"))
    table: dict[str, tuple[Any, dataclasses.Field, Any]] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        default = getattr(defaults, f.name) if isinstance(defaults, cls) else _field_default(f)
        if is_dataclass_type(strip_optional(tp)):
            table.update(config_fields(strip_optional(tp), prefix + f.name + ".", default))
        else:
            table[prefix + f.name] = (tp, f, default)
    return table


def _unknown(name: str, known: Sequence[str], where: str, dash: str = "") -> ConfigError:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    hint = f"did you mean {dash}{close[0]}?" if close else "remove it"
    return ConfigError(expected(f"a known option{where}", f"{dash}{name}",
                                f"{hint} (run with --help to list every option)"))


# ----------------------------------------------------------------------------- dict <-> dataclass
def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build ``cls`` from a (nested) mapping, strictly: unknown keys and wrong types raise ConfigError.

    Missing keys take the dataclass's defaults; a required field that is missing is an error.
    """
    return _from_dict(cls, data, "", "", build=True)


def _from_dict(cls: type, data: Any, prefix: str, source: str, *, build: bool) -> Any:
    """Check ``data`` against ``cls``; with ``build`` return the instance (else only validate)."""
    if not isinstance(data, Mapping):
        raise ConfigError(expected(f"a mapping of options for {prefix.rstrip('.') or cls.__name__}{source}",
                                   type(data).__name__, "write the options as `name: value` lines"))
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown(prefix + str(key), [prefix + name for name in fields], source)
        tp = hints[key]
        nested = strip_optional(tp)
        if is_dataclass_type(nested) and isinstance(value, Mapping):
            base = _field_default(fields[key])
            if isinstance(base, nested):  # the outer default instance, not the nested class's defaults
                value = _merge(_plain(base), value)
            kwargs[key] = _from_dict(nested, value, f"{prefix}{key}.", source, build=build)
            continue
        kwargs[key] = _checked(value, tp, prefix + key, from_text=False, source=source)
    if not build:
        return None
    missing = [name for name, f in fields.items() if name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        names = ", ".join(prefix + m for m in missing)
        raise ConfigError(expected(f"a value for every required option{source}", f"none for {names}",
                                   f"pass --{prefix + missing[0]} VALUE or set it in the YAML file"))
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _checked(value: Any, tp: Any, name: str, *, from_text: bool, source: str = "") -> Any:
    try:
        return coerce(value, tp, from_text)
    except Mismatch:
        fix = f"pass a value of type {type_name(tp)}"
        if typing.get_origin(strip_optional(tp)) is Literal:
            fix = "choose one of " + ", ".join(repr(c) for c in typing.get_args(strip_optional(tp)))
        raise ConfigError(expected(f"{name} of type {type_name(tp)}{source}",
                                   f"{value!r} ({type(value).__name__})", fix)) from None


def validate_config(cfg: T) -> T:
    """Type-check and coerce every field of a dataclass instance in place (for ``__post_init__``).

    A mapping given for a nested config is built into that dataclass. Raises ConfigError naming
    the first field whose value does not fit its annotation.
    """
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        value, tp = getattr(cfg, f.name), hints[f.name]
        if is_dataclass_type(strip_optional(tp)) and isinstance(value, Mapping):
            coerced: Any = config_from_dict(strip_optional(tp), value)
        else:
            coerced = _checked(value, tp, f.name, from_text=False)
        if coerced is not value:
            object.__setattr__(cfg, f.name, coerced)
    return cfg


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Return the config as plain nested dicts/lists/scalars (tuples become lists, paths strings)."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise ConfigError(expected("a dataclass instance", type(cfg).__name__, "pass the config object"))
    return _plain(cfg)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write ``cfg`` as YAML to ``path`` atomically (temporary file, fsync, rename)."""
    from flowzoo.core.training.checkpoint import atomic_write_bytes  # lazy: training imports config

    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
    path = Path(path)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def _read_yaml(path: str | Path) -> Mapping[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(expected("an existing YAML config file", str(path), "check the path given to --config"))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(expected(f"valid YAML in {path}", _yaml_problem(error),
                                   "fix the syntax at the reported line")) from error
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(expected(f"a mapping at the top of {path}", type(data).__name__,
                                   "write the options as `name: value` lines"))
    return data


def _yaml_problem(error: yaml.YAMLError) -> str:
    """``line L, column C: problem`` (1-based, as editors count) from a YAML parser error."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a YAML file written by :func:`save_config` (or by hand) into ``cls``, strictly."""
    return _from_dict(cls, _read_yaml(path), "", f" (in {path})", build=True)


# ----------------------------------------------------------------------------- command line
def _help_text(tp: Any, f: dataclasses.Field, default: Any) -> str:
    shown = "required" if default is dataclasses.MISSING else _plain(default)
    kind = "choice" if typing.get_origin(strip_optional(tp)) is Literal else type_name(tp)
    text = f.metadata.get("help", "")
    return f"{text} [{kind}, default: {shown}]".strip().replace("%", "%%")


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors (e.g. an option without its value) are ConfigErrors, not exits."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(expected("valid command-line options", message, "run with --help to list every option"))


def _build_parser(cls: type, table: Mapping[str, tuple[Any, dataclasses.Field, Any]], prog: str | None):
    doc = (cls.__doc__ or "").strip()
    if doc.startswith(cls.__name__ + "("):  # dataclass auto-doc: not useful to a user
        doc = ""
    parser = _Parser(
        prog=prog, description=doc or None, allow_abbrev=False,
        epilog="Values resolve as: defaults < --config YAML < command line. Lists: --name a b or a,b. "
               + COMMON_OPTIONS_HELP)
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file with option values")
    groups: dict[str, Any] = {}
    for name, (tp, f, default) in table.items():
        head = name.rsplit(".", 1)[0] if "." in name else ""
        group = groups.setdefault(head, parser.add_argument_group(f"{head} options") if head else parser)
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": _help_text(tp, f, default),
                                  "metavar": metavar_of(tp)}
        if is_sequence_type(tp):
            kwargs["nargs"] = "*"
        elif strip_optional(tp) is bool:
            kwargs["nargs"] = "?"
            kwargs["const"] = "true"  # a bare --flag means true
        group.add_argument("--" + name, **kwargs)
    return parser


def parse_config(cls: type[T], argv: Sequence[str] | None = None, prog: str | None = None) -> T:
    """Parse the command line into an instance of the dataclass ``cls``.

    Args:
        cls: the entrypoint's config dataclass (nested dataclasses give dotted options).
        argv: the arguments (default ``sys.argv[1:]``).
        prog: the program name shown by ``--help``.

    Returns:
        The resolved config: defaults, then ``--config FILE.yaml``, then the other options.

    Raises:
        ConfigError: an unknown option (with the closest known name), a wrong type, an unreadable
            YAML file or a missing required field, before anything runs. ``--help`` prints every
            option with its type, default and help text and exits (SystemExit 0).
    """
    table = config_fields(cls)
    parser = _build_parser(cls, table, prog)
    argv = attach_negative_numbers(list(sys.argv[1:] if argv is None else argv), table)
    args, rest = parser.parse_known_args(argv)
    for token in rest:
        if token.startswith("-"):
            name = token.lstrip("-").split("=", 1)[0]
            raise _unknown(name, list(table) + ["config"], "", dash="--")
    if rest:
        raise ConfigError(expected("--name value pairs", f"the stray value {rest[0]!r}",
                                   "put an option name before each value, e.g. --steps 100"))
    merged: dict[str, Any] = {}
    if args.config:
        merged = _to_nested(_read_yaml(args.config))
        # Check the YAML on its own first so that its errors name the file.
        _from_dict(cls, merged, "", f" (in {args.config})", build=False)
    for name, raw in vars(args).items():
        if name == "config":
            continue
        tp = table[name][0]
        value = _checked(raw, tp, "--" + name, from_text=True)
        node = merged
        parts = name.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return config_from_dict(cls, merged)


def _to_nested(data: Mapping[str, Any]) -> dict[str, Any]:
    """Copy a YAML mapping into mutable dicts, expanding any dotted keys (``trainer.lr: 1``)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        value = _to_nested(value) if isinstance(value, Mapping) else value
        node = out
        parts = str(key).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return out
