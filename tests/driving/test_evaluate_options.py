"""``flowzoo driving evaluate``'s GoalFlow weights (goal selection, Eq. 5; trajectory scorer, Eq. 12) reach the
planner, change its choices as the formula says, and are refused where they would be ignored; the simulate command
moved to its own module keeps the public names importable."""

import inspect
import json

import pytest
import torch

pytest.importorskip("shapely")

from flowzoo.core.cli import run_main  # noqa: E402
from flowzoo.driving import cli_simulate, simulate  # noqa: E402
from flowzoo.driving.data import generate_scenes, save_scenes  # noqa: E402
from flowzoo.driving.evaluate import EvaluateConfig, evaluate_main  # noqa: E402
from flowzoo.driving.goalflow import GoalFlowPlanner, planner_inputs  # noqa: E402
from flowzoo.driving.train import load_planner, main  # noqa: E402

torch.set_num_threads(1)
WEIGHTS = ("w_dis", "w_dac", "lambda_dis", "lambda_progress")
TINY = ["--model.vocab_size", "16", "--model.dim", "16", "--model.scorer_dim", "8", "--model.heads", "2",
        "--model.flow_layers", "1", "--model.scorer_layers", "1", "--trainer.steps", "2", "--trainer.batch_size", "4",
        "--trainer.progress", "false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("driving_weights")
    save_scenes(root / "train", generate_scenes(20, seed=0), seed=0)
    save_scenes(root / "test", generate_scenes(3, seed=1), seed=1)
    assert main(["goalflow", "--scenes", str(root / "train"), "--out", str(root / "gf"), *TINY]) == 0
    return root


def test_option_defaults_are_the_planners_own():
    defaults = inspect.signature(GoalFlowPlanner).parameters
    cfg = EvaluateConfig(scenes="x")
    assert {name: getattr(cfg, name) for name in WEIGHTS} == {name: defaults[name].default for name in WEIGHTS}


def test_weights_reach_the_planner_through_the_command(run, capsys):
    out = run / "weights.json"
    argv = ["--checkpoint", str(run / "gf"), "--scenes", str(run / "test"), "--n_samples", "2", "--variant", "M2",
            "--w_dis", "0.2", "--w_dac", "0", "--lambda_dis", "2", "--lambda_progress", "0", "--out", str(out),
            "--progress", "false"]
    assert run_main(evaluate_main, argv, prog="flowzoo driving evaluate") == 0
    record = json.loads(out.read_text())
    assert {name: record["planner_settings"][name] for name in WEIGHTS} == {
        "w_dis": 0.2, "w_dac": 0.0, "lambda_dis": 2.0, "lambda_progress": 0.0}
    assert record["settings"]["w_dac"] == 0.0 and record["metrics"]["scenes"] == 3


def test_w_dac_decides_the_goal_as_equation_5_says(run):
    """With w_dis = 0 the goal maximises the DAC score alone; with w_dac = 0 the distance score alone."""
    scenes = generate_scenes(6, seed=3)
    dac_only = load_planner(run / "gf", n_samples=2, w_dis=0.0, w_dac=1.0)
    distance_only = load_planner(run / "gf", n_samples=2, w_dis=1.0, w_dac=0.0)
    inputs = planner_inputs(scenes)
    model = dac_only.model
    with torch.no_grad():
        tokens, ego = model.encoder(inputs["bev"], inputs["ego_state"], inputs["command"])
        distance, dac = model.scorer(model.vocabulary, tokens, ego)
    by_dac = dac_only.plan(scenes, variant="M2", generator=torch.Generator().manual_seed(0)).extras["goal_index"]
    by_distance = distance_only.plan(scenes, variant="M2",
                                     generator=torch.Generator().manual_seed(0)).extras["goal_index"]
    assert torch.equal(by_dac, dac.argmax(-1)) and torch.equal(by_distance, distance.argmax(-1))


@pytest.mark.parametrize("argv, needle", [
    (["--w_dac", "-1"], "--w_dac"),
    (["--lambda_progress", "nan"], "--lambda_progress"),
    (["--baseline", "constant_velocity", "--w_dac", "1"], "only with a GoalFlow checkpoint"),
])
def test_bad_weights_are_one_error_line(run, argv, needle, capsys, tmp_path):
    base = ["--scenes", str(run / "test"), "--out", str(tmp_path / "r.json"), "--progress", "false"]
    if "--baseline" not in argv:
        base += ["--checkpoint", str(run / "gf")]
    assert run_main(evaluate_main, base + argv, prog="flowzoo driving evaluate") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0]
    assert not (tmp_path / "r.json").exists()


def test_simulate_names_stay_importable_after_the_split():
    for name in ("EpisodeResult", "IDMPlanner", "GoalFlowPolicy", "goalflow_planner", "constant_velocity_planner",
                 "run_episodes", "summarize", "collect_demonstrations", "write_video", "check_video_path"):
        assert name in simulate.__all__ and hasattr(simulate, name)
    for name in ("SimulateConfig", "simulate_main", "PLANNERS"):
        assert name in cli_simulate.__all__ and hasattr(cli_simulate, name)
