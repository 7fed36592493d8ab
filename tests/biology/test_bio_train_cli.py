"""The biology entrypoints: train meta_fm from an .h5ad, predict into a new .h5ad, dispatch to gumbel_fm."""

import json
import sys
import types

import anndata
import numpy as np
import pytest
import torch

from flowzoo.biology import cli, train
from flowzoo.core.errors import CheckpointError, ConfigError

from test_populations import toy_adata

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    adata = toy_adata(populations=6, cells=16, dim=3)
    path = tmp / "screen.h5ad"
    adata.write_h5ad(path)
    before = path.read_bytes()
    out = tmp / "run"
    code = train.main(["meta_fm", "--adata", str(path), "--population-key", "population", "--condition-key",
                       "condition", "--control", "control", "--test-fraction", "0.34", "--val-fraction", "0.0",
                       "--out", str(out), "--eval-steps", "4", "--model.knn_k", "4", "--model.hidden", "16",
                       "--model.depth", "2", "--model.embed_dim", "8", "--model.encoder_hidden", "8",
                       "--model.populations_per_batch", "2", "--model.cells_per_population", "8",
                       "--trainer.steps", "6", "--trainer.progress", "false", "--trainer.tensorboard", "false"])
    assert code == 0
    assert path.read_bytes() == before
    return path, out


def test_train_writes_checkpoint_split_and_metrics(run_dir):
    _, out = run_dir
    meta = json.loads((out / train.POPULATIONS_FILE).read_text())
    assert meta["treatments"] == ["treated"] and meta["dim"] == 3 and meta["rep"] == "X"
    assert len(meta["splits"]["test"]) == 2 and len(meta["splits"]["train"]) == 4
    assert meta["train_populations"] == meta["splits"]["train"]
    metrics = json.loads((out / "final_metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["test_w2"] > 0
    assert (out / "prediction_test.png").stat().st_size > 1000
    model, cfg, _ = train.load_trained(out)
    assert cfg.population_key == "population" and cfg.model.knn_k == 4
    assert model.conditioning == "encoder" and not model.training


def test_predict_command_writes_a_new_file_only(run_dir, tmp_path):
    source, out = run_dir
    before = source.read_bytes()
    target = tmp_path / "pred.h5ad"
    png = tmp_path / "pred.png"
    code = cli.commands()["predict"](["--checkpoint", str(out), "--adata", str(source), "--out", str(target),
                                      "--steps", "3", "--plot", str(png)])
    assert code == 0 and source.read_bytes() == before
    predicted = anndata.read_h5ad(target)
    control = (predicted.obs["condition"] == "control").to_numpy()
    assert np.isfinite(predicted.layers["X_meta_fm"][control]).all()
    assert np.isnan(predicted.layers["X_meta_fm"][~control]).all()
    assert png.stat().st_size > 1000
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind
    with pytest.raises(ConfigError, match="never overwritten"):
        cli.predict_main(["--checkpoint", str(out), "--adata", str(source), "--out", str(source)])
    assert source.read_bytes() == before


def test_bad_checkpoint_and_unknown_method(tmp_path, capsys):
    with pytest.raises(CheckpointError):
        train.load_trained(tmp_path)
    assert train.main(["nonsense"]) == 2
    assert "meta_fm or gumbel_fm" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="population_kee"):
        train.main(["meta_fm", "--adata", "x.h5ad", "--population-kee", "p"])


def test_commands_and_gumbel_dispatch(monkeypatch):
    seen = {}
    fake = types.ModuleType("flowzoo.biology.sequences.cli")
    fake.train_main = lambda argv: seen.setdefault("train", list(argv)) and 0
    fake.sample_main = lambda argv: seen.setdefault("sample", list(argv)) and 0
    monkeypatch.setitem(sys.modules, "flowzoo.biology.sequences.cli", fake)
    table = cli.commands()
    assert set(table) == {"train", "predict", "sample"}
    assert table["train"](["gumbel_fm", "--fasta", "s.fa", "--out", "run"]) == 0
    assert seen["train"] == ["--fasta", "s.fa", "--out", "run"]
    table["sample"](["--n", "3"])
    assert seen["sample"] == ["--n", "3"]
    assert train.normalize_option_names(["--population-key", "a-b", "--x-y=1-2"]) == [
        "--population_key", "a-b", "--x_y=1-2"]
