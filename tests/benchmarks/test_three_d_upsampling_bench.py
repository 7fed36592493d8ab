"""benchmarks/three_d_upsampling.py: the quick path on a tiny setting writes its table with every method and a
verdict per PUFM++ stage."""

from __future__ import annotations

import importlib.util
import json
import math

import torch

from benchmarks import three_d_upsampling as bench


def test_tiny_run_writes_the_table_and_the_figure(_results_to_tmp, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "QUICK", {"shapes": 1, "patches": 2, "steps": 2, "stage2_steps": 1, "test_shapes": 1,
                                         "n_sparse": 24, "nfe": (1,), "curve_points": 3})
    monkeypatch.setattr(bench, "FIGURE", tmp_path / "figure.png")
    torch.set_num_threads(1)
    table = bench.main(["--quick"])
    methods = [row["method"] for row in table if row["ratio"] == 4]
    assert methods[0] == "midpoint interpolation" and len(methods) == 6
    assert {row["ratio"] for row in table} == {4, 16}
    assert all(row["verdict"] for row in table if row["method"].startswith("PUFM++"))
    record = json.loads((_results_to_tmp / "three_d_upsampling.quick.json").read_text())
    assert record["quick"] and any("PUFM++" in note for note in record["notes"])
    assert all(row["CD_x1e3"] > 0 and row["P2F_x1e3"] > 0 for row in record["rows"])
    if importlib.util.find_spec("open3d") is not None:  # the exact distance to the true mesh, next to the old P2F
        assert all(0 < row["P2F_mesh_x1e3"] < 10 * row["P2F_x1e3"] + 10 for row in record["rows"])
        assert any("beats midpoints on P2F_mesh" in note or "does NOT beat midpoints on P2F_mesh" in note
                   for note in record["notes"])
    else:
        assert all(math.isnan(row["P2F_mesh_x1e3"]) for row in record["rows"])
    assert (tmp_path / "figure.png").stat().st_size < 200_000
