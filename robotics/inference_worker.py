"""A background thread that runs a policy's inference, one request at a time, for a fixed-rate control loop.

:class:`~flowzoo.robotics.controller.ControlLoop` (``background=True``) hands the observation history of a
control step to an :class:`InferenceWorker` and keeps sending the current chunk's actions while the next chunk
is computed; finished chunks come back with their latency through :meth:`InferenceWorker.poll`. An exception
raised by the policy is passed back and re-raised in the caller's thread by :meth:`~InferenceWorker.poll`, with a
note saying where it came from; :meth:`~InferenceWorker.close` stops the thread after its current inference.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from flowzoo.core.errors import ConfigError, expected

__all__ = ["InferenceWorker"]


class InferenceWorker:
    """One background thread running one inference at a time; results and errors come back through a queue.

    Args:
        infer: ``infer(stacked_history) -> chunk``, called in the worker thread.
    """

    def __init__(self, infer: Callable[[dict[str, np.ndarray]], np.ndarray]) -> None:
        self._infer = infer
        self._requests: queue.Queue = queue.Queue(maxsize=1)
        self._results: queue.Queue = queue.Queue()
        self.busy = False
        self._thread = threading.Thread(target=self._serve, name="flowzoo-policy-inference", daemon=True)
        self._thread.start()

    def submit(self, origin: int, stacked: dict[str, np.ndarray]) -> None:
        """Request the chunk of control step ``origin``; one request at a time (``busy`` until it is polled)."""
        if self.busy:
            raise ConfigError(expected("one pending inference request at a time", f"submit({origin}) while busy",
                                       "poll() until busy is False before submitting again"))
        self.busy = True
        self._requests.put_nowait((origin, stacked))

    def poll(self) -> list[tuple[int, np.ndarray, float]]:
        """Finished chunks as (origin, chunk, latency in s); re-raises an exception from the policy."""
        done = []
        while True:
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return done
            self.busy = False
            if isinstance(item, BaseException):
                if hasattr(item, "add_note"):
                    item.add_note("(raised by the policy in the control loop's inference thread)")
                raise item
            done.append(item)

    @property
    def alive(self) -> bool:
        """Whether the thread still runs."""
        return self._thread.is_alive()

    def close(self, timeout_s: float) -> bool:
        """Stop the thread after its current inference; True when it has been joined."""
        try:
            self._requests.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            origin, stacked = request
            started = time.perf_counter()
            try:
                chunk = self._infer(stacked)
            except BaseException as err:  # surfaced in the control thread by poll()
                self._results.put(err)
                return
            self._results.put((origin, chunk, time.perf_counter() - started))
