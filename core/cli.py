"""The ``flowzoo`` console script and the error layer every command runs under.

Each package registers its commands under the entry-point group ``flowzoo.commands``
(see pyproject.toml): the entry point names the domain and points at a function returning
``{command name: callable(argv) -> int | None}``. The core therefore never imports a domain
package; a domain's commands appear once it is installed.

Usage::

    flowzoo demo                       # the core demo (trains on embedded toy data)
    flowzoo train core --help          # a domain's training entrypoint
    flowzoo <domain> <command> [args]  # any other command of a domain, e.g. flowzoo robotics collect
    python -m flowzoo ...              # the same as flowzoo ...

Every command, and every ``python -m flowzoo.<domain>.train``, runs through :func:`run_main`:

* a :class:`~flowzoo.core.errors.FlowzooError` (bad input) prints ``error: <message>`` and, on a second line,
  its fix, and exits 2 without a traceback; an argparse usage error does the same;
* any other exception is a bug and keeps its traceback;
* ``--debug`` anywhere on the command line, or ``FLOWZOO_DEBUG=1``, shows the traceback of every error;
* Ctrl-C (or SIGTERM during training) prints one line saying what was saved and how to resume, and exits
  128 + the signal number (130 for Ctrl-C);
* ``--threads N`` sets torch's CPU threads (default :data:`~flowzoo.core.config.DEFAULT_THREADS` unless
  ``OMP_NUM_THREADS`` is set): small flow models step fastest on few threads, and torch's default of one
  thread per core slows them down badly on a loaded machine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.metadata import entry_points

from flowzoo.core.config import COMMON_OPTIONS_HELP, DEFAULT_THREADS
from flowzoo.core.errors import ConfigError, FlowzooError, expected

__all__ = ["main", "dispatch", "run_main", "core_commands", "registered_domains", "format_error", "resume_command",
           "method_overview", "split_method"]

Command = Callable[[Sequence[str]], "int | None"]
_HELP_WORDS = ("-h", "--help", "help")
_BOOL_WORDS = {"true", "false", "1", "0", "yes", "no", "on", "off"}

_command: list[str] | None = None  # the command line run_main is running, for resume hints


def format_error(error: BaseException) -> str:
    """``error: <message>`` with the message's ``Fix: ...`` part on a second line; always one or two lines."""
    text = " ".join(str(error).split()) or type(error).__name__
    head, sep, fix = text.partition(" Fix: ")
    return f"error: {head}" + (f"\nfix: {fix}" if sep else "")


class _UsageError(FlowzooError):
    """An argparse usage error, raised instead of argparse's print-and-exit while :func:`run_main` runs."""


@contextlib.contextmanager
def _argparse_errors_raise() -> Iterator[None]:
    original = argparse.ArgumentParser.error

    def error(self: argparse.ArgumentParser, message: str):  # argparse's own error prints usage and exits 2
        raise _UsageError(f"{message} Fix: run {self.prog} --help to list the options")

    argparse.ArgumentParser.error = error  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]


def _debug_requested(argv: list[str]) -> bool:
    flag = os.environ.get("FLOWZOO_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")
    return flag or "--debug" in argv


def _take_threads(argv: list[str]) -> tuple[list[str], int | None]:
    """Remove ``--threads N`` / ``--threads=N`` from argv; returns the rest and N (None if absent)."""
    rest: list[str] = []
    value: str | None = None
    it = iter(argv)
    for token in it:
        if token == "--threads":
            value = next(it, None)
            if value is None:
                raise ConfigError(expected("a number after --threads", "nothing", "pass e.g. --threads 1"))
        elif token.startswith("--threads="):
            value = token.split("=", 1)[1]
        else:
            rest.append(token)
    if value is None:
        return rest, None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigError(expected("--threads as a whole number of at least 1", repr(value), "pass e.g. --threads 1"))
    return rest, threads


def _set_threads(threads: int | None) -> None:
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):  # the user's own setting, which torch already applied
            return
        threads = DEFAULT_THREADS
    import torch

    torch.set_num_threads(threads)


def run_main(main: Command, argv: Sequence[str] | None = None, *, prog: str) -> int:
    """Run an entry point's ``main(argv)`` under flowzoo's command-line rules; returns the exit code.

    Args:
        main: the entry point, ``main(argv) -> int | None``.
        argv: the arguments (default ``sys.argv[1:]``); ``--debug`` and ``--threads N`` are taken out
            before ``main`` sees them.
        prog: the command's name, used in messages.

    Returns:
        ``main``'s code (None counts as 0); 2 after a FlowzooError or a usage error; 128 + the signal
        number after an interrupt.

    Example:
        >>> from flowzoo.core.errors import ConfigError
        >>> def main(argv):
        ...     raise ConfigError("expected a positive --steps; received -1. Fix: pass --steps 100")
        >>> import contextlib, io
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err):
        ...     code = run_main(main, ["--steps", "-1"], prog="demo")
        >>> code, err.getvalue()
        (2, 'error: expected a positive --steps; received -1.\\nfix: pass --steps 100\\n')
    """
    global _command
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = [token for token in argv if token != "--debug"]
    previous = _command
    try:
        _command = _invocation(argv) if previous is None else previous
        argv, threads = _take_threads(argv)
        _set_threads(threads)
        with _argparse_errors_raise():
            return int(main(argv) or 0)
    except FlowzooError as error:
        if debug:
            raise
        print(format_error(error), file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        if debug:
            raise
        # The trainer's interrupt says what it saved; here the command that resumes it is known.
        line = " ".join(str(interrupt).split()) or f"{prog}: interrupted"
        option, summary = getattr(interrupt, "resume_option", None), getattr(interrupt, "summary", None)
        if option and summary and getattr(interrupt, "checkpoint", None) is not None and _command:
            line = f"{summary}; resume with: {resume_command(_command, option)}"
        print(line, file=sys.stderr)
        return int(getattr(interrupt, "exit_code", 130))
    finally:
        _command = previous


def resume_command(command: Sequence[str], option: str = "--trainer.resume") -> str:
    """``command`` with ``option true`` appended and any earlier resume or overwrite option removed.

    Example:
        >>> resume_command(["flowzoo", "train", "core", "--trainer.overwrite", "true", "--seed", "1"])
        'flowzoo train core --seed 1 --trainer.resume true'
    """
    prefix = option.rsplit(".", 1)[0] + "." if "." in option else "--"
    dropped = (option, prefix + "overwrite")
    kept: list[str] = []
    tokens = list(command)
    i = 0
    while i < len(tokens):
        name = tokens[i].split("=", 1)[0]
        if name in dropped:
            # `--opt value` drops its value too (resume's may be a path; overwrite's is a bool word or absent)
            has_value = "=" not in tokens[i] and i + 1 < len(tokens) and not tokens[i + 1].startswith("--")
            if has_value and (name == option or tokens[i + 1].lower() in _BOOL_WORDS):
                i += 1
        else:
            kept.append(tokens[i])
        i += 1
    return shlex.join([*kept, option, "true"])


def method_overview(prog: str, methods: Mapping[str, str], *, usage: str = "[options]",
                    example: str = "") -> str:
    """The help of a ``<method> [options]`` entry point: usage, one line per method, and an example."""
    width = max(map(len, methods))
    lines = [f"usage: {prog} <method> {usage}", "", "methods:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in methods.items()]
    lines += ["", f"Run {prog} <method> --help for every option."] + ([f"Example: {prog} {example}"] if example else [])
    return "\n".join(lines)


def split_method(argv: Sequence[str] | None, methods: Mapping[str, str], prog: str, *, usage: str = "[options]",
                 example: str = "") -> tuple[str, list[str]] | None:
    """``(method, the remaining arguments)`` of a ``<method> [options]`` entry point; None after printing the
    overview for no argument or ``-h``. The method must come first and only there (one ``error:`` line otherwise).

    Example:
        >>> split_method(["pufm", "--steps", "3"], {"pufm": "upsampling"}, "train")
        ('pufm', ['--steps', '3'])
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(method_overview(prog, methods, usage=usage, example=example))
        return None
    method, args = args[0], args[1:]
    if method not in methods:
        raise ConfigError(expected(f"the method first, one of {', '.join(methods)}", repr(method),
                                   f"e.g. {prog} {example}" if example else f"run {prog} --help"))
    if any(a == "--method" or a.startswith("--method=") for a in args):
        raise ConfigError(expected("the method as the first argument only", "--method", "drop --method"))
    return method, args


def _invocation(argv: list[str]) -> list[str]:
    """How the user started this process, with ``argv`` as its arguments (for resume hints)."""
    orig = list(getattr(sys, "orig_argv", []))
    if len(orig) >= 3 and orig[1] == "-m":
        return ["python", "-m", orig[2], *argv]
    script = sys.argv[0] if sys.argv else ""
    if script.endswith(".py") and os.path.basename(script) != "__main__.py":
        return ["python", script, *argv]
    name = os.path.basename(script)
    return [name if name not in ("__main__.py", "-c", "") else "flowzoo", *argv]


def core_commands() -> dict[str, Command]:
    """The core's commands: ``demo`` and ``train``."""

    return {"demo": _by_name("flowzoo.core.demo"), "train": _by_name("flowzoo.core.train")}


def _by_name(module: str) -> Command:
    """The ``main`` of ``module``, imported when the command runs (as entry points are), not when listed."""

    def command(argv: Sequence[str]) -> int | None:
        return importlib.import_module(module).main(argv)

    return command


def registered_domains() -> dict[str, Callable[[], dict[str, Command]]]:
    """Domain name -> loader of its command table, from the installed entry points."""
    found = {ep.name: ep.load for ep in entry_points(group="flowzoo.commands")}
    found.setdefault("core", lambda: core_commands)
    return {name: (lambda load=load: load()()) for name, load in found.items()}


def _usage(domains: dict[str, Callable[[], dict[str, Command]]]) -> str:
    lines = [
        "usage: flowzoo demo [options]",
        "       flowzoo train <domain> [options]   (domains: " + ", ".join(sorted(domains)) + ")",
        "       flowzoo <domain> <command> [options]",
        "",
        "Run any of them with --help to list its options. " + COMMON_OPTIONS_HELP,
    ]
    return "\n".join(lines)


def dispatch(argv: Sequence[str]) -> int:
    """Route ``flowzoo <argv>`` to the registered command; raises ConfigError for an unknown one."""
    argv = list(argv)
    domains = registered_domains()
    if not argv or argv[0] in _HELP_WORDS:
        print(_usage(domains))
        return 0
    head, rest = argv[0], argv[1:]
    known = ", ".join(sorted(domains))
    if head == "demo":
        return int(domains["core"]()["demo"](rest) or 0)
    if head == "train":
        if not rest or rest[0].startswith("-"):
            raise ConfigError(expected(f"the domain to train after `flowzoo train` (one of: {known})",
                                       rest[0] if rest else "nothing", "run e.g. flowzoo train core --help"))
        domain, rest = rest[0], rest[1:]
        commands = _commands_of(domain, domains)
        if commands is None or "train" not in commands:
            raise ConfigError(expected(f"a domain with a train command ({known})", repr(domain),
                                       f"install the domain's extra, e.g. pip install 'flowzoo[{domain}]'"))
        return int(commands["train"](rest) or 0)
    commands = _commands_of(head, domains)
    if commands is None:
        raise ConfigError(expected(f"a known command (demo, train, or a domain: {known})",
                                   f"unknown command {head!r}", "run flowzoo --help"))
    names = ", ".join(sorted(commands))
    if rest and rest[0] in _HELP_WORDS:
        # A command whose docstring starts with its own name shows that line as its usage (e.g. that robotics'
        # train takes the method first).
        lines = {name: (fn.__doc__ or "").strip().splitlines() for name, fn in commands.items()}
        summaries = [f"  flowzoo {head} {lines[name][0] if lines[name] and lines[name][0].startswith(name) else name}"
                     for name in sorted(commands)]
        print(f"usage: flowzoo {head} <command> [options]   (commands: {names})\n" + "\n".join(summaries) +
              f"\nRun flowzoo {head} <command> --help to list its options.")
        return 0
    if not rest or rest[0] not in commands:
        raise ConfigError(expected(f"a command of flowzoo {head} (one of: {names})",
                                   repr(rest[0]) if rest else "none", f"run flowzoo {head} <command> --help"))
    return int(commands[rest[0]](rest[1:]) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``flowzoo`` console script: :func:`dispatch` under :func:`run_main`; returns the exit code."""
    return run_main(dispatch, argv, prog="flowzoo")


def _commands_of(domain: str, domains: dict[str, Callable[[], dict[str, Command]]]) -> dict[str, Command] | None:
    loader = domains.get(domain)
    return None if loader is None else loader()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
