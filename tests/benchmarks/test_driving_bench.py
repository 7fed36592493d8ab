"""benchmarks/driving.py: the quick path on a tiny setting writes its four tables with every planner, the goal
weight chosen on the validation split, and tracked beside raw scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import driving as bench


def test_tiny_run_writes_every_table(_results_to_tmp, tmp_path, monkeypatch):
    from benchmarks import driving_closed_loop

    forwarded = []
    monkeypatch.setattr(driving_closed_loop, "main", forwarded.append)
    tables = bench.main(["--closed_loop", "--quick", "--n_train", "40", "--n_test", "3", "--n_val", "2", "--train_steps", "2",
                         "--baseline_steps", "2", "--sigma_steps", "2", "--sigmas", "0.1", "--n_samples", "2",
                         "--step_list", "1,2", "--latency_scenes", "2", "--batch_size", "4", "--eval_steps", "1",
                         "--vocab_size", "8", "--w_dac_list", "0,3", "--work", str(tmp_path / "work")])
    names = [row["planner"] for row in tables["open_loop"]]
    assert names == ["constant velocity", "ego-MLP", "regressor", "M0", "M1", "M2", "M3", "GoalFlow, expert goal",
                     "expert plan"]
    assert [row["steps"] for row in tables["steps"]] == [1, 2] and tables["sigma"][0]["sigma"] == 0.1
    assert all(row["sample_spread"] >= 0 for row in tables["steps"])
    weights = json.loads((_results_to_tmp / "driving_goal_weights.quick.json").read_text())
    assert [(r["planner"], r["w_dac"]) for r in weights["rows"]] == [("M2", 0.0), ("M3", 0.0), ("M2", 3.0),
                                                                       ("M3", 3.0)]
    assert {r["split"] for r in weights["rows"]} == {"validation"} and tables["w_dac"] in (0.0, 3.0)
    record = json.loads((_results_to_tmp / "driving_open_loop.quick.json").read_text())
    assert record["quick"] and sum("paper ordering" in note for note in record["notes"]) == 2
    assert any(f"w_dac = {tables['w_dac']:g}" in note for note in record["notes"])
    assert all(0 <= row["score"] <= 1 and 0 <= row["raw_score"] <= 1 for row in record["rows"])
    assert (_results_to_tmp / "driving_steps.quick.json").is_file()
    assert (_results_to_tmp / "driving_sigma.quick.json").is_file()
    assert forwarded == [["--quick", "--seed", "0", "--work", str(tmp_path / "work" / "closed_loop")]]


def test_goal_weight_choice_and_sample_spread():
    assert bench.choose_weight({0.0: 0.6, 0.3: 0.8, 3.0: 0.7}) == 0.3
    assert bench.choose_weight({0.0: 0.7, 3.0: 0.7, 1.0: 0.6}) == 3.0  # a tie goes to the paper's weight
    assert bench.choose_weight({0.3: 0.7, 1.0: 0.7}) == 0.3
    plans = [{"samples": np.array([[[0.0, 0.0, 0.0]], [[2.0, 0.0, 0.0]]])},  # end points 1 m from their mean
             {"samples": np.array([[[0.0, 0.0, 0.0]], [[0.0, 6.0, 0.0]]])}]  # 3 m
    assert bench.sample_spread(plans) == pytest.approx(2.0)
