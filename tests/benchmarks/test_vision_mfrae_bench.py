"""The MF-RAE benchmark section runs on a tiny digits setting and returns its rows in the expected layout."""

import math

import pytest

from benchmarks.vision_mfrae import COLUMNS, JUMPS, TEACHER_EULER, Settings, format_table, rows

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = Settings(ae_steps=20, ae_channels=4, noise_tau=0.3, teacher_steps=20, student_steps=10, batch=16, width=8,
                lr=2e-3, cmt_steps=2, mid_fraction=0.3, eval_every=5, eval_samples=30, final_samples=30)


def test_mfrae_rows_on_digits(tmp_path_factory, monkeypatch):
    # the session's shared feature cache: the vision tests train the same 20-px digits classifiers
    monkeypatch.setenv("FLOWZOO_CACHE", str(tmp_path_factory.getbasetemp() / "flowzoo_cache"))
    samples = {}
    table = rows(data="digits", settings=TINY, samples=samples)
    assert len(table) == 1 + len(TEACHER_EULER) + 2 * len(JUMPS)
    assert all(set(COLUMNS) <= set(row) and row["section"] == "mfrae" for row in table)
    recon = table[0]
    assert "reconstruction" in recon["method"] and math.isfinite(recon["psnr"]) and recon["psnr"] > 0
    assert [row["nfe"] for row in table[1:4]] == list(TEACHER_EULER)
    students = table[4:]
    assert [row["nfe"] for row in students] == list(JUMPS) * 2
    assert all(row["method"].startswith("MF-RAE") for row in students[:3])
    assert all(row["method"].startswith("MeanFlow") for row in students[3:])
    assert all(math.isfinite(row["fd"]) and 0 <= row["accuracy"] <= 1 for row in table)
    assert "1-jump FD at step 5:" in students[0]["note"] and len(samples) == len(table) - 1
    assert format_table(table).count("\n") == len(table) + 1
