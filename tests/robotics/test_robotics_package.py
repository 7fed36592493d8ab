"""flowzoo.robotics: the package exists, imports without its optional dependencies and declares its API."""

import importlib


def test_robotics_imports_and_declares_all():
    module = importlib.import_module("flowzoo.robotics")
    assert isinstance(module.__all__, list)
