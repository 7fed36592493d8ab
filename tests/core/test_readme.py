"""The README's core examples run as written (with a shorter training loop), so the front page cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_core_quickstart_and_flow_map_examples_run():
    blocks = [b for b in _python_blocks() if "flowzoo.core" in b and "flowzoo.robotics" not in b]
    assert len(blocks) >= 2, "README lost its flow-matching quickstart or its flow-map example"
    quickstart, flow_map = blocks[0], blocks[1]
    assert "range(1000)" in quickstart, "the quickstart's loop changed: update this test's shortening"
    namespace: dict = {"print": lambda *args, **kwargs: None}
    torch.manual_seed(0)
    exec(compile(quickstart.replace("range(1000)", "range(30)"), str(README), "exec"), namespace)  # noqa: S102
    assert namespace["result"].x.shape == (1000, 2) and namespace["result"].nfe == 4
    exec(compile(flow_map, str(README), "exec"), namespace)  # noqa: S102  (uses the quickstart's x0)
    assert namespace["x1"].shape == (1000, 2) and torch.isfinite(namespace["x1"]).all()



def test_manifold_and_token_example_runs():
    block = next(b for b in _python_blocks() if "flowzoo.core.manifolds" in b)
    namespace: dict = {"print": lambda *args, **kwargs: None}
    torch.manual_seed(0)
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    sphere, on_sphere = namespace["sphere"], namespace["on_sphere"]
    sphere.check_on(on_sphere)  # raises when a sample left the sphere
    assert on_sphere.shape == (1000, 3)
    assert len(namespace["text"]) == 8 and all(len(line) == 32 for line in namespace["text"])
