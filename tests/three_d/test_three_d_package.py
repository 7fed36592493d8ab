"""flowzoo.three_d: the package exists, imports without its optional dependencies and declares its API."""

import importlib


def test_three_d_imports_and_declares_all():
    module = importlib.import_module("flowzoo.three_d")
    assert isinstance(module.__all__, list)
