"""The README's control-loop example names the real robotics API (it needs a trained policy, so it is not run)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from flowzoo.robotics.controller import ControlLoop, ControlReport
from flowzoo.robotics.policy import load_policy

README = Path(__file__).resolve().parents[2] / "README.md"


def test_control_loop_example_matches_the_api():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    block = next(b for b in blocks if "ControlLoop" in b)
    assert "load_policy(" in block and callable(load_policy)
    init = inspect.signature(ControlLoop.__init__).parameters
    run = inspect.signature(ControlLoop.run).parameters
    assert {"rate_hz", "budget_ms"} <= set(init) and {"duration_s"} <= set(run)
    assert "report.table()" in block and callable(ControlReport.table)
