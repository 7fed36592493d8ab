"""The ``flowzoo`` console script.

Each package registers its commands under the entry-point group ``flowzoo.commands``
(see pyproject.toml): the entry point names the domain and points at a function returning
``{command name: callable(argv) -> int | None}``. The core therefore never imports a domain
package; a domain's commands appear once it is installed.

Usage::

    flowzoo demo                       # the core demo (trains on embedded toy data)
    flowzoo train core --help          # a domain's training entrypoint
    flowzoo <domain> <command> [args]  # any other command of a domain, e.g. flowzoo robotics collect
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

__all__ = ["main", "core_commands", "registered_domains"]

Command = Callable[[Sequence[str]], "int | None"]
_HELP_WORDS = ("-h", "--help", "help")


def core_commands() -> dict[str, Command]:
    """The core's commands: ``demo`` and ``train``."""

    def demo(argv: Sequence[str]) -> int | None:
        from flowzoo.core.demo import main as demo_main

        return demo_main(argv)

    def train(argv: Sequence[str]) -> int | None:
        from flowzoo.core.train import main as train_main

        return train_main(argv)

    return {"demo": demo, "train": train}


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
        "Run any of them with --help to list its options.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``flowzoo ...`` to the registered command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    domains = registered_domains()
    if not argv or argv[0] in _HELP_WORDS:
        print(_usage(domains))
        return 0
    head, rest = argv[0], argv[1:]
    if head == "demo":
        return int(domains["core"]()["demo"](rest) or 0)
    if head == "train":
        if not rest or rest[0].startswith("-"):
            print("flowzoo train: name the domain to train, one of: " + ", ".join(sorted(domains)))
            return 2
        domain, rest = rest[0], rest[1:]
        commands = _commands_of(domain, domains)
        if commands is None or "train" not in commands:
            print(f"flowzoo train: expected a domain with a train command ({', '.join(sorted(domains))}); "
                  f"received {domain!r}. Fix: install the domain's extra, e.g. pip install 'flowzoo[{domain}]'")
            return 2
        return int(commands["train"](rest) or 0)
    commands = _commands_of(head, domains)
    if commands is None:
        print(f"flowzoo: unknown command {head!r}.\n" + _usage(domains))
        return 2
    if not rest or rest[0] in _HELP_WORDS:
        print(f"usage: flowzoo {head} <command> [options]   (commands: {', '.join(sorted(commands))})\n"
              f"Run flowzoo {head} <command> --help to list its options.")
        return 0 if rest else 2
    if rest[0] not in commands:
        print(f"flowzoo {head}: expected one of {', '.join(sorted(commands))}; received {rest[0]}.")
        return 2
    return int(commands[rest[0]](rest[1:]) or 0)


def _commands_of(domain: str, domains: dict[str, Callable[[], dict[str, Command]]]) -> dict[str, Command] | None:
    loader = domains.get(domain)
    return None if loader is None else loader()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
