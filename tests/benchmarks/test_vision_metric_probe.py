"""benchmarks/vision_metric_probe.py: rows per reference and probe, and the ranking verdict."""

from __future__ import annotations

import json

import pytest

from benchmarks import vision_metric_probe as probe

pytest.importorskip("sklearn")


def test_ranking_verdict_follows_the_chain():
    good = {"training images": 1.0, "training + noise 0.3": 5.0, "training + noise 1.0": 50.0, "pure noise": 90.0}
    assert probe.ranking_holds(good)
    assert not probe.ranking_holds({**good, "training + noise 1.0": 4.0})     # noisier scored better
    assert not probe.ranking_holds({**good, "pure noise": 10.0})


def test_digits_probe_writes_both_references(_results_to_tmp, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("FLOWZOO_CACHE", str(tmp_path_factory.getbasetemp() / "flowzoo_cache"))
    monkeypatch.setattr(probe, "PROBE_SIZE", 200)
    assert probe.main(["--datasets", "digits"]) == 0
    data = json.loads((_results_to_tmp / "vision_metric_probe.json").read_text())
    refs = {(row["reference"], row["probe"]) for row in data["rows"]}
    assert ("test", "pure noise") in refs and ("train", "real draw 3") in refs
    noise = {row["reference"]: row["fd"] for row in data["rows"] if row["probe"] == "pure noise"}
    real = {row["reference"]: row["fd"] for row in data["rows"] if row["probe"] == "training images"}
    assert all(noise[r] > real[r] for r in ("test", "train"))
    assert len(data["notes"]) == 2 and all("four real draws of 200" in note for note in data["notes"])
