"""Blockwise flow matching through the entry points: ``python -m flowzoo.vision.train bfm`` (with and without
semantic feature guidance) and ``flowzoo vision sample`` / ``evaluate`` on its run, on the 8x8 digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowzoo.core.cli import run_main
from flowzoo.vision import train as vision_train
from flowzoo.vision.blockwise_nets import BlockwiseVelocity
from flowzoo.vision.cli import commands
from flowzoo.vision.features import ImageEvaluator
from flowzoo.vision.sampling import generate
from flowzoo.vision.train import load_trained

pytest.importorskip("sklearn")
QUIET = ["--trainer.progress", "false", "--trainer.tensorboard", "false", "--grid_n", "10", "--grid_steps", "4",
         "--trainer.batch_size", "32"]
pytestmark = pytest.mark.usefixtures("one_thread", "shared_feature_cache")


def _train(out, *args: str) -> int:
    argv = ["bfm", "--data", "digits", "--trainer.out_dir", str(out), *QUIET, *args]
    return run_main(vision_train.main, argv, prog="python -m flowzoo.vision.train")


def _sample(*args: str) -> int:
    return run_main(commands()["sample"], [*args, "--progress", "false"], prog="flowzoo vision sample")


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory):
    """A class-conditional K = 2 BFM run with semantic feature guidance, a few steps."""
    out = tmp_path_factory.mktemp("bfm") / "guided"
    torch.set_num_threads(1)
    assert _train(out, "--class_cond", "true", "--width", "32", "--bfm_segments", "2", "--bfm_block_depth", "1",
                  "--bfm_guidance", "true", "--trainer.steps", "5") == 0
    return out


def test_bfm_run_records_its_blocks_and_guidance(guided_run):
    run = load_trained(guided_run)
    assert isinstance(run.model, BlockwiseVelocity) and run.model.segments == 2 and run.model.block_depth == 1
    assert run.model.feature_dim == run.config.bfm_feature_dim > 0 and run.class_cond
    assert (guided_run / "samples.png").is_file()
    metrics = (guided_run / "metrics.csv").read_text().splitlines()[0]
    assert "feature" in metrics and "fm_segment_1" in metrics


@pytest.mark.parametrize("sampler, steps, nfe", [("euler", 4, 4), ("heun", 2, 4), ("rk4", 1, 4)])
def test_bfm_run_samples_through_the_cli(guided_run, tmp_path, sampler, steps, nfe):
    out = tmp_path / "b.png"
    assert _sample("--checkpoint", str(guided_run), "--n", "6", "--steps", str(steps), "--sampler", sampler,
                   "--out", str(out)) == 0
    arrays = np.load(tmp_path / "b.npz")
    assert arrays["x"].shape == (6, 1, 8, 8) and int(arrays["nfe"]) == nfe and np.isfinite(arrays["x"]).all()


def test_bfm_euler_walks_the_segments_with_their_own_blocks(guided_run):
    """Hand check: BFM's sampler equals Euler with each step's segment block (the grid holds the boundary)."""
    run = load_trained(guided_run)
    x0 = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    images, nfe = generate(run.model, 3, run.shape, steps=4, labels=y, generator=torch.Generator().manual_seed(0))
    x = x0.clone()
    with torch.no_grad():
        for t in (0.0, 0.25, 0.5, 0.75):
            x = x + 0.25 * run.model(x, torch.full((3,), t), y=y)
    assert nfe == 4 and torch.allclose(images, x, atol=1e-5)


def test_bfm_learns_digits(tmp_path):
    """A broken loss or sampler cannot pass: after 150 steps the samples sit far closer to the digits than the
    noise they start from (well under half its FD) in the feature classifier's space."""
    assert _train(tmp_path / "bfm", "--width", "32", "--bfm_segments", "2", "--trainer.steps", "150",
                  "--trainer.lr", "1e-3", "--trainer.warmup_steps", "10", "--trainer.ema_decay", "0.9") == 0
    run = load_trained(tmp_path / "bfm")
    evaluator = ImageEvaluator.for_dataset("digits", verbose=False, **run.config.load_options())
    images, _ = generate(run.model, 300, run.shape, steps=8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(300, *run.shape, generator=torch.Generator().manual_seed(2))
    assert evaluator.fd(images) < 0.5 * evaluator.fd(noise), (evaluator.fd(images), evaluator.fd(noise))


@pytest.mark.parametrize("args, where", [
    (["train", "--bfm_segments", "0"], "--bfm_segments"),
    (["train", "--patch", "3"], "--patch 3"),
    (["sample", "--steps", "1"], "steps >= 2"),
])
def test_bfm_bad_input_is_one_error_line(args, where, guided_run, tmp_path, capsys):
    if args[0] == "train":
        assert _train(tmp_path / "bad", *args[1:], "--trainer.steps", "2") == 2
        assert not (tmp_path / "bad" / "checkpoints").exists()
    else:
        assert _sample("--checkpoint", str(guided_run), "--out", str(tmp_path / "x.png"), *args[1:]) == 2
        assert not (tmp_path / "x.png").exists()
    err = capsys.readouterr().err
    assert err.startswith("error: ") and where in err and err.count("\n") <= 2, err
