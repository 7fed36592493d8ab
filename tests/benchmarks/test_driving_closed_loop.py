"""benchmarks/driving_closed_loop.py: the quick path on a tiny setting drives every planner and writes its table."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("highway_env")
pytest.importorskip("shapely")

from benchmarks import driving_closed_loop as bench  # noqa: E402


def test_tiny_run_drives_every_planner_and_writes_the_table(_results_to_tmp, tmp_path):
    rows = bench.main(["--quick", "--envs", "highway-fast-v0", "--demo_episodes", "1", "--demo_max_steps", "10",
                       "--train_steps", "2", "--batch_size", "4", "--vocab_size", "2", "--episodes", "1",
                       "--n_samples", "2", "--max_steps", "10", "--work", str(tmp_path / "work")])
    assert [(r["planner"], r["steps"]) for r in rows] == [("IDM (expert)", None), ("constant velocity", None),
                                                          ("unguided FM (M0)", 1), ("GoalFlow (M3)", 1),
                                                          ("GoalFlow (M3)", 5)]
    assert all(r["env"] == "highway-fast-v0" and r["episodes"] == 1 and r["errors"] == 0 for r in rows)
    assert rows[0]["success_rate"] == 1.0 and rows[0]["progress_m"] > 30.0  # the expert drives 2 s at ~25 m/s
    assert all(r["planner_ms"] > 0 for r in rows[2:])
    record = json.loads((_results_to_tmp / "driving_closed_loop.quick.json").read_text())
    assert record["quick"] and record["columns"][:2] == ["env", "planner"] and len(record["rows"]) == 5
    assert any("2 states recorded from 1 IDM demonstration episodes" in note for note in record["notes"])
    assert (tmp_path / "work" / "goalflow" / "planner.json").is_file()
    gif, png = bench.figures(tmp_path / "work" / "goalflow", tmp_path / "figures", seconds=1.0, n_samples=2)
    from PIL import Image

    with Image.open(gif) as clip, Image.open(png) as figure:
        assert clip.n_frames == 5 and figure.width > 100  # 1 s at highway-fast-v0's 5 Hz


def test_unknown_environment_is_refused_before_any_work(tmp_path):
    from flowzoo.core.errors import ConfigError

    with pytest.raises(ConfigError, match="highway-fast-v0, merge-v0"):
        bench.main(["--quick", "--envs", "highway-v9", "--work", str(tmp_path / "work")])
    with pytest.raises(ConfigError, match="at least one environment"):
        bench.main(["--quick", "--envs", " , ", "--work", str(tmp_path / "work")])
    assert not (tmp_path / "work" / "goalflow").exists()
