"""benchmarks/driving.py: the quick path on a tiny setting writes its three tables with every planner."""

from __future__ import annotations

import json

from benchmarks import driving as bench


def test_tiny_run_writes_every_table(_results_to_tmp, tmp_path):
    tables = bench.main(["--quick", "--n_train", "40", "--n_test", "3", "--train_steps", "2", "--baseline_steps",
                         "2", "--sigma_steps", "2", "--sigmas", "0.1", "--n_samples", "2", "--step_list", "1,2",
                         "--latency_scenes", "2", "--batch_size", "4", "--eval_steps", "1", "--vocab_size", "8",
                         "--work", str(tmp_path / "work")])
    names = [row["planner"] for row in tables["open_loop"]]
    assert names == ["constant velocity", "ego-MLP", "regressor", "M0", "M1", "M2", "M3", "GoalFlow, expert goal"]
    assert [row["steps"] for row in tables["steps"]] == [1, 2] and tables["sigma"][0]["sigma"] == 0.1
    record = json.loads((_results_to_tmp / "driving_open_loop.quick.json").read_text())
    assert record["quick"] and any("paper ordering" in note for note in record["notes"])
    assert all(0 <= row["score"] <= 1 for row in record["rows"])
    assert (_results_to_tmp / "driving_steps.quick.json").is_file()
    assert (_results_to_tmp / "driving_sigma.quick.json").is_file()
