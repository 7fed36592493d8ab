"""``flowzoo three_d ...``: the command table of the 3D package (entry point ``three_d``).

* ``train <pufm|scoop|...> [options]``: ``python -m flowzoo.three_d.train`` (the method comes first);
* ``upsample IN --checkpoint RUN --out OUT --ratio 4|16``: PUFM++ upsampling of a point cloud;
* ``scene-flow A B --out flow.npy [--refine] [--checkpoint RUN]``: SCOOP scene flow between two scans;
* ``generate --checkpoint RUN --steps 1 --out shapes/``: shapes from a two-stage 3D generator (teacher or student).

Each command's module holds its options; importing this module loads none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["commands"]


def commands() -> dict[str, Callable[[Sequence[str]], int | None]]:
    """Command name -> ``callable(argv)`` (entry point ``three_d = flowzoo.three_d.cli:commands``).

    Example:
        >>> sorted(commands())
        ['generate', 'scene-flow', 'train', 'upsample']
    """

    def train(argv: Sequence[str]) -> int | None:
        """train <pufm|scoop|...> [options]: the method comes first"""
        from flowzoo.three_d.train import main

        return main(argv)

    def upsample(argv: Sequence[str]) -> int | None:
        """upsample IN --checkpoint RUN|midpoints --out OUT [--ratio 4|16] [--steps 2] [--project 0.01]: PUFM++"""
        from flowzoo.three_d.cli_upsample import upsample_main

        return upsample_main(argv)

    def scene_flow(argv: Sequence[str]) -> int | None:
        """scene-flow A B --out flow.npy [--refine] [--checkpoint RUN]: SCOOP scene flow between two scans"""
        from flowzoo.three_d.cli_scene_flow import scene_flow_main

        return scene_flow_main(argv)

    def generate(argv: Sequence[str]) -> int | None:
        """generate --checkpoint RUN --steps 1 --out shapes/: point clouds and meshes from a 3D generator"""
        from flowzoo.three_d.cli_generate import generate_main

        return generate_main(argv)

    return {"train": train, "upsample": upsample, "scene-flow": scene_flow, "generate": generate}
