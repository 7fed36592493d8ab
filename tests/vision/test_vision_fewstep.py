"""The core's few-step methods on images (flowzoo.vision.fewstep): MeanFlow (JVP and finite-difference targets),
SplitMeanFlow, reflow, MF-RAE's path, and the BOSS / FlowTurbo / RAAG samplers, end to end on the 8x8 digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowzoo.core.cli import run_main
from flowzoo.core.errors import ConfigError
from flowzoo.core.fewstep import MeanFlowLoss
from flowzoo.core.nets import FlowMapUNet, UNet
from flowzoo.vision import train as vision_train
from flowzoo.vision.cli import commands
from flowzoo.vision.features import ImageEvaluator
from flowzoo.vision.fewstep import MidTrainingThenDistillation, guided, is_flowmap, sample_chunk
from flowzoo.vision.nets import FlowMapDiT
from flowzoo.vision.sampling import generate
from flowzoo.vision.train import load_trained

pytest.importorskip("sklearn")
QUIET = ["--trainer.progress", "false", "--trainer.tensorboard", "false", "--grid_n", "10", "--grid_steps", "2"]
SMALL = ["--width", "16", "--class_cond", "true"]


pytestmark = pytest.mark.usefixtures("one_thread", "shared_feature_cache")


def _train(out, method: str, *args: str) -> int:
    argv = [method, "--data", "digits", "--trainer.out_dir", str(out), "--trainer.batch_size", "32", *QUIET, *args]
    return run_main(vision_train.main, argv, prog="python -m flowzoo.vision.train")


def _sample(*args: str) -> int:
    return run_main(commands()["sample"], [*args, "--progress", "false"], prog="flowzoo vision sample")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A class-conditional I-CFM U-Net teacher, trained a few dozen steps."""
    out = tmp_path_factory.mktemp("runs") / "teacher"
    torch.set_num_threads(1)
    assert _train(out, "icfm", *SMALL, "--trainer.steps", "30") == 0
    return out


@pytest.mark.parametrize("method", ["meanflow", "meanflow_fd", "splitmeanflow", "reflow", "mfrae"])
def test_each_method_trains_and_samples_through_the_cli(method, teacher, tmp_path):
    extra = ["--teacher", str(teacher), "--reflow_pairs", "48", "--teacher_steps", "4"] \
        if method in ("reflow", "mfrae") else []
    assert _train(tmp_path / method, method, *SMALL, "--trainer.steps", "3", *extra) == 0
    run = load_trained(tmp_path / method)
    assert run.config.method == method and run.step == 3
    assert is_flowmap(run.model) == (method != "reflow")
    if method == "reflow":  # the student is the teacher's network, fine-tuned on the teacher's pairs
        assert (tmp_path / method / "reflow_pairs").is_dir() and isinstance(run.model, UNet)
    out = tmp_path / "one.png"
    assert _sample("--checkpoint", str(tmp_path / method), "--n", "10", "--steps", "1", "--out", str(out)) == 0
    arrays = np.load(tmp_path / "one.npz")
    assert arrays["x"].shape == (10, 1, 8, 8) and int(arrays["nfe"]) == 1
    assert np.isfinite(arrays["x"]).all()


def test_flowmap_dit_trains_with_the_jvp_target(tmp_path):
    """MeanFlow's forward-mode derivative runs through the DiT's attention (jvp_safe)."""
    assert _train(tmp_path / "dit", "meanflow", "--net", "dit", "--width", "32", "--trainer.steps", "2") == 0
    run = load_trained(tmp_path / "dit")
    assert isinstance(run.model, FlowMapDiT)
    images, nfe = generate(run.model, 4, run.shape, steps=2)
    assert images.shape == (4, 1, 8, 8) and nfe == 2


def _randomised(net: torch.nn.Module) -> torch.nn.Module:
    """Every weight drawn at random (the zero-initialised output layers would make every derivative 0)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3 / max(1, p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1)
    return net.double().eval()


@pytest.mark.parametrize("net", [
    lambda: FlowMapUNet(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, attention_levels=(1,),
                        head_channels=16, num_classes=10),
    lambda: FlowMapDiT(in_channels=1, patch=2, hidden=32, depth=2, heads=2, num_classes=10),
], ids=["unet", "dit"])
def test_jvp_and_finite_difference_targets_agree_on_image_backbones(net):
    """u_tgt = v + (t - s) du/ds: the exact JVP and the central difference (delta 5e-3, float64) agree closely,
    and the derivative term is far from zero (so the check is not vacuous)."""
    model = _randomised(net())
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64), torch.randn(6, 1, 8, 8, generator=g,
                                                                                     dtype=torch.float64)
    s = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64)
    t = s + 0.3
    cond = {"y": torch.arange(6)}
    exact = MeanFlowLoss(derivative="jvp").target(model, x, s, t, v, cond)
    approx = MeanFlowLoss(derivative="finite_difference").target(model, x, s, t, v, cond)
    term = (exact - v).norm()
    assert term > 1e-3 * v.norm()
    assert (exact - approx).norm() < 1e-3 * term


def test_mfrae_switches_from_mid_training_to_distillation():
    teacher = lambda x, t, **c: -x  # noqa: E731
    step = [0]
    objective = MidTrainingThenDistillation(teacher, mid_steps=2, step=lambda: step[0], teacher_steps=4)
    net = FlowMapUNet(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16)
    batch = {"x1": torch.randn(4, 1, 8, 8)}
    phases = []
    for step[0] in range(4):
        phases.append(objective(net, batch)[1]["phase"])
    assert phases == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("setup, match", [
    (lambda teacher, flowmap: [], "--teacher RUN for reflow"),
    (lambda teacher, flowmap: ["--teacher", str(flowmap)], "a velocity teacher"),
    (lambda teacher, flowmap: ["--teacher", str(teacher), "--pad", "4"], "images shaped"),
    (lambda teacher, flowmap: ["--teacher", str(teacher), "--class_cond", "false"], "class_cond=False"),
    (lambda teacher, flowmap: ["--teacher", "does/not/exist"], "does not exist"),
], ids=["missing", "flowmap", "shape", "unconditional", "no_run"])
def test_reflow_with_a_missing_or_wrong_teacher_fails_cleanly(setup, match, teacher, tmp_path_factory, capsys):
    flowmap = tmp_path_factory.getbasetemp() / "flowmap_teacher"
    if not flowmap.exists():
        assert _train(flowmap, "meanflow_fd", *SMALL, "--trainer.steps", "1") == 0
    out = tmp_path_factory.mktemp("bad") / "reflow"
    capsys.readouterr()
    args = ["--width", "16", "--class_cond", "true", *setup(teacher, flowmap), "--trainer.steps", "2"]
    assert _train(out, "reflow", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and "Traceback" not in err
    assert not (out / "checkpoints").exists()


def test_teacher_is_refused_for_a_method_without_one(teacher, tmp_path, capsys):
    assert _train(tmp_path / "x", "meanflow", "--teacher", str(teacher)) == 2
    assert "drop --teacher" in capsys.readouterr().err


@pytest.mark.parametrize("sampler, steps, nfe", [("boss", 3, 3), ("flowturbo", 4, 4), ("flowturbo", 2, 2),
                                                  ("heun", 2, 4), ("euler", 4, 4)])
@pytest.mark.parametrize("guidance", ["cfg", "raag"])
def test_samplers_return_the_promised_nfe(sampler, steps, nfe, guidance, teacher, tmp_path):
    out = tmp_path / "s.png"
    assert _sample("--checkpoint", str(teacher), "--n", "6", "--steps", str(steps), "--sampler", sampler,
                   "--guidance", guidance, "--cfg_scale", "2", "--out", str(out)) == 0
    arrays = np.load(tmp_path / "s.npz")
    assert int(arrays["nfe"]) == nfe and np.isfinite(arrays["x"]).all()


def test_flowturbo_and_boss_are_exact_on_a_constant_field():
    """Hand computation: any step rule carries x0 to x0 + 1 under dx/dt = 1; BOSS's grid has steps + 1 times."""
    field = lambda x, t: torch.ones_like(x)  # noqa: E731
    x0 = torch.zeros(3, 1, 4, 4)
    for method in ("flowturbo", "euler"):
        x, _ = sample_chunk(field, x0, steps=3, method=method, flowmap=False)
        assert torch.allclose(x, x0 + 1)
    grid = torch.tensor([0.0, 0.2, 1.0])
    x, nfe = sample_chunk(field, x0, steps=2, method="boss", flowmap=False, time_grid=grid)
    assert nfe == 2 and torch.allclose(x, x0 + 1)


def test_raag_scale_matches_its_formula():
    """v_c = 0, v_u = x: ratio 1, so w = 1 + (w_max - 1) exp(-alpha) and the guided velocity is (1 - w) x."""
    net = lambda x, t, y=None: x * (y[:, None, None, None] == 10)  # noqa: E731
    x, t, y = torch.ones(2, 1, 2, 2), torch.zeros(2), torch.tensor([1, 2])
    out = guided(net, 5.0, "raag", 10, raag_alpha=2.0)(x, t, y=y)
    w = 1 + 4 * np.exp(-2.0)
    assert torch.allclose(out, torch.full_like(x, 1 - w), atol=1e-6)
    assert guided(net, 1.0, "cfg", 10) is net


def test_bad_sampler_options_are_one_error_line(teacher, tmp_path, capsys):
    for args in (["--sampler", "nope"], ["--sampler", "flowturbo", "--steps", "1"], ["--guidance", "x"]):
        assert _sample("--checkpoint", str(teacher), "--out", str(tmp_path / "b.png"), *args) == 2
        assert capsys.readouterr().err.startswith("error: ")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="flow map"):
        generate(FlowMapUNet(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16),
                 2, (1, 8, 8), steps=1, method="heun")


def test_meanflow_learns_one_step_digits(tmp_path):
    """A broken target cannot pass: after 100 steps MeanFlow's one-step samples sit far closer to the digits than
    the noise they start from (about 0.3 of its FD; the mean image is further than the noise), in the feature
    classifier's space."""
    assert _train(tmp_path / "mf", "meanflow_fd", "--width", "16", "--trainer.steps", "100", "--trainer.lr", "2e-3",
                  "--trainer.warmup_steps", "10", "--trainer.ema_decay", "0.9") == 0
    run = load_trained(tmp_path / "mf")
    evaluator = ImageEvaluator.for_dataset("digits", verbose=False, **run.config.load_options())
    images, nfe = generate(run.model, 300, run.shape, steps=1, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(300, *run.shape, generator=torch.Generator().manual_seed(2))
    assert nfe == 1
    assert evaluator.fd(images) < 0.45 * evaluator.fd(noise), (evaluator.fd(images), evaluator.fd(noise))
