"""The training entrypoint end to end on the toy task: demos, training, evaluation over training, saved policy."""

import json

import pytest
import torch

from flowzoo.core.errors import ConfigError
from flowzoo.robotics import cli
from flowzoo.robotics.policy import load_policy
from flowzoo.robotics.train import main


def test_train_toy_policy_end_to_end_then_evaluate(tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    code = main(["mp1", "--task", "toy-obstacle", "--episodes", "12", "--eval_episodes", "4", "--eval_envs", "2",
                 "--policy.down_dims", "16,32", "--trainer.steps", "40", "--trainer.batch_size", "32",
                 "--trainer.eval_every", "20", "--trainer.checkpoint_every", "40", "--trainer.out_dir", str(out),
                 "--progress", "false"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "mp1" and summary["nfe"] == 1 and summary["steps"] == 40
    assert summary["success"]["evaluations"] == 2  # after step 20 and at the end
    assert (out / "success.png").stat().st_size > 0 and (out / "demos" / "meta.json").exists()
    policy = load_policy(out / "policy")
    assert policy.config.method == "mp1" and policy.spec.task == "toy-obstacle"
    results = tmp_path / "eval.json"
    assert cli.commands()["evaluate"](["--checkpoint", str(out / "policy"), "--episodes", "2", "--num_envs", "1",
                                       "--out", str(results), "--progress", "false"]) in (0, None)
    assert json.loads(results.read_text())["task"] == "toy-obstacle"


def test_train_rejects_unknown_method_and_mismatched_demos(tmp_path):
    with pytest.raises(ConfigError, match="method"):
        main(["diffusion", "--task", "toy-obstacle"])
    out = tmp_path / "run"
    main(["fm", "--task", "toy-obstacle", "--episodes", "4", "--eval_episodes", "0", "--policy.down_dims", "16",
          "--trainer.steps", "2", "--trainer.batch_size", "8", "--trainer.out_dir", str(out), "--progress", "false"])
    with pytest.raises(ConfigError, match="reach-v3"):
        main(["fm", "--task", "reach-v3", "--demos", str(out / "demos"), "--trainer.out_dir", str(tmp_path / "b"),
              "--progress", "false"])


def test_policy_overrides_apply_on_top_of_the_method_defaults(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    main(["dm1", "--task", "toy-obstacle", "--episodes", "4", "--eval_episodes", "0", "--policy.down_dims", "16",
          "--policy.dispersive", "hinge", "--trainer.steps", "2", "--trainer.batch_size", "8",
          "--trainer.out_dir", str(out), "--progress", "false"])
    config = load_policy(out / "policy").config
    assert config.method == "dm1" and config.dispersive == "hinge"
    assert config.dispersive_target == "embeddings" and config.adaptive_p == 0.0  # DM1's, not fm's
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_seconds"] == 0.0 and summary["train_seconds"] > 0
    with pytest.raises(ConfigError, match="first argument"):
        main(["fm", "--policy.method", "mp1", "--task", "toy-obstacle"])
