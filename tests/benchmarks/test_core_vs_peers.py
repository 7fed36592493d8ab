"""benchmarks/core_vs_peers.py: the paired statistic, the interleaving and a tiny run of the training and
sampling tables (skipped without the peers). Behaviour, not speed: only what holds on any machine is checked."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from benchmarks import core_vs_peers as bench

torch.set_num_threads(1)


def test_paired_ratio_compares_round_by_round():
    # A slow spell that doubles both steps of a round cancels in the paired ratio; the ratio of medians keeps it.
    fast = [1.0, 1.0, 2.0, 2.0, 2.0]
    slow = [1.1, 1.1, 2.2, 2.2, 2.2]
    assert bench.paired_ratio(slow, fast) == pytest.approx(1.1)
    assert bench.paired_ratio(fast, fast) == 1.0


def test_relative_step_times_gives_the_fastest_peer_one_and_scores_everyone_alike():
    times = {"ours": [1.0, 2.0, 1.0], "peer a": [1.0, 2.0, 1.0], "peer b": [2.0, 4.0, 2.0]}
    relative = bench.relative_step_times(times, peers=["peer a", "peer b"])
    assert relative == {"ours": 1.0, "peer a": 1.0, "peer b": 2.0}


def test_interleaved_min_times_runs_every_function_every_round_in_a_random_order():
    calls = []
    fns = [lambda: calls.append("a") or "a", lambda: calls.append("b") or "b"]
    best, outs = bench._interleaved_min_times(fns, 6, np.random.default_rng(0))
    assert outs == ["a", "b"] and sorted(calls) == ["a"] * 6 + ["b"] * 6
    assert all(t > 0 and math.isfinite(t) for t in best)
    firsts = {calls[2 * r] for r in range(6)}
    assert firsts == {"a", "b"}  # neither function always runs first


def _args(**kw) -> argparse.Namespace:
    base = dict(steps=4, batch=16, eval_samples=64, sample_batch=[8], sample_reps=1, seed=0, threads=1, quick=True)
    base.update(kw)
    return argparse.Namespace(**base)


def test_training_table_has_every_method_and_a_paired_ratio():
    pytest.importorskip("torchcfm")
    pytest.importorskip("flow_matching")
    rows = bench.bench_training(_args(), bench._peers())
    assert [r["method"] for r in rows] == list(bench.TRAINING_METHODS)
    peer_scores = [r["step time / fastest peer"] for r in rows if not r["method"].startswith("flowzoo")]
    assert min(peer_scores) == 1.0 and all(s >= 1.0 for s in peer_scores)
    assert all(r["steps/s"] > 0 and math.isfinite(r["W2@100"]) for r in rows)


def test_sampling_table_agrees_with_torchdiffeq_at_every_batch():
    pytest.importorskip("torchdiffeq")
    rows = bench.bench_sampling(_args(sample_batch=[4, 8]), peers={})
    assert [(r["batch"], r["solver"]) for r in rows] == [(b, m) for b in (4, 8) for m in ("euler", "rk4", "dopri5")]
    fixed = [r for r in rows if r["solver"] != "dopri5"]
    # Euler is the same update in both; torchdiffeq's rk4 is the 3/8 rule, so the two rk4 ends differ slightly.
    assert all(r["max |diff|"] < (1e-5 if r["solver"] == "euler" else 1e-3) for r in fixed)
    assert all(r["ratio"] > 0 for r in rows)
