"""SymmFlow through the training entry point: ``python -m flowzoo.vision.train symmflow`` on the core Trainer
(checkpoints, EMA, metrics), its run rebuilt by ``load_symmflow``, and its bad input, on tiny synthetic shapes."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.cli import run_main
from flowzoo.vision import train as vision_train
from flowzoo.vision.symmflow import SymmFlowNet, segment
from flowzoo.vision.train_symmflow import load_symmflow

QUIET = ["--trainer.progress", "false", "--trainer.tensorboard", "false", "--trainer.batch_size", "8",
         "--data", "shapes", "--size", "16", "--count", "64", "--channels", "8", "--grid_n", "4", "--grid_steps", "2"]
pytestmark = pytest.mark.usefixtures("one_thread")


def _train(out, *args: str) -> int:
    return run_main(vision_train.main, ["symmflow", "--trainer.out_dir", str(out), *QUIET, *args],
                    prog="python -m flowzoo.vision.train")


@pytest.mark.parametrize("direction", ["symmetric", "generate"])
def test_symmflow_trains_on_the_core_trainer_and_reloads(direction, tmp_path, capsys):
    assert _train(tmp_path / direction, "--direction", direction, "--trainer.steps", "4") == 0
    out = capsys.readouterr().out
    assert out.startswith("symmflow: ") and ("one-step mIoU" in out) == (direction == "symmetric")
    assert (tmp_path / direction / "samples.png").is_file() and (tmp_path / direction / "metrics.csv").is_file()
    run = load_symmflow(tmp_path / direction)
    assert isinstance(run.model, SymmFlowNet) and run.step == 4 and run.model.direction == direction
    assert run.config.data == "shapes" and run.model.codec.channels == 3
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    assert segment(run.model, images, steps=1).extras["labels"].shape == (2, 16, 16)


def test_symmflow_resumes_from_its_checkpoint(tmp_path):
    assert _train(tmp_path / "r", "--trainer.steps", "2", "--trainer.checkpoint_every", "2") == 0
    assert _train(tmp_path / "r", "--trainer.steps", "4", "--trainer.resume", "true") == 0
    assert load_symmflow(tmp_path / "r").step == 4


@pytest.mark.parametrize("args, where", [(["--direction", "sideways"], "--direction"),
                                         (["--data", "digits"], "mnist-masks"),
                                         (["--encoding", "rgb"], "--encoding")])
def test_symmflow_bad_input_is_one_error_line(args, where, tmp_path, capsys):
    assert _train(tmp_path / "bad", *args, "--trainer.steps", "1") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and where in err and err.count("\n") <= 2, err
    assert not (tmp_path / "bad" / "checkpoints").exists()
    with pytest.raises(Exception, match="symmflow"):
        load_symmflow(tmp_path / "missing")
