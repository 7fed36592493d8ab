"""benchmarks/vision.py: the quick path on a tiny setting (digits, a few steps) writes every row and section, the
claims are stated in the notes, and a section whose module is missing is reported and skipped."""

from __future__ import annotations

import json
import math
import sys
import types

import pytest

from benchmarks import vision as bench

pytest.importorskip("sklearn")
TINY = ["--quick", "--datasets", "digits", "--steps", "3", "--batch", "16", "--n", "20", "--pairs", "16",
        "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("FLOWZOO_CACHE", str(tmp_path_factory.getbasetemp() / "flowzoo_cache"))


def test_quick_run_on_digits_writes_every_row(_results_to_tmp, monkeypatch, capsys):
    monkeypatch.setattr(bench, "OTHER_SECTIONS", ("nosuchsection",))
    assert bench.main([*TINY, "--sections", "fm,sourcefm,fewstep"]) == 0
    data = json.loads((_results_to_tmp / "vision_digits.quick.json").read_text())
    rows = data["rows"]
    names = {(row["method"], row["sampler"]) for row in rows}
    for steps in (4, 10, 50, 100):
        assert ("I-CFM", f"euler {steps}") in names and ("OT-CFM", f"euler {steps}") in names
    assert ("I-CFM", "dopri5") in names
    for steps in (5, 10, 20, 100):
        assert ("SourceFM OT-CFM pruned", f"euler {steps}") in names
    for nfe in (1, 2, 4):
        for method in ("MeanFlow (JVP)", "SplitMeanFlow", "MF-RAE path (CMT + MFD)"):
            assert (method, f"jumps {nfe}") in names
        assert ("2-rectified flow", f"euler {nfe}") in names and ("I-CFM + BOSS grid", f"boss {nfe}") in names
    assert ("I-CFM + FlowTurbo", "flowturbo 4") in names
    assert ("I-CFM + FlowTurbo + refiner", "flowturbo 4 + 3 refiner") in names
    for row in rows:
        assert math.isfinite(row["fd"]) and 0 <= row["class_acc"] <= 1 and row["ms_per_sample"] > 0
        assert row["train_ms_per_step"] > 0
        if row["sampler"].split()[0] in ("jumps", "euler", "boss", "flowturbo"):
            assert row["nfe"] == int(row["sampler"].split()[1])
    assert {r["fd_vs_baseline"] for r in rows if (r["method"], r["sampler"]) == ("I-CFM", "euler 100")} == {1.0}
    assert any("within 1.5x of 100-step FM" in note for note in data["notes"])
    assert any("pruning lowers FD at NFE 5 and 10" in note for note in data["notes"])
    assert data["quick"] is True


def test_peer_section_and_other_sections(_results_to_tmp, monkeypatch, capsys):
    """The peer rows; a section module's rows(quick=..., seed=...) is called and saved; a missing one is skipped."""
    pytest.importorskip("torchcfm")
    fake = types.ModuleType("benchmarks.vision_fake")
    fake.__doc__ = "A fake section."
    fake.rows = lambda *, quick, seed: [{"method": "x", "quick": quick, "seed": seed}]
    monkeypatch.setitem(sys.modules, "benchmarks.vision_fake", fake)
    monkeypatch.setattr(bench, "OTHER_SECTIONS", ("fake", "nosuchsection"))
    assert bench.main([*TINY, "--sections", "peer,fake,nosuchsection", "--seed", "3"]) == 0
    data = json.loads((_results_to_tmp / "vision_peer.quick.json").read_text())
    assert [row["backbone"] for row in data["rows"]] == ["torchcfm UNetModel", "flowzoo UNet"]
    assert all(row["samples_per_s"] > 0 for row in data["rows"])
    assert any("<= 1.0x torchcfm" in note for note in data["notes"])
    fake_table = json.loads((_results_to_tmp / "vision_fake.quick.json").read_text())
    assert fake_table["rows"] == [{"method": "x", "quick": True, "seed": 3}]
    assert "section nosuchsection" in capsys.readouterr().err


def test_a_pruned_source_that_accepts_nothing_leaves_empty_rows(_results_to_tmp, monkeypatch, capsys):
    from flowzoo.core.errors import ConfigError

    real = bench.run_source

    def refusing(run, prune=False):
        if prune:
            raise ConfigError("expected a pruned source that accepts draws; received 0 accepted")
        return real(run, prune=False)

    monkeypatch.setattr(bench, "run_source", refusing)
    assert bench.main([*TINY, "--sections", "sourcefm", "--steps", "1"]) == 0
    data = json.loads((_results_to_tmp / "vision_digits.quick.json").read_text())
    pruned = [row for row in data["rows"] if "pruned" in row["method"]]
    assert len(pruned) == 8 and all(row["fd"] is None for row in pruned)
    assert any("not measured" in note for note in data["notes"])
    assert "accepts draws" in capsys.readouterr().err


def test_bad_section_is_refused():
    with pytest.raises(SystemExit):
        bench.main(["--sections", "nope"])


def test_quick_run_writes_sample_grids_outside_the_docs(_results_to_tmp, monkeypatch, tmp_path):
    """Each data set's grid PNG is written (small, labelled rows of the rows' own samples); --quick leaves
    docs/_static/vision alone, by default into <--work>/figures."""
    from PIL import Image

    docs = bench.DOCS_FIGURES
    before = {p.name: p.stat().st_mtime_ns for p in docs.glob("*")} if docs.exists() else {}
    monkeypatch.setattr(bench, "OTHER_SECTIONS", ())
    assert bench.main([*TINY, "--sections", "fm", "--steps", "2", "--work", str(tmp_path / "work")]) == 0
    grid = tmp_path / "work" / "figures" / "vision_digits_samples.png"
    assert grid.is_file() and grid.stat().st_size < 200_000
    width, height = Image.open(grid).size
    assert height > 2 * 40 and width > height / 4      # 4 rows: I-CFM / OT-CFM at their fewest and most NFE
    after = {p.name: p.stat().st_mtime_ns for p in docs.glob("*")} if docs.exists() else {}
    assert after == before


def test_grid_rows_keep_fewest_and_most_nfe_per_method():
    from benchmarks.vision_grids import grid_rows

    rows = [{"method": m, "sampler": f"euler {n}", "nfe": n} for m in ("A", "B") for n in (4, 10, 100)]
    samples = {f"{r['method']} {r['sampler']}": None for r in rows}
    assert grid_rows(samples, rows) == ["A euler 4", "A euler 100", "B euler 4", "B euler 100"]


def test_reuse_loads_a_finished_run_and_retrains_a_changed_one(_results_to_tmp, monkeypatch, tmp_path, capsys):
    """--reuse skips a run finished with the same settings (its recorded ms per step comes back) and trains a run
    whose settings changed; without --work it is refused."""
    calls = []
    real_train = bench.train
    monkeypatch.setattr(bench, "train", lambda cfg: calls.append(cfg.method) or real_train(cfg))
    args = bench._parse([*TINY, "--work", str(tmp_path), "--reuse"])
    setting = bench.SETTINGS["digits"]
    _, first_ms = bench.train_run(setting, "icfm", tmp_path, args)
    _, again_ms = bench.train_run(setting, "icfm", tmp_path, args)
    assert calls == ["icfm"] and again_ms == first_ms
    args.steps = 4
    bench.train_run(setting, "icfm", tmp_path, args)
    assert calls == ["icfm", "icfm"]
    with pytest.raises(SystemExit):
        bench._parse([*TINY, "--reuse"])
    assert "--reuse needs --work" in capsys.readouterr().err


def test_quick_defaults_keep_the_smoke_run_to_the_main_table(monkeypatch, tmp_path):
    """--quick alone: the main sections only, 50 samples, and no few-step rows on the second data set."""
    quick, full = bench._parse(["--quick"]), bench._parse([])
    assert quick.sections == set(bench.SECTIONS) and quick.n == 50
    assert full.sections == set(bench.SECTIONS + bench.OTHER_SECTIONS) and full.n == 500
    assert bench._parse(["--quick", "--sections", "fm,lfm"]).sections == {"fm", "lfm"}
    seen = []
    monkeypatch.setattr(bench, "dataset_rows", lambda setting, sections, *a: seen.append(set(sections)) or [])
    monkeypatch.setattr(bench, "save_table", lambda *a, **k: None)
    monkeypatch.setattr(bench, "_save_grid", lambda *a, **k: None)
    bench.main(["--quick", "--sections", "fm,fewstep", "--work", str(tmp_path), "--no-progress"])
    assert seen == [{"fm", "fewstep"}, {"fm"}]
