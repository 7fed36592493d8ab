"""The GPU-user switches of ``python -m flowzoo.vision.train`` (--grad_checkpoint, --channels_last, --compile,
--trainer.fused) and the sample grid in TensorBoard, on scikit-learn's 8x8 digits."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.cli import run_main
from flowzoo.core.config import parse_config
from flowzoo.core.errors import ConfigError
from flowzoo.core.nets import UNet
from flowzoo.vision import train as vision_train
from flowzoo.vision.acceleration import prepare_for_training
from flowzoo.vision.sampling import write_sample_grid
from flowzoo.vision.train import VisionTrainConfig, build_net, load_trained

pytest.importorskip("sklearn")
pytestmark = pytest.mark.usefixtures("one_thread", "shared_feature_cache")
PROG = "python -m flowzoo.vision.train"


def _train(out, method, *args):
    argv = [method, "--data", "digits", "--trainer.out_dir", str(out), "--trainer.batch_size", "16",
            "--trainer.progress", "false", "--width", "16", "--grid_n", "8", "--grid_steps", "2", *args]
    return run_main(vision_train.main, argv, prog=PROG)


@pytest.fixture
def recorded(monkeypatch):
    """The Trainer the entry point builds, and the modules torch.compile was asked to compile (not compiled)."""
    seen = {"trainers": [], "compiled": []}

    class RecordingTrainer(vision_train.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen["trainers"].append(self)

    monkeypatch.setattr(vision_train, "Trainer", RecordingTrainer)
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **options: seen["compiled"].append(self))
    return seen


def test_switches_reach_the_trained_unet_and_the_run_reloads(tmp_path, recorded):
    out = tmp_path / "run"
    assert _train(out, "icfm", "--grad_checkpoint", "true", "--channels_last", "true", "--compile", "true",
                  "--trainer.fused", "true", "--trainer.steps", "3", "--trainer.tensorboard", "false") == 0
    trainer = recorded["trainers"][0]
    model = trainer.model
    assert isinstance(model, UNet) and model.gradient_checkpointing
    assert recorded["compiled"] == [model]
    assert model.stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert trainer.fused and all(group["fused"] for group in trainer.optimizer.param_groups)
    run = load_trained(out)      # checkpoints keep the plain network's parameter names
    assert run.config.grad_checkpoint and run.config.compile and run.config.channels_last
    assert run.model(torch.randn(2, 1, 8, 8), torch.rand(2)).shape == (2, 1, 8, 8)


def test_switches_are_off_by_default_and_reach_the_dit():
    cfg = VisionTrainConfig()
    assert not (cfg.grad_checkpoint or cfg.compile or cfg.channels_last)
    assert not build_net(cfg, (1, 8, 8), 10).gradient_checkpointing
    for method in ("icfm", "meanflow"):
        dit = parse_config(VisionTrainConfig, ["--method", method, "--net", "dit", "--grad_checkpoint", "true"])
        assert build_net(dit, (1, 8, 8), 10).gradient_checkpointing


def test_checkpointed_channels_last_unet_trains_like_the_plain_one():
    torch.manual_seed(0)
    plain = UNet(in_channels=1, channels=8, multipliers=(1, 2), res_blocks=1, head_channels=8)
    fast = UNet(in_channels=1, channels=8, multipliers=(1, 2), res_blocks=1, head_channels=8,
                gradient_checkpointing=True)
    fast.load_state_dict(plain.state_dict())
    prepare_for_training(fast, channels_last=True)
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    for net in (plain, fast):
        net(x, t).square().mean().backward()
    torch.testing.assert_close(fast(x, t), plain(x, t), atol=1e-5, rtol=1e-5)
    for a, b in zip(plain.parameters(), fast.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


def test_each_evaluation_grid_goes_to_tensorboard(tmp_path, recorded):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "run"
    assert _train(out, "icfm", "--trainer.steps", "4", "--trainer.eval_every", "2") == 0
    events = event_accumulator.EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    images = events.Images("samples")
    assert [image.step for image in images] == [2, 4]
    assert images[0].height > 8 and images[0].width > 8       # a tiled grid of 8 images, not one image


def test_write_sample_grid_logs_to_a_writer_and_refuses_a_non_writer(tmp_path):
    class Writer:
        def __init__(self):
            self.calls = []

        def add_image(self, tag, grid, step, dataformats):
            self.calls.append((tag, tuple(grid.shape), step, dataformats))

    net = UNet(in_channels=1, channels=8, multipliers=(1, 2), res_blocks=1, head_channels=8)
    writer = Writer()
    write_sample_grid(net, {"shape": [1, 8, 8], "num_classes": 0}, tmp_path / "g.png", n=4, steps=1,
                      class_cond=False, writer=writer, step=7)
    assert writer.calls == [("samples", (1, 22, 22), 7, "CHW")] and (tmp_path / "g.png").is_file()
    with pytest.raises(ConfigError, match="SummaryWriter"):
        write_sample_grid(net, {"shape": [1, 8, 8], "num_classes": 0}, tmp_path / "h.png", n=4, steps=1,
                          class_cond=False, writer=object(), step=7)


@pytest.mark.parametrize("argv, message", [
    (["bfm", "--grad_checkpoint", "true"], "--grad_checkpoint with a U-Net or DiT method"),
    (["icfm", "--compile", "maybe"], "--compile"),
    (["icfm", "--trainer.fused", "always"], "--trainer.fused"),
])
def test_bad_switches_are_one_line_errors(tmp_path, capsys, argv, message):
    assert _train(tmp_path / "bad", *argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err
    with pytest.raises(ConfigError):
        prepare_for_training(torch.nn.Linear(2, 2), compile="yes")


def test_a_checkpointed_dit_flow_map_keeps_its_jvp_and_its_gradients():
    from flowzoo.core.fewstep.forward_ad import jvp
    from flowzoo.vision.nets import FlowMapDiT

    torch.manual_seed(0)
    plain = FlowMapDiT(in_channels=1, patch=2, hidden=16, depth=2, heads=2).double().train()
    checked = FlowMapDiT(in_channels=1, patch=2, hidden=16, depth=2, heads=2, gradient_checkpointing=True)
    for layer in [plain.final.linear] + [block.modulation[1] for block in plain.blocks]:
        torch.nn.init.normal_(layer.weight, std=0.1)   # off adaLN-Zero's zero start, so the blocks matter
    checked.double().train().load_state_dict(plain.state_dict())
    x, dx = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.randn(2, 1, 4, 4, dtype=torch.float64)
    s, t = torch.rand(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    tangents = (dx, torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    outputs = [jvp(net, (x, s, t), tangents) for net in (plain, checked)]
    torch.testing.assert_close(outputs[1][1], outputs[0][1], atol=1e-6, rtol=0)
    for out, _ in outputs:
        out.square().sum().backward()   # fails if the checkpoint recomputed a dual forward pass
    for a, b in zip(plain.parameters(), checked.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=0)
