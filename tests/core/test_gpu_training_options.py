"""GPU-user options of the core: the Trainer's fused AdamW switch and the U-Net's gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.config import parse_config
from flowzoo.core.errors import ConfigError
from flowzoo.core.fewstep import MeanFlowLoss
from flowzoo.core.fewstep.forward_ad import jvp
from flowzoo.core.nets import FlowMapUNet, UNet
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.training import Trainer, TrainerConfig

SMALL = dict(channels=8, multipliers=(1, 2), res_blocks=1, attention_levels=(1,), head_channels=8)


pytestmark = pytest.mark.usefixtures("one_thread")


def _fit(tmp_path, name, **options):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2))
    model = lambda x, t: net(x)  # noqa: E731 - a velocity that ignores t is enough to compare optimisers
    objective = lambda m, batch: FlowMatchingLoss()(model, batch)  # noqa: E731
    cfg = TrainerConfig(steps=6, batch_size=16, lr=1e-2, weight_decay=0.1, ema_decay=0, out_dir=str(tmp_path / name),
                        progress=False, tensorboard=False, checkpoint_every=3, **options)
    trainer = Trainer(net, objective, lambda g: {"x1": torch.randn(16, 2, generator=g)}, cfg)
    trainer.fit()
    return trainer


def test_fused_option_parses_and_rejects_other_values():
    assert TrainerConfig().fused == "auto"
    assert parse_config(TrainerConfig, ["--fused", "true"]).fused is True
    assert parse_config(TrainerConfig, ["--fused", "false"]).fused is False
    with pytest.raises(ConfigError, match="fused"):
        parse_config(TrainerConfig, ["--fused", "always"])


def test_fused_option_reaches_the_optimiser_and_a_cpu_run_is_unchanged(tmp_path):
    plain, auto, fused = (_fit(tmp_path, name, fused=value) for name, value in
                          (("plain", False), ("auto", "auto"), ("fused", True)))
    assert not auto.fused and all(g["fused"] is None for g in auto.optimizer.param_groups)  # CPU: auto = default
    assert fused.fused and all(g["fused"] for g in fused.optimizer.param_groups)
    for a, b, c in zip(plain.model.parameters(), auto.model.parameters(), fused.model.parameters()):
        assert torch.equal(a, b)                      # auto on the CPU is exactly the default run
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-5)   # the fused kernel computes the same update


def test_a_resumed_run_uses_the_configured_kernel_not_the_checkpoints(tmp_path):
    _fit(tmp_path, "run", fused=False, max_steps=3)
    resumed = _fit(tmp_path, "run", fused=True, resume=True)
    assert resumed.step == 6 and all(g["fused"] and not g["foreach"] for g in resumed.optimizer.param_groups)


def test_fused_true_where_torch_has_no_fused_kernel_is_a_config_error(tmp_path, monkeypatch):
    plain_adamw = torch.optim.AdamW

    def no_fused_kernel(*args, fused=None, **kwargs):
        if fused:   # what torch raises for a device or dtype without a fused AdamW
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return plain_adamw(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused_kernel)
    with pytest.raises(ConfigError, match=r"fused kernel supports.*--trainer\.fused auto"):
        _fit(tmp_path, "run", fused=True)
    assert not _fit(tmp_path, "auto", fused="auto").fused   # auto never asks for it on the CPU


def _grads(net, x, *times, seed=0):
    net.zero_grad()
    torch.manual_seed(seed)
    out = net(x, *times)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    return out.detach(), [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("cls", [UNet, FlowMapUNet])
def test_gradient_checkpointing_gives_the_same_outputs_and_gradients(cls):
    torch.manual_seed(0)
    plain = cls(in_channels=1, dropout=0.1, **SMALL).double().train()   # dropout: its random state is replayed
    checked = cls(in_channels=1, dropout=0.1, gradient_checkpointing=True, **SMALL).double().train()
    checked.load_state_dict(plain.state_dict())
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    times = (torch.rand(3, dtype=torch.float64),) * (1 if cls is UNet else 2)
    out_a, grads_a = _grads(plain, x, *times)
    out_b, grads_b = _grads(checked, x, *times)
    torch.testing.assert_close(out_a, out_b, atol=1e-6, rtol=0)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_gradient_checkpointing_recomputes_blocks_in_the_backward_pass():
    net = UNet(in_channels=1, gradient_checkpointing=True, **SMALL).train()
    calls = []
    net.middle[0].register_forward_hook(lambda *args: calls.append(1))
    net(torch.randn(2, 1, 8, 8), torch.rand(2)).sum().backward()
    assert len(calls) == 2                          # forward, then again during backward
    calls.clear()
    with torch.no_grad():
        net(torch.randn(2, 1, 8, 8), torch.rand(2))
    assert len(calls) == 1                          # no recomputation without a graph


def test_forward_mode_jvp_works_through_checkpointed_blocks_with_grad_enabled():
    torch.manual_seed(0)
    plain = FlowMapUNet(in_channels=1, **SMALL).double().train()
    checked = FlowMapUNet(in_channels=1, gradient_checkpointing=True, **SMALL).double().train()
    checked.load_state_dict(plain.state_dict())
    x, dx = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 8, dtype=torch.float64)
    s, t = torch.rand(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    tangents = (dx, torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    _, reference = jvp(plain, (x, s, t), tangents)
    out, tangent = jvp(checked, (x, s, t), tangents)
    torch.testing.assert_close(tangent, reference, atol=1e-6, rtol=0)
    out.sum().backward()                            # the primal output still back-propagates
    assert all(p.grad is not None for p in checked.stem.parameters())
    # MeanFlow's JVP target on the checkpointed flow map trains (one step, finite loss and gradients).
    loss, _ = MeanFlowLoss()(checked.float(), {"x1": torch.randn(4, 1, 8, 8)})
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in checked.parameters() if p.grad is not None)


def test_gradient_checkpointing_must_be_a_bool():
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        UNet(in_channels=1, gradient_checkpointing="yes", **SMALL)
