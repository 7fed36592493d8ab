"""Closed loop in highway-env: the adapter, the tracker, episodes, failures, demonstrations and the command line."""

import numpy as np
import pytest

pytest.importorskip("highway_env")
pytest.importorskip("shapely")

from flowzoo.core.errors import ConfigError, ShapeError  # noqa: E402
from flowzoo.driving.highway import ENV_IDS, HighwaySim, check_env_id, to_ego_frame  # noqa: E402
from flowzoo.driving.tracking import Tracker, bicycle_step  # noqa: E402
from flowzoo.driving.scenes import DT, HORIZON  # noqa: E402
from flowzoo.driving.cli_simulate import simulate_main  # noqa: E402
from flowzoo.driving.simulate import (IDMPlanner, constant_velocity_planner, collect_demonstrations,  # noqa: E402
                                      run_episodes, summarize)


@pytest.fixture(scope="module")
def sim():
    return HighwaySim("highway-fast-v0")


def _track(plan: np.ndarray, speed: float, dt: float = 0.1, seconds: float = 4.0) -> np.ndarray:
    """Drive highway-env's bicycle model from the origin with the tracker; returns the visited states."""
    tracker, state, states = Tracker(), np.array([0.0, 0.0, 0.0, speed]), []
    tracker.set_plan(plan, np.zeros(3), speed, 0.0)
    for k in range(int(round(seconds / dt))):
        state = bicycle_step(state, *tracker.control(state[:3], state[3], k * dt), dt)
        states.append(state)
    return np.array(states)


def test_tracker_follows_a_straight_reference():
    plan = np.column_stack([10.0 * DT * np.arange(1, HORIZON + 1), np.zeros(HORIZON), np.zeros(HORIZON)])
    states = _track(plan, 8.0)  # starts slower than the plan: the speed loop must catch up
    assert np.abs(states[:, 1]).max() < 1e-6
    assert abs(states[-1, 3] - 10.0) < 0.5
    assert abs(states[-1, 0] - plan[-1, 0]) < 3.0


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_tracker_follows_a_circular_arc(sign):
    radius, speed = 40.0, 10.0
    angle = speed * DT * np.arange(1, HORIZON + 1) / radius
    plan = np.column_stack([radius * np.sin(angle), sign * radius * (1 - np.cos(angle)), sign * angle])
    states = _track(plan, speed)
    centre = np.array([0.0, sign * radius])
    cross_track = np.abs(np.linalg.norm(states[:, :2] - centre, axis=1) - radius)
    assert cross_track.max() < 0.5  # pure pursuit cuts corners by decimetres; a wrong sign leaves by metres
    assert np.linalg.norm(states[-1, :2] - plan[-1, :2]) < 1.0


def test_tracker_rejects_a_bad_plan():
    with pytest.raises(ShapeError):
        Tracker().set_plan(np.full((8, 3), np.nan), np.zeros(3), 1.0, 0.0)


def test_to_ego_frame_round_trip():
    pose = np.array([3.0, -2.0, 0.7])
    c, s = np.cos(pose[2]), np.sin(pose[2])
    local = np.array([[5.0, 1.0]])
    world = pose[:2] + np.array([[c * 5.0 - s * 1.0, s * 5.0 + c * 1.0]])
    assert np.allclose(to_ego_frame(world, pose), local)


def test_bev_puts_a_hand_placed_vehicle_where_it_is(sim):
    from highway_env.vehicle.kinematics import Vehicle

    sim.reset(0)
    road, ego = sim.env.road, sim.vehicle
    road.vehicles = [ego]
    # 20 m ahead and one lane (4 m) to the ego's left: highway-env's y points to the right of travel.
    road.vehicles.append(Vehicle(road, ego.position + np.array([20.0, -4.0]), heading=0.0, speed=0.0))
    bev, ego_state, command = sim.observe()
    spec = sim.spec
    row = int((spec.x_range[1] - 20.0) / spec.resolution[0])
    col_left, col_right = (int((spec.y_range[1] - y) / spec.resolution[1]) for y in (4.0, -4.0))
    assert bev[2, row, col_left] == 255 and bev[2, row, col_right] == 0
    assert bev[2].sum() / 255 < 20  # one 5 m x 2 m car at 1 m pixels
    ego_row, ego_col = int(spec.x_range[1] / spec.resolution[0]), int(spec.y_range[1] / spec.resolution[1])
    assert bev[0, ego_row, ego_col] == 255 and bev[1].any()
    assert ego_state[0] == pytest.approx(ego.speed) and command == 1


def test_idm_episode_runs_headless_and_succeeds(sim):
    results = run_episodes(IDMPlanner(), "highway-fast-v0", episodes=1, seed=0, max_steps=60, progress=False,
                           sim=sim)
    (r,) = results
    assert r.error is None and r.success and not r.collided and r.end == "max_steps"
    assert r.progress_m > 150.0 and 15.0 < r.mean_speed < 35.0 and r.comfort > 0.5 and r.plans == 12
    summary = summarize(results)
    assert summary["success_rate"] == 1.0 and summary["collisions_per_km"] == 0.0


def test_failures_are_counted_not_raised(sim):
    calls = {"n": 0}
    original = sim.step

    def flaky_step(accel, steering):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulator exploded")
        return original(accel, steering)

    sim.step = flaky_step
    try:
        results = run_episodes(constant_velocity_planner, "highway-fast-v0", episodes=2, seed=0, max_steps=10,
                               progress=False, sim=sim)
    finally:
        del sim.step
    assert not results[0].success and "env: RuntimeError: simulator exploded" in results[0].error
    assert results[1].error is None and results[1].steps == 10

    def broken_planner(bev, ego_state, command):
        raise ValueError("no plan")

    (r,) = run_episodes(broken_planner, "highway-fast-v0", episodes=1, max_steps=5, progress=False, sim=sim)
    assert not r.success and r.error.startswith("planner: ValueError: no plan") and r.end == "error"


def test_demonstrations_follow_the_scene_schema(tmp_path):
    from flowzoo.driving.data import load_scenes, save_scenes, scene_arrays
    from flowzoo.driving.geometry import polygon_from_vertices
    from flowzoo.driving.metrics import evaluate_plans

    arrays = collect_demonstrations("highway-fast-v0", 1, seed=3, every=5, max_steps=10)
    assert arrays["bev"].shape == (2, 4, 64, 64) and arrays["trajectory"].shape == (2, HORIZON, 3)
    loaded, _ = load_scenes(save_scenes(tmp_path / "demo", arrays))
    scene = scene_arrays(loaded, 0)
    scores = evaluate_plans(scene["trajectory"], drivable=polygon_from_vertices(scene["drivable"]),
                            agent_futures=scene["agent_futures"], agent_sizes=scene["agent_boxes"][:, 3:5],
                            routes=list(scene["routes"]), reference_progress=float(scene["reference_progress"]),
                            initial_speed=float(scene["ego_state"][0]))
    assert scores["nc"][0] == 1 and scores["dac"][0] == 1 and scores["ep"][0] == pytest.approx(1.0, abs=1e-3)
    assert scene["trajectory"][-1, 0] > 50.0  # about 25 m/s for 4 s


def test_bad_env_id_is_one_error_line(capsys, tmp_path):
    from flowzoo.core.cli import run_main

    with pytest.raises(ConfigError, match="highway-fast-v0, merge-v0"):
        check_env_id("highway-v9")
    assert run_main(simulate_main, ["--env", "highway-v9"], prog="flowzoo driving simulate") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error:") and all(e in err[0] for e in ENV_IDS) and len(err) <= 2
    video = tmp_path / "run.gif"
    video.write_bytes(b"old")
    assert run_main(simulate_main, ["--video", str(video), "--episodes", "1"], prog="flowzoo driving simulate") == 2
    assert "--overwrite" in capsys.readouterr().err and video.read_bytes() == b"old"


def test_simulate_command_runs_and_writes_a_gif(capsys, tmp_path):
    video = tmp_path / "run.gif"
    assert simulate_main(["--planner", "constant_velocity", "--episodes", "1", "--max_steps", "8", "--video",
                          str(video), "--progress", "false"]) == 0
    assert "constant_velocity: 1 episodes" in capsys.readouterr().out
    from PIL import Image

    with Image.open(video) as gif:
        assert gif.n_frames == 8 and np.asarray(gif.convert("RGB")).max() > 0  # offscreen frames are not black


def test_perturb_moves_the_ego_to_its_left_and_turns_it(sim):
    sim.reset(0)
    before = sim.pose
    sim.perturb(1.5, 0.1)
    after = to_ego_frame(sim.pose, before)
    assert np.allclose(after, [0.0, 1.5, 0.1], atol=1e-9)  # hand computed: 1.5 m left, 0.1 rad counter-clockwise
    sim.reset(0)
    expert = sim.swap_in_expert()
    sim.perturb(1.0, 0.0)
    plan = sim.expert_plan()  # the expert steers back to its lane centre, 1 m to the right, within 2 s
    assert expert.target_lane_index == sim.vehicle.lane_index and np.allclose(plan[2:4, 1], -1.0, atol=0.05)


def test_perturbed_demonstrations_are_seeded():
    kwargs = dict(every=2, max_steps=12, lateral_noise=1.0, heading_noise=0.05)
    a = collect_demonstrations("highway-fast-v0", 1, seed=5, **kwargs)
    b = collect_demonstrations("highway-fast-v0", 1, seed=5, **kwargs)
    plain = collect_demonstrations("highway-fast-v0", 1, seed=5, every=2, max_steps=12)
    assert np.array_equal(a["trajectory"], b["trajectory"]) and np.array_equal(a["bev"], b["bev"])
    assert len(a["bev"]) == len(plain["bev"]) and not np.allclose(a["trajectory"], plain["trajectory"])
    with pytest.raises(ConfigError, match="lateral_noise"):
        collect_demonstrations("highway-fast-v0", 1, lateral_noise=-1.0)
    with pytest.raises(ConfigError, match="at least one environment"):
        collect_demonstrations([], 1)


def test_demonstrations_of_several_environments_stack_into_one_set():
    arrays = collect_demonstrations(["highway-fast-v0", "merge-v0"], 1, seed=0, every=5, max_steps=5)
    assert arrays["bev"].shape[0] == 2 and arrays["agent_boxes"].shape[:2] == arrays["agent_mask"].shape


class _NoisyPlanner:
    """GoalFlow's plan() interface: straight ahead at 20 m/s with seeded lateral noise."""

    def plan(self, batch, *, steps, variant, generator):
        import torch

        x = torch.arange(1, HORIZON + 1, dtype=torch.float32) * 10.0
        y = 0.3 * torch.randn(HORIZON, generator=generator)
        return type("Plan", (), {"trajectory": torch.stack([x, y, torch.zeros(HORIZON)], -1)[None]})


def test_goalflow_policy_is_reseeded_per_episode(sim):
    from flowzoo.driving.simulate import goalflow_planner

    runs = [run_episodes(goalflow_planner(_NoisyPlanner(), steps=1), "highway-fast-v0", episodes=2, seed=seed,
                         max_steps=15, progress=False, sim=sim) for seed in (0, 0, 1)]
    assert [r.progress_m for r in runs[0]] == [r.progress_m for r in runs[1]]  # the same seeds drive the same
    assert runs[0][1].progress_m == runs[2][0].progress_m  # episode seed 1 alike in both runs
    assert all(r.error is None for run in runs for r in run)


def test_checkpoint_of_another_format_is_one_error_line(capsys, tmp_path):
    import json

    from flowzoo.core.cli import run_main
    from flowzoo.driving.raster import CHANNELS

    run = tmp_path / "run"
    run.mkdir()
    (run / "planner.json").write_text(json.dumps({"format": "flowzoo-driving-planner", "version": 1, "horizon": 6,
                                                  "channels": list(CHANNELS), "raster_size": 64}))
    for argv, match in ((["--checkpoint", str(run)], "horizon 6"),
                        (["--planner", "checkpoint"], "--checkpoint RUN"),
                        (["--checkpoint", str(tmp_path / "nope")], "existing run directory")):
        assert run_main(simulate_main, argv + ["--episodes", "1"], prog="flowzoo driving simulate") == 2
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err


def test_simulate_drives_a_goalflow_checkpoint_trained_on_demonstrations(capsys, tmp_path):
    from flowzoo.core.training import TrainerConfig
    from flowzoo.driving.data import save_scenes
    from flowzoo.driving.goalflow import GoalFlowConfig
    from flowzoo.driving.train import DrivingTrainConfig, train_planner

    scenes = save_scenes(tmp_path / "demo", collect_demonstrations("highway-fast-v0", 1, seed=9, max_steps=10))
    trainer = TrainerConfig(steps=2, batch_size=2, checkpoint_every=0, out_dir=str(tmp_path / "run"), progress=False,
                            tensorboard=False, device="cpu")
    train_planner(DrivingTrainConfig(method="goalflow", scenes=str(scenes), trainer=trainer,
                                     model=GoalFlowConfig(dim=16, scorer_dim=8, heads=2, vocab_size=2)))
    argv = ["--checkpoint", str(tmp_path / "run"), "--episodes", "1", "--max_steps", "6", "--n_samples", "2",
            "--progress", "false"]
    assert simulate_main(argv) == 0
    assert "highway-fast-v0 checkpoint: 1 episodes" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="n_samples"):
        simulate_main(argv[:-4] + ["--n_samples", "0"])
    with pytest.raises(ConfigError, match="M0, M1, M2, M3"):  # refused before any episode, not 1 failure each
        simulate_main(argv + ["--variant", "gt_goal"])
