"""benchmarks/vision_backbones.py: the quick path runs on a tiny size, every row is measured, the U-Nets compared
are the same size; no timing is asserted."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import vision_backbones as bench


def test_the_unets_compared_have_the_same_size():
    pytest.importorskip("torchcfm")
    torchcfm_net, flowzoo_net, dit = bench.build_contenders("tiny")
    assert torchcfm_net.params_m == pytest.approx(flowzoo_net.params_m, rel=1e-3)
    assert dit.name.startswith("flowzoo DiT")


def test_quick_run_on_a_tiny_size_writes_every_row(_results_to_tmp, capsys):
    pytest.importorskip("torchcfm")
    assert bench.main(["--size", "tiny", "--quick", "--batch", "4", "--steps", "2", "--warmup", "0",
                       "--sample-batch", "2", "--euler-steps", "3"]) == 0
    table = capsys.readouterr().out
    data = json.loads((_results_to_tmp / "vision_backbones.quick.json").read_text())
    names = [row["backbone"] for row in data["rows"]]
    assert names == ["torchcfm UNetModel", "flowzoo UNet", "flowzoo DiT (dit_tiny/2)"]
    for row in data["rows"]:
        assert math.isfinite(row["step_ms"]) and row["step_ms"] > 0 and row["step_cpu_ms"] > 0
        assert row["samples_per_s"] > 0
    assert data["rows"][0]["ratio_to_torchcfm"] == 1.0 and data["quick"] is True
    assert "CPU-time ratio to torchcfm" in table


def test_without_torchcfm_the_flowzoo_rows_still_run(monkeypatch, _results_to_tmp):
    import builtins

    real_import = builtins.__import__

    def no_torchcfm(name, *args, **kwargs):
        if name.startswith("torchcfm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchcfm)
    assert bench.main(["--size", "tiny", "--quick", "--batch", "2", "--steps", "1", "--warmup", "0",
                       "--sample-batch", "1", "--euler-steps", "2"]) == 0
    rows = json.loads((_results_to_tmp / "vision_backbones.quick.json").read_text())["rows"]
    assert [row["backbone"] for row in rows] == ["flowzoo UNet", "flowzoo DiT (dit_tiny/2)"]
    assert all(row["ratio_to_torchcfm"] is None for row in rows)
