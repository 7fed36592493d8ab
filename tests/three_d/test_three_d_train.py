"""``python -m flowzoo.three_d.train pufm`` and ``flowzoo three_d upsample`` (three_d/cli_upsample.py): a tiny run end
to end, the run's upsampler, and bad input exiting 2 with one ``error:`` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from flowzoo.core.cli import run_main
from flowzoo.core.errors import ConfigError
from flowzoo.three_d.cli_upsample import command, upsample_main
from flowzoo.three_d.data import sample_surface
from flowzoo.three_d.io import read_point_cloud, write_point_cloud
from flowzoo.three_d.train import METHODS, load_upsampler, main, make_patch_pairs

TINY = ["--model.dim", "16", "--model.latents", "4", "--model.blocks", "1", "--model.compute_layers", "1",
        "--model.heads", "2", "--model.k", "4"]


def _args(out, *extra):
    return ["pufm", "--shapes", "2", "--patches_per_shape", "2", "--patch_size", "8", "--curve_points", "5",
                 "--trainer.steps", "3", "--trainer.batch_size", "2", "--trainer.progress", "false",
                 "--trainer.out_dir", str(out), *TINY, *extra]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("pufm") / "run"
    assert main(_args(out, "--stage2_steps", "2")) == 0
    return out


def test_training_writes_a_loadable_upsampler(run_dir, tmp_path):
    info = json.loads((run_dir / "pufm.json").read_text())
    assert info["stages"] == 2 and len(info["loss_curve"]["times"]) == 5
    assert (run_dir / "stage2" / "checkpoints").is_dir() and (run_dir / "summary.json").is_file()
    upsampler = load_upsampler(run_dir)
    grid = upsampler.time_grid(3)
    assert grid.shape == (4,) and float(grid[0]) == 0.0 and float(grid[-1]) == 1.0
    points = torch.from_numpy(sample_surface("sphere", 30, np.random.default_rng(0)))
    assert upsampler(points, 4, steps=2).shape == (120, 3)
    src, dst = tmp_path / "in.ply", tmp_path / "out.ply"
    write_point_cloud(src, points.numpy())
    assert command()([str(src), "--checkpoint", str(run_dir), "--out", str(dst), "--ratio", "16"]) == 0
    assert read_point_cloud(dst).points.shape == (480, 3)


def test_existing_run_is_not_overwritten(run_dir, capsys):
    code = run_main(main, _args(run_dir), prog="python -m flowzoo.three_d.train")
    assert code == 2 and "error:" in capsys.readouterr().err
    assert "pufm" in METHODS


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "flowzoo.three_d.train", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)


def test_train_cli_bad_input_exits_2_with_one_error_line():
    proc = _cli("pufm", "--ratio", "2.5")  # one real process: the module's __main__ runs under run_main
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and "Traceback" not in proc.stderr and len(lines) <= 2


@pytest.mark.parametrize("args", [["nonsense"], ["pufm", "--shapes", "0"], ["pufm", "--trainer.steps", "x"],
                                  ["pufm", "--method", "pufm"],
                                  ["pufm", "--shape_set", "sphere", "blob"]])
def test_train_bad_input_is_one_error_line(args, capsys):
    assert run_main(main, args, prog="python -m flowzoo.three_d.train") == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_upsample_cli_bad_input(tmp_path, capsys):
    empty, nan, good = tmp_path / "empty.xyz", tmp_path / "nan.xyz", tmp_path / "good.xyz"
    empty.write_text("")
    nan.write_text("0 0 0\nnan 1 1\n1 1 1\n")
    write_point_cloud(good, np.random.default_rng(0).normal(size=(20, 3)))
    cases = [[str(empty), "--checkpoint", "midpoints", "--out", str(tmp_path / "a.ply")],
             [str(nan), "--checkpoint", "midpoints", "--out", str(tmp_path / "b.ply")],
             [str(good), "--checkpoint", "midpoints", "--out", str(tmp_path / "c.ply"), "--ratio", "1"],
             [str(good), "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "d.ply")],
             [str(good), "--checkpoint", "midpoints", "--out", str(good)]]
    for argv in cases:
        assert run_main(upsample_main, argv, prog="flowzoo three_d upsample") == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and "Traceback" not in err, err
    assert upsample_main([str(good), "--checkpoint", "midpoints", "--out", str(tmp_path / "ok.ply")]) == 0
    assert read_point_cloud(tmp_path / "ok.ply").points.shape == (80, 3)


def _shape_folder(folder, sizes=(160, 160, 160)):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in zip(("sphere", "torus", "box"), sizes):
        write_point_cloud(folder / f"{name}.ply", sample_surface(name, n, rng))
    return folder


def test_pufm_trains_on_a_folder_of_user_clouds(tmp_path, capsys):
    torch.set_num_threads(1)
    data = _shape_folder(tmp_path / "shapes")
    (data / "notes.md").write_text("not a shape")
    out = tmp_path / "run"
    assert main(_args(out, "--data", str(data), "--trainer.steps", "2", "--curve_points", "3")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shapes"] == 3 and summary["patches"] == 3 * 2 and summary["data"] == str(data)
    err = capsys.readouterr().err
    assert "skipped" in err and "notes.md" in err and "read 3 shapes" in err


def test_patch_pairs_from_user_clouds_are_patches_of_those_clouds():
    clouds = np.stack([sample_surface("sphere", 128, np.random.default_rng(i)) for i in range(2)])
    sparse, dense = make_patch_pairs(99, ratio=4, patch_size=8, patches_per_shape=3, input_noise=0.0, clouds=clouds)
    assert sparse.shape == (6, 8, 3) and dense.shape == (6, 32, 3)
    # Each sparse point is one of its dense patch's points (noise 0).
    gap = torch.cdist(sparse, dense, compute_mode="donot_use_mm_for_euclid_dist").min(dim=2).values
    assert float(gap.max()) < 1e-5
    with pytest.raises(ConfigError):
        make_patch_pairs(1, ratio=4, patch_size=8, clouds=clouds[:, :16])
    mixed = make_patch_pairs(2, ratio=4, patch_size=8, patches_per_shape=2, choices=["composition"])
    assert mixed[1].shape == (4, 32, 3)


@pytest.mark.parametrize("case", ["missing", "empty", "too_small"])
def test_pufm_bad_data_folder_is_one_error_line(case, tmp_path, capsys):
    data = tmp_path / "shapes"
    if case == "empty":
        data.mkdir()
    elif case == "too_small":
        _shape_folder(data, sizes=(10, 10, 10))
    code = run_main(main, _args(tmp_path / "run", "--data", str(data)), prog="python -m flowzoo.three_d.train")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "Traceback" not in err and str(data) in err, err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_upsample_command_shows_progress_and_writes_the_library_result(run_dir, tmp_path, capsys):
    points = torch.from_numpy(sample_surface("torus", 40, np.random.default_rng(1)))
    src, dst = tmp_path / "in.ply", tmp_path / "out.ply"
    write_point_cloud(src, points.numpy())
    capsys.readouterr()
    assert upsample_main([str(src), "--checkpoint", str(run_dir), "--out", str(dst), "--ratio", "16"]) == 0
    captured = capsys.readouterr()
    assert "upsample 16x" in captured.err and "upsample 16x" not in captured.out
    expected = load_upsampler(run_dir)(points, 16, steps=2, generator=torch.Generator().manual_seed(0))
    written = torch.from_numpy(np.asarray(read_point_cloud(dst).points, dtype=np.float32))
    assert written.shape == (640, 3) and torch.allclose(written, expected, atol=1e-6)
