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
    per_dataset = 8 if peers else 5
    assert len(rows) == 2 * per_dataset
    assert all(set(bench.COLUMNS) <= set(row) for row in rows)
    dfm = [r for r in rows if "DFM" in r["method"] and r["method"] != bench.AA_COPY]
    assert all(math.isfinite(r["NLL/token"]) and r["NLL/token"] > 0 for r in dfm)
    assert all(r["NLL/token"] == "n/a" for r in rows if "simplex" in r["method"] or "Gumbel" in r["method"])
    if peers:
        assert all(r["vs flow_matching"] == pytest.approx(1.0) for r in rows
                   if r["method"].startswith("flow_matching") and r["method"] != bench.AA_COPY)
        aa = [r for r in rows if r["method"] == bench.AA_COPY]
        assert len(aa) == 2 and all(r["NLL/token"] == "n/a" and r["vs flow_matching"] > 0 for r in aa)
        low, high = (float(v) for v in aa[0]["ratio 95% CI"].strip("[]").split(","))
        assert low <= aa[0]["vs flow_matching"] <= high
    assert "| dataset | method |" in bench.format_table(rows)


def test_ratio_interval_brackets_the_median_and_narrows_with_more_rounds():
    import numpy as np
    rng = np.random.default_rng(1)
    ref = rng.uniform(1.0, 2.0, 400)
    times = ref * rng.normal(1.05, 0.05, 400)
    low, high = (float(v) for v in bench.ratio_interval(times, ref).strip("[]").split(","))
    assert low <= bench.paired_step_ratio(times, ref) <= high and low < 1.05 < high
    few_low, few_high = (float(v) for v in bench.ratio_interval(times[:20], ref[:20]).strip("[]").split(","))
    assert few_high - few_low > high - low


def test_main_writes_the_quick_table(_results_to_tmp, monkeypatch):
    monkeypatch.setattr(bench, "SETTINGS", {True: TINY, False: TINY})
    bench.main(["--quick", "--threads", "1"])
    record = json.loads((_results_to_tmp / "discrete_vs_peers.quick.json").read_text())
    assert record["columns"] == bench.COLUMNS and record["quick"] is True and len(record["rows"]) >= 10
