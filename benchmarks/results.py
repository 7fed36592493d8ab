"""Benchmark tables as data: every benchmark writes its final table to ``benchmarks/results/<name>.json`` (and CSV).

A benchmark prints its table for the reader and calls :func:`save_table` with the same rows, so that the numbers
in the documentation are rendered from files a run produced, next to the machine and the date it ran on. The JSON
schema (the documentation's renderer reads exactly these keys)::

    {"benchmark": name, "title": str, "command": the command line that reproduces it, "date": ISO date,
     "machine": {"host_kind": "cpu" | "cuda", "cpu": model, "cores": int, "gpu": name | null,
                 "torch": version, "python": version, "threads": torch threads},
     "columns": [str], "rows": [{column: value}], "notes": [str], "quick": bool}

A ``--quick`` (smoke) run writes ``<name>.quick.json`` / ``.quick.csv``, so it never overwrites a full run's table.
Files are written atomically (a temporary file in the same folder, fsync, rename), so an interrupted run leaves
the previous table intact. ``FLOWZOO_RESULTS_DIR`` redirects the folder (the tests use it).
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import math
import os
import platform
import re
import shlex
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch

__all__ = ["RESULTS_DIR", "results_dir", "machine_info", "reproduce_command", "markdown_table", "markdown_tables", "save_table",
           "save_markdown_tables", "tee_stdout"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def results_dir() -> Path:
    """``$FLOWZOO_RESULTS_DIR`` if set, else ``benchmarks/results/``."""
    return Path(os.environ.get("FLOWZOO_RESULTS_DIR") or RESULTS_DIR)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: str | torch.device | None = None) -> dict:
    """The ``machine`` record. ``device``: where the benchmark ran; None means CUDA if this process used it."""
    if device is None:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    else:
        cuda = torch.device(device).type == "cuda"
    return {"host_kind": "cuda" if cuda else "cpu", "cpu": _cpu_model(), "cores": os.cpu_count() or 1,
            "gpu": torch.cuda.get_device_name(torch.device(device) if device is not None else None) if cuda else None,
            "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads()}


def reproduce_command(module: str, argv: Sequence[str] | None = None) -> str:
    """``python -m <module> <args>``; ``argv`` None means this process's arguments (``sys.argv[1:]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", "-m", module, *(shlex.quote(str(a)) for a in args)])


def _value(value: object) -> object:
    """A JSON value: numbers stay numbers, non-finite floats become null (not measured), the rest strings."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    return str(value)


def _normalise(rows: Iterable[Mapping | Sequence], columns: Sequence[str] | None) -> tuple[list[str], list[dict]]:
    rows = list(rows)
    if columns is None:
        if not all(isinstance(r, Mapping) for r in rows):
            raise ValueError("rows given as sequences need columns=[...] naming each position")
        columns = []
        for row in rows:
            columns += [str(k) for k in row if str(k) not in columns]
    columns = [str(c) for c in columns]
    if len(set(columns)) != len(columns):
        raise ValueError(f"duplicate column names: {columns}")
    out = []
    for row in rows:
        if isinstance(row, Mapping):
            unknown = [k for k in row if str(k) not in columns]
            if unknown:
                raise ValueError(f"row has columns {unknown} that are not in columns={columns}")
            out.append({c: _value(row.get(c)) for c in columns})
        else:
            if len(row) != len(columns):
                raise ValueError(f"row {list(row)} has {len(row)} values for {len(columns)} columns")
            out.append({c: _value(v) for c, v in zip(columns, row)})
    return columns, out


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                         delete=False, encoding="utf-8", newline="")
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def save_table(name: str, rows: Iterable[Mapping | Sequence], *, columns: Sequence[str] | None = None,
               title: str, command: str, quick: bool, notes: Sequence[str] | None = None,
               device: str | torch.device | None = None, directory: Path | None = None) -> Path:
    """Write one table as ``<name>.json`` and ``<name>.csv`` (``<name>.quick.*`` when ``quick``); return the JSON path.

    ``rows`` are mappings column -> value, or sequences in the order of ``columns``. ``columns`` defaults to
    the mappings' keys in first-seen order.
    """
    if not _NAME.match(name) or name.endswith(".quick"):
        raise ValueError(f"benchmark name {name!r}: use letters, digits, '_', '-', '.' (no '.quick' suffix)")
    columns, table = _normalise(rows, columns)
    record = {"benchmark": name, "title": str(title), "command": str(command),
              "date": datetime.date.today().isoformat(), "machine": machine_info(device),
              "columns": columns, "rows": table, "notes": [str(n) for n in (notes or ())], "quick": bool(quick)}
    folder = Path(directory) if directory is not None else results_dir()
    stem = f"{name}.quick" if quick else name
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: "" if row[c] is None else row[c] for c in columns} for row in table)
    _write_atomic(folder / f"{stem}.csv", buffer.getvalue())
    path = folder / f"{stem}.json"
    _write_atomic(path, json.dumps(record, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return path


def markdown_table(rows: Iterable[Mapping], columns: Sequence[str]) -> str:
    """``rows`` as a Markdown pipe table of ``columns`` (floats to 4 significant digits, NaN as ``nan``, None as
    ``-``), for a benchmark to print.

    Example:
        >>> print(markdown_table([{"method": "fm", "fd": 1.234567}], ["method", "fd"]))
        | method | fd |
        |---|---|
        | fm | 1.235 |
    """
    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str) -> object:
    text = text.strip()
    if len(text) > 4 and text.startswith("**") and text.endswith("**"):  # bold marks a verdict, not the value
        text = text[2:-2].strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def markdown_tables(text: str) -> list[tuple[list[str], list[dict]]]:
    """Every pipe table in ``text`` as (columns, rows); cells that read as numbers become numbers.

    For benchmarks whose table exists only as the markdown they print: the printed text stays the source of
    truth and the saved rows are exactly what the reader saw.
    """
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines) - 1:
        header, rule = lines[i].strip(), lines[i + 1].strip()
        if header.startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", rule):
            columns = [c.strip() for c in header.strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c for c in lines[i].strip().strip("|").split("|")]
                cells += [""] * (len(columns) - len(cells))
                rows.append({c: _cell(v) for c, v in zip(columns, cells)})
                i += 1
            tables.append((columns, rows))
        else:
            i += 1
    return tables


def save_markdown_tables(name: str, text: str, *, suffixes: Sequence[str] = (), titles: Sequence[str] = (),
                         **options) -> list[Path]:
    """:func:`save_table` for each pipe table in ``text``; return the JSON paths.

    The first (main) table is saved as ``name``, table k > 1 as ``name_<suffixes[k - 2]>`` (``name_<k>`` past
    the suffixes given). ``titles`` (one per table) default to ``options["title"]``; the other keywords are
    :func:`save_table`'s.
    """
    tables = markdown_tables(text)
    title = options.pop("title")
    paths = []
    for index, (columns, rows) in enumerate(tables, start=1):
        table_name = name if index == 1 else f"{name}_{suffixes[index - 2] if index - 2 < len(suffixes) else index}"
        table_title = titles[index - 1] if index <= len(titles) else title
        paths.append(save_table(table_name, rows, columns=columns, title=table_title, **options))
    return paths


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def tee_stdout() -> Iterator[io.StringIO]:
    """Print as usual inside the block and also record it, for benchmarks whose tables are printed piecemeal."""
    record = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, record)):
        yield record
