"""Tests of flowzoo.core.config: precedence, help, strict types, unknown names, YAML round trip."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from flowzoo.core.config import (
    config_from_dict,
    config_to_dict,
    load_config,
    parse_config,
    save_config,
    validate_config,
)
from flowzoo.core.errors import ConfigError
from flowzoo.core.training import TrainerConfig


@dataclass
class Inner:
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    betas: tuple[float, float] = (0.9, 0.999)
    mode: Literal["fast", "slow"] = field(default="fast", metadata={"help": "how to run"})


@dataclass
class Outer:
    """A test entrypoint."""

    name: str = field(default="demo", metadata={"help": "run name"})
    steps: int = field(default=100, metadata={"help": "number of steps"})
    verbose: bool = False
    limit: Optional[int] = None
    widths: list[int] = field(default_factory=lambda: [8, 16])
    path: Path = Path("out")
    resume: bool | str = False
    inner: Inner = field(default_factory=Inner)


def test_defaults_without_arguments():
    cfg = parse_config(Outer, [])
    assert cfg == Outer()


def test_precedence_defaults_yaml_cli(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"steps": 5, "name": "from-yaml", "inner": {"lr": 0.5, "mode": "slow"}}))
    cfg = parse_config(Outer, ["--config", str(path), "--steps", "7", "--inner.lr", "1e-2"])
    assert cfg.steps == 7  # CLI beats YAML
    assert cfg.name == "from-yaml"  # YAML beats default
    assert cfg.inner.lr == 0.01 and cfg.inner.mode == "slow"
    assert cfg.inner.betas == (0.9, 0.999)  # default kept
    assert cfg.widths == [8, 16]


def test_cli_types_coerced():
    cfg = parse_config(Outer, ["--verbose", "true", "--limit", "3", "--widths", "1", "2", "3",
                               "--inner.betas", "0.5,0.6", "--path", "a/b", "--resume", "runs/x"])
    assert cfg.verbose is True and cfg.limit == 3 and cfg.widths == [1, 2, 3]
    assert cfg.inner.betas == (0.5, 0.6) and cfg.path == Path("a/b") and cfg.resume == "runs/x"
    cfg = parse_config(Outer, ["--verbose", "--limit", "none", "--resume", "1"])
    assert cfg.verbose is True and cfg.limit is None and cfg.resume is True
    assert parse_config(Outer, ["--verbose", "0"]).verbose is False


def test_help_lists_every_field_with_type_default_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Outer, ["--help"], prog="prog")
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--name", "--steps", "--verbose", "--limit", "--widths", "--inner.lr", "--inner.betas",
                   "--inner.mode", "--config"):
        assert option in text
    assert "number of steps" in text and "default: 100" in text
    assert "learning rate" in text and "default: 0.001" in text
    assert "{fast,slow}" in text and "A test entrypoint." in text


def test_unknown_cli_field_suggests_closest_name():
    with pytest.raises(ConfigError, match=r"--inner\.lrr.*did you mean --inner\.lr\?"):
        parse_config(Outer, ["--inner.lrr", "0.1"])
    with pytest.raises(ConfigError, match="did you mean --steps"):
        parse_config(Outer, ["--step=3"])
    with pytest.raises(ConfigError, match="stray value"):
        parse_config(Outer, ["3"])
    with pytest.raises(ConfigError, match="expected one argument"):
        parse_config(Outer, ["--steps"])


def test_unknown_yaml_field_suggests_closest_name(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"inner": {"mdoe": "slow"}}))
    with pytest.raises(ConfigError, match=r"inner\.mdoe.*did you mean inner\.mode\?") as info:
        parse_config(Outer, ["--config", str(path)])
    assert str(path) in str(info.value)


def test_negative_numbers_after_a_space_are_values():
    cfg = parse_config(Outer, ["--inner.lr", "-1e-3", "--steps", "-5", "--widths", "-1e2", "3", "-4",
                               "--inner.betas", "-0.5", "-1E-2"])
    assert cfg.inner.lr == -1e-3 and cfg.steps == -5 and cfg.widths == [-100, 3, -4]
    assert cfg.inner.betas == (-0.5, -0.01)
    assert parse_config(Outer, ["--inner.lr=-2.5", "--limit", "-1"]).inner.lr == -2.5
    with pytest.raises(ConfigError, match="--steps of type int"):
        parse_config(Outer, ["--steps", "-1.5"])



@pytest.mark.parametrize("argv, fragment", [
    (["--steps", "ten"], "--steps of type int"),
    (["--steps", "1.5"], "--steps of type int"),
    (["--inner.lr", "fast"], "--inner.lr of type float"),
    (["--verbose", "maybe"], "--verbose of type bool"),
    (["--inner.mode", "medium"], "choose one of 'fast', 'slow'"),
    (["--inner.betas", "0.1", "0.2", "0.3"], "tuple\\[float, float\\]"),
    (["--widths", "1", "x"], "list\\[int\\]"),
])
def test_cli_type_errors(argv, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_config(Outer, argv)


@pytest.mark.parametrize("data, fragment", [
    ({"steps": "ten"}, "steps of type int"),
    ({"steps": True}, "steps of type int"),
    ({"name": 3}, "name of type str"),
    ({"inner": {"lr": [1]}}, "inner.lr of type float"),
    ({"inner": 5}, "inner of type Inner"),
    ({"verbose": "perhaps"}, "verbose of type bool"),
])
def test_dict_type_errors(data, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config_from_dict(Outer, data)


def test_yaml_scientific_notation_is_a_float(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("inner:\n  lr: 1e-4\nsteps: 1e3\n")  # YAML 1.1 reads both as strings
    cfg = load_config(Outer, path)
    assert cfg.inner.lr == 1e-4 and cfg.steps == 1000


def test_round_trip_through_yaml(tmp_path):
    cfg = parse_config(Outer, ["--inner.betas", "0.1", "0.2", "--widths", "4", "--path", "x/y"])
    saved = save_config(cfg, tmp_path / "sub" / "config.yaml")
    assert load_config(Outer, saved) == cfg
    assert config_from_dict(Outer, config_to_dict(cfg)) == cfg
    assert config_to_dict(cfg)["inner"]["betas"] == [0.1, 0.2]
    assert not list((tmp_path / "sub").glob(".*tmp*"))  # no temporary file left behind


def test_missing_or_bad_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="existing YAML"):
        parse_config(Outer, ["--config", str(tmp_path / "nope.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="valid YAML"):
        load_config(Outer, bad)
    bad.write_text("name: run\ninner:\n  lr: 1\n mode: fast\n")  # the mode line is indented wrongly
    with pytest.raises(ConfigError, match=r"line 4, column 2: expected <block end>"):
        parse_config(Outer, ["--config", str(bad)])
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Outer, bad)


def test_required_field():
    @dataclass
    class Needs:
        data: str
        n: int = 1

    with pytest.raises(ConfigError, match="data"):
        parse_config(Needs, [])
    assert parse_config(Needs, ["--data", "d"]).data == "d"


def test_validate_config_and_trainer_config_checks():
    @dataclass
    class Checked:
        n: int = 1
        x: float = 0.0

        def __post_init__(self):
            validate_config(self)

    assert Checked(x=2).x == 2.0 and isinstance(Checked(x=2).x, float)
    with pytest.raises(ConfigError, match="n of type int"):
        Checked(n="many")
    with pytest.raises(ConfigError, match="precision"):
        TrainerConfig(precision="fp8")
    with pytest.raises(ConfigError, match="lr"):
        TrainerConfig(lr=-1.0)
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainerConfig(ema_decay=1.0)


def test_nested_trainer_config_from_cli():
    @dataclass
    class Run:
        trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(steps=7))

    cfg = parse_config(Run, ["--trainer.lr", "0.01", "--trainer.resume", "true", "--trainer.precision", "bf16",
                             "--trainer.max_steps", "3"])
    assert cfg.trainer.steps == 7 and cfg.trainer.lr == 0.01 and cfg.trainer.resume is True
    assert cfg.trainer.precision == "bf16" and cfg.trainer.max_steps == 3
    with pytest.raises(ConfigError, match="steps"):
        parse_config(Run, ["--trainer.steps", "0"])
