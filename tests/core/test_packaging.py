"""The distribution: wheel contents, import hygiene of the core, the console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_MODULES = sorted(".".join(p.relative_to(ROOT / "core").with_suffix("").parts).removesuffix(".__init__")
                      for p in (ROOT / "core").rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT / "core")
DOMAIN_DEPENDENCIES = ["matplotlib", "tensorboard", "sklearn", "skimage", "gymnasium", "mujoco", "metaworld",
                       "scanpy", "anndata", "open3d", "torch_geometric", "lap"]


def test_core_imports_no_domain_or_optional_dependency():
    code = (
        "import sys\n"
        + "".join(f"import flowzoo.core.{m}\n" for m in CORE_MODULES)
        + f"bad = [m for m in {DOMAIN_DEPENDENCIES!r} if m in sys.modules]\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing flowzoo.core pulled in: {out.stdout.strip()}"


def test_wheel_builds_and_imports(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("flowzoo-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("flowzoo/core/paths/affine.py", "flowzoo/core/training/trainer.py", "flowzoo/core/fewstep/meanflow.py",
                   "flowzoo/robotics/afm/method.py", "flowzoo/biology/cells/meta_fm.py", "flowzoo/vision/__init__.py",
                   "flowzoo/robotics/__init__.py", "flowzoo/biology/__init__.py", "flowzoo/three_d/__init__.py",
                   "flowzoo/driving/__init__.py"):
        assert module in names, module
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    # Import from the installed wheel only: the checkout must not be on the path.
    out = subprocess.run([sys.executable, "-I", "-c",
                          f"import sys; sys.path.insert(0, {str(target)!r}); "
                          "import flowzoo, flowzoo.core.paths.affine as p; print(p.__file__); "
                          "print(getattr(flowzoo, '__file__', None))"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout, out.stdout
    # flowzoo stays a namespace package (no __init__.py) that `python -m flowzoo` runs.
    assert "flowzoo/__main__.py" in names and "flowzoo/__init__.py" not in names
    assert out.stdout.splitlines()[-1] == "None", out.stdout
    run_m = subprocess.run([sys.executable, "-I", "-c",
                            f"import runpy, sys; sys.path.insert(0, {str(target)!r}); sys.argv = ['flowzoo', '--help']; "
                            "runpy.run_module('flowzoo', run_name='__main__', alter_sys=True)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert run_m.returncode == 0 and "flowzoo train <domain>" in run_m.stdout, run_m.stderr


def test_python_m_flowzoo_in_the_editable_install(tmp_path):
    """Outside the checkout, `python -m flowzoo` finds flowzoo/__main__.py through the editable install."""
    out = subprocess.run([sys.executable, "-m", "flowzoo", "core", "--help"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "usage: flowzoo core <command>" in out.stdout


@pytest.mark.parametrize("argv", [["--help"], ["train", "core", "--help"]])
def test_console_script_help(argv):
    out = subprocess.run([sys.executable, "-m", "flowzoo.core.cli", *argv], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower()


def test_domain_help_lists_its_commands():
    out = subprocess.run([sys.executable, "-m", "flowzoo.core.cli", "core", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert "usage: flowzoo core <command>" in out.stdout and "demo, train" in out.stdout
    bare = subprocess.run([sys.executable, "-m", "flowzoo.core.cli", "core"], capture_output=True, text=True)
    assert bare.returncode == 2 and bare.stderr.startswith("error: ") and "demo, train" in bare.stderr


def test_train_help_lists_every_field_with_default():
    out = subprocess.run([sys.executable, "-m", "flowzoo.core.train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in ("--coupling", "--source", "--trainer.lr", "--trainer.steps", "--trainer.out_dir"):
        assert name in out.stdout, name
    assert "exact_ot" in out.stdout


def test_unknown_command_is_rejected_with_help():
    out = subprocess.run([sys.executable, "-m", "flowzoo.core.cli", "nonsense"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and "unknown command 'nonsense'" in out.stderr
    assert "flowzoo --help" in out.stderr


def test_test_files_have_unique_basenames():
    """pytest's default import mode puts every test folder on sys.path: two test_x.py files would collide."""
    from collections import Counter
    from pathlib import Path

    names = Counter(p.name for p in (Path(__file__).resolve().parents[1]).rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
