"""``flowzoo robotics <command>``: the robotics commands registered under the ``flowzoo.commands`` entry point::

    flowzoo robotics collect --task push-v3 --episodes 20 --obs pointcloud --out demos/push
    flowzoo robotics train mp1 --task push-v3 --obs pointcloud --demos demos/push   (the method comes first;
        the same as flowzoo train robotics mp1 ... and python -m flowzoo.robotics.train mp1 ...)
    flowzoo robotics evaluate --checkpoint runs/robotics/policy --episodes 20 --video out.mp4
    flowzoo robotics export --checkpoint runs/robotics/policy --out policy.pt2

Each command imports its module only when it runs, so listing the commands never loads MuJoCo. Each command's
docstring's first line is its one-line summary (``flowzoo robotics --help`` lists them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["commands"]

Command = Callable[[Sequence[str]], "int | None"]


def commands() -> dict[str, Command]:
    """Command name -> ``callable(argv)``."""

    def collect(argv: Sequence[str]) -> int | None:
        """collect --task T --episodes N --obs state|pointcloud --out DIR: scripted-expert demonstrations"""
        from flowzoo.robotics.collect import main

        return main(argv)

    def train(argv: Sequence[str]) -> int | None:
        """train <fm|meanflow|mp1|dm1> --task T --demos DIR [options]: the method comes first"""
        from flowzoo.robotics.train import main

        return main(argv)

    def evaluate(argv: Sequence[str]) -> int | None:
        """evaluate --checkpoint DIR --episodes N [--video out.mp4]: success rate and latency in simulation"""
        from flowzoo.robotics.evaluate import main

        return main(argv)

    def export(argv: Sequence[str]) -> int | None:
        """export --checkpoint DIR --out policy.pt2: a torch.export program for deployment"""
        from flowzoo.robotics.export import main

        return main(argv)

    return {"collect": collect, "train": train, "evaluate": evaluate, "export": export}
