"""Fixtures of the vision tests."""

import pytest


@pytest.fixture
def shared_feature_cache(monkeypatch, tmp_path_factory):
    """One feature-classifier cache for the whole session's vision tests (trained once, never in ~/.cache)."""
    monkeypatch.setenv("FLOWZOO_CACHE", str(tmp_path_factory.getbasetemp() / "flowzoo_cache"))
