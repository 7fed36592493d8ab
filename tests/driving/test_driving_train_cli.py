"""``python -m flowzoo.driving.train`` and ``flowzoo driving evaluate``: happy paths on tiny runs and bad input
(one ``error:`` line, exit 2)."""

import json
import shutil

import numpy as np
import pytest
import torch

from flowzoo.core.cli import run_main
from flowzoo.core.errors import CheckpointError
from flowzoo.driving.baselines import RegressionPlanner
from flowzoo.driving.data import generate_scenes, save_scenes
from flowzoo.driving.evaluate import evaluate_main
from flowzoo.driving.goalflow import GoalFlowPlanner
from flowzoo.driving.train import PLANNER_FILE, load_planner, main

torch.set_num_threads(1)
TINY = ["--model.vocab_size", "16", "--model.dim", "16", "--model.scorer_dim", "8", "--model.heads", "2",
        "--model.flow_layers", "1", "--model.scorer_layers", "1", "--trainer.steps", "3", "--trainer.batch_size", "4",
        "--trainer.progress", "false", "--baseline_dim", "8"]


@pytest.fixture(scope="module")
def scene_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("driving_cli")
    save_scenes(root / "train", generate_scenes(50, seed=0), seed=0)
    save_scenes(root / "test", generate_scenes(4, seed=1), seed=1)
    return root


@pytest.fixture(scope="module")
def goalflow_run(scene_dirs):
    run = scene_dirs / "runs" / "gf"
    assert main(["goalflow", "--scenes", str(scene_dirs / "train"), "--out", str(run), *TINY]) == 0
    return run


def error_lines(capsys):
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith("error:")], err


def test_train_goalflow_writes_a_loadable_planner(goalflow_run, scene_dirs):
    info = json.loads((goalflow_run / PLANNER_FILE).read_text())
    assert info["method"] == "goalflow" and info["horizon"] == 8 and info["scene_count"] == 50
    summary = json.loads((goalflow_run / "summary.json").read_text())
    assert summary["steps"] == 3 and np.isfinite(summary["final_metrics"]["loss"])
    planner = load_planner(goalflow_run, n_samples=3)
    assert isinstance(planner, GoalFlowPlanner) and planner.model.vocabulary.shape == (16, 3)
    assert planner.model.vocabulary.abs().sum() > 0  # the k-means vocabulary came back with the weights
    plan = planner.plan(generate_scenes(2, seed=5), variant="M2")
    assert plan.trajectory.shape == (2, 8, 3) and plan.samples.shape == (2, 3, 8, 3)


@pytest.mark.parametrize("method", ["ego_mlp", "regressor"])
def test_train_baselines(scene_dirs, method):
    run = scene_dirs / "runs" / method
    assert main([method, "--scenes", str(scene_dirs / "train"), "--out", str(run), *TINY]) == 0
    planner = load_planner(run)
    assert isinstance(planner, RegressionPlanner)
    assert planner.plan(generate_scenes(1, seed=5)).trajectory.shape == (1, 8, 3)


def test_evaluate_cli_writes_table_json_and_plots(goalflow_run, scene_dirs, capsys):
    argv = ["--checkpoint", str(goalflow_run), "--scenes", str(scene_dirs / "test"), "--steps", "1",
            "--n_samples", "4", "--variant", "M3", "--plots", "2", "--progress", "false"]
    assert run_main(evaluate_main, argv, prog="flowzoo driving evaluate") == 0
    out = goalflow_run / "eval" / "M3_steps1.json"
    record = json.loads(out.read_text())
    assert record["metrics"]["scenes"] == 4 and 0 <= record["metrics"]["score"] <= 1
    assert len(record["per_scene"]["score"]) == 4 and record["planner"]["method"] == "goalflow"
    assert "| M3_steps1 |" in out.with_suffix(".md").read_text()
    assert len(list((goalflow_run / "eval" / "M3_steps1_plots").glob("*.png"))) == 2
    assert "| M3_steps1 |" in capsys.readouterr().out
    assert run_main(evaluate_main, argv, prog="flowzoo driving evaluate") == 2  # no silent overwrite
    assert "exists" in error_lines(capsys)[1]
    cv = scene_dirs / "cv.json"
    assert run_main(evaluate_main, ["--baseline", "constant_velocity", "--scenes", str(scene_dirs / "test"),
                                    "--out", str(cv), "--progress", "false"], prog="flowzoo driving evaluate") == 0
    assert json.loads(cv.read_text())["metrics"]["nc"] >= 0


def test_flowzoo_train_driving_dispatches(scene_dirs):
    from flowzoo.driving.cli import commands

    assert {"make-scenes", "train", "evaluate"} <= set(commands())
    run = scene_dirs / "runs" / "dispatch"
    assert commands()["train"](["ego_mlp", "--scenes", str(scene_dirs / "train"), "--out", str(run), *TINY]) == 0


@pytest.mark.parametrize("case", ["missing_scenes", "unknown_method", "wrong_schema", "existing_run",
                                  "vocab_too_large"])
def test_train_bad_input_is_one_error_line(case, scene_dirs, goalflow_run, tmp_path, capsys):
    scenes, out = str(scene_dirs / "train"), str(tmp_path / "run")
    argv = {"missing_scenes": ["goalflow", "--scenes", str(tmp_path / "nope"), "--out", out, *TINY],
            "unknown_method": ["diffusion", "--scenes", scenes, "--out", out],
            "wrong_schema": ["goalflow", "--scenes", str(tmp_path / "bad"), "--out", out, *TINY],
            "existing_run": ["goalflow", "--scenes", scenes, "--out", str(goalflow_run), *TINY],
            "vocab_too_large": ["goalflow", "--scenes", scenes, "--out", out, *TINY, "--model.vocab_size", "999"],
            }[case]
    if case == "wrong_schema":
        shutil.copytree(scene_dirs / "test", tmp_path / "bad")
        with np.load(tmp_path / "bad" / "shard_00000.npz") as data:
            arrays = {k: data[k] for k in data.files if k != "routes"}
        np.savez(tmp_path / "bad" / "shard_00000.npz", **arrays)
    assert run_main(main, argv, prog="python -m flowzoo.driving.train") == 2
    lines, err = error_lines(capsys)
    assert len(lines) == 1 and "Traceback" not in err
    assert {"missing_scenes": "no such path", "unknown_method": "method", "wrong_schema": "routes",
            "existing_run": "checkpoints", "vocab_too_large": "vocabulary size"}[case] in err


def test_mismatched_checkpoint_is_a_clear_error(goalflow_run, scene_dirs, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(goalflow_run, other)
    info = json.loads((other / PLANNER_FILE).read_text())
    (other / PLANNER_FILE).write_text(json.dumps({**info, "horizon": 6}))
    with pytest.raises(CheckpointError, match="horizon"):
        load_planner(other, horizon=8)
    assert run_main(evaluate_main, ["--checkpoint", str(other), "--scenes", str(scene_dirs / "test"),
                                    "--out", str(tmp_path / "m.json"), "--progress", "false"],
                    prog="flowzoo driving evaluate") == 2
    assert "horizon" in error_lines(capsys)[1]
    (other / PLANNER_FILE).write_text(json.dumps({**info, "model": {**info["model"], "dim": 32}}))
    with pytest.raises(CheckpointError, match="weights"):
        load_planner(other)
    with pytest.raises(CheckpointError, match=PLANNER_FILE):
        load_planner(tmp_path)
