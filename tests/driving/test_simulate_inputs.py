"""Closed loop beyond the highway: roundabout and intersection run headless; ``flowzoo driving simulate``
refuses inputs it would otherwise drop or fail on episode by episode; the .mp4 video."""

import numpy as np
import pytest

pytest.importorskip("highway_env")
pytest.importorskip("shapely")

from flowzoo.core.cli import run_main  # noqa: E402
from flowzoo.core.errors import ConfigError, MissingDependencyError  # noqa: E402
from flowzoo.driving.data import load_scenes, save_scenes  # noqa: E402
from flowzoo.driving.scenes import HORIZON  # noqa: E402
from flowzoo.driving.cli_simulate import simulate_main  # noqa: E402
from flowzoo.driving.simulate import (GoalFlowPolicy, IDMPlanner, collect_demonstrations, run_episodes,  # noqa: E402
                                      summarize, write_video)


@pytest.mark.parametrize("env_id", ["roundabout-v0", "intersection-v0"])
def test_roundabout_and_intersection_run_headless_and_record_scenes(env_id, tmp_path):
    results = run_episodes(IDMPlanner(), env_id, episodes=1, seed=0, max_steps=10, progress=False)
    assert results[0].error is None and results[0].steps == 10 and results[0].plans == 2
    assert summarize(results)["progress_m"] > 3.0  # the expert moved (about 8-10 m/s for 0.67 s)
    arrays = collect_demonstrations(env_id, 1, seed=0, every=5, max_steps=5)
    loaded, meta = load_scenes(save_scenes(tmp_path / "demo", arrays))  # the schema's own checks pass
    assert loaded["bev"].shape == (1, len(meta["channels"]), 64, 64)
    assert loaded["trajectory"].shape == (1, HORIZON, 3) and np.isfinite(loaded["trajectory"]).all()


def _error(argv, capsys):
    code = run_main(simulate_main, argv, prog="flowzoo driving simulate")
    return code, capsys.readouterr().err


def test_a_checkpoint_with_another_planner_is_refused_not_ignored(capsys, tmp_path):
    code, err = _error(["--planner", "idm", "--checkpoint", str(tmp_path), "--episodes", "1"], capsys)
    assert code == 2 and err.startswith("error:") and "--planner checkpoint" in err and "Traceback" not in err


def test_a_bad_video_suffix_is_refused_before_any_episode(capsys, tmp_path):
    code, err = _error(["--planner", "constant_velocity", "--video", str(tmp_path / "run.avi")], capsys)
    assert code == 2 and ".gif or .mp4" in err and not (tmp_path / "run.avi").exists()
    with pytest.raises(ConfigError, match=".gif or .mp4"):  # the library call checks it before the episodes too
        run_episodes(IDMPlanner(), "highway-fast-v0", episodes=1, video=tmp_path / "run.webm", progress=False)


def test_a_variant_closed_loop_cannot_drive_is_refused():
    for variant in ("gt_goal", "M9"):
        with pytest.raises(ConfigError, match="M0, M1, M2, M3"):
            GoalFlowPolicy(object(), variant=variant)
    assert GoalFlowPolicy(object(), variant="M0").variant == "M0"


def test_mp4_video_round_trip_and_missing_writer(tmp_path, monkeypatch):
    pytest.importorskip("imageio_ffmpeg")
    import imageio.v2 as imageio

    frames = [np.full((64, 96, 3), 40 * i, dtype=np.uint8) for i in range(5)]
    path = write_video(frames, tmp_path / "run.mp4", fps=5.0)
    back = imageio.mimread(path)
    assert len(back) == 5 and abs(float(back[-1].mean()) - 160.0) < 8.0  # the last frame's grey level survives
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "imageio_ffmpeg"
                        else real(name, *a))
    with pytest.raises(MissingDependencyError, match="imageio-ffmpeg"):
        write_video(frames, tmp_path / "again.mp4")
    assert not (tmp_path / "again.mp4").exists()
