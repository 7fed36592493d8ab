"""Demonstration data: window/padding logic by hand, the normaliser, atomic save/load and corrupt-file errors."""

import json
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from flowzoo.core.errors import ConfigError, EmptyInputError, NonFiniteError, ShapeError
from flowzoo.robotics import data as data_module
from flowzoo.robotics.data import DemoDataset, DemoFileError, WindowDataset
from flowzoo.robotics.normalizer import Normalizer
from flowzoo.robotics.spec import EnvSpec

torch.set_num_threads(1)

TINY_SPEC = EnvSpec(task="tiny", obs_mode="state", obs_shapes={"state": (1,)}, action_dim=1,
                    action_low=(-100.0,), action_high=(100.0,), max_episode_steps=10)


def tiny_demos() -> DemoDataset:
    """Two episodes (3 and 2 steps); state = global step index, action = 10 * step index."""
    steps = np.arange(5, dtype=np.float32)
    return DemoDataset({"state": steps[:, None], "action": 10 * steps[:, None]}, [3, 5], TINY_SPEC,
                       info={"note": "hand-made"})


def raw_window(windows: WindowDataset, item: int) -> tuple[list[float], list[float]]:
    sample = windows[item]
    norm = windows.demos.normalizer
    obs = norm.unnormalize("state", sample["obs"]["state"])[:, 0]
    action = norm.unnormalize("action", sample["action"])[:, 0]
    return [round(float(v), 4) for v in obs], [round(float(v), 4) for v in action]


def test_windows_pad_at_episode_edges_and_never_mix_episodes():
    windows = WindowDataset(tiny_demos(), n_obs_steps=2, horizon=3)
    assert len(windows) == 5
    expected = [  # (observed steps, action steps) worked out by hand
        ([0, 0], [0, 10, 20]),     # episode 0, step 0: history padded with the first frame
        ([0, 1], [10, 20, 20]),    # step 1: chunk padded with the last action
        ([1, 2], [20, 20, 20]),
        ([3, 3], [30, 40, 40]),    # episode 1 starts: nothing from episode 0 leaks in
        ([3, 4], [40, 40, 40]),
    ]
    for item, (obs, action) in enumerate(expected):
        assert raw_window(windows, item) == (obs, action), item
    obs_index, action_index = windows.indices(3)
    assert obs_index.tolist() == [3, 3] and action_index.tolist() == [3, 4, 4]
    long = WindowDataset(tiny_demos(), n_obs_steps=4, horizon=1)
    assert raw_window(long, 4) == ([3, 3, 3, 4], [40])
    only_second = WindowDataset(tiny_demos(), n_obs_steps=1, horizon=2, episodes=[1])
    assert len(only_second) == 2 and raw_window(only_second, 0) == ([3], [30, 40])


def test_windows_are_normalised_tensors_that_batch():
    windows = WindowDataset(tiny_demos(), n_obs_steps=2, horizon=3)
    sample = windows[0]
    assert sample["obs"]["state"].shape == (2, 1) and sample["action"].shape == (3, 1)
    assert sample["action"].dtype == torch.float32
    assert sample["action"][0, 0] == -1.0  # the smallest action maps to -1
    batch = next(iter(DataLoader(windows, batch_size=4)))
    assert batch["obs"]["state"].shape == (4, 2, 1) and batch["action"].shape == (4, 3, 1)
    with pytest.raises(ConfigError):
        WindowDataset(tiny_demos(), n_obs_steps=0)
    with pytest.raises(EmptyInputError):
        WindowDataset(tiny_demos(), episodes=[])
    with pytest.raises(IndexError):
        windows[5]


def test_vectorised_batch_equals_stacked_items_and_samples_for_the_trainer():
    windows = WindowDataset(tiny_demos(), n_obs_steps=3, horizon=4)
    items = [4, 0, 3, 2, 2, -1]
    batch = windows.batch(items)
    for row, item in enumerate(items):
        single = windows[item]
        torch.testing.assert_close(batch["obs"]["state"][row], single["obs"]["state"])
        torch.testing.assert_close(batch["action"][row], single["action"])
    sample_batch = windows.sampler(8)
    first = sample_batch(torch.Generator().manual_seed(1))
    again = sample_batch(torch.Generator().manual_seed(1))
    assert first["action"].shape == (8, 4, 1) and first["obs"]["state"].shape == (8, 3, 1)
    torch.testing.assert_close(first["action"], again["action"])
    with pytest.raises(IndexError):
        windows.batch([5])
    with pytest.raises(ConfigError):
        windows.sampler(0)


def test_normalizer_round_trip_constant_dims_and_both_array_types():
    rng = np.random.default_rng(0)
    action = rng.uniform(-3, 5, size=(50, 3)).astype(np.float32)
    action[:, 1] = 0.7  # a constant dimension (e.g. Meta-World reach's gripper)
    cloud = rng.normal(size=(50, 8, 3)).astype(np.float32)
    norm = Normalizer.fit({"action": action, "point_cloud": cloud})
    scaled = norm.normalize("action", action)
    np.testing.assert_allclose(scaled[:, [0, 2]].min(0), -1.0, atol=1e-6)
    np.testing.assert_allclose(scaled[:, [0, 2]].max(0), 1.0, atol=1e-6)
    np.testing.assert_allclose(scaled[:, 1], 0.0, atol=1e-7)
    np.testing.assert_allclose(norm.unnormalize("action", scaled), action, atol=1e-5)
    np.testing.assert_array_equal(norm.normalize("point_cloud", cloud), cloud)  # identity for clouds
    as_torch = norm.normalize("action", torch.from_numpy(action))
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
    np.testing.assert_allclose(as_torch.numpy(), scaled, atol=1e-6)
    back = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_allclose(back.unnormalize("action", scaled), action, atol=1e-5)
    # batched (B, horizon, A) works on the last axis
    np.testing.assert_allclose(norm.normalize("action", action.reshape(5, 10, 3)), scaled.reshape(5, 10, 3))
    with pytest.raises(ShapeError):
        norm.normalize("action", np.zeros((2, 4)))
    with pytest.raises(ConfigError):
        Normalizer.from_dict({"action": {"min": [1.0]}})
    with pytest.raises(ConfigError):
        Normalizer({"action": {"min": [1.0], "max": [0.0]}})


def test_save_load_round_trip(tmp_path):
    demos = tiny_demos()
    path = demos.save(tmp_path / "demos")
    loaded = DemoDataset.load(path)
    assert loaded.spec == demos.spec and loaded.episodes == 2 and loaded.num_steps == 5
    for key in ("state", "action"):
        np.testing.assert_array_equal(loaded.arrays[key], demos.arrays[key])
    np.testing.assert_array_equal(loaded.episode_ends, [3, 5])
    assert loaded.normalizer.to_dict() == demos.normalizer.to_dict()
    assert loaded.info["note"] == "hand-made"
    np.testing.assert_array_equal(loaded.episode(1)["action"][:, 0], [30, 40])
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format"] == "flowzoo-demos" and meta["num_episodes"] == 2 and "flowzoo_version" in meta
    assert sorted(os.listdir(tmp_path)) == ["demos"]  # no staging leftovers


def test_bad_arrays_are_refused():
    steps = np.arange(5, dtype=np.float32)[:, None]
    with pytest.raises(ShapeError, match="action"):
        DemoDataset({"state": steps, "action": steps[:4]}, [3, 5], TINY_SPEC)
    with pytest.raises(ShapeError, match="state"):
        DemoDataset({"state": np.zeros((5, 2), np.float32), "action": steps}, [3, 5], TINY_SPEC)
    with pytest.raises(ShapeError, match="state"):
        DemoDataset({"action": steps}, [3, 5], TINY_SPEC)
    nan = steps.copy()
    nan[4, 0] = np.nan
    with pytest.raises(NonFiniteError, match="episode 1"):
        DemoDataset({"state": steps, "action": nan}, [3, 5], TINY_SPEC)
    with pytest.raises(EmptyInputError):
        DemoDataset({"state": steps, "action": steps}, [3, 3, 5], TINY_SPEC)  # an empty episode
    with pytest.raises(EmptyInputError):
        DemoDataset({"state": steps[:0], "action": steps[:0]}, [], TINY_SPEC)
    with pytest.raises(EmptyInputError):
        DemoDataset.from_episodes([], TINY_SPEC)


def test_corrupt_or_missing_files_are_clear_errors(tmp_path):
    path = tiny_demos().save(tmp_path / "demos")
    blob = (path / "data.npz").read_bytes()
    (path / "data.npz").write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.raises(DemoFileError, match="checksum"):
        DemoDataset.load(path)
    meta = json.loads((path / "meta.json").read_text())
    del meta["data_sha256"]
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DemoFileError, match="readable data.npz"):
        DemoDataset.load(path)
    # a well-formed file whose action holds NaN
    np.savez(path / "data.npz", state=np.zeros((5, 1), np.float32),
             action=np.array([[0], [1], [np.nan], [3], [4]], np.float32), episode_ends=np.array([3, 5]))
    with pytest.raises(NonFiniteError):
        DemoDataset.load(path)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(DemoFileError, match="JSON"):
        DemoDataset.load(path)
    (path / "meta.json").unlink()
    with pytest.raises(DemoFileError, match="meta.json"):
        DemoDataset.load(path)
    with pytest.raises(DemoFileError):
        DemoDataset.load(tmp_path / "does-not-exist")


def test_a_failed_save_leaves_the_previous_dataset_intact(tmp_path, monkeypatch):
    path = tiny_demos().save(tmp_path / "demos")
    before = {name: (path / name).read_bytes() for name in ("data.npz", "meta.json")}
    steps = np.arange(4, dtype=np.float32)[:, None]
    newer = DemoDataset({"state": steps, "action": steps}, [4], TINY_SPEC)

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(data_module.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        newer.save(path)
    monkeypatch.undo()
    assert {name: (path / name).read_bytes() for name in before} == before
    real_replace = os.replace
    calls = []

    def replace_failing_on_the_swap(src, dst):
        calls.append((str(src), str(dst)))
        if str(dst) == str(path) and ".tmp-" in os.path.basename(src):
            # by now the old dataset has been moved aside; the new one fails to move in
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(data_module.os, "replace", replace_failing_on_the_swap)
    with pytest.raises(OSError, match="rename failed"):
        newer.save(path)
    monkeypatch.undo()
    assert any(".old-" in os.path.basename(dst) for _, dst in calls)  # the restore path really ran
    assert {name: (path / name).read_bytes() for name in before} == before
    assert DemoDataset.load(path).num_steps == 5
    assert sorted(os.listdir(tmp_path)) == ["demos"]


def test_save_refuses_to_overwrite_other_files(tmp_path):
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="other files"):
        tiny_demos().save(user_dir)
    assert (user_dir / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError):
        tiny_demos().save(a_file)
    assert a_file.read_text() == "x"
