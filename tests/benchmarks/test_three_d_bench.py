"""benchmarks/three_d.py: one command runs the three 3D tables (tiny settings) and writes each section's file."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import three_d as bench
from benchmarks import three_d_generation, three_d_scene_flow, three_d_upsampling
from flowzoo.three_d.generator import GeneratorConfig

TINY_UPSAMPLING = {"shapes": 1, "patches": 2, "steps": 2, "stage2_steps": 1, "test_shapes": 1, "n_sparse": 24,
                   "nfe": (1,), "curve_points": 3}
TINY_SCENE_FLOW = {"n_points": 64, "train_steps": 2, "n_test": 2, "refine_steps": 3, "sizes": "3,5", "main_size": 5}
TINY_GENERATION = {"n_train": 2, "n_test": 2, "n_eval": 1, "emd_shapes": 2, "points": 32, "emd_points": 16,
                   "distill_steps": 2, "classifier": {"n_per_class": 4, "steps": 5, "points": 32},
                   "config": GeneratorConfig(classes=("sphere", "box"), grid_size=8, latent_channels=2, vae_width=4,
                                             width=16, attribute_hidden=8, vae_steps=5, structure_steps=5,
                                             attribute_steps=5, batch_size=4)}


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    monkeypatch.setattr(three_d_upsampling, "QUICK", TINY_UPSAMPLING)
    monkeypatch.setattr(three_d_scene_flow, "QUICK", TINY_SCENE_FLOW)
    monkeypatch.setattr(three_d_generation, "QUICK", TINY_GENERATION)
    monkeypatch.setenv("FLOWZOO_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)


def test_quick_runs_every_section_and_writes_its_table(_results_to_tmp, tiny, capsys):
    tables = bench.main(["--quick", "--no-figures"])
    assert list(tables) == ["upsampling", "scene_flow", "generation"]
    for section in tables:
        record = json.loads((_results_to_tmp / f"three_d_{section}.quick.json").read_text())
        assert record["quick"] and record["rows"]
        assert record["command"].startswith(f"python -m benchmarks.three_d_{section} ")
    out = capsys.readouterr().out
    claims = out.split("== claims ==")[1]
    assert "upsampling: 4x, 1 NFE/pass: PUFM++ full" in claims and "scene_flow: claim" in claims
    assert "generation: target (VM + VD at 2 steps" in claims


def test_sections_pick_the_tables(_results_to_tmp, tiny):
    tables = bench.main(["--quick", "--no-figures", "--sections", "scene_flow"])
    assert list(tables) == ["scene_flow"]
    assert not (_results_to_tmp / "three_d_upsampling.quick.json").exists()


def test_an_unknown_section_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as error:
        bench.main(["--sections", "meshes"])
    assert error.value.code == 2 and "invalid choice" in capsys.readouterr().err
