"""Render benchmark results (``benchmarks/results/*.json``) as MyST tables for the documentation.

Every results table in the docs comes from a file that a benchmark run wrote (``benchmarks.results.save_table``),
so a number on a docs page is always one that a run produced. Each ``<name>.json`` becomes
``docs/_generated/<name>.md``: the table, then the command that reproduces it, the date and the machine it was
measured on, and the run's notes. ``docs/_generated/results_index.md`` lists every file, so none goes unseen.
``docs/conf.py`` calls :func:`render_all` when a build starts; run this file directly to render without Sphinx::

    python docs/render_results.py [RESULTS_DIR] [OUT_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MACHINE_KEYS = {"host_kind", "cpu", "cores", "gpu", "torch", "python", "threads"}
TOP_KEYS = {"benchmark", "title", "command", "date", "machine", "columns", "rows", "notes", "quick"}


class ResultsFileError(ValueError):
    """A results file does not follow the schema that ``benchmarks.results.save_table`` writes."""


def load_table(path: Path) -> dict[str, Any]:
    """Read one results file and check its schema; raise :class:`ResultsFileError` naming the file and the fix."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{path}: not valid JSON ({exc}); rewrite it with benchmarks.results.save_table") from exc
    if not isinstance(table, dict):
        raise ResultsFileError(f"{path}: expected a JSON object, got {type(table).__name__}")
    missing = TOP_KEYS - set(table)
    if missing:
        raise ResultsFileError(f"{path}: missing keys {sorted(missing)}; expected {sorted(TOP_KEYS)}")
    machine_missing = MACHINE_KEYS - set(table["machine"])
    if machine_missing:
        raise ResultsFileError(f"{path}: machine lacks {sorted(machine_missing)}; expected {sorted(MACHINE_KEYS)}")
    expected_stem = table["benchmark"] + (".quick" if table["quick"] else "")
    if path.name != expected_stem + ".json":
        raise ResultsFileError(f"{path}: benchmark {table['benchmark']!r} (quick={table['quick']}) belongs in "
                               f"{expected_stem}.json")
    columns = table["columns"]
    for i, row in enumerate(table["rows"]):
        unknown = set(row) - set(columns)
        if unknown:
            raise ResultsFileError(f"{path}: row {i} has cells {sorted(unknown)} outside columns {columns}")
    return table


def _cell(value: Any) -> str:
    """One table cell: values are printed as stored (never re-rounded); pipes are escaped for markdown."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("|", "\\|").replace("\n", " ")


def machine_line(machine: dict[str, Any]) -> str:
    """One sentence describing where a table was measured."""
    if machine["host_kind"] == "cuda" and machine["gpu"]:
        where = f"{machine['gpu']} (host: {machine['cpu']}, {machine['cores']} cores)"
    else:
        where = f"{machine['cpu']} ({machine['cores']} cores, no GPU)"
    return f"{where}, torch {machine['torch']}, Python {machine['python']}, {machine['threads']} torch thread(s)"


def render_table(table: dict[str, Any]) -> str:
    """The MyST markdown for one results table: the table, its command, date and machine, then its notes."""
    columns = table["columns"]
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in table["rows"]:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    lines.append("")
    kind = "quick (smoke) run" if table["quick"] else "full run"
    lines.append(f"Reproduce: `{table['command']}`  ")
    lines.append(f"Measured {table['date']} ({kind}) on {machine_line(table['machine'])}.")
    if table["notes"]:
        lines.append("")
        lines.extend(f"- {_cell(note)}" for note in table["notes"])
    return "\n".join(lines) + "\n"


def render_index(tables: dict[str, dict[str, Any]]) -> str:
    """A table of every results file: name, title, date, host and whether it was a quick run."""
    lines = ["| file | table | measured | host | run |", "|---|---|---|---|---|"]
    for stem, table in sorted(tables.items()):
        host = table["machine"]["gpu"] if table["machine"]["host_kind"] == "cuda" else table["machine"]["cpu"]
        run = "quick" if table["quick"] else "full"
        lines.append(f"| `{stem}.json` | {_cell(table['title'])} | {table['date']} | {_cell(host)} | {run} |")
    return "\n".join(lines) + "\n"


def render_all(results_dir: Path, out_dir: Path) -> list[Path]:
    """Render every ``*.json`` in ``results_dir`` into ``out_dir`` (stale renders are removed); return the files."""
    paths = sorted(results_dir.glob("*.json"))
    if not paths:
        raise ResultsFileError(f"no results files in {results_dir}: run a benchmark (python -m benchmarks.<name>)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.md"):
        old.unlink()
    tables = {path.name[: -len(".json")]: load_table(path) for path in paths}
    written = []
    for stem, table in tables.items():
        target = out_dir / f"{stem}.md"
        target.write_text(render_table(table), encoding="utf-8")
        written.append(target)
    index = out_dir / "results_index.md"
    index.write_text(render_index(tables), encoding="utf-8")
    return [*written, index]


if __name__ == "__main__":
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks" / "results"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "_generated"
    for written_path in render_all(results, out):
        print(written_path)
