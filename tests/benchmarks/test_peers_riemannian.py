"""The Riemannian benchmark's quick path on a tiny setting (skipped without flow_matching)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("flow_matching")

from benchmarks import peers_riemannian  # noqa: E402


def test_the_quick_run_writes_one_row_per_library_and_manifold_with_ratios(_results_to_tmp):
    peers_riemannian.main(["--quick", "--steps", "6", "--batch", "32", "--eval-samples", "48"])
    table = json.loads((_results_to_tmp / "riemannian_vs_peers.quick.json").read_text())
    rows = table["rows"]
    libraries = ["flowzoo", "flow_matching", "reference: data", "reference: uniform base"]
    assert [r["library"] for r in rows[:4]] == libraries
    assert len(rows) == 8 and table["quick"]
    for ours, theirs in zip(rows[0::4], rows[1::4]):
        # Same initial weights, batches and times: the closed-form velocity trains exactly as flow_matching's jvp.
        assert ours["geodesic MMD"] == pytest.approx(theirs["geodesic MMD"], rel=1e-3, abs=1e-6)
        assert ours["step / flow_matching"] > 0 and theirs["step / flow_matching"] == 1.0
        assert ours["NLL (nats)"] is not None
