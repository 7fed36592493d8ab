"""benchmarks/three_d_scene_flow.py: the quick path on a tiny setting writes its table with every row."""

from __future__ import annotations

import json

from benchmarks import three_d_scene_flow as bench


def test_tiny_run_writes_the_table_and_figure(_results_to_tmp, tmp_path):
    png = tmp_path / "flow.png"
    table = bench.main(["--quick", "--n_points", "64", "--train_steps", "2", "--n_test", "2", "--refine_steps", "3",
                        "--sizes", "3,5", "--main_size", "5", "--figure", str(png), "--work", str(tmp_path / "w")])
    methods = [(row["method"], row["train_scenes"]) for row in table]
    assert methods == [("zero flow", None), ("SCOOP raw", 5), ("SCOOP + refinement", 5), ("refinement from zero", None),
                       ("SCOOP + refinement, no smoothness", 5), ("SCOOP raw", 3), ("SCOOP + refinement", 3)]
    record = json.loads((_results_to_tmp / "three_d_scene_flow.quick.json").read_text())
    assert record["quick"] and any(note.startswith("claim") for note in record["notes"])
    assert all(0 <= row["Acc3DS"] <= 1 and row["EPE3D"] >= 0 for row in record["rows"])
    assert png.is_file() and png.stat().st_size < 200_000
