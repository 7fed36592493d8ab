"""Benchmark tests run the scripts' main(): their tables go to a temporary folder, never to benchmarks/results/."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _results_to_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWZOO_RESULTS_DIR", str(tmp_path / "results"))
    yield tmp_path / "results"
