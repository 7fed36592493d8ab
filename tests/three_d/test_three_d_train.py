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
from flowzoo.three_d.cli_upsample import command, upsample_main
from flowzoo.three_d.data import sample_surface
from flowzoo.three_d.io import read_point_cloud, write_point_cloud
from flowzoo.three_d.train import METHODS, load_upsampler, main

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
                                  ["pufm", "--method", "pufm"]])
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
