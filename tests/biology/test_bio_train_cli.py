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
    with pytest.raises(ConfigError, match="meta_fm or gumbel_fm"):
        train.main(["nonsense"])
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


def test_predict_refuses_an_existing_out_and_records_provenance(run_dir, tmp_path):
    source, out = run_dir
    target = tmp_path / "pred.h5ad"
    target.write_bytes(b"unrelated")
    argv = ["--checkpoint", str(out), "--adata", str(source), "--out", str(target), "--steps", "2",
            "--progress", "false"]
    with pytest.raises(ConfigError, match="--overwrite"):
        cli.predict_main(argv)
    assert target.read_bytes() == b"unrelated"
    assert cli.predict_main(argv + ["--overwrite", "true"]) == 0
    record = anndata.read_h5ad(target).uns["X_meta_fm"]
    assert record["method"] == "meta_fm" and record["solver"] == "euler" and record["steps"] == 2
    assert len(record["weights_sha256"]) == 64 and record["checkpoint"] and record["flowzoo_version"]
    _, _, meta = train.load_trained(out)
    assert record["weights_sha256"] == meta["weights_sha256"]


def test_predict_names_a_population_too_small_for_the_encoder(run_dir, tmp_path):
    source, out = run_dir
    small = anndata.read_h5ad(source)
    keep = ~((small.obs["population"] == "p1") & (small.obs["condition"] == "control")).to_numpy()
    keep[np.flatnonzero(~keep)[0]] = True  # p1 keeps one control cell
    path = tmp_path / "small.h5ad"
    small[keep].copy().write_h5ad(path)
    with pytest.raises(ConfigError, match=r"'p1' \(1 control cells\)"):
        cli.predict_main(["--checkpoint", str(out), "--adata", str(path), "--out", str(tmp_path / "p.h5ad")])
    assert not (tmp_path / "p.h5ad").exists()


def test_missing_checkpoint_names_the_training_command(tmp_path):
    with pytest.raises(CheckpointError, match="flowzoo.biology.train meta_fm") as error:
        train.load_trained(tmp_path / "no_such_run")
    assert "resume" not in str(error.value)


def test_train_reports_dropped_populations_and_needs_validation(tmp_path, capsys):
    adata = toy_adata(populations=5, cells=6, dim=2)
    condition = adata.obs["condition"].astype(str).to_numpy().copy()
    condition[((adata.obs["population"] == "p0") & (adata.obs["condition"] == "control")).to_numpy()] = "other"
    adata.obs["condition"] = condition
    path = tmp_path / "screen.h5ad"
    adata.write_h5ad(path)
    base = ["meta_fm", "--adata", str(path), "--population_key", "population", "--condition_key", "condition",
            "--treated", "treated", "--out", str(tmp_path / "run"), "--model.encoder", "deepsets",
            "--trainer.steps", "2", "--trainer.progress", "false", "--trainer.tensorboard", "false",
            "--eval_steps", "2", "--model.cells_per_population", "4", "--model.populations_per_batch", "2"]
    with pytest.raises(ConfigError, match="validation population"):
        train.main(base + ["--val_fraction", "0.05", "--test_fraction", "0.25"])
    printed = capsys.readouterr().out
    assert "population 'p0': dropped: no control cells" in printed and "'other'" in printed
    assert not (tmp_path / "run").exists()


def test_split_column_holding_out_a_dropped_population_fails(tmp_path):
    from flowzoo.biology.cells.populations import load_populations

    adata = toy_adata(populations=4, cells=6, dim=2)
    adata = adata[~((adata.obs["population"] == "p3") & (adata.obs["condition"] == "control")).to_numpy()].copy()
    adata.obs["split"] = ["test" if p == "p3" else "validation" if p == "p2" else "train"
                          for p in adata.obs["population"]]
    with pytest.raises(ConfigError, match="'p3'"):
        load_populations(adata, population_key="population", condition_key="condition", split_key="split",
                         min_cells=2)
    adata.obs["split"] = ["validation" if p == "p2" else "train" for p in adata.obs["population"]]
    popset = load_populations(adata, population_key="population", condition_key="condition", split_key="split",
                              min_cells=2)
    assert popset.dropped == {"p3": "dropped: no control cells (condition 'control')"}


def test_train_help_lists_the_options(capsys):
    assert train.main(["--help"]) == 0
    printed = capsys.readouterr().out
    assert "--population_key" in printed and "--trainer.steps" in printed and "gumbel_fm" in printed
