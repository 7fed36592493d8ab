"""python -m flowzoo.vision.train autoencoder | lfm, and flowzoo vision sample on an lfm run."""

import numpy as np
import pytest

from flowzoo.core.cli import run_main
from flowzoo.vision import train as vision_train
from flowzoo.vision.cli import commands

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = ["--trainer.progress", "false", "--trainer.tensorboard", "false", "--trainer.batch_size", "16"]


def _train(*argv):
    return run_main(vision_train.main, [*argv, *QUIET], prog="python -m flowzoo.vision.train")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    assert _train("autoencoder", "--data", "digits", "--size", "8", "--ae.downsample", "1", "--ae.channels", "8",
                  "--trainer.steps", "20", "--trainer.out_dir", str(root / "ae")) == 0
    assert _train("lfm", "--data", "digits", "--size", "8", "--autoencoder", str(root / "ae"), "--width", "8",
                  "--class_cond", "true", "--trainer.steps", "10", "--trainer.out_dir", str(root / "lfm")) == 0
    return root


def test_lfm_run_samples_through_the_vision_command(runs, tmp_path):
    out = tmp_path / "grid.png"
    argv = ["--checkpoint", str(runs / "lfm"), "--n", "12", "--steps", "3", "--class", "4", "--out", str(out)]
    assert run_main(commands()["sample"], argv, prog="flowzoo vision sample") == 0
    saved = np.load(out.with_suffix(".npz"))
    assert saved["x"].shape == (12, 1, 8, 8) and int(saved["nfe"]) == 3 and (saved["labels"] == 4).all()


def test_lfm_needs_a_matching_autoencoder(runs, tmp_path, capsys):
    assert _train("lfm", "--data", "digits", "--trainer.out_dir", str(tmp_path / "a")) == 2
    assert "--autoencoder" in capsys.readouterr().err
    assert _train("lfm", "--data", "digits", "--size", "12", "--autoencoder", str(runs / "ae"),
                  "--trainer.out_dir", str(tmp_path / "b")) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "8x8" in err and not (tmp_path / "b" / "checkpoints").exists()


def test_evaluate_decodes_an_lfm_run_and_scores_it(runs, capsys, monkeypatch, tmp_path_factory):
    """`flowzoo vision evaluate` on an lfm run: decoded samples scored against the digits' test split (the data the
    run recorded), a JSON beside the run; a pixel-only option is one error line."""
    import json

    monkeypatch.setenv("FLOWZOO_CACHE", str(tmp_path_factory.getbasetemp() / "flowzoo_cache"))
    argv = ["--checkpoint", str(runs / "lfm"), "--n", "40", "--steps", "3", "--progress", "false"]
    assert run_main(commands()["evaluate"], argv, prog="flowzoo vision evaluate") == 0
    printed = capsys.readouterr().out
    assert "fd " in printed and "class_accuracy" in printed and "decoded" in printed
    record = json.loads((runs / "lfm" / "evaluate_euler3_n40_decoded.json").read_text())
    assert record["latent"] and record["data"] == "digits" and record["nfe"] == 3
    assert record["metrics"]["fd"] > 0 and 0 <= record["metrics"]["class_accuracy"] <= 1
    assert json.loads((runs / "lfm" / "image_data.json").read_text()) == {"data": "digits", "load": {"size": 8}}
    for bad in (["--prune", "true"], ["--sampler", "boss"], ["--data", "patches"]):
        assert run_main(commands()["evaluate"], [*argv, *bad, "--overwrite", "true"],
                        prog="flowzoo vision evaluate") == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") <= 2, err
