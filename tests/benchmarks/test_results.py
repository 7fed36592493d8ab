"""benchmarks/results.py: the table schema, atomic writes, quick runs kept apart, markdown tables read back."""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
from pathlib import Path

import pytest
import torch

from benchmarks import results

KEYS = {"benchmark", "title", "command", "date", "machine", "columns", "rows", "notes", "quick"}
MACHINE_KEYS = {"host_kind", "cpu", "cores", "gpu", "torch", "python", "threads"}


def _save(folder: Path, **overrides) -> Path:
    options = dict(title="A table", command="python -m benchmarks.demo --steps 3", quick=False, directory=folder)
    options.update(overrides)
    rows = options.pop("rows", [{"method": "fm", "W2": 0.25, "NFE": 4}, {"method": "mf", "W2": float("nan"), "NFE": 1}])
    return results.save_table(options.pop("name", "demo"), rows, **options)


def test_schema_has_exactly_the_documented_keys(tmp_path):
    path = _save(tmp_path, notes=["a note"])
    assert path == tmp_path / "demo.json"
    data = json.loads(path.read_text())
    assert set(data) == KEYS and set(data["machine"]) == MACHINE_KEYS
    assert data["benchmark"] == "demo" and data["title"] == "A table" and data["quick"] is False
    assert data["command"] == "python -m benchmarks.demo --steps 3" and data["notes"] == ["a note"]
    assert datetime.date.fromisoformat(data["date"]) == datetime.date.today()
    machine = data["machine"]
    assert machine["host_kind"] == "cpu" and machine["gpu"] is None  # nothing here touched CUDA
    assert machine["torch"] == torch.__version__ and machine["threads"] == torch.get_num_threads()
    assert isinstance(machine["cores"], int) and machine["cores"] >= 1 and machine["cpu"]
    assert data["columns"] == ["method", "W2", "NFE"]
    # A NaN (not measured) is stored as null: strict JSON, and the CSV cell is empty.
    assert data["rows"] == [{"method": "fm", "W2": 0.25, "NFE": 4}, {"method": "mf", "W2": None, "NFE": 1}]
    with open(tmp_path / "demo.csv", newline="") as handle:
        assert list(csv.reader(handle)) == [["method", "W2", "NFE"], ["fm", "0.25", "4"], ["mf", "", "1"]]


def test_rows_as_sequences_need_columns_and_values_become_json(tmp_path):
    import numpy as np

    path = _save(tmp_path, rows=[("a", np.float32(0.5), torch.tensor(3)), ("b", math.inf, (1, 2))],
                 columns=["name", "x", "y"])
    rows = json.loads(path.read_text())["rows"]
    assert rows == [{"name": "a", "x": 0.5, "y": 3}, {"name": "b", "x": None, "y": [1, 2]}]
    with pytest.raises(ValueError, match="columns"):
        _save(tmp_path, rows=[("a", 1)])
    with pytest.raises(ValueError, match="2 values for 3 columns"):
        _save(tmp_path, rows=[("a", 1)], columns=["name", "x", "y"])
    with pytest.raises(ValueError, match="not in columns"):
        _save(tmp_path, rows=[{"name": "a", "extra": 1}], columns=["name"])
    with pytest.raises(ValueError, match="benchmark name"):
        _save(tmp_path, name="../escape")


def test_quick_runs_never_overwrite_the_full_table(tmp_path):
    full = _save(tmp_path)
    quick = _save(tmp_path, quick=True, rows=[{"method": "fm", "W2": 9.0}])
    assert quick == tmp_path / "demo.quick.json" and (tmp_path / "demo.quick.csv").is_file()
    assert json.loads(full.read_text())["rows"][0]["W2"] == 0.25
    assert json.loads(quick.read_text())["quick"] is True


def test_write_is_atomic_a_failed_write_keeps_the_old_table(tmp_path, monkeypatch):
    path = _save(tmp_path)
    before = path.read_text()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, rows=[{"method": "new", "W2": 1.0}])
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.csv", "demo.json"]  # no temporary file left


def test_the_folder_defaults_to_benchmarks_results_and_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOWZOO_RESULTS_DIR", raising=False)
    assert results.results_dir() == Path(results.__file__).resolve().parent / "results"
    monkeypatch.setenv("FLOWZOO_RESULTS_DIR", os.fspath(tmp_path / "elsewhere"))
    path = _save(None)
    assert path == tmp_path / "elsewhere" / "demo.json"


def test_reproduce_command_quotes_arguments():
    assert results.reproduce_command("benchmarks.x", ["--quick", "--plot", "a b.png"]) == \
        "python -m benchmarks.x --quick --plot 'a b.png'"
    assert results.reproduce_command("benchmarks.x", []) == "python -m benchmarks.x"


def test_markdown_tables_read_back_what_was_printed(tmp_path):
    text = ("Heading\n\n| method | W2 | note |\n|---|---:|---|\n| fm | 0.25 | **PASS** |\n| mf | **0.5** | 1.2x |\n\n"
            "- a bullet\n\n| a | b |\n| --- | --- |\n| 1 | x |\n")
    tables = results.markdown_tables(text)
    assert tables == [(["method", "W2", "note"], [{"method": "fm", "W2": 0.25, "note": "PASS"},
                                                  {"method": "mf", "W2": 0.5, "note": "1.2x"}]),
                      (["a", "b"], [{"a": 1, "b": "x"}])]
    paths = results.save_markdown_tables("md", text, title="T", titles=["first"], command="c", quick=False,
                                         directory=tmp_path)
    assert [p.name for p in paths] == ["md.json", "md_2.json"]
    named = results.save_markdown_tables("md", text, title="T", suffixes=["extra"], command="c", quick=True,
                                         directory=tmp_path)
    assert [p.name for p in named] == ["md.quick.json", "md_extra.quick.json"]
    assert [json.loads(p.read_text())["title"] for p in paths] == ["first", "T"]


def test_tee_stdout_prints_and_records(capsys):
    with results.tee_stdout() as record:
        print("| a |\n|---|\n| 1 |")
    assert capsys.readouterr().out == record.getvalue() == "| a |\n|---|\n| 1 |\n"
