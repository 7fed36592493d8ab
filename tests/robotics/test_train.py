"""The training entrypoint end to end on the toy task: demos, training, evaluation over training, saved policy;
no silent collection, per-method help, the run's config records what ran, an overwritten run leaves nothing stale."""

import json

import pytest
import torch
import yaml

from flowzoo.core.config import config_fields, parse_config
from flowzoo.core.errors import ConfigError
from flowzoo.robotics import cli
from flowzoo.robotics.data import DemoFileError
from flowzoo.robotics.policy import load_policy
from flowzoo.robotics.train import main, method_config_class

TINY = ["--policy.down_dims", "16", "--trainer.batch_size", "8", "--progress", "false"]


def test_train_toy_policy_end_to_end_then_evaluate(tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    code = main(["mp1", "--task", "toy-obstacle", "--collect", "--episodes", "12", "--eval_episodes", "4",
                 "--eval_envs", "2",
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
    # config.yaml records what ran (the method's values), as policy.json does: no "auto" left
    recorded = yaml.safe_load((out / "config.yaml").read_text())["policy"]
    assert recorded == json.loads((out / "policy" / "policy.json").read_text())["config"]
    assert recorded["sample_steps"] == 1 and recorded["dispersive"] == "mp1" and recorded["guidance"] == "mp1"
    results = tmp_path / "eval.json"
    assert cli.commands()["evaluate"](["--checkpoint", str(out / "policy"), "--episodes", "2", "--num_envs", "1",
                                       "--out", str(results), "--progress", "false"]) in (0, None)
    assert json.loads(results.read_text())["task"] == "toy-obstacle"


def test_train_rejects_unknown_method_and_mismatched_demos(tmp_path):
    with pytest.raises(ConfigError, match="method"):
        main(["diffusion", "--task", "toy-obstacle"])
    out = tmp_path / "run"
    main(["fm", "--task", "toy-obstacle", "--collect", "--episodes", "4", "--eval_episodes", "0",
          "--trainer.steps", "2", "--trainer.out_dir", str(out), *TINY])
    with pytest.raises(ConfigError, match="reach-v3"):
        main(["fm", "--task", "reach-v3", "--demos", str(out / "demos"), "--trainer.out_dir", str(tmp_path / "b"),
              "--progress", "false"])


def test_policy_overrides_apply_on_top_of_the_method_defaults(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    main(["dm1", "--task", "toy-obstacle", "--collect", "--episodes", "4", "--eval_episodes", "0",
          "--policy.down_dims", "16",
          "--policy.dispersive", "hinge", "--trainer.steps", "2", "--trainer.batch_size", "8",
          "--trainer.out_dir", str(out), "--progress", "false"])
    config = load_policy(out / "policy").config
    assert config.method == "dm1" and config.dispersive == "hinge"
    assert config.dispersive_target == "embeddings" and config.adaptive_p == 0.0  # DM1's, not fm's
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_seconds"] == 0.0 and summary["train_seconds"] > 0
    with pytest.raises(ConfigError, match="first argument"):
        main(["fm", "--policy.method", "mp1", "--task", "toy-obstacle"])


def test_a_missing_demos_path_fails_and_collects_nothing(tmp_path, capsys):
    typo = tmp_path / "demos" / "pushh"
    out = tmp_path / "run"
    with pytest.raises(DemoFileError, match="--collect") as error:
        main(["fm", "--task", "toy-obstacle", "--demos", str(typo), "--trainer.out_dir", str(out), *TINY])
    assert str(typo) in str(error.value)
    assert not typo.exists() and not out.exists()  # nothing collected, nothing created
    with pytest.raises(ConfigError, match="--demos DIR .* or --collect"):  # neither given
        main(["fm", "--task", "toy-obstacle", "--trainer.out_dir", str(out), *TINY])
    assert not out.exists()
    # --collect collects into --demos and says so, even with progress off
    main(["fm", "--task", "toy-obstacle", "--demos", str(typo), "--collect", "--episodes", "3",
          "--eval_episodes", "0", "--trainer.steps", "1", "--trainer.out_dir", str(out), *TINY])
    said = capsys.readouterr().err
    assert "--collect" in said and "3 expert episodes of toy-obstacle" in said and str(typo) in said
    assert (typo / "meta.json").exists()
    with pytest.raises(ConfigError, match="already holds a dataset"):  # never re-collected over silently
        main(["fm", "--task", "toy-obstacle", "--demos", str(typo), "--collect", "--trainer.out_dir",
              str(tmp_path / "run2"), *TINY])


def _run_files(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "demos" not in p.parts)


def test_overwrite_leaves_nothing_that_describes_weights_that_are_gone(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    common = ["--task", "toy-obstacle", "--trainer.out_dir", str(out), *TINY]
    main(["mp1", "--collect", "--episodes", "4", "--eval_episodes", "2", "--eval_envs", "1", "--trainer.steps", "2",
          "--trainer.eval_every", "1", *common])
    assert cli.commands()["evaluate"](["--checkpoint", str(out / "policy"), "--episodes", "1", "--num_envs", "1",
                                       "--progress", "false"]) in (0, None)
    first = json.loads((out / "policy" / "policy.json").read_text())["weights_sha256"]
    record = out / "policy" / "eval_toy-obstacle_seed0.json"
    assert json.loads(record.read_text())["weights_sha256"] == first  # a record names the weights it evaluated
    (out / "notes.txt").write_text("mine")  # not the run's: must survive
    (out / "policy" / "README").write_text("mine too")
    with pytest.raises(ConfigError, match="overwrite"):  # a fresh run over an old one is refused up front
        main(["mp1", "--demos", str(out / "demos"), "--trainer.steps", "3", *common])
    main(["mp1", "--demos", str(out / "demos"), "--eval_episodes", "0", "--trainer.steps", "3",
          "--trainer.seed", "1", "--trainer.overwrite", "true", *common])
    current = json.loads((out / "policy" / "policy.json").read_text())["weights_sha256"]
    assert current != first
    files = _run_files(out)
    assert "notes.txt" in files and "policy/README" in files and (out / "demos" / "meta.json").exists()
    assert not {"success.json", "success.png", "policy/eval_toy-obstacle_seed0.json"} & set(files)
    assert [f for f in files if f.startswith("policy/weights-")] == [f"policy/weights-{current[:16]}.safetensors"]
    for name in files:  # every record that names weights names the ones that are there
        if name.endswith(".json"):
            data = json.loads((out / name).read_text())
            if isinstance(data, dict) and "weights_sha256" in data:
                assert data["weights_sha256"] == current, name


def test_help_shows_each_methods_defaults_and_the_method_comes_first(capsys):
    defaults = {m: {k: v[2] for k, v in config_fields(method_config_class(m)).items()} for m in ("fm", "mp1", "dm1")}
    assert defaults["fm"]["policy.sample_steps"] == 10 and defaults["mp1"]["policy.sample_steps"] == 1
    assert defaults["mp1"]["policy.method"] == "mp1" and defaults["mp1"]["policy.guidance_scale"] == 2.0
    assert defaults["dm1"]["policy.dispersive_target"] == "embeddings" and defaults["dm1"]["policy.adaptive_p"] == 0
    with pytest.raises(SystemExit):
        main(["mp1", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    policy_help = text.split("policy options:")[1].split("trainer options:")[0]
    assert "--policy.method {mp1}" in policy_help and "default: fm" not in policy_help
    assert "default: auto" not in policy_help and "[int | none, default: 1]" in policy_help  # sample_steps
    assert main(["--help"]) == 0
    overview = capsys.readouterr().out
    assert "<method>" in overview and all(m in overview for m in ("fm", "meanflow", "mp1", "dm1"))
    # --policy.method is listed, so it parses: its own method only
    assert parse_config(method_config_class("mp1"), ["--policy.method", "mp1"]).policy.method == "mp1"
    with pytest.raises(ConfigError, match="first argument"):
        main(["mp1", "--policy.method=fm", "--task", "toy-obstacle"])
    with pytest.raises(ConfigError, match="method as the first argument"):
        main(["--task", "toy-obstacle"])
    from flowzoo.core.cli import dispatch

    assert dispatch(["robotics", "--help"]) == 0
    assert "train <fm|meanflow|mp1|dm1>" in capsys.readouterr().out


def test_bad_counts_are_refused_before_anything_runs(tmp_path):
    out = tmp_path / "run"
    for option, value in (("--episodes", "0"), ("--eval_episodes", "-1"), ("--eval_envs", "0"),
                          ("--action_noise", "-0.5")):
        with pytest.raises(ConfigError, match=option):
            main(["fm", "--task", "toy-obstacle", "--collect", option, value, "--trainer.out_dir", str(out), *TINY])
    assert not out.exists()
