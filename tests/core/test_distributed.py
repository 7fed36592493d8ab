"""Tests of DDP support: the helpers, per-rank data sharding, and a real 2-process run under torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowzoo.core.training import (
    DatasetStream,
    SamplerStream,
    cleanup,
    init_distributed,
    is_distributed,
    is_main_process,
    rank,
    read_checkpoint,
    world_size,
)

SCRIPT = Path(__file__).with_name("ddp_train_script.py")


def test_single_process_helpers(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not is_distributed() and rank() == 0 and world_size() == 1 and is_main_process()
    assert init_distributed() is False  # nothing to join
    cleanup()  # harmless without a group
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert rank() == 1 and world_size() == 2 and not is_main_process()  # read from the launcher's env


def test_dataset_shards_are_disjoint_and_cover_the_epoch():
    data = torch.arange(23.0)[:, None]
    streams = [DatasetStream(data, batch_size=4, seed=1, rank=r, world_size=2) for r in range(2)]
    assert all(s.batches_per_epoch == 3 for s in streams)  # 12 per rank after padding, 3 full batches
    seen = [torch.cat([s.next() for _ in range(3)]).flatten().tolist() for s in streams]
    assert len(set(seen[0]) & set(seen[1])) <= 1  # only the one padding sample (23 -> 24) can repeat
    assert set(seen[0]) | set(seen[1]) == set(range(23))
    # The next epoch is a new permutation, the same on both ranks' sides of the split.
    again = [DatasetStream(data, batch_size=4, seed=1, rank=r, world_size=2) for r in range(2)]
    assert [torch.cat([s.next() for _ in range(3)]).flatten().tolist() for s in again] == seen
    assert streams[0].next().flatten().tolist() != seen[0][:4] and streams[0].epoch == 1


def test_sampler_streams_differ_by_rank():
    draws = [SamplerStream(lambda g: torch.randn(4, generator=g), seed=0, rank=r).next() for r in range(2)]
    assert not torch.equal(draws[0], draws[1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(out_dir: Path, mode: str, *extra: str) -> list[dict]:
    """Run the helper script on 2 CPU processes (gloo); returns what each rank saved."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(SCRIPT), str(out_dir), mode,
               *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("mode", ["callable", "dataset"])
def test_ddp_replicas_stay_identical(tmp_path, mode):
    ranks = _torchrun(tmp_path, mode)
    assert ranks[0]["step"] == ranks[1]["step"] == 20
    for name, value in ranks[0]["final"].items():
        assert torch.equal(value, ranks[1]["final"][name]), name  # replicas identical
        assert not torch.equal(value, ranks[0]["initial"][name]), name  # and trained
    assert not torch.equal(ranks[0]["initial"]["net.0.weight"], ranks[1]["initial"]["net.0.weight"])
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])  # each rank sees its own shard
    assert ranks[0]["evaluated"] == [10, 20] and ranks[1]["evaluated"] == []  # only rank 0 evaluates
    checkpoint = read_checkpoint(tmp_path)
    assert checkpoint.step == 20 and checkpoint.state["world_size"] == 2 and len(checkpoint.state["ranks"]) == 2
    assert all(torch.equal(checkpoint.model[k], v) for k, v in ranks[0]["final"].items())
    assert (tmp_path / "metrics.csv").read_text().count("\n") >= 5


@pytest.mark.slow
def test_ddp_interrupted_run_resumes_exactly(tmp_path):
    """Per-rank RNG and data states are gathered into the checkpoint: a 2-process run resumes exactly."""
    full = _torchrun(tmp_path / "full", "dataset")
    first = _torchrun(tmp_path / "cut", "dataset", "10")
    assert first[0]["step"] == 10
    resumed = _torchrun(tmp_path / "cut", "dataset")
    assert resumed[0]["step"] == 20 and resumed[1]["resumed_from"].name == "step_0000010"
    for r in range(2):
        for name, value in full[r]["final"].items():
            assert torch.equal(value, resumed[r]["final"][name]), (r, name)
