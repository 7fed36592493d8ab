"""The SymmFlow benchmark on a tiny setting: every column, all three tasks, a verdict in SymmFlow's notes, and a
table that benchmarks.results can save."""

import json

from benchmarks import vision_symmflow
from benchmarks.results import save_table

TINY = {**vision_symmflow.SETTINGS["quick"], "size": 8, "train": 48, "test": 16, "steps": 3, "batch": 8,
        "channels": 8, "feature_epochs": 1, "gen_steps": 2}


def test_rows_have_every_column_and_task(tmp_path):
    rows = vision_symmflow.dataset_rows("shapes", TINY, seed=0)
    assert all(list(row) == list(vision_symmflow.COLUMNS) for row in rows)
    assert {row["task"] for row in rows} == {"segmentation", "classification", "generation"}
    symm = [row for row in rows if row["method"].startswith("SymmFlow")]
    assert len(symm) == 3 and all(("holds" in row["note"]) or ("fails" in row["note"]) for row in symm)
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in rows if row["accuracy"] is not None)
    assert all(row["nfe"] >= 1 and row["train_ms_per_step"] > 0 for row in rows)
    assert "SymmFlow" in vision_symmflow.format_table(rows)
    path = save_table("vision_symmflow", rows, title="t", command="c", quick=True, notes=list(vision_symmflow.NOTES),
                      directory=tmp_path)
    assert len(json.loads(path.read_text())["rows"]) == len(rows)
