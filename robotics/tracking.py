"""What evaluations leave behind: success over training (best-K beside last) and rollout videos.

**Over training** (:class:`SuccessTracker`): DP3/MP1 report the mean of the best K evaluations seen during
training (``LargestKRecorder``, K = 3 and 5; here :class:`BestKRecorder`). That number is optimistic, so it is
always shown *beside* the last checkpoint's success, in separate columns, never blended;
:meth:`SuccessTracker.plot` draws both as a PNG.

**Videos** (:func:`write_video`): the frames :func:`flowzoo.robotics.evaluate.evaluate_policy` records, as MP4
or GIF, written atomically.

All three names are also importable from :mod:`flowzoo.robotics.evaluate`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowzoo.core.errors import ConfigError, MissingDependencyError, ShapeError, expected
from flowzoo.core.validation import check_int, check_positive_int, check_probability
from flowzoo.core.analysis import require_matplotlib
from flowzoo.core.training import atomic_write_bytes, atomic_write_with
from flowzoo.robotics.rollout import ROBOTICS_EXTRA, EvalResult

__all__ = ["BestKRecorder", "SuccessTracker", "write_video"]


class BestKRecorder:
    """Mean of the K largest values seen so far: DP3/MP1's ``LargestKRecorder`` for success over training.

    With fewer than K values it averages those it has and says so through :attr:`complete`.
    """

    def __init__(self, k: int) -> None:
        check_positive_int(k, "K", fix="use K=3 or K=5 as DP3/MP1 do")
        self.k = k
        self.values: list[float] = []

    def add(self, value: float) -> None:
        self.values.append(check_probability(value, "a success rate", fix="pass EvalResult.success_rate"))

    @property
    def complete(self) -> bool:
        return len(self.values) >= self.k

    @property
    def value(self) -> float:
        if not self.values:
            return float("nan")
        return float(np.mean(sorted(self.values, reverse=True)[:self.k]))


class SuccessTracker:
    """Success rate after each evaluation during training; last and best-K reported side by side.

    Example:
        >>> tracker = SuccessTracker()
        >>> for step, rate in [(100, 0.2), (200, 0.9), (300, 0.6), (400, 0.7)]:
        ...     tracker.record(step, rate)
        >>> summary = tracker.summary()
        >>> summary["last"], round(summary["best_3_mean"], 4), summary["best_3_complete"]
        (0.7, 0.7333, True)
    """

    def __init__(self, ks: Sequence[int] = (3, 5)) -> None:
        self.recorders = {int(k): BestKRecorder(int(k)) for k in ks}
        self.steps: list[int] = []
        self.success: list[float] = []

    def record(self, step: int, success_rate: float | EvalResult) -> None:
        """Add the evaluation made after training step ``step`` (a success rate or an :class:`EvalResult`)."""
        rate = success_rate.success_rate if isinstance(success_rate, EvalResult) else success_rate
        rate = check_probability(rate, "a success rate", fix="pass EvalResult.success_rate")
        check_int(step, "step", low=self.steps[-1] if self.steps else None, fix="record evaluations in training order")
        self.steps.append(step)
        self.success.append(rate)
        for recorder in self.recorders.values():
            recorder.add(rate)

    @property
    def last(self) -> float:
        return self.success[-1] if self.success else float("nan")

    def best_k(self, k: int) -> float:
        return self.recorders[k].value if k in self.recorders else BestKRecorder(k).value

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"evaluations": len(self.success), "last_step": self.steps[-1] if self.steps else None,
                               "last": self.last}
        for k, recorder in self.recorders.items():
            out[f"best_{k}_mean"] = recorder.value
            out[f"best_{k}_complete"] = recorder.complete
        return out

    def table(self) -> str:
        """Markdown: one column per protocol, never blended."""
        ks = sorted(self.recorders)
        head = "| evaluations | last checkpoint | " + " | ".join(f"best-{k} mean (DP3/MP1)" for k in ks) + " |"
        cells = [f"{self.recorders[k].value:.3f}" + ("" if self.recorders[k].complete else " (incomplete)") for k in ks]
        return "\n".join([head, "|" + " --- |" * (2 + len(ks)),
                          f"| {len(self.success)} | {self.last:.3f} | " + " | ".join(cells) + " |"])

    def to_dict(self) -> dict[str, Any]:
        return {"ks": sorted(self.recorders), "steps": list(self.steps), "success": list(self.success)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuccessTracker:
        tracker = cls(data.get("ks", (3, 5)))
        for step, rate in zip(data["steps"], data["success"], strict=True):
            tracker.record(int(step), float(rate))
        return tracker

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_bytes(path, (json.dumps({**self.to_dict(), "summary": self.summary()}, indent=2) + "\n").encode())
        return path

    def plot(self, path: str | Path, *, title: str | None = None) -> Path:
        """PNG of success over training with the best-K means and the last value marked."""
        if not self.success:
            raise ShapeError(expected("at least one recorded evaluation", "none", "call record() first"))
        plt = require_matplotlib()
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(self.steps, self.success, marker="o", color="tab:blue", label="success per evaluation")
        for k, style in zip(sorted(self.recorders), ("--", ":", "-.")):
            ax.axhline(self.recorders[k].value, linestyle=style, color="tab:orange",
                       label=f"best-{k} mean {self.recorders[k].value:.2f}")
        ax.scatter([self.steps[-1]], [self.last], s=80, color="tab:red", zorder=3, label=f"last {self.last:.2f}")
        ax.set(xlabel="training step", ylabel="success rate", ylim=(-0.02, 1.02),
               title=title or "success over training")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        try:
            return atomic_write_with(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=120), suffix=".png")
        finally:
            plt.close(fig)


def write_video(frames: Sequence[np.ndarray], path: str | Path, *, fps: int = 30) -> Path:
    """Write RGB frames ``(H, W, 3) uint8`` as MP4 (imageio + ffmpeg) or GIF, atomically; returns the path written.

    An ``.mp4`` path falls back to a ``.gif`` beside it when imageio's ffmpeg plugin is not installed.
    """
    try:
        import imageio.v3 as iio
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(expected("imageio for rollout videos", "an environment without it",
                                              ROBOTICS_EXTRA)) from err
    if len(frames) == 0:
        raise ShapeError(expected("at least one frame", "none", "record an episode with a renderable environment"))
    stack = np.stack([np.asarray(f) for f in frames])
    if stack.ndim != 4 or stack.shape[-1] != 3 or stack.dtype != np.uint8:
        raise ShapeError(expected("frames of shape (H, W, 3) uint8", f"{stack.shape} {stack.dtype}",
                                  "pass env.render() frames in rgb_array mode"))
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            warnings.warn(f"imageio-ffmpeg is not installed: writing a GIF instead of {path}", stacklevel=2)
            path = path.with_suffix(".gif")
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ConfigError(expected("a video path ending in .mp4 or .gif", str(path), "rename the output file"))
    if path.suffix.lower() == ".gif":
        return atomic_write_with(path, lambda tmp: iio.imwrite(tmp, stack, extension=".gif", duration=1000.0 / fps,
                                                               loop=0), suffix=".gif")
    return atomic_write_with(path, lambda tmp: iio.imwrite(tmp, stack, extension=".mp4", fps=fps), suffix=".mp4")
