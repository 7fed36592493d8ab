"""benchmarks/guidance_raag.py: the recorded ratio and scale, RAAG's limits, the table's rows (untrained classifier)."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks import guidance_raag as bench
from flowzoo.core.sampling import ConstantGuidance, RatioAwareGuidance
from flowzoo.core.sampling import integrate
from flowzoo.vision.features import FeatureClassifier
from flowzoo.vision.vector_features import DIGITS_SHAPE, VectorEvaluator, load_digits_vectors

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def evaluator():
    torch.manual_seed(0)
    return VectorEvaluator(FeatureClassifier(DIGITS_SHAPE, 10), load_digits_vectors()[0])


@pytest.fixture(scope="module")
def model():
    return bench.train_conditional(30, hidden=64, depth=2, progress=False)[0]


def test_recording_schedule_records_ratio_and_scale():
    v_u = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    v_c = torch.tensor([[1.0, 1.0], [2.0, 0.0]])                 # ratios 1 and 0
    recorder = bench.RecordingSchedule(RatioAwareGuidance(5.0, 2.0))
    w = recorder(torch.full((2,), 0.25), v_c, v_u)
    assert torch.allclose(w, torch.tensor([1 + 4 * math.exp(-2.0), 5.0]))
    t, rho, w_mean = recorder.calls[0]
    assert (t, rho) == (0.25, 0.5) and w_mean == pytest.approx(float(w.mean()))
    constant = bench.RecordingSchedule(ConstantGuidance(3.0))
    assert constant(torch.zeros(2), v_c, v_u) == 3.0 and constant.calls[0][2] == 3.0


def test_scale_one_is_the_conditional_model_and_alpha_zero_is_constant(model, evaluator):
    y = torch.arange(20) % 10
    x0 = torch.randn(20, 64, generator=torch.Generator().manual_seed(0))
    unguided = integrate(model, x0, method="euler", steps=3, cond={"y": y}).x
    metrics, recorder = bench.evaluate_guidance(model, evaluator, 3, ConstantGuidance(1.0), x0, y)
    assert [c[2] for c in recorder.calls] == [1.0, 1.0, 1.0]       # one record per Euler step
    with torch.no_grad():
        predicted = evaluator.classifier(unguided.reshape(-1, *DIGITS_SHAPE)).argmax(1)
    assert metrics["accuracy"] == pytest.approx(float((predicted == y).float().mean()))
    raag, _ = bench.evaluate_guidance(model, evaluator, 3, RatioAwareGuidance(4.0, 0.0), x0, y)
    const, _ = bench.evaluate_guidance(model, evaluator, 3, ConstantGuidance(4.0), x0, y)
    assert raag == pytest.approx(const)
    strong, rec = bench.evaluate_guidance(model, evaluator, 3, RatioAwareGuidance(4.0, 3.0), x0, y)
    assert len(rec.calls) == 3 and 1.0 < strong["mean w"] < 4.0


def test_main_prints_every_row_and_a_matched_constant(monkeypatch, evaluator, capsys):
    monkeypatch.setattr(bench.VectorEvaluator, "digits", classmethod(lambda cls, verbose=True: evaluator))
    rows = bench.main(["--steps", "20", "--samples", "40", "--nfe", "2", "3", "--scales", "1", "3",
                       "--raag", "5:1", "--threads", "1", "--no-progress"])
    assert [r["guidance"] for r in rows[:3]] == ["CFG w=1", "CFG w=3", "RAAG w_max=5, alpha=1"]
    assert len(rows) == 2 * 4 and rows[3]["guidance"].endswith("(matched)")
    assert rows[3]["mean w"] == pytest.approx(rows[2]["mean w"], abs=1e-6)
    assert all(0.0 <= r["accuracy"] <= 1.0 and math.isfinite(r["FD"]) for r in rows)
    out = capsys.readouterr().out
    assert "Ratio along sampling" in out and "vs constant CFG at its mean w" in out
