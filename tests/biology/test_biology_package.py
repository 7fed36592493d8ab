"""flowzoo.biology: its modules import without the heavy optional dependencies (the package-wide invariants,
__all__ included, are in tests/test_architecture.py)."""


def test_every_declared_module_imports_without_loading_heavy_dependencies():
    import subprocess
    import sys

    code = ("import importlib, sys, flowzoo.biology as b\n"
            "[importlib.import_module('flowzoo.biology.' + m) for m in b.__all__]\n"
            "print(sorted(m for m in ('scanpy', 'anndata', 'torch_geometric') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
