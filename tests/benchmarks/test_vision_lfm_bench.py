"""The LFM benchmark section runs on a tiny digits setting and its bound row adds up."""

import pytest

from benchmarks.vision_lfm import Settings, rows

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = Settings(ae_steps=20, ae_channels=4, ae_lr=3e-3, flow_steps=10, lfm_steps=20, batch=16, width=8, eval_every=5,
                lfm_eval_every=10, eval_samples=50, eval_euler=2, final_samples=50, final_euler=2, tolerance=1e-2)


def test_lfm_rows_on_digits(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWZOO_CACHE", str(tmp_path / "cache"))
    table = rows("digits", settings=TINY)
    assert len(table) == 6
    assert table[4]["method"].startswith("AE reconstruction") or "reconstruction" in table[4]["method"]
    lfm_dopri = [r for r in table if r["method"].startswith("LFM") and "dopri5" in r["method"]][0]
    assert lfm_dopri["nfe"] > 2
    bound = table[5]
    assert abs(bound["bound"] - (bound["recon_w2"] + bound["lipschitz"] * bound["latent_w2"])) < 1e-6
