"""benchmarks/peers_discrete.py: a tiny run produces every row and column, and main() writes its table."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from benchmarks import peers_discrete as bench

TINY = dict(train_steps=3, length=6, hidden=8, depth=1, batch=16, sample_steps=3, n_samples=40, n_time=2, n_eval=10,
            train_size=100)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_run_has_every_method_and_column():
    args = argparse.Namespace(quick=True, seed=0, discrete_overrides=TINY)
    peers = bench.discrete_peers()
    rows = bench.bench_discrete(args, peers)
    per_dataset = 7 if peers else 5
    assert len(rows) == 2 * per_dataset
    assert all(set(bench.COLUMNS) <= set(row) for row in rows)
    dfm = [r for r in rows if "DFM" in r["method"]]
    assert all(math.isfinite(r["NLL/token"]) and r["NLL/token"] > 0 for r in dfm)
    assert all(r["NLL/token"] == "n/a" for r in rows if "simplex" in r["method"] or "Gumbel" in r["method"])
    if peers:
        assert all(r["vs flow_matching"] == pytest.approx(1.0) for r in rows if r["method"].startswith("flow_matching"))
    assert "| dataset | method |" in bench.format_table(rows)


def test_main_writes_the_quick_table(_results_to_tmp, monkeypatch):
    monkeypatch.setattr(bench, "SETTINGS", {True: TINY, False: TINY})
    bench.main(["--quick", "--threads", "1"])
    record = json.loads((_results_to_tmp / "discrete_vs_peers.quick.json").read_text())
    assert record["columns"] == bench.COLUMNS and record["quick"] is True and len(record["rows"]) >= 10
