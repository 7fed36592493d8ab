"""SuccessTracker / BestKRecorder: best-K means beside the last success, JSON round trip, plot, bad input."""

import json

import numpy as np
import pytest

from flowzoo.core.errors import ConfigError
from flowzoo.robotics.rollout import EvalResult
from flowzoo.robotics.tracking import BestKRecorder, SuccessTracker


def test_best_k_and_last_are_reported_side_by_side(tmp_path):
    tracker = SuccessTracker(ks=(3, 5))
    tracker.record(0, 0.1)
    assert tracker.summary()["best_3_complete"] is False and tracker.best_k(3) == pytest.approx(0.1)
    rates = [0.5, 0.9, 0.85, 0.3, 0.95, 0.2]
    for step, rate in enumerate(rates, start=1):
        tracker.record(100 * step, rate)
    summary = tracker.summary()
    assert summary["last"] == 0.2
    assert summary["best_3_mean"] == pytest.approx((0.95 + 0.9 + 0.85) / 3)
    assert summary["best_5_mean"] == pytest.approx((0.95 + 0.9 + 0.85 + 0.5 + 0.3) / 5)
    assert summary["best_5_complete"] and summary["evaluations"] == 7
    table = tracker.table()
    assert "last checkpoint" in table and "best-3 mean" in table and "| 0.200 |" in table
    tracker.record(800, EvalResult("t", 0, [], 0.4, 0, 0, 0, 0.0, 0.0, 0.0, 1.0, None, 0.0))
    assert tracker.last == 0.4
    restored = SuccessTracker.from_dict(json.loads(tracker.save(tmp_path / "tracker.json").read_text()))
    assert restored.summary() == tracker.summary()
    png = tracker.plot(tmp_path / "success.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    recorder = BestKRecorder(2)
    assert np.isnan(recorder.value)
    for bad in (1.5, float("nan"), True):
        with pytest.raises(ConfigError):
            tracker.record(900, bad)
    with pytest.raises(ConfigError, match="training order"):
        tracker.record(5, 0.5)
    with pytest.raises(ConfigError):
        BestKRecorder(0)
