"""Repository-wide pytest set-up: per-test seeding and the doctests of every library module.

``pyproject.toml`` puts the library folders (``core``, ``robotics``, ...) on ``testpaths`` and passes
``--doctest-modules``, so ``python -m pytest`` runs each module's docstring examples as zuko does. The folders are
installed under another name (``core/`` is ``flowzoo.core``), which pytest cannot know: left alone it would import
``core/paths/schedulers.py`` a second time as the top-level module ``core.paths.schedulers``, with its own copies
of every class. The hooks below therefore (1) collect a library folder as a plain directory, so that pytest never
imports its ``__init__.py`` as a test package, and (2) import each module by its installed ``flowzoo.*`` name
before its doctests are collected, so the examples run in the one module object that the rest of the code uses.
"""

from __future__ import annotations

import importlib
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from _pytest.doctest import DoctestModule

ROOT = Path(__file__).resolve().parent
# The folders that setup.py installs as flowzoo.<folder>; keep in step with its DOMAINS.
LIBRARY_FOLDERS = ("core", "vision", "three_d", "robotics", "biology", "driving")
# Optional third-party packages behind the extras in pyproject.toml; a module that needs one which is not
# installed has its doctests skipped. Any other import failure is a real error and fails collection.
OPTIONAL_DEPENDENCIES = frozenset({
    "matplotlib", "tensorboard", "lap", "sklearn", "skimage", "gymnasium", "mujoco", "metaworld",
    "scanpy", "anndata", "torch_geometric", "open3d", "shapely", "highway_env", "mlxtend", "cv2",
})
SEED = 0


def flowzoo_module_name(path: Path) -> str | None:
    """The installed name of a library source file (``core/paths/affine.py`` -> ``flowzoo.core.paths.affine``).

    A package's ``__init__.py`` names the package itself. Returns None for files outside the library folders, so
    that tests/ and benchmarks/ keep pytest's usual handling.
    """
    try:
        parts = path.resolve().relative_to(ROOT).with_suffix("").parts
    except ValueError:
        return None
    if not parts or parts[0] not in LIBRARY_FOLDERS:
        return None
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("flowzoo", *parts))


class FlowzooDoctestModule(DoctestModule):
    """A DoctestModule that imports its file under the installed ``flowzoo.*`` name instead of by file path."""

    def _getobj(self):
        name = flowzoo_module_name(self.path)
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as error:
            missing = (error.name or "").partition(".")[0]
            if missing in OPTIONAL_DEPENDENCIES:
                pytest.skip(f"{name} needs the optional package {missing!r}, which is not installed",
                            allow_module_level=True)
            raise


def _in_library(path: Path) -> bool:
    try:
        parts = path.resolve().relative_to(ROOT).parts
    except ValueError:
        return False
    return bool(parts) and parts[0] in LIBRARY_FOLDERS


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    # A library folder has __init__.py, so pytest would make it a Package and import that __init__.py by file path
    # (as top-level `core`) during setup. A plain Dir imports nothing itself.
    if _in_library(path):
        return pytest.Dir.from_parent(parent, path=path)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    collectors = yield
    if flowzoo_module_name(file_path) is None:
        return collectors
    # Library files hold no test functions; pytest makes a plain Module for a file named on the command line,
    # which would import it by path (as `core.x`), so keep only the doctests, imported by the installed name.
    return [FlowzooDoctestModule.from_parent(parent, path=file_path) for c in collectors
            if type(c) is DoctestModule]


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test and every doctest starts from the same random state, whatever ran before it."""
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    yield


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace: dict) -> None:
    """Docstring examples may use ``torch`` and ``np`` without importing them."""
    doctest_namespace["torch"] = torch
    doctest_namespace["np"] = np


@pytest.fixture
def one_thread():
    """Run a test on one torch thread, then restore the count: small tensors run fastest on one thread, and more
    threads fight the machine's other processes. A module opts in with ``pytestmark =
    pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
