"""Run logs: a CSV of metrics, evaluation records as JSON lines, and TensorBoard scalars.

* ``metrics.csv`` — one row per log call, a ``step`` column first. The columns are the union of every
  metric logged so far: when a new name appears the file is rewritten with the wider header, so
  older rows simply leave it empty.
* ``eval.jsonl`` — one JSON object per evaluation: ``{"step": ..., "<metric>": ...}``.
* ``tensorboard/`` — scalars ``<group>/<name>`` when ``tensorboard`` is installed and enabled; if it
  is not installed, one warning is issued and the run goes on without it.

On resume, rows logged after the checkpoint's step (by the interrupted run) are dropped so that the
logs describe the resumed run only.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowzoo.core.training.checkpoint import atomic_write_bytes

__all__ = ["CSVLogger", "EvalLog", "TensorBoardLogger", "RunLogger", "logger"]

logger = logging.getLogger("flowzoo.training")


def _number(value: Any) -> float | str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else str(number)


class CSVLogger:
    """Append metric rows to a CSV file whose header grows to the union of all metric names."""

    def __init__(self, path: str | Path, truncate_after: int | None = None) -> None:
        self.path = Path(path)
        self.columns: list[str] = ["step"]
        if self.path.is_file():
            rows = self._read()
            if truncate_after is not None:
                rows = [r for r in rows if _step_of(r) is not None and _step_of(r) <= truncate_after]
            self._rewrite(rows)

    def _read(self) -> list[dict[str, str]]:
        with open(self.path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for name in reader.fieldnames or []:
                if name not in self.columns:
                    self.columns.append(name)
            return list(reader)

    def _rewrite(self, rows: list[Mapping[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.path, buffer.getvalue().encode("utf-8"))

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append one row; widens the header (rewriting the file) if a new metric name appears."""
        row = {"step": step, **{k: _number(v) for k, v in metrics.items()}}
        new = [k for k in row if k not in self.columns]
        if new or not self.path.is_file():
            rows = self._read() if self.path.is_file() else []
            self.columns.extend(new)
            self._rewrite([*rows, row])
            return
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=self.columns, restval="").writerow(row)


def _step_of(row: Mapping[str, Any]) -> int | None:
    try:
        return int(float(row.get("step", "")))
    except (TypeError, ValueError):
        return None


class EvalLog:
    """Evaluation records as JSON lines."""

    def __init__(self, path: str | Path, truncate_after: int | None = None) -> None:
        self.path = Path(path)
        if self.path.is_file() and truncate_after is not None:
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if int(json.loads(line)["step"]) <= truncate_after:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by the crash
            atomic_write_bytes(self.path, "".join(k + "\n" for k in kept).encode("utf-8"))

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"step": step, **{k: _number(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


class TensorBoardLogger:
    """Scalars for TensorBoard; disabled with a single warning if ``tensorboard`` is missing."""

    _warned = False

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if not TensorBoardLogger._warned:
                warnings.warn("tensorboard is not installed, so the run logs to metrics.csv only; "
                              "install it with `pip install flowzoo[viz]` or set tensorboard=false",
                              RuntimeWarning, stacklevel=3)
                TensorBoardLogger._warned = True
            return
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log(self, step: int, metrics: Mapping[str, Any], group: str) -> None:
        if self.writer is None:
            return
        for name, value in metrics.items():
            number = _number(value)
            if isinstance(number, float):
                self.writer.add_scalar(f"{group}/{name}", number, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class RunLogger:
    """All the logs of one run in ``out_dir``; a disabled logger (ranks other than 0) does nothing.

    Args:
        out_dir: the run directory.
        enabled: write anything at all (True on rank 0).
        tensorboard: also write TensorBoard scalars under ``out_dir/tensorboard``.
        resume_step: the step a resumed run restarts from; later rows are dropped.
    """

    def __init__(self, out_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.csv = self.evals = self.tensorboard = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.csv = CSVLogger(self.out_dir / "metrics.csv", truncate_after=resume_step)
        self.evals = EvalLog(self.out_dir / "eval.jsonl", truncate_after=resume_step)
        if tensorboard:
            purge = None if resume_step is None else resume_step + 1
            self.tensorboard = TensorBoardLogger(self.out_dir / "tensorboard", purge_step=purge)

    @property
    def csv_path(self) -> Path | None:
        return self.csv.path if self.csv is not None else None

    def log_train(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Training metrics: a CSV row and ``train/<name>`` scalars."""
        if not self.enabled:
            return
        self.csv.log(step, metrics)
        if self.tensorboard is not None:
            self.tensorboard.log(step, metrics, "train")

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Evaluation metrics: a line of ``eval.jsonl``, a CSV row with ``eval/<name>`` columns, scalars."""
        if not self.enabled:
            return
        self.evals.log(step, metrics)
        self.csv.log(step, {f"eval/{k}": v for k, v in metrics.items()})
        if self.tensorboard is not None:
            self.tensorboard.log(step, metrics, "eval")

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
