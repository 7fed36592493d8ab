"""torch.export of policies: exported == eager (FM unrolled, MP1 one step, FM with CFG), save/load, refusals."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.errors import CheckpointError, ConfigError, DTypeError, NonFiniteError, ShapeError
from flowzoo.robotics.normalizer import Normalizer
from flowzoo.robotics.spec import EnvSpec
from flowzoo.robotics.export import ExportedPolicy, export_policy, load_exported, main, save_exported
from flowzoo.robotics.mp1 import mp1_config
from flowzoo.robotics.policy import FlowPolicy, save_policy
from flowzoo.robotics.policy_config import PolicyConfig

torch.set_num_threads(1)

SMALL = dict(down_dims=(16, 32), time_dim=16, state_dim=16, state_hidden=(32,))
SPEC = EnvSpec("fake-task", "state", {"state": (5,)}, 3, (-1.0, -2.0, -0.5), (1.0, 2.0, 0.5), 50)
NORMALIZER = Normalizer({"state": {"min": [-3.0, -1, 0, 0, 2], "max": [3.0, 1, 4, 0, 5]},
                         "action": {"min": [-1.0, -2.0, -0.5], "max": [1.0, 2.0, 0.5]}})


def _inputs(batch: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    obs = {"state": torch.randn(batch, 2, 5, generator=gen) * 2}
    return obs, torch.randn(batch, 4, 3, generator=gen)


@pytest.mark.parametrize("config", [
    PolicyConfig(method="fm", sample_steps=10, **SMALL),
    mp1_config(**SMALL),
    PolicyConfig(method="fm", sample_steps=2, guidance="cfg", guidance_scale=2.5, cond_dropout=0.1, **SMALL),
    mp1_config(sample_steps=2, guidance="cfg", cond_dropout=0.1, **SMALL),
], ids=["fm-10", "mp1-1", "fm-cfg-2", "mp1-cfg-2"])
def test_exported_equals_eager(config):
    torch.manual_seed(0)
    policy = FlowPolicy(SPEC, NORMALIZER, config).eval()
    if policy.null_embedding is not None:
        with torch.no_grad():
            policy.null_embedding.normal_()  # a trained null embedding is not zero
    program = export_policy(policy)
    for batch in (1, 3):  # dynamic batch: exported with the default example of 2
        obs, noise = _inputs(batch, seed=batch)
        eager = policy.predict_action_chunk(obs, noise=noise)
        exported = program.module()(obs, noise)
        assert exported.shape == (batch, 4, 3)
        assert torch.allclose(exported, eager, atol=1e-5), (exported - eager).abs().max()


def test_normalised_inputs_and_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    policy = FlowPolicy(SPEC, NORMALIZER, mp1_config(**SMALL)).eval()
    obs, noise = _inputs(2)
    program = export_policy(policy, raw_obs=False, dynamic_batch=False)
    normalised = {"state": NORMALIZER.normalize("state", obs["state"])}
    eager = policy.predict_action_chunk(obs, noise=noise)
    assert torch.allclose(program.module()(normalised, noise), eager, atol=1e-5)

    path = save_exported(program, tmp_path / "policy.pt2", policy)
    loaded, meta = load_exported(path)
    assert torch.allclose(loaded.module()(normalised, noise), eager, atol=1e-5)
    assert EnvSpec.from_dict(meta["spec"]) == SPEC and meta["config"]["method"] == "mp1"


def test_refusals(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_exported(tmp_path / "missing.pt2")
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="damaged"):
        load_exported(broken)
    policy = FlowPolicy(SPEC, NORMALIZER, mp1_config(**SMALL)).eval()
    program = export_policy(policy, dynamic_batch=False)
    with pytest.raises(CheckpointError, match="directory"):
        save_exported(program, tmp_path)
    good = save_exported(program, tmp_path / "good.pt2")
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError):
        load_exported(good)


def _message(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the test compares what each path raises
        return type(error), str(error)
    raise AssertionError("no error")


def test_the_exported_program_refuses_bad_input_as_eager_does(tmp_path):
    torch.manual_seed(0)
    policy = FlowPolicy(SPEC, NORMALIZER, mp1_config(**SMALL)).eval()
    loaded, _ = load_exported(save_exported(export_policy(policy), tmp_path / "policy.pt2", policy))
    assert isinstance(loaded, ExportedPolicy) and loaded.module() is loaded
    obs, noise = _inputs(3)
    assert torch.allclose(loaded(obs, noise), policy.predict_action_chunk(obs, noise=noise), atol=1e-5)
    assert torch.allclose(loaded({"state": obs["state"].double()}, noise), loaded(obs, noise))  # dtype as eager
    bad_inputs = [
        ({"state": torch.zeros(3, 3, 5)}, noise),           # wrong history length (raw program: Guard failed)
        ({"state": torch.zeros(3, 2, 6)}, noise),           # wrong observation size
        ({"agent_pos": torch.zeros(3, 2, 5)}, noise),       # missing key
        ([torch.zeros(3, 2, 5)], noise),                    # not a dict
        ({"state": torch.zeros(0, 2, 5)}, noise[:0]),       # empty batch
        ({"state": torch.full((3, 2, 5), float("nan"))}, noise),
        (obs, torch.zeros(3, 5, 3)),                        # wrong noise shape
    ]
    for bad_obs, bad_noise in bad_inputs:
        eager = _message(lambda: policy.predict_action_chunk(bad_obs, noise=bad_noise))
        exported = _message(lambda: loaded(bad_obs, bad_noise))
        assert exported == eager and issubclass(exported[0], (ShapeError, DTypeError, NonFiniteError)), exported
    with pytest.raises(AssertionError, match="Guard failed"):  # what the raw program would have said
        loaded.program.module()({"state": torch.zeros(3, 3, 5)}, noise)
    fixed = ExportedPolicy(export_policy(policy, dynamic_batch=False))  # batch 2 only
    with pytest.raises(ShapeError, match="batch of 2"):
        fixed(*_inputs(3))


def test_export_command_writes_checks_and_refuses_to_overwrite(tmp_path, capsys):
    torch.manual_seed(0)
    policy = FlowPolicy(SPEC, NORMALIZER, mp1_config(**SMALL)).eval()
    save_policy(policy, tmp_path / "policy")
    out = tmp_path / "policy.pt2"
    assert main(["--checkpoint", str(tmp_path / "policy"), "--out", str(out)]) == 0
    said = capsys.readouterr().err
    assert "exporting with torch.export" in said and f"wrote {out}" in said  # progress while it works
    loaded, meta = load_exported(out)
    obs, noise = _inputs(2)
    assert torch.allclose(loaded(obs, noise), policy.predict_action_chunk(obs, noise=noise), atol=1e-5)
    assert meta["config"]["method"] == "mp1"
    before = out.read_bytes()
    with pytest.raises(ConfigError, match="--overwrite"):
        main(["--checkpoint", str(tmp_path / "policy"), "--out", str(out)])
    assert out.read_bytes() == before
    with pytest.raises(CheckpointError, match="policy checkpoint"):
        main(["--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "other.pt2")])
    assert not (tmp_path / "other.pt2").exists()
    assert main(["--checkpoint", str(tmp_path / "policy"), "--out", str(out), "--overwrite",
                 "--dynamic_batch", "false"]) == 0
    assert load_exported(out)[0].batch == (1, 1)
