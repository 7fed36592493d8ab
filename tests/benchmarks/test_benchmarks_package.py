"""benchmarks/ is a package: no sys.path edits, presets from the library, every script has a main() with --help."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")
SCRIPTS = [m for m in MODULES if '__name__ == "__main__"' in (ROOT / "benchmarks" / f"{m}.py").read_text()]


def test_no_sys_path_edits_in_benchmarks_or_tests():
    files = [*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tests").rglob("*.py")]
    edits = [str(p.relative_to(ROOT)) for p in files if re.search(r"sys\.path\.(insert|append)\(", p.read_text())
             and "test_packaging.py" not in p.name]  # that test imports an installed wheel in a child process
    assert edits == []


def test_the_presets_shim_is_gone_and_the_runs_use_the_library_presets():
    from benchmarks import few_step_runs
    from flowzoo.core.fewstep import presets

    assert importlib.util.find_spec("benchmarks.few_step_settings") is None
    assert few_step_runs.meanflow_settings is presets.meanflow_settings
    assert few_step_runs.splitmeanflow_settings is presets.splitmeanflow_settings


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_imports_as_a_module_and_prints_help(name, capsys):
    module = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"]) if _takes_argv(module.main) else _main_with_argv(module.main)
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def _takes_argv(main) -> bool:
    return bool(main.__code__.co_argcount)


def _main_with_argv(main):
    import sys
    from unittest import mock

    with mock.patch.object(sys, "argv", ["prog", "--help"]):
        return main()
