"""flowzoo.biology.sequences.cli: train -> guide -> sample from FASTA files, and the errors on bad input."""

import hashlib

import pytest
import torch

from flowzoo.biology.sequences.hmm import planted_motif_hmm
from flowzoo.biology.sequences.cli import load_sequence_model, sample_main, train_main
from flowzoo.biology.sequences.alphabets import DNA, SequenceError, read_fasta, write_fasta
from flowzoo.core.errors import CheckpointError, ConfigError, EmptyInputError

torch.set_num_threads(1)

TINY = ["--hidden", "16", "--depth", "1", "--trainer.steps", "20", "--trainer.batch_size", "32",
        "--trainer.progress", "false", "--sample_steps", "10"]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("seqcli")
    hmm = planted_motif_hmm(4, seed=0)
    tokens = hmm.sample(120, 12, generator=torch.Generator().manual_seed(0))
    fasta = write_fasta(root / "train.fa", [(f"s{i} label={i % 2}", DNA.decode(row)) for i, row in enumerate(tokens)])
    digest = _digest(fasta)
    assert train_main(["gumbel_fm", "--fasta", str(fasta), "--alphabet", "dna", "--out", str(root / "run"), *TINY]) == 0
    motif = DNA.decode(hmm.motif)
    assert train_main(["guide", "--fasta", str(fasta), "--motif", motif, "--out", str(root / "guide"),
                       "--steps", "20", "--hidden", "8", "--progress", "false"]) == 0
    assert _digest(fasta) == digest  # the user's file is only read
    return root


def test_train_writes_model_and_checkpoints(trained):
    assert (trained / "run" / "sequence_model.safetensors").is_file()
    assert (trained / "run" / "checkpoints" / "latest").exists()
    net, method, alphabet, meta = load_sequence_model(trained / "run")
    assert (meta["length"], meta["method"], alphabet.letters) == (12, "gumbel_fm", "ACGT")
    assert net(torch.full((2, 12, 4), 0.25), torch.zeros(2)).shape == (2, 12, 4)


def test_noise_schedule_is_stored_and_old_checkpoints_load_on_the_papers_path(trained, tmp_path):
    import json
    import shutil

    _, method, _, meta = load_sequence_model(trained / "run")
    assert meta["path"]["noise"] == "fixed" and method.path.noise == "fixed"
    old = shutil.copytree(trained / "run", tmp_path / "old_run")
    meta_file = old / "sequence_model.json"
    stored = json.loads(meta_file.read_text())
    del stored["path"]["noise"]  # what a checkpoint written before the fixed-noise path holds
    meta_file.write_text(json.dumps(stored))
    _, method, _, _ = load_sequence_model(old)
    assert method.path.noise == "tempered"


@pytest.mark.parametrize("guided", [False, True])
def test_sample_writes_fasta(trained, guided):
    out = trained / f"out_{guided}.fa"
    argv = ["--checkpoint", str(trained / "run"), "--n", "7", "--out", str(out), "--progress", "false"]
    if guided:
        argv += ["--guide", str(trained / "guide"), "--guide_samples", "2"]
    assert sample_main(argv) == 0
    records = read_fasta(out)
    assert len(records) == 7 and all(len(r.sequence) == 12 and set(r.sequence) <= set("ACGT") for r in records)
    assert ("guide_strength" in records[0].header) == guided


def test_header_labels_and_regression_guides(trained, tmp_path):
    fasta = tmp_path / "labelled.fa"
    write_fasta(fasta, [(f"s{i} score={0.1 * i:.1f}", "ACGTACGTACGT") for i in range(6)])
    assert train_main(["guide", "--fasta", str(fasta), "--label_key", "score", "--out", str(tmp_path / "g"),
                       "--steps", "2", "--hidden", "4", "--progress", "false"]) == 0
    assert '"outputs": 1' in (tmp_path / "g" / "guide.json").read_text()
    write_fasta(fasta, [("s1 nolabel", "ACGT")])
    with pytest.raises(ConfigError, match="label=VALUE"):
        train_main(["guide", "--fasta", str(fasta), "--out", str(tmp_path / "h"), "--progress", "false"])


def test_bad_inputs_leave_files_untouched(trained, tmp_path):
    bad = tmp_path / "bad.fa"
    bad.write_text(">a\nACGT\n>b\nACZT\n")
    digest = _digest(bad)
    with pytest.raises(SequenceError, match="'Z' at position 3 in record 'b'"):
        train_main(["--fasta", str(bad), "--out", str(tmp_path / "r1"), *TINY])
    assert _digest(bad) == digest and not (tmp_path / "r1").exists()
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    with pytest.raises(EmptyInputError):
        train_main(["--fasta", str(empty), "--out", str(tmp_path / "r2"), *TINY])
    with pytest.raises(ConfigError, match="--fasta"):
        train_main(["--out", str(tmp_path / "r3")])
    with pytest.raises(CheckpointError, match="sequence_model.json"):
        sample_main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "o.fa")])
    protein_guide = tmp_path / "pg.fa"
    write_fasta(protein_guide, [("s label=1", "ACDEFGHIKLMN"), ("t label=0", "MNPQRSTVWYAC")])
    assert train_main(["guide", "--fasta", str(protein_guide), "--alphabet", "protein", "--out", str(tmp_path / "pg"),
                       "--steps", "1", "--hidden", "4", "--progress", "false"]) == 0
    with pytest.raises(ConfigError, match="alphabet"):
        sample_main(["--checkpoint", str(trained / "run"), "--guide", str(tmp_path / "pg"), "--out",
                     str(tmp_path / "o.fa"), "--progress", "false"])
    assert not (tmp_path / "o.fa").exists()
