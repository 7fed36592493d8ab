"""flowzoo.robotics: its modules import without the optional simulators and are documented (the package-wide
invariants, __all__ included, are in tests/test_architecture.py)."""

import importlib


def test_every_declared_module_imports_without_loading_simulators():
    import subprocess
    import sys

    code = ("import importlib, sys, flowzoo.robotics as r\n"
            "[importlib.import_module('flowzoo.robotics.' + m) for m in r.__all__]\n"
            "print(sorted(m for m in ('metaworld', 'mujoco', 'gymnasium') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_every_module_has_a_docstring():
    # __all__ declared and naming only what each module defines: tests/test_architecture.py
    package = importlib.import_module("flowzoo.robotics")
    for name in package.__all__:
        module = importlib.import_module(f"flowzoo.robotics.{name}")
        assert (module.__doc__ or "").strip(), name
