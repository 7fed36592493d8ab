"""benchmarks/peer_parity.py: the quick run writes its table, every feature agrees, a missing peer names the install."""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks import peer_parity as bench


def test_quick_run_writes_a_table_in_which_every_feature_agrees(_results_to_tmp, capsys):
    pytest.importorskip("flow_matching")
    pytest.importorskip("torchcfm")
    bench.main(["--quick"])
    table = json.loads((_results_to_tmp / "peer_parity.quick.json").read_text())
    assert table["columns"] == bench.COLUMNS and table["quick"] is True
    assert len(table["rows"]) >= 30
    assert all(row["agrees"] == "yes" and row["max abs diff"] <= row["tolerance"] for row in table["rows"])
    features = " ".join(row["feature"] for row in table["rows"])
    for name in ("VP path", "LinearVP", "scheduler change", "TargetConditionalFlowMatcher", "exact OT plan",
                 "Sinkhorn", "dopri5", "log-likelihood"):
        assert name in features
    assert "| feature | peer API |" in capsys.readouterr().out


def test_a_disagreeing_row_fails_the_run(monkeypatch):
    pytest.importorskip("flow_matching")
    pytest.importorskip("torchcfm")
    broken = lambda peers, n: [bench.parity_row("broken", "peer", "ours", 1.0, 1e-9)]  # noqa: E731
    monkeypatch.setattr(bench, "SECTIONS", {"broken": broken})
    with pytest.raises(SystemExit, match="1 feature"):
        bench.main(["--quick"])


def test_missing_peers_exit_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcfm", None)
    with pytest.raises(SystemExit, match="pip install --no-deps -c constraints.txt torchcfm==1.0.7"):
        bench.main(["--quick"])
