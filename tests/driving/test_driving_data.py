"""Scene schema round trip and its errors, the raster, the vocabulary and normalisation, and the
make-scenes command's bad-input handling."""

import contextlib
import io

import numpy as np
import pytest
import torch

pytest.importorskip("shapely")

from flowzoo.core.cli import run_main  # noqa: E402
from flowzoo.core.errors import ConfigError, EmptyInputError  # noqa: E402
from flowzoo.driving.cli import commands, make_scenes_main  # noqa: E402
from flowzoo.driving.data import (SceneDataset, SceneSchemaError, generate_scenes, load_scenes,  # noqa: E402
                                  save_scenes, scene_arrays)
from flowzoo.driving.geometry import polygon_from_vertices  # noqa: E402
from flowzoo.driving.metrics import evaluate_plans  # noqa: E402
from flowzoo.driving.raster import RasterSpec, pixel_centres, rasterize  # noqa: E402
from flowzoo.driving.vocabulary import (build_vocabulary, dac_targets, denormalize_trajectory,  # noqa: E402
                                        distance_targets, normalize_trajectory)


@pytest.fixture(scope="module")
def arrays():
    return generate_scenes(12, seed=0)


def test_save_load_round_trip_in_shards(arrays, tmp_path):
    save_scenes(tmp_path / "scenes", arrays, seed=0, shard_size=5)
    assert len(list((tmp_path / "scenes").glob("shard_*.npz"))) == 3
    loaded, meta = load_scenes(tmp_path / "scenes")
    assert meta["count"] == 12 and meta["horizon"] == 8 and meta["dt"] == 0.5
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def test_saved_expert_plans_score_full_marks_with_the_stored_geometry(arrays):
    for i in range(len(arrays["bev"])):
        s = scene_arrays(arrays, i)
        out = evaluate_plans(s["trajectory"], drivable=polygon_from_vertices(s["drivable"]),
                             agent_futures=s["agent_futures"], agent_sizes=s["agent_boxes"][:, 3:5],
                             routes=list(s["routes"]), reference_progress=float(s["reference_progress"]),
                             initial_speed=float(s["ego_state"][0]), initial_yaw_rate=float(s["ego_state"][2]))
        assert out["nc"][0] == out["dac"][0] == out["ttc"][0] == out["comfort"][0] == 1
        assert out["ep"][0] > 0.2 and out["score"][0] > 0.6


def test_never_overwrites_without_the_flag(arrays, tmp_path):
    target = tmp_path / "scenes"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="overwrite"):
        save_scenes(target, arrays)
    assert (target / "keep.txt").read_text() == "mine"
    save_scenes(target, arrays, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "meta.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["scenes"]  # no staging left behind


@pytest.mark.parametrize("damage, match", [
    (lambda a: a.pop("trajectory"), "no \\['trajectory'\\]"),
    (lambda a: a.__setitem__("bev", a["bev"].astype(np.float64)), "bev of dtype uint8"),
    (lambda a: a.__setitem__("trajectory", a["trajectory"][:, :5]), "with T = "),
    (lambda a: a.__setitem__("goal_mask", a["goal_mask"][:3]), "goal_mask of shape"),
])
def test_wrong_schema_gives_a_clear_error(arrays, tmp_path, damage, match):
    broken = dict(arrays)
    damage(broken)
    with pytest.raises(SceneSchemaError, match=match):
        save_scenes(tmp_path / "bad", broken)
    assert not (tmp_path / "bad").exists()
    save_scenes(tmp_path / "good", arrays)
    np.savez(tmp_path / "good" / "shard_00000.npz", **broken)
    with pytest.raises(SceneSchemaError, match=match):
        load_scenes(tmp_path / "good")
    with pytest.raises(SceneSchemaError, match="meta.json"):
        load_scenes(tmp_path / "missing")


def test_dataset_items_follow_the_batch_convention(arrays):
    item = SceneDataset(arrays)[3]
    assert item["x1"].shape == (8, 3) and item["bev"].shape == (4, 64, 64) and 0 <= item["bev"].min() <= 1
    torch.testing.assert_close(item["goal"], item["x1"][-1])  # the goal is the expert's last pose


def test_raster_channels_on_a_hand_made_scene():
    spec = RasterSpec(size=8, x_range=(0.0, 8.0), y_range=(-4.0, 4.0))
    road = polygon_from_vertices(np.array([[0.0, -1.0], [8.0, -1.0], [8.0, 1.0], [0.0, 1.0]]))
    lane = np.array([[0.0, 0.25], [8.0, 0.25]])
    box = np.array([[6.5, -2.5, 0.0, 1.0, 1.0]])
    future = np.array([[[6.5, 2.5, 0.0], [0.5, 2.5, 0.0]]])
    bev = rasterize(road, [lane], box, future, spec)
    assert bev[0].sum(1).tolist() == [2 * 255] * 8  # two columns of road on each row
    assert bev[1][:, 3].tolist() == [255] * 8 and bev[1].sum() == 8 * 255  # y = 0.25 lies in column 3
    assert np.argwhere(bev[2]).tolist() == [[1, 6]]  # x = 6.5 -> row 1, y = −2.5 -> column 6
    assert bev[3][1, 1] == 255 and bev[3][7, 1] == 223  # the later box is dimmer (1/8 less per step)
    np.testing.assert_allclose(pixel_centres(spec)[1, 6], [6.5, -2.5])


def test_normalisation_round_trip_and_known_values():
    traj = torch.tensor([[[6.0, 1.5, 0.5], [12.0, 3.0, -1.0], [30.0, -7.5, 3.0]]])
    z = normalize_trajectory(traj)
    torch.testing.assert_close(z[0, 0, :3], torch.tensor([0.1, 0.1, float(np.arctanh(0.5 / np.pi))], dtype=torch.float32))
    torch.testing.assert_close(denormalize_trajectory(z), traj, atol=1e-4, rtol=1e-5)
    rotated = z[0, 1, 3:5]  # the second copy is rotated by 36 degrees
    c, s = np.cos(np.pi / 5), np.sin(np.pi / 5)
    torch.testing.assert_close(rotated, torch.tensor([0.2 * c - 0.2 * s, 0.2 * s + 0.2 * c], dtype=torch.float32))


def test_vocabulary_is_deterministic_and_targets_are_distributions(arrays):
    ends = torch.from_numpy(arrays["trajectory"][:, -1])
    a, b = build_vocabulary(ends, 5, seed=0), build_vocabulary(ends, 5, seed=0)
    torch.testing.assert_close(a, b)
    assert a.shape == (5, 3)
    targets = distance_targets(a, ends)
    torch.testing.assert_close(targets.sum(1), torch.ones(len(ends)))
    nearest = torch.cdist(ends[:, :2], a[:, :2]).argmin(1)
    assert torch.equal(targets.argmax(1), nearest)
    polygons = [polygon_from_vertices(scene_arrays(arrays, i)["drivable"]) for i in range(3)]
    dac = dac_targets(a, polygons)
    assert dac.shape == (3, 5) and set(dac.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(EmptyInputError, match="endpoint"):
        build_vocabulary(torch.zeros(0, 3), 4)
    with pytest.raises(ConfigError, match="at most"):
        build_vocabulary(ends[:2], 5)



def test_vocabulary_recovers_hand_computed_cluster_means_and_is_a_lloyd_fixed_point(arrays):
    """Three well-separated clusters of end poses: every seed's k-means returns their means (computed by hand);
    on real end poses each goal point is the mean of the end poses nearest to it."""
    ends = torch.tensor([[0.0, 0, 0], [2, 0, 0], [10, 0, 0], [10, 2, 0], [0, 10, 0.5], [0, 12, 0.5], [0, 14, 0.5]])
    expected_means = torch.tensor([[0.0, 12.0, 0.5], [1.0, 0.0, 0.0], [10.0, 1.0, 0.0]])  # sorted by x, then y
    for seed in range(4):
        vocab = torch.tensor(sorted(build_vocabulary(ends, 3, seed=seed).tolist()))
        torch.testing.assert_close(vocab, expected_means)
    real = torch.from_numpy(arrays["trajectory"][:, -1])
    vocab = build_vocabulary(real, 4, seed=0, iterations=200)
    nearest = torch.cdist(real, vocab).argmin(1)
    for k in range(len(vocab)):
        if (nearest == k).any():
            torch.testing.assert_close(vocab[k], real[nearest == k].mean(0), atol=1e-4, rtol=1e-4)

def _run(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = run_main(make_scenes_main, argv, prog="flowzoo driving make-scenes")
    return code, err.getvalue()


def test_make_scenes_writes_and_refuses_bad_input(tmp_path):
    assert "make-scenes" in commands()
    out = tmp_path / "scenes"
    assert _run(["--n", "3", "--out", str(out), "--plot", "1", "--progress", "false"])[0] == 0
    assert load_scenes(out)[1]["count"] == 3 and (out / "plots" / "scene_00000.png").exists()
    before = sorted(p.name for p in out.rglob("*"))
    code, err = _run(["--n", "3", "--out", str(out), "--progress", "false"])
    assert code == 2 and err.startswith("error: ") and "--overwrite" in err and "Traceback" not in err
    assert sorted(p.name for p in out.rglob("*")) == before
    for bad in (["--n", "0"], ["--n", "-4"], ["--n", "many"], ["--n", "3", "--plot", "9"]):
        code, err = _run([*bad, "--out", str(tmp_path / "new"), "--progress", "false"])
        assert code == 2 and err.count("error:") == 1 and "Traceback" not in err, (bad, err)
        assert not (tmp_path / "new").exists()
