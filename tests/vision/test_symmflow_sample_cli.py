"""``flowzoo vision sample`` and ``flowzoo vision evaluate`` on SymmFlow runs, end to end on a tiny run of synthetic
shapes trained for a few steps: each ``--task`` writes its grid and arrays from the test split of the run's own
data, ``evaluate`` prints segmentation mIoU, one-step classification accuracy and generation FD, and options that
a SymmFlow run cannot use are one error line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from flowzoo.core.cli import run_main
from flowzoo.vision import train as vision_train
from flowzoo.vision.cli import evaluate_main, sample_main
from flowzoo.vision.segmentation import load_segmentation, make_shapes, mnist_masks
from flowzoo.vision.symmflow import generate
from flowzoo.vision.train_symmflow import (exact_accuracy, foreground_iou, is_symmflow_run, load_symmflow,
                                           score_symmflow, segmentation_scores)

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = ["--trainer.progress", "false", "--trainer.tensorboard", "false", "--trainer.batch_size", "8",
         "--trainer.steps", "4", "--data", "shapes", "--size", "16", "--count", "64", "--channels", "8",
         "--grid_n", "2", "--grid_steps", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A symmetric run and a map→image (``--direction generate``) baseline, 4 steps each."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("symmflow_runs")
    for direction in ("symmetric", "generate"):
        argv = ["symmflow", "--trainer.out_dir", str(root / direction), *TRAIN, "--direction", direction]
        assert run_main(vision_train.main, argv, prog="python -m flowzoo.vision.train") == 0
    torch.set_num_threads(threads)
    return root


def _sample(*argv: str) -> int:
    return run_main(sample_main, ["--progress", "false", *argv], prog="flowzoo vision sample")


def _evaluate(*argv: str) -> int:
    return run_main(evaluate_main, ["--progress", "false", *argv], prog="flowzoo vision evaluate")


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _grid_width(tiles: int, side: int = 16, scale: int = 4, padding: int = 2) -> int:
    return (tiles * (side + padding) + padding) * scale


def test_generate_writes_map_image_pairs_from_the_runs_test_maps(runs, tmp_path, capsys):
    out = tmp_path / "gen.png"
    assert _sample("--checkpoint", str(runs / "symmetric"), "--n", "4", "--steps", "2", "--out", str(out)) == 0
    assert "4 images generated from test maps of shapes/test" in capsys.readouterr().out
    arrays = np.load(out.with_suffix(".npz"))
    test = load_segmentation("shapes", split="test", size=16, seed=0).subset(slice(0, 4))
    assert arrays["images"].shape == (4, 3, 16, 16) and arrays["images"].dtype == np.uint8
    assert np.array_equal(arrays["maps"], test.maps.numpy()) and np.array_equal(arrays["labels"], test.labels.numpy())
    assert int(arrays["nfe"]) == 2
    # the command calls SymmFlow's own generate on those maps with the seed's noise, nothing else
    run = load_symmflow(runs / "symmetric")
    with torch.no_grad():
        direct = generate(run.model, test.maps, steps=2, generator=torch.Generator().manual_seed(0)).x
    np.testing.assert_allclose(arrays["x"], direct.clamp(-1, 1).numpy(), atol=1e-6)
    assert _png_size(out) == (_grid_width(2 * 2), _grid_width(2))   # 2 pairs per row, 2 rows


def test_segment_writes_image_predicted_and_true_maps(runs, tmp_path, capsys):
    out = tmp_path / "seg.png"
    argv = ["--checkpoint", str(runs / "symmetric"), "--task", "segment", "--n", "5", "--steps", "1", "--nrow", "5"]
    assert _sample(*argv, "--out", str(out)) == 0
    assert "mIoU" in capsys.readouterr().out
    arrays = np.load(out.with_suffix(".npz"))
    assert arrays["predicted_maps"].shape == arrays["maps"].shape == (5, 16, 16)
    assert arrays["predicted_maps"].min() >= 0 and arrays["predicted_maps"].max() < 5
    assert arrays["images"].shape == (5, 3, 16, 16) and int(arrays["nfe"]) == 1
    assert _png_size(out) == (_grid_width(3 * 5), _grid_width(1))   # image | predicted | true, one row


def test_classify_prints_and_saves_the_one_step_vote(runs, tmp_path, capsys):
    out = tmp_path / "cls.png"
    argv = ["--checkpoint", str(runs / "symmetric"), "--task", "classify", "--n", "6", "--steps", "1"]
    assert _sample(*argv, "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "1-step pixel vote: accuracy" in printed and "first predictions" in printed
    arrays = np.load(out.with_suffix(".npz"))
    # shapes hold several classes per image: the prediction is the set of visible shape classes
    assert arrays["predicted"].shape == arrays["multilabels"].shape == (6, 4)
    assert arrays["predicted"].dtype == np.bool_ and out.is_file()


def test_evaluate_prints_the_three_metrics_and_writes_json(runs, capsys):
    assert _evaluate("--checkpoint", str(runs / "symmetric"), "--n", "40", "--steps", "2") == 0
    printed = capsys.readouterr().out
    for name in ("segmentation mIoU", "one-step classification accuracy", "generation FD"):
        assert name in printed, printed
    record = json.loads((runs / "symmetric" / "evaluate_euler2_n40_seg1_symmflow.json").read_text())
    metrics = record["metrics"]
    assert 0.0 <= metrics["miou"] <= 1.0 and 0.0 <= metrics["classification_accuracy"] <= 1.0
    assert np.isfinite(metrics["fd"]) and metrics["fd"] >= 0.0 and record["data"] == "shapes/test"
    assert _evaluate("--checkpoint", str(runs / "symmetric"), "--n", "40", "--steps", "2") == 2   # no overwrite


def test_evaluate_scores_only_what_a_baseline_direction_can_do(runs, capsys):
    assert _evaluate("--checkpoint", str(runs / "generate"), "--n", "20", "--steps", "1") == 0
    printed = capsys.readouterr().out
    assert "generation FD" in printed and "mIoU" not in printed and "classification" not in printed, printed
    run = load_symmflow(runs / "generate")
    test = run.config.load("test").subset(slice(0, 20))
    metrics = score_symmflow(run.model, run.config.load("train"), test, gen_steps=1, feature_epochs=1)
    assert set(metrics) == {"fd", "foreground_iou", "feature_classifier_accuracy"}


def test_scores_are_perfect_on_the_truth():
    """The scoring pieces against hand-known answers: the true maps and labels score 1, and the data's own images
    have exactly the maps' foreground (digits: intensity above one half; shapes: saturated on a grey background)."""
    shapes, digits = make_shapes(12, size=16, seed=3, name="shapes/test"), mnist_masks("test", size=16)
    assert segmentation_scores(shapes.maps, shapes) == {"miou": 1.0, "pixel_accuracy": 1.0}
    assert exact_accuracy(shapes.multilabels, shapes.multilabels) == 1.0
    assert exact_accuracy(digits.labels, (digits.labels + 1) % 10) == 0.0
    assert foreground_iou(shapes.images, shapes) == 1.0 and foreground_iou(digits.images, digits) == 1.0
    assert foreground_iou(-torch.ones_like(digits.images), digits) == 0.0


@pytest.mark.parametrize("argv, where", [
    (["--class", "3"], "--class 3"), (["--cfg_scale", "2"], "--cfg_scale 2.0"),
    (["--sampler", "flowturbo"], "--sampler flowturbo"), (["--prune", "true"], "--prune True"),
    (["--refiner", "elsewhere", "--sampler", "flowturbo"], "--refiner elsewhere")])
def test_sample_refuses_options_a_symmflow_run_cannot_use(argv, where, runs, tmp_path, capsys):
    out = tmp_path / "bad.png"
    assert _sample("--checkpoint", str(runs / "symmetric"), *argv, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "SymmFlow run only --task" in err and where in err, err
    assert not out.exists() and not out.with_suffix(".npz").exists()


@pytest.mark.parametrize("argv, where", [
    (["--data", "digits"], "--data digits"), (["--guidance", "raag", "--cfg_scale", "2"], "--guidance raag"),
    (["--n", "5000"], "--n at most the 1000 images")])
def test_evaluate_refuses_bad_options_for_a_symmflow_run(argv, where, runs, capsys):
    assert _evaluate("--checkpoint", str(runs / "symmetric"), "--out", "unused.json", *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and where in err and err.count("\n") <= 2, err


def test_task_errors_name_the_fix(runs, tmp_path, capsys):
    cases = [(["--checkpoint", str(runs / "generate"), "--task", "segment"], "--task generate"),
             (["--checkpoint", str(tmp_path / "missing"), "--task", "classify"], "symmflow run"),
             (["--checkpoint", str(runs / "symmetric"), "--task", "colourise"], "--task in"),
             (["--checkpoint", str(runs / "symmetric"), "--task", "classify", "--sampler", "heun"], "--sampler euler"),
             (["--checkpoint", str(tmp_path / "missing"), "--task", "segment", "--class", "1"], "--class 1")]
    for argv, where in cases:
        assert _sample(*argv, "--out", str(tmp_path / "t.png")) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and where in err and err.count("\n") <= 2, (argv, err)
    assert not (tmp_path / "t.png").exists()
    assert _evaluate("--checkpoint", str(tmp_path / "missing"), "--seg_steps", "2") == 2
    assert "symmflow run" in capsys.readouterr().err
    assert is_symmflow_run(runs / "symmetric") and not is_symmflow_run(tmp_path / "missing")
