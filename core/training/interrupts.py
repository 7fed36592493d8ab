"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (what a cluster scheduler sends first).

:class:`SignalGuard` replaces the two handlers while the training loop runs: the first signal only records
itself, so that the :class:`~flowzoo.core.training.Trainer` finishes the current update, writes a checkpoint
and raises :class:`TrainingInterrupted`; a second signal raises at once. The previous handlers come back
when the loop ends. Handlers can only be installed from the main thread; elsewhere the guard does nothing
and signals behave as before.

The exit code ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM) follows the shell's convention,
which schedulers, torchrun and Lightning users read as "killed by that signal".
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["TrainingInterrupted", "SignalGuard", "signal_name"]

_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal; ``str()`` is the one line for the user (what was saved, how to resume).

    A subclass of KeyboardInterrupt so that code which handles Ctrl-C handles it too. Attributes:
    ``signum``, ``exit_code`` (128 + signum), ``step``, ``checkpoint`` (None when nothing was saved),
    ``summary`` (the line without the resume hint) and ``resume_option`` (the command-line option that
    resumes, which :func:`flowzoo.core.cli.run_main` turns into the full command).
    """

    def __init__(self, summary: str, *, signum: int, step: int, checkpoint: Path | None,
                 resume_option: str = "--trainer.resume") -> None:
        hint = (f"; resume with TrainerConfig(resume=True) and the same out_dir ({resume_option} true)"
                if checkpoint is not None else "")
        super().__init__(summary + hint)
        self.summary, self.resume_option = summary, resume_option
        self.signum, self.exit_code, self.step, self.checkpoint = signum, 128 + signum, step, checkpoint


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class SignalGuard:
    """Context manager that turns SIGINT/SIGTERM into a stop request (:attr:`received`).

    Args:
        on_second: called with the signal number when a second signal arrives; it should raise (the
            default raises :class:`TrainingInterrupted` without a checkpoint).
    """

    def __init__(self, on_second: Any = None) -> None:
        self.received: int | None = None
        self._on_second = on_second
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            return
        if self._on_second is not None:
            self._on_second(signum)
        raise TrainingInterrupted(f"stopped at once by a second {signal_name(signum)}; nothing more was saved",
                                  signum=signum, step=-1, checkpoint=None)

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                try:
                    self._previous[signum] = signal.signal(signum, self._handle)
                except (ValueError, OSError):  # e.g. an embedded interpreter that owns its signals
                    continue
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
