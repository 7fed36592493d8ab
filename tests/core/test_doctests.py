"""The root conftest.py collects each library module's doctests under its installed flowzoo.* name, once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A pytest plugin that reports, after collection, which module object the doctests of schedulers.py live in.
PLUGIN = '''
import sys

def pytest_collection_finish(session):
    import flowzoo.core.paths.schedulers as installed
    from flowzoo.core.paths import CosineScheduler
    folders = ("core", "robotics", "biology", "vision", "three_d", "driving")
    duplicates = sorted(m for m in sys.modules if m.partition(".")[0] in folders)
    doctested = {item.parent.obj for item in session.items if "schedulers.py" in item.nodeid}
    print("DUPLICATES", duplicates)
    print("SAME", doctested == {installed} and installed.CosineScheduler is CosineScheduler)
    print("NAMES", sorted(item.name for item in session.items))
'''


def test_doctests_run_in_the_installed_modules(tmp_path):
    (tmp_path / "doctest_probe.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "doctest_probe", "-p", "no:cacheprovider",
                          "core/paths/schedulers.py", "core/sampling", "core/__init__.py"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines()
                 if line.startswith(("DUPLICATES ", "SAME ", "NAMES ")))
    # pytest never imported core/ by file path (a folder or a file named on the command line) as a top-level
    # package beside flowzoo.core.
    assert lines["DUPLICATES"] == "[]"
    assert lines["SAME"] == "True"
    # Doctests are named by the installed module path and the ones in schedulers.py were found.
    assert "flowzoo.core.paths.schedulers.CosineScheduler" in lines["NAMES"]
    assert "flowzoo.core.sampling.ode.integrate" in lines["NAMES"]
