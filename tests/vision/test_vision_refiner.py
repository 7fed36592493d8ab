"""FlowTurbo's conv velocity refiner on images (flowzoo.vision.refiner): ``train refiner --teacher RUN`` and
``flowzoo vision sample --sampler flowturbo --refiner RUN``, end to end on the 8x8 digits."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flowzoo.core.cli import run_main
from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.core.fewstep import flowturbo_sample
from flowzoo.core.nets import UNet
from flowzoo.vision import train as vision_train
from flowzoo.vision.cli import commands
from flowzoo.vision.refiner import ImageRefiner, check_refiner_run, conv_macs, refiner_velocity_error
from flowzoo.vision.sampling import generate
from flowzoo.vision.train import load_trained

pytest.importorskip("sklearn")
QUIET = ["--trainer.progress", "false", "--trainer.tensorboard", "false", "--grid_n", "10", "--grid_steps", "2",
         "--trainer.batch_size", "32"]
pytestmark = pytest.mark.usefixtures("one_thread", "shared_feature_cache")


def _train(out, method: str, *args: str) -> int:
    argv = [method, "--data", "digits", "--trainer.out_dir", str(out), *QUIET, *args]
    return run_main(vision_train.main, argv, prog="python -m flowzoo.vision.train")


def _sample(*args: str) -> int:
    return run_main(commands()["sample"], [*args, "--progress", "false"], prog="flowzoo vision sample")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A class-conditional I-CFM teacher (60 steps) and its refiner (150 steps, offsets up to 0.25)."""
    root = tmp_path_factory.mktemp("refiner_runs")
    torch.set_num_threads(1)
    assert _train(root / "icfm", "icfm", "--width", "16", "--class_cond", "true", "--trainer.steps", "60",
                  "--trainer.lr", "2e-3") == 0
    assert _train(root / "ref", "refiner", "--teacher", str(root / "icfm"), "--trainer.steps", "150",
                  "--trainer.lr", "2e-3", "--trainer.warmup_steps", "10", "--trainer.ema_decay", "0.9",
                  "--refiner_max_dt", "0.25") == 0
    return root / "icfm", root / "ref"


def test_zero_refiner_steps_equal_pseudo_corrector_steps_on_a_constant_field():
    """Hand computation: under dx/dt = c every step rule lands on x0 + c; a zero refiner reuses d = c exactly as the
    pseudo-corrector's fresh evaluation does, so the two schedules agree to the bit, and the refiner costs no NFE."""
    c = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    field = lambda x, t, y=None: c.expand_as(x)  # noqa: E731
    x0 = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    zero = ImageRefiner((1, 4, 4), width=4, num_classes=10)
    y = {"y": torch.tensor([1, 2, 10])}
    refined = flowturbo_sample(field, x0, heun_steps=1, pseudo_steps=2, refiner_steps=3, refiner=zero, cond=y)
    pseudo = flowturbo_sample(field, x0, heun_steps=1, pseudo_steps=5, refiner_steps=0, cond=y)
    assert torch.equal(refined.x, pseudo.x) and torch.allclose(refined.x, x0 + c, atol=1e-6)
    assert refined.nfe == 4 and refined.extras["refiner_calls"] == 6


def test_zero_refiner_carries_the_last_velocity_on_a_real_net():
    """With r = 0 every refiner step is an Euler step with the pseudo-corrector's last velocity d (no predictor
    call): the state moves by the same h d in each refiner step, and the predictor's NFE is the plain schedule's."""
    torch.manual_seed(0)
    net = UNet(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16)
    x0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    seen: list[torch.Tensor] = []
    refined = flowturbo_sample(net, x0, heun_steps=1, pseudo_steps=2, refiner_steps=2,
                               refiner=ImageRefiner((1, 8, 8), width=4), callback=lambda s: seen.append(s["x"]))
    first, second = seen[3] - seen[2], seen[4] - seen[3]
    assert torch.allclose(first, second, atol=1e-6) and first.abs().max() > 1e-3
    assert refined.nfe == 4 and torch.isfinite(refined.x).all()


def test_trained_refiner_lowers_the_heldout_velocity_error(runs):
    """A broken refiner or loss cannot pass: on held-out test digits the refined velocity is closer to the teacher's
    than reusing the last velocity (the zero refiner's), by a clear margin."""
    teacher_run, refiner_run = runs
    metrics = (refiner_run / "metrics.csv").read_text().splitlines()
    assert "heldout_ratio" in metrics[0]
    teacher, refiner = load_trained(teacher_run), load_trained(refiner_run)
    assert isinstance(refiner.model, ImageRefiner) and refiner.class_cond
    test = vision_train.load_data(teacher.config, "test")
    errors = refiner_velocity_error(refiner.model, teacher.model, test.images[:200], test.labels[:200], max_dt=0.25,
                                    seed=3)
    assert errors["ratio"] < 0.7, errors
    untrained = refiner_velocity_error(ImageRefiner((1, 8, 8), num_classes=10), teacher.model, test.images[:200],
                                       test.labels[:200], max_dt=0.25, seed=3)
    assert untrained["ratio"] == 1.0


def test_sample_with_refiner_through_the_cli(runs, tmp_path):
    teacher_run, refiner_run = runs
    out = tmp_path / "r.png"
    assert _sample("--checkpoint", str(teacher_run), "--n", "10", "--steps", "4", "--sampler", "flowturbo",
                   "--refiner", str(refiner_run), "--out", str(out)) == 0
    arrays = np.load(tmp_path / "r.npz")
    assert int(arrays["nfe"]) == 4 and arrays["x"].shape == (10, 1, 8, 8) and np.isfinite(arrays["x"]).all()
    teacher, refiner = load_trained(teacher_run), load_trained(refiner_run)
    labels = torch.arange(10) % 10
    plain, _ = generate(teacher.model, 10, teacher.shape, steps=4, method="flowturbo", labels=labels,
                        generator=torch.Generator().manual_seed(0))
    refined, nfe = generate(teacher.model, 10, teacher.shape, steps=4, method="flowturbo", labels=labels,
                            generator=torch.Generator().manual_seed(0), refiner=refiner.model, refiner_steps=3)
    assert nfe == 4 and torch.allclose(refined, torch.from_numpy(arrays["x"]))
    assert not torch.allclose(plain, refined)   # the refiner steps extend the grid past the pseudo-corrector's


def test_refiner_costs_a_small_share_of_the_unet():
    net = UNet(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16, num_classes=10)
    refiner = ImageRefiner((1, 28, 28), width=16, num_classes=10)
    x, t, y = torch.zeros(1, 1, 28, 28), torch.zeros(1), torch.zeros(1, dtype=torch.long)
    assert conv_macs(refiner, x, t, x, y=y) < 0.15 * conv_macs(net, x, t, y=y)


def test_refiner_of_another_shape_or_kind_is_refused(runs, tmp_path, capsys):
    teacher_run, refiner_run = runs
    teacher = load_trained(teacher_run)
    other = SimpleNamespace(model=ImageRefiner((1, 16, 16)), shape=(1, 16, 16), class_cond=True,
                            checkpoint="other", config=SimpleNamespace(refiner_max_dt=0.25, method="refiner"))
    with pytest.raises(ShapeError, match=r"\(1, 8, 8\)"):
        check_refiner_run(other, teacher, steps=4, refiner_steps=3)
    with pytest.raises(ShapeError, match="shaped"):
        ImageRefiner((1, 16, 16))(torch.zeros(2, 1, 8, 8), torch.zeros(2), torch.zeros(2, 1, 8, 8))
    for args in (["--refiner", str(teacher_run)],                      # not a refiner run
                 ["--refiner", str(refiner_run), "--refiner_steps", "1", "--steps", "2"],   # steps beyond max_dt
                 ["--refiner", str(refiner_run), "--sampler", "heun"],
                 ["--refiner_steps", "2"],
                 ["--refiner", str(refiner_run), "--cfg_scale", "2"]):
        argv = ["--checkpoint", str(teacher_run), "--steps", "4", "--sampler", "flowturbo", *args]
        if "heun" in args:
            argv.remove("flowturbo")
            argv.remove("--sampler")
        assert _sample(*argv, "--out", str(tmp_path / "b.png")) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") <= 2, err
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="flowturbo"):
        generate(teacher.model, 2, teacher.shape, steps=4, method="euler", refiner=ImageRefiner((1, 8, 8)),
                 refiner_steps=2)


def test_evaluate_with_refiner_records_it(runs, tmp_path, capsys):
    teacher_run, refiner_run = runs
    out = tmp_path / "e.json"
    argv = ["--checkpoint", str(teacher_run), "--n", "20", "--steps", "4", "--sampler", "flowturbo", "--refiner",
            str(refiner_run), "--out", str(out), "--progress", "false"]
    assert run_main(commands()["evaluate"], argv, prog="flowzoo vision evaluate") == 0

    record = json.loads(out.read_text())
    assert record["refiner_steps"] == 3 and record["nfe"] == 4 and record["refiner"] == str(refiner_run)
    assert record["metrics"]["fd"] > 0
