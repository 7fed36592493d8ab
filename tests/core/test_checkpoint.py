"""Tests of crash-safe checkpoints: round trip, hash verification, read-only failures, pruning."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

from flowzoo.core.config import load_config
from flowzoo.core.errors import CheckpointError
from flowzoo.core.training import (
    Trainer,
    TrainerConfig,
    atomic_write_bytes,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    verify_checkpoint,
    write_checkpoint,
)
from flowzoo.core.training import checkpoint as checkpoint_module


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyVelocity(nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], dim=1))


def fm_loss(model, batch):
    x1 = batch["x1"]
    x0 = torch.randn_like(x1)
    t = torch.rand(len(x1))
    x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
    return (model(x_t, t) - (x1 - x0)).pow(2).mean(), {}


def sample_batch(generator):
    return {"x1": torch.randn(8, 2, generator=generator) + 2.0}


@dataclass
class RunConfig:
    hidden: int = 16
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def trained_run(tmp_path: Path, steps: int = 10, **overrides) -> tuple[Trainer, Path]:
    options = dict(steps=steps, batch_size=8, checkpoint_every=5, keep_checkpoints=0, out_dir=str(tmp_path / "run"),
                   progress=False, tensorboard=False, device="cpu", ema_decay=0.5, log_every=5)
    options.update(overrides)
    cfg = RunConfig(trainer=TrainerConfig(**options))
    torch.manual_seed(0)
    trainer = Trainer(TinyVelocity(), fm_loss, sample_batch, cfg.trainer, run_config=cfg)
    trainer.fit()
    return trainer, tmp_path / "run"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file (and directory) under ``root`` with its bytes: proof that nothing changed."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(root.rglob("*"))}


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two" and [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_round_trip_restores_weights_ema_state_and_config(tmp_path):
    trainer, run = trained_run(tmp_path)
    checkpoint = read_checkpoint(run)  # the run directory resolves to the latest checkpoint
    assert checkpoint.path == run / "checkpoints" / "step_0000010" and checkpoint.step == 10
    assert set(checkpoint.files) == {"model.safetensors", "ema.safetensors", "state.pt", "config.yaml", "trainer.yaml"}
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(checkpoint.model[name], value)
    for name, value in trainer.ema.state_dict().items():
        assert torch.equal(checkpoint.ema[name], value)
    assert checkpoint.state["step"] == 10 and len(checkpoint.state["ranks"]) == 1
    assert set(checkpoint.state["ranks"][0]) == {"torch", "cuda", "numpy", "python", "data"}
    loaded = load_config(RunConfig, checkpoint.path / "config.yaml")
    assert loaded == trainer.run_config
    assert load_config(TrainerConfig, checkpoint.path / "trainer.yaml") == trainer.config
    manifest = json.loads((checkpoint.path / "manifest.json").read_text())
    assert manifest["step"] == 10 and set(manifest["files"]) == set(checkpoint.files)
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000010"


@pytest.mark.parametrize("damage, culprit", [
    ("flip", "model.safetensors"),
    ("flip", "state.pt"),
    ("truncate", "ema.safetensors"),
    ("truncate", "manifest.json"),
    ("delete", "state.pt"),
    ("delete", "manifest.json"),
])
def test_damaged_checkpoint_raises_and_changes_nothing(tmp_path, damage, culprit):
    _, run = trained_run(tmp_path)
    target = run / "checkpoints" / "step_0000010" / culprit
    data = target.read_bytes()
    if damage == "flip":
        middle = len(data) // 2
        target.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 4]) + data[middle + 4:])
    elif damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    else:
        target.unlink()
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=culprit):
        read_checkpoint(run / "checkpoints" / "step_0000010")
    with pytest.raises(CheckpointError, match=culprit):
        verify_checkpoint(run / "checkpoints" / "step_0000010")
    # Resuming from it by name fails the same way, before anything is written.
    with pytest.raises(CheckpointError, match=culprit):
        trained_run(tmp_path, steps=15, resume=str(run / "checkpoints" / "step_0000010"))
    assert snapshot(run) == before
    # The older checkpoint is intact and can be resumed explicitly.
    assert read_checkpoint(run / "checkpoints" / "step_0000005").step == 5


def test_resume_skips_a_corrupted_latest_checkpoint_and_says_so(tmp_path, capsys):
    _, run = trained_run(tmp_path)
    reference, _ = trained_run(tmp_path / "reference")
    damaged = run / "checkpoints" / "step_0000010" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-8])
    capsys.readouterr()
    trainer, _ = trained_run(tmp_path, resume=True)
    err = capsys.readouterr().err
    assert f"skipped checkpoint {damaged.parent}" in err and "model.safetensors" in err
    assert "resuming from" in err and "step_0000005" in err
    assert trainer.resumed_from == run / "checkpoints" / "step_0000005" and trainer.step == 10
    # Rerunning steps 6-10 from step 5 replaced the damaged checkpoint with the same run's good one.
    assert verify_checkpoint(run / "checkpoints" / "step_0000010")
    final = read_checkpoint(run).model
    assert all(torch.equal(final[k], v) for k, v in reference.model.state_dict().items())
    assert damaged.read_bytes() == (tmp_path / "reference" / "run" / "checkpoints" / "step_0000010" /
                                    "model.safetensors").read_bytes()


def test_resume_fails_when_no_checkpoint_verifies(tmp_path):
    _, run = trained_run(tmp_path)
    for step in ("step_0000005", "step_0000010"):
        (run / "checkpoints" / step / "state.pt").unlink()
    before = snapshot(run)
    with pytest.raises(CheckpointError, match="step_0000010"):  # the newest one's error
        trained_run(tmp_path, steps=15, resume=True)
    assert snapshot(run) == before


def test_missing_checkpoint_paths(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere"):
        read_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="nowhere"):
        trained_run(tmp_path, resume=str(tmp_path / "nowhere"))
    assert not (tmp_path / "run").exists()  # nothing was created
    _, run = trained_run(tmp_path)
    (run / "checkpoints" / "latest").write_text("step_0000099\n")
    with pytest.raises(CheckpointError, match="step_0000099"):
        latest_checkpoint(run / "checkpoints")
    # Resuming says the pointer is wrong and continues from the newest checkpoint that verifies.
    trainer, _ = trained_run(tmp_path, steps=15, resume=True)
    assert trainer.resumed_from == run / "checkpoints" / "step_0000010" and trainer.step == 15


def test_resume_from_an_explicit_older_checkpoint(tmp_path):
    _, run = trained_run(tmp_path)
    trainer, _ = trained_run(tmp_path, steps=12, resume=str(run / "checkpoints" / "step_0000005"))
    assert trainer.step == 12 and latest_checkpoint(run / "checkpoints").name == "step_0000012"


def test_incompatible_model_is_a_checkpoint_error(tmp_path):
    _, run = trained_run(tmp_path)
    cfg = TrainerConfig(steps=12, batch_size=8, out_dir=str(run), resume=True, progress=False, tensorboard=False)
    before = snapshot(run)
    with pytest.raises(CheckpointError, match="fit the model"):
        Trainer(TinyVelocity(hidden=32), fm_loss, sample_batch, cfg).fit()
    assert snapshot(run) == before


def test_keep_checkpoints_prunes_old_ones(tmp_path):
    _, run = trained_run(tmp_path, steps=25, keep_checkpoints=2)
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_0000020", "step_0000025"]
    assert latest_checkpoint(run / "checkpoints").name == "step_0000025"


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    root = tmp_path / "ckpt"
    write_checkpoint(root, 1, {"model.safetensors": b"a", "state.pt": b"b"})
    real_write = checkpoint_module.atomic_write_bytes

    def failing_write(path, data):
        if Path(path).name == "state.pt":
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(checkpoint_module, "atomic_write_bytes", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(root, 2, {"model.safetensors": b"c", "state.pt": b"d"})
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(root)] == ["step_0000001"] and latest_checkpoint(root).name == "step_0000001"
    assert not list(root.glob(".staging-*"))
    assert verify_checkpoint(root / "step_0000001") == {"model.safetensors": b"a", "state.pt": b"b"}


def test_stale_staging_directory_is_ignored_and_cleaned(tmp_path):
    root = tmp_path / "ckpt"
    (root / ".staging-step_0000003-1-dead").mkdir(parents=True)
    assert latest_checkpoint(root) is None and list_checkpoints(root) == []
    write_checkpoint(root, 4, {"state.pt": b"x"})
    assert not list(root.glob(".staging-*")) and latest_checkpoint(root).name == "step_0000004"


def test_stale_latest_pointer_temporary_is_cleaned(tmp_path):
    """A kill between writing the new `latest` and renaming it over the old one leaves `.latest.tmp-*`."""
    root = tmp_path / "checkpoints"
    write_checkpoint(root, 2, {"a.bin": b"2"})
    stale = root / ".latest.tmp-12345-deadbeef"
    stale.write_text("step_0000004\n")
    assert latest_checkpoint(root).name == "step_0000002"  # the temporary is never read
    write_checkpoint(root, 4, {"a.bin": b"4"})
    assert not stale.exists() and sorted(p.name for p in root.iterdir()) == ["latest", "step_0000002", "step_0000004"]


def test_rewriting_a_step_replaces_it(tmp_path):
    root = tmp_path / "ckpt"
    write_checkpoint(root, 4, {"state.pt": b"old"})
    write_checkpoint(root, 4, {"state.pt": b"new"})
    assert verify_checkpoint(root / "step_0000004") == {"state.pt": b"new"}
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000004"]


def test_missing_pointer_falls_back_to_the_newest_directory(tmp_path):
    root = tmp_path / "ckpt"
    write_checkpoint(root, 1, {"state.pt": b"x"})
    write_checkpoint(root, 2, {"state.pt": b"y"})
    (root / "latest").unlink()  # a crash between the rename and the pointer update
    assert latest_checkpoint(root).name == "step_0000002"
