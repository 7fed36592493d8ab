"""benchmarks/robotics_gpu_eval.py: unpacks gpu_checks.sh's tars, evaluates every run on its task, tabulates."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import robotics_gpu_eval as bench
from flowzoo.robotics.spec import env_spec
from flowzoo.robotics.envs import make_env
from flowzoo.robotics.normalizer import Normalizer
from flowzoo.robotics.policy import FlowPolicy, save_policy
from flowzoo.robotics.policy_config import PolicyConfig


def _fake_gpu_output(tmp_path: Path) -> Path:
    """What gpu_checks.sh returns: policies_<method>.tar holding <task>_<method>_seed<k>/{policy,summary.json}."""
    env = make_env("reach-v3", "state", seed=0, max_episode_steps=5)
    spec = env_spec(env)
    env.close()
    rng = np.random.default_rng(0)
    normalizer = Normalizer.fit({"action": rng.uniform(-1, 1, (50, spec.action_dim)),
                                 "state": rng.normal(size=(50, spec.obs_shapes["state"][0]))})
    runs, out = tmp_path / "runs", tmp_path / "out"
    out.mkdir()
    for method in ("fm", "mp1"):
        torch.manual_seed(0)
        run = runs / f"reach-v3_{method}_seed0"
        policy = FlowPolicy(spec, normalizer, PolicyConfig(method=method, down_dims=(8, 16)))
        save_policy(policy, run / "policy")
        (run / "summary.json").write_text(json.dumps({"steps": 3, "train_ms_per_step": 1.5}))
        with tarfile.open(out / f"policies_{method}.tar", "w") as tar:
            tar.add(run, arcname=run.name)
    return out


def test_unpack_evaluate_and_table(tmp_path):
    out = _fake_gpu_output(tmp_path)
    runs = bench.unpack(out, tmp_path / "unpacked")
    assert [r.name for r in runs] == ["reach-v3_fm_seed0", "reach-v3_mp1_seed0"]
    rows = bench.evaluate_runs(runs, episodes=2, max_steps=5, num_envs=1)
    assert [(r["method"], r["episodes"], r["updates"]) for r in rows] == [("fm", 2, 3), ("mp1", 2, 3)]
    assert all(0.0 <= r["success"] <= 1.0 and r["cpu_ms_per_action"] > 0 for r in rows)
    table = bench.format_table(rows)
    assert "| reach-v3_mp1_seed0 | 3 | 1.5 |" in table and "**mp1 mean** (1 runs)" in table
