"""The 3D-generation benchmark's rows on a tiny setting (benchmarks/three_d_generation.py)."""

import torch

from benchmarks import three_d_generation as bench
from flowzoo.three_d.generator import GeneratorConfig


def test_rows_on_a_tiny_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWZOO_CACHE", str(tmp_path))
    torch.set_num_threads(1)
    config = GeneratorConfig(classes=("sphere", "box"), grid_size=8, latent_channels=2, vae_width=4, width=16,
                             attribute_hidden=8, vae_steps=5, structure_steps=5, attribute_steps=5, batch_size=4)
    tiny = {"n_train": 2, "n_test": 2, "n_eval": 1, "emd_shapes": 2, "points": 32, "emd_points": 16, "distill_steps": 2, "config": config,
            "classifier": {"n_per_class": 4, "steps": 5, "points": 32}}
    table = bench.rows(True, 0, progress=False, figure=tmp_path / "fig.png", settings=tiny)
    assert len(table) == 9 and (tmp_path / "fig.png").exists()
    assert {"cov_cd", "mmd_cd", "cov_emd", "mmd_emd", "fd", "s_per_shape", "speedup"} <= set(table[0])
    assert "does not hold" in bench.verdict(table) or "holds" in bench.verdict(table)
