"""benchmarks/biology.py: training populations are also scored on fresh cells of the same populations."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("scanpy")
from benchmarks import biology as bench  # noqa: E402  (after the skip: the benchmark needs scanpy)


def test_fresh_cells_are_the_same_patients_and_every_method_is_scored_on_them():
    popset = bench.build_dataset("pbmc", quick=True, seed=0)
    fresh = bench.build_dataset("pbmc", quick=True, seed=0, cells_seed=bench.FRESH_CELLS_SEED)
    picked, picked_fresh = bench._training_subset(popset, 4), bench._training_subset(fresh, 4)
    assert [p.population for p in picked] == [p.population for p in picked_fresh]
    assert not any(p.source.equal(q.source) for p, q in zip(picked, picked_fresh))
    no_op = bench.no_op_scores(popset, 4, fresh)
    # The same patients: doing nothing is as far from the treated cells on fresh cells as on the original ones.
    assert abs(no_op["train_fresh"]["w2"] - no_op["train"]["w2"]) < 0.1 * no_op["train"]["w2"]
    scores = bench.train_and_score(popset, "pbmc", "meta_fm", 0, 3, 2, "exact_ot", "characteristic", fresh)
    assert set(scores) == {"test", "train", "train_fresh"}
    assert all(math.isfinite(s["w2"]) for s in scores.values())


def test_pbmc_meta_fm_embeds_the_whole_control_population():
    assert bench.options_for("pbmc", "meta_fm", "exact_ot", population_cells=300).context_cells == 300
    assert bench.options_for("letters", "meta_fm", "exact_ot").context_cells == bench.LETTER_POINTS


def test_composition_floor_is_what_the_cells_cannot_tell():
    adata = bench.build_adata("pbmc", quick=True, seed=0)
    popset = bench.build_dataset("pbmc", quick=True, seed=0, adata=adata)
    pairs = bench._training_subset(popset, 3)
    floor = bench.composition_floor_scores(adata, pairs)
    no_op = bench.no_op_scores(popset, 3)["train"]
    assert 0.05 < floor["w2"] < 0.5 * no_op["w2"]
    # told the true composition (what the per-population model learns from the patient's identity), it is exact
    assert bench.composition_floor_scores(adata, pairs, known_composition=True)["w2"] < 1e-3
