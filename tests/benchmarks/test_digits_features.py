"""benchmarks/digits_features.py: the command prints and saves its reference points (untrained classifier, so
no training here), and the Fréchet distance behind the digits-FID (flowzoo.vision.metrics) on closed forms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import digits_features as bench
from flowzoo.core.errors import FlowzooError, NonFiniteError, ShapeError
from flowzoo.vision.features import FeatureClassifier
from flowzoo.vision.metrics import feature_statistics, frechet_distance
from flowzoo.vision.vector_features import DIGITS_SHAPE, VectorEvaluator, load_digits_vectors


def test_command_prints_and_saves_the_reference_points(monkeypatch, capsys, _results_to_tmp):
    pytest.importorskip("sklearn")
    evaluator = VectorEvaluator(FeatureClassifier(DIGITS_SHAPE, 10), load_digits_vectors()[0], 0.5)
    seen = {}

    def digits(cls, cache_dir=None, verbose=True):
        seen["cache_dir"] = cache_dir
        return evaluator

    monkeypatch.setattr(bench.VectorEvaluator, "digits", classmethod(digits))
    assert bench.main(["--cache-dir", "somewhere"]) == 0
    assert str(seen["cache_dir"]) == "somewhere"
    assert "classifier test accuracy 0.5000; FD(real 20% vs all)" in capsys.readouterr().out
    table = json.loads((_results_to_tmp / "digits_features.json").read_text())
    row = table["rows"][0]
    assert row["classifier test accuracy"] == 0.5 and row["FD(real 20% vs all)"] < row["FD(N(0,I) noise)"]
    assert table["command"] == "python -m benchmarks.digits_features --cache-dir somewhere"


def _random_spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    sigma = _random_spd(16, rng)
    mu = rng.standard_normal(16)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_matches_closed_form_for_commuting_covariances():
    # Diagonal covariances commute: d² = |Δμ|² + Σ_i (√a_i − √b_i)².
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1.0 + 4.0 + (1 - 3) ** 2 + (2 - 1) ** 2
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_matches_closed_form_for_general_covariances():
    # tr((Σ1Σ2)^{1/2}) = tr((Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}), computed here by eigendecompositions only.
    rng = np.random.default_rng(1)
    s1, s2 = _random_spd(8, rng), _random_spd(8, rng)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    expected = np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()
    assert frechet_distance(np.zeros(8), s1, np.zeros(8), s2) == pytest.approx(expected, rel=1e-8)


def test_is_symmetric_and_grows_with_the_mean_shift():
    rng = np.random.default_rng(2)
    s1, s2 = _random_spd(6, rng), _random_spd(6, rng)
    mu = rng.standard_normal(6)
    d12 = frechet_distance(mu, s1, 0 * mu, s2)
    assert d12 == pytest.approx(frechet_distance(0 * mu, s2, mu, s1), rel=1e-8)
    assert frechet_distance(2 * mu, s1, 0 * mu, s2) > d12


def test_singular_covariances_stay_finite():
    # Fewer samples than features: rank-deficient covariances, the case that needs the ε·I fallback.
    rng = np.random.default_rng(3)
    f1, f2 = rng.standard_normal((5, 20)), rng.standard_normal((5, 20)) + 0.5
    value = frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    assert np.isfinite(value) and value > 0
    same = frechet_distance(*feature_statistics(f1), *feature_statistics(f1))
    assert same == pytest.approx(0.0, abs=1e-4)


def test_sample_estimate_converges_for_equal_distributions():
    gen = torch.Generator().manual_seed(0)
    small = frechet_distance(*feature_statistics(torch.randn(4000, 4, generator=gen)),
                             *feature_statistics(torch.randn(4000, 4, generator=gen)))
    shifted = frechet_distance(*feature_statistics(torch.randn(4000, 4, generator=gen)),
                               *feature_statistics(torch.randn(4000, 4, generator=gen) + 1.0))
    assert small < 0.02
    assert shifted == pytest.approx(4.0, rel=0.1)


def test_bad_inputs_raise_flowzoo_errors():
    with pytest.raises(ShapeError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(NonFiniteError):
        frechet_distance(np.array([np.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(ShapeError):
        feature_statistics(np.zeros((1, 4)))
    with pytest.raises(FlowzooError):
        feature_statistics(torch.full((3, 2), float("inf")))
