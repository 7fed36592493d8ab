"""``flowzoo robotics <command>``: the robotics commands registered under the ``flowzoo.commands`` entry point.

    flowzoo robotics collect --task push-v3 --episodes 20 --obs pointcloud --out demos/push
    flowzoo train robotics mp1 --task push-v3 --obs state          (= python -m flowzoo.robotics.train mp1 ...)
    flowzoo robotics evaluate --checkpoint runs/robotics/policy --episodes 20 --video out.mp4

Each command imports its module only when it runs, so listing the commands never loads MuJoCo.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["commands"]

Command = Callable[[Sequence[str]], "int | None"]


def commands() -> dict[str, Command]:
    """Command name -> ``callable(argv)``."""

    def collect(argv: Sequence[str]) -> int | None:
        from flowzoo.robotics.collect import main

        return main(argv)

    def train(argv: Sequence[str]) -> int | None:
        from flowzoo.robotics.train import main

        return main(argv)

    def evaluate(argv: Sequence[str]) -> int | None:
        from flowzoo.robotics.evaluate import main

        return main(argv)

    return {"collect": collect, "train": train, "evaluate": evaluate}
