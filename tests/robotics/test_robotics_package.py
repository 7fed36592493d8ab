"""flowzoo.robotics: the package exists, imports without its optional dependencies and declares its API."""

import importlib


def test_robotics_imports_and_declares_all():
    module = importlib.import_module("flowzoo.robotics")
    assert isinstance(module.__all__, list)



def test_every_declared_module_imports_without_loading_simulators():
    import subprocess
    import sys

    code = ("import importlib, sys, flowzoo.robotics as r\n"
            "[importlib.import_module('flowzoo.robotics.' + m) for m in r.__all__]\n"
            "print(sorted(m for m in ('metaworld', 'mujoco', 'gymnasium') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_every_module_has_a_docstring_and_an_all_of_existing_names():
    package = importlib.import_module("flowzoo.robotics")
    for name in package.__all__:
        module = importlib.import_module(f"flowzoo.robotics.{name}")
        assert (module.__doc__ or "").strip(), name
        assert isinstance(module.__all__, list), name
        assert [n for n in module.__all__ if not hasattr(module, n)] == [], name
