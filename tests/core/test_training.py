"""Tests of the Trainer: schedule, EMA, clipping, logging, evaluation, divergence, exact resume."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from flowzoo.core.errors import ConfigError, DTypeError, ShapeError, TrainingDivergedError
from flowzoo.core.training import (
    EMA,
    Trainer,
    TrainerConfig,
    WarmupCosineSchedule,
    latest_checkpoint,
    read_checkpoint,
    seed_everything,
    verify_checkpoint,
)
from flowzoo.core.training.run_logging import CSVLogger

SHIFT = torch.tensor([3.0, -1.0])


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyVelocity(nn.Module):
    """v(x, t) by an MLP on cat([x, t])."""

    def __init__(self, dim: int = 2, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], dim=1))


def fm_loss(model, batch):
    """Conditional flow matching with the linear path: regress x1 - x0 at x_t = (1 - t) x0 + t x1."""
    x1 = batch["x1"]
    x0 = torch.randn_like(x1)
    t = torch.rand(len(x1))
    x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
    loss = (model(x_t, t) - (x1 - x0)).pow(2).mean()
    return loss, {"mse": float(loss.detach())}


def sample_batch(generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {"x1": 0.5 * torch.randn(16, 2, generator=generator) + SHIFT}


class ShiftedGaussians(torch.utils.data.Dataset):
    def __init__(self, n: int = 100) -> None:
        self.points = 0.5 * torch.randn(n, 2, generator=torch.Generator().manual_seed(7)) + SHIFT

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i):
        return {"x1": self.points[i]}


def make_config(tmp_path, **overrides) -> TrainerConfig:
    options = dict(steps=30, batch_size=16, lr=1e-2, warmup_steps=3, log_every=5, checkpoint_every=10,
                   eval_every=0, ema_decay=0.9, out_dir=str(tmp_path / "run"), progress=False,
                   tensorboard=False, device="cpu", seed=3)
    options.update(overrides)
    return TrainerConfig(**options)


def new_model() -> TinyVelocity:
    torch.manual_seed(0)
    return TinyVelocity()


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------- components
def test_schedule_values_at_warmup_peak_and_end():
    schedule = WarmupCosineSchedule(warmup_steps=4, total_steps=104, min_lr_ratio=0.1)
    assert schedule.factor(0) == pytest.approx(0.25)
    assert schedule.factor(1) == pytest.approx(0.5)
    assert schedule.factor(3) == pytest.approx(1.0) and schedule.factor(4) == pytest.approx(1.0)
    assert schedule.factor(54) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert schedule.factor(104) == pytest.approx(0.1) and schedule.factor(500) == pytest.approx(0.1)
    factors = [schedule.factor(s) for s in range(4, 105)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))  # monotone decay after the peak
    constant = WarmupCosineSchedule(0, 10, min_lr_ratio=1.0)
    assert [constant.factor(s) for s in range(10)] == [1.0] * 10
    with pytest.raises(ConfigError):
        WarmupCosineSchedule(0, 10, min_lr_ratio=1.5)


def test_trainer_uses_the_schedule(tmp_path):
    cfg = make_config(tmp_path, steps=12, warmup_steps=4, min_lr_ratio=0.2, log_every=1, lr=0.05)
    Trainer(new_model(), fm_loss, sample_batch, cfg).fit()
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    logged = [float(r["lr"]) for r in rows if r["lr"]]
    schedule = WarmupCosineSchedule(4, 12, 0.2)
    assert logged == pytest.approx([0.05 * schedule.factor(s) for s in range(12)])


def test_ema_update_formula():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(net, decay=0.8)
    shadow = {k: v.clone() for k, v in ema.module.state_dict().items()}
    for _ in range(2):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net[1].running_mean.add_(1.0)
        ema.update(net)
        for name, param in net.named_parameters():
            shadow[name] = 0.8 * shadow[name] + 0.2 * param
            assert torch.allclose(ema.module.state_dict()[name], shadow[name], atol=1e-6)
        assert torch.equal(ema.module[1].running_mean, net[1].running_mean)  # buffers are copied
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ConfigError):
        EMA(net, decay=1.0)


def test_grad_clipping_caps_the_norm(tmp_path):
    def loud_loss(model, batch):
        loss, metrics = fm_loss(model, batch)
        return 1e4 * loss, metrics

    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(record)
    try:
        Trainer(new_model(), loud_loss, sample_batch, make_config(tmp_path, steps=5, grad_clip=0.5, log_every=1)).fit()
    finally:
        handle.remove()
    assert len(norms) == 5 and max(norms) <= 0.5 * (1 + 1e-5)
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert all(float(r["grad_norm"]) > 0.5 for r in rows if r["grad_norm"])  # the norm before clipping


def test_csv_union_of_columns(tmp_path):
    logger = CSVLogger(tmp_path / "m.csv")
    logger.log(1, {"a": 1.0})
    logger.log(2, {"a": 2.0, "b": 3.0})
    logger.log(3, {"b": 4.0})
    rows = read_csv(tmp_path / "m.csv")
    assert list(rows[0]) == ["step", "a", "b"]
    assert [(r["step"], r["a"], r["b"]) for r in rows] == [("1", "1.0", ""), ("2", "2.0", "3.0"), ("3", "", "4.0")]


# ----------------------------------------------------------------------------- the loop
def test_logs_csv_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    result = Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path, steps=12, tensorboard=True)).fit()
    run = tmp_path / "run"
    rows = read_csv(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [5, 10, 12]
    for column in ("loss", "mse", "lr", "grad_norm", "steps_per_sec"):
        assert all(math.isfinite(float(r[column])) for r in rows), column
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert result.metrics_csv == run / "metrics.csv" and result.metrics["loss"] == float(rows[-1]["loss"])
    assert (run / "config.yaml").is_file() and result.finished


def test_missing_tensorboard_warns_once(tmp_path, monkeypatch):
    from flowzoo.core.training.run_logging import TensorBoardLogger

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    monkeypatch.setattr(TensorBoardLogger, "_warned", False)
    with pytest.warns(RuntimeWarning, match="tensorboard is not installed") as record:
        Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path, steps=3, tensorboard=True)).fit()
        Trainer(new_model(), fm_loss, sample_batch,
                make_config(tmp_path, steps=3, tensorboard=True, out_dir=str(tmp_path / "b"))).fit()
    assert sum("tensorboard" in str(w.message) for w in record) == 1
    assert (tmp_path / "run" / "metrics.csv").is_file() and not (tmp_path / "run" / "tensorboard").exists()


def test_evaluation_steps_model_and_outputs(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    calls = []

    def evaluate(model, step, eval_dir):
        calls.append((step, model, model.training, eval_dir))
        samples = model(torch.zeros(4, 2), torch.zeros(4)).detach()
        figure = plt.figure(figsize=(1, 1))
        plt.scatter(samples[:, 0], samples[:, 1])
        figure.savefig(eval_dir / "samples.png")
        plt.close(figure)
        torch.randn(100)  # evaluation may use the global RNG without changing training
        return {"score": float(step), "tensor_metric": torch.tensor(0.5)}

    cfg = make_config(tmp_path, steps=25, eval_every=10)
    trainer = Trainer(new_model(), fm_loss, sample_batch, cfg, evaluate=evaluate)
    result = trainer.fit()
    assert [c[0] for c in calls] == [10, 20, 25]
    assert all(c[1] is trainer.ema.module and not c[2] for c in calls)  # the EMA model, in eval mode
    run = tmp_path / "run"
    for step, _, _, eval_dir in calls:
        assert eval_dir == run / "eval" / f"step_{step:07d}" and (eval_dir / "samples.png").stat().st_size > 0
    records = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert records == [{"step": s, "score": float(s), "tensor_metric": 0.5} for s in (10, 20, 25)]
    assert [r["step"] for r in read_csv(run / "metrics.csv") if r["eval/score"]] == ["10", "20", "25"]
    assert result.eval_metrics == {"score": 25.0, "tensor_metric": 0.5}
    # The same run without evaluation ends with the same weights.
    plain = Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path, steps=25, out_dir=str(tmp_path / "p")))
    plain.fit()
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), trainer.model.state_dict().values()))


def test_evaluation_without_ema_gets_the_model(tmp_path):
    seen = []
    trainer = Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path, steps=4, ema_decay=0.0),
                      evaluate=lambda m, s, d: seen.append(m) or {})
    trainer.fit()
    assert seen == [trainer.model] and trainer.model.training
    assert "ema.safetensors" not in read_checkpoint(tmp_path / "run").files


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, bad):
    calls = {"n": 0}

    def breaking_loss(model, batch):
        calls["n"] += 1
        loss, metrics = fm_loss(model, batch)
        return (loss * bad if calls["n"] == 8 else loss), metrics

    cfg = make_config(tmp_path, checkpoint_every=5)
    with pytest.raises(TrainingDivergedError, match="at step 8") as info:
        Trainer(new_model(), breaking_loss, sample_batch, cfg).fit()
    root = tmp_path / "run" / "checkpoints"
    assert "step_0000005" in str(info.value) and info.value.step == 8
    assert latest_checkpoint(root) == root / "step_0000005" and not (root / "step_0000008").exists()
    verify_checkpoint(root / "step_0000005")  # every hash matches
    assert read_checkpoint(root).step == 5


@pytest.mark.parametrize("mode, precision", [("callable", "fp32"), ("dataset", "fp32"), ("callable", "bf16"),
                                             ("dataset", "fp16")])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, mode, precision):
    data = sample_batch if mode == "callable" else ShiftedGaussians()  # 100 samples: 6 batches per epoch

    def evaluate(model, step, eval_dir):
        return {"noise": float(torch.randn(()))}

    def run(out_dir, **overrides):
        cfg = make_config(tmp_path, out_dir=str(tmp_path / out_dir), eval_every=7, precision=precision, **overrides)
        return Trainer(new_model(), fm_loss, data, cfg, evaluate=evaluate)

    class Crash(Exception):
        pass

    def crash_at_25(trainer, step, metrics):
        if step == 25:
            raise Crash

    reference = run("full")
    reference.fit()
    with pytest.raises(Crash):
        Trainer(new_model(), fm_loss, data, make_config(tmp_path, out_dir=str(tmp_path / "cut"), eval_every=7,
                                                        precision=precision), evaluate=evaluate,
                callbacks=[crash_at_25]).fit()
    resumed = run("cut", resume=True)
    result = resumed.fit()
    assert result.resumed_from == tmp_path / "cut" / "checkpoints" / "step_0000020" and result.step == 30
    stopped = run("stop", max_steps=20).fit()
    assert stopped.step == 20 and not stopped.finished and stopped.checkpoint.name == "step_0000020"
    run("stop", resume=True).fit()

    for name in ("cut", "stop"):
        final = tmp_path / name / "checkpoints" / "step_0000030"
        expected_dir = tmp_path / "full" / "checkpoints" / "step_0000030"
        for weights in ("model.safetensors", "ema.safetensors"):
            a, b = load_file(final / weights), load_file(expected_dir / weights)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (name, weights)
        opt_a = read_checkpoint(final).state["optimizer"]["state"]
        opt_b = read_checkpoint(expected_dir).state["optimizer"]["state"]
        assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_a for k in opt_a[i])
    # The logs describe one run: no rows from after the interruption's checkpoint are repeated.
    steps = [int(r["step"]) for r in read_csv(tmp_path / "cut" / "metrics.csv") if r["loss"]]
    assert steps == [5, 10, 15, 20, 25, 30]


def test_fresh_run_refuses_existing_checkpoints(tmp_path):
    cfg = make_config(tmp_path, steps=3)
    Trainer(new_model(), fm_loss, sample_batch, cfg).fit()
    with pytest.raises(ConfigError, match="resume true"):
        Trainer(new_model(), fm_loss, sample_batch, cfg).fit()
    result = Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path, steps=2, overwrite=True)).fit()
    assert result.step == 2 and [p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*")] == ["step_0000002"]


def test_resume_true_without_checkpoint_starts_fresh(tmp_path):
    result = Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path, steps=3, resume=True)).fit()
    assert result.step == 3 and result.resumed_from is None


def test_tensor_dataset_and_dataloader_inputs(tmp_path):
    points = 0.5 * torch.randn(64, 2) + SHIFT
    result = Trainer(new_model(), fm_loss, torch.utils.data.TensorDataset(points),
                     make_config(tmp_path, steps=6, out_dir=str(tmp_path / "a"))).fit()
    assert result.step == 6 and result.metrics["epoch"] == 1.0  # 4 batches per epoch
    loader = torch.utils.data.DataLoader(points, batch_size=16, shuffle=True)
    result = Trainer(new_model(), fm_loss, loader, make_config(tmp_path, steps=9, out_dir=str(tmp_path / "b"))).fit()
    assert result.step == 9
    with pytest.warns(RuntimeWarning, match="cannot be restored"):
        Trainer(new_model(), fm_loss, loader, make_config(tmp_path, steps=10, out_dir=str(tmp_path / "b"),
                                                          resume=True)).fit()


def test_bad_inputs_are_rejected(tmp_path):
    cfg = make_config(tmp_path, steps=2)
    with pytest.raises(ShapeError, match="scalar loss"):
        Trainer(new_model(), lambda m, b: (m(b["x1"], torch.zeros(16)), {}), sample_batch, cfg).fit()
    with pytest.raises(DTypeError, match="dict of floats"):
        Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path, steps=2, out_dir=str(tmp_path / "e")),
                evaluate=lambda m, s, d: 3.0).fit()
    with pytest.raises(ConfigError, match="training data"):
        Trainer(new_model(), fm_loss, 42, make_config(tmp_path, out_dir=str(tmp_path / "d"))).fit()
    with pytest.raises(DTypeError):
        Trainer("not a model", fm_loss, sample_batch, cfg)
    with pytest.raises(ConfigError, match="TrainerConfig"):
        Trainer(new_model(), fm_loss, sample_batch, {"steps": 3})
    with pytest.raises(ConfigError, match="batch_size x world_size"):
        Trainer(new_model(), fm_loss, ShiftedGaussians(10), make_config(tmp_path, out_dir=str(tmp_path / "s"))).fit()
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path, device="cuda")).fit()


def test_seed_everything_repeats_streams():
    import random

    import numpy as np

    seed_everything(5)
    first = (random.random(), np.random.rand(), torch.rand(()).item())
    seed_everything(5)
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == first


def test_learning_on_a_tiny_problem(tmp_path):
    """The trained flow moves N(0, I/4)-noise onto the shifted Gaussian (mean error far below |shift|)."""
    cfg = make_config(tmp_path, steps=300, lr=1e-2, checkpoint_every=0, ema_decay=0.0, log_every=100)
    trainer = Trainer(new_model(), fm_loss, sample_batch, cfg)
    trainer.fit()
    x = torch.randn(512, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for i in range(20):  # Euler from t = 0 to 1
            x = x + 0.05 * trainer.model(x, torch.full((512,), i * 0.05))
    assert (x.mean(0) - SHIFT).norm() < 0.3 < SHIFT.norm()


def test_dataset_workers_give_the_same_batches(tmp_path):
    def final_weights(name, **overrides):
        trainer = Trainer(new_model(), fm_loss, ShiftedGaussians(),
                          make_config(tmp_path, steps=8, out_dir=str(tmp_path / name), **overrides))
        trainer.fit()
        return trainer.model.state_dict()

    plain, workers = final_weights("plain"), final_weights("workers", num_workers=1)
    assert all(torch.equal(plain[k], workers[k]) for k in plain)


def test_unsupported_autocast_is_refused_before_the_run(tmp_path, monkeypatch):
    def no_autocast(*args, **kwargs):
        raise RuntimeError("autocast to float16 is not supported on this device")

    monkeypatch.setattr(torch, "autocast", no_autocast)
    with pytest.raises(ConfigError, match="bf16 or fp32"):
        Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path, precision="fp16")).fit()
    assert not (tmp_path / "run").exists()


def test_ema_warm_up_follows_the_step():
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.999)
    before = ema.module.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, step=0)  # decay min(0.999, 1/10) = 0.1: the shadow moves 90 % of the way
    expected = 0.1 * before + 0.9 * net.weight.detach()
    assert torch.allclose(ema.module.weight, expected, atol=1e-6)
    late = EMA(net, decay=0.999)
    late_before = late.module.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    late.update(net, step=10**6)  # long after warm-up: the configured decay
    assert torch.allclose(late.module.weight, 0.999 * late_before + 0.001 * net.weight.detach(), atol=1e-6)


# ----------------------------------------------------------------------------- signals
_SIGNAL_SCRIPT = '''
import sys, time
from dataclasses import dataclass, field
from pathlib import Path
import torch
from torch import nn
from flowzoo.core.cli import run_main
from flowzoo.core.config import parse_config
from flowzoo.core.training import Trainer, TrainerConfig


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 32), nn.SiLU(), nn.Linear(32, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], dim=1))


def loss(model, batch):
    x1 = batch["x1"]
    x0 = torch.randn_like(x1)
    t = torch.rand(len(x1))
    x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
    return (model(x_t, t) - (x1 - x0)).pow(2).mean(), {}


@dataclass
class Run:
    ready: str = ""
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(
        steps=60, batch_size=16, checkpoint_every=25, ema_decay=0.9, progress=False, tensorboard=False,
        device="cpu", log_every=5))


def main(argv):
    cfg = parse_config(Run, argv)

    def pace(trainer, step, metrics):
        if cfg.ready and step == 10:
            Path(cfg.ready).write_text("training")
        if cfg.ready and step > 10:
            time.sleep(0.05)  # slow steps, so that the signal lands in the middle of the run

    torch.manual_seed(0)
    Trainer(Net(), loss, lambda g: {"x1": torch.randn(16, 2, generator=g) + 3.0}, cfg.trainer,
            callbacks=[pace]).fit()
    return 0


raise SystemExit(run_main(main, prog="signal-test"))
'''


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_is_bit_identical(tmp_path):
    import os
    import re
    import shlex
    import signal
    import subprocess
    import time

    script = tmp_path / "train_script.py"
    script.write_text(_SIGNAL_SCRIPT)
    full = subprocess.run([sys.executable, str(script), "--trainer.out_dir", str(tmp_path / "full")],
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    ready = tmp_path / "ready"
    cut = subprocess.Popen([sys.executable, str(script), "--ready", str(ready), "--trainer.out_dir", str(tmp_path / "cut")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not ready.exists() and cut.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(cut.pid, signal.SIGTERM)
    _, stderr = cut.communicate(timeout=240)
    assert cut.returncode == 128 + signal.SIGTERM, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    found = re.fullmatch(r"interrupted by SIGTERM at step (\d+)/60: checkpoint saved in (\S+); resume with: (.+)",
                         lines[0])
    assert found, lines[0]
    step, saved = int(found.group(1)), Path(found.group(2))
    assert 10 < step < 60 and saved.name == f"step_{step:07d}"
    verify_checkpoint(saved)
    assert not list((tmp_path / "cut" / "checkpoints").glob(".*"))  # no staging folder or temporary pointer
    command = shlex.split(found.group(3))
    assert command[:2] == ["python", str(script)] and command[-2:] == ["--trainer.resume", "true"]
    resumed = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "cut" / "checkpoints" / "step_0000060" / name)
        b = load_file(tmp_path / "full" / "checkpoints" / "step_0000060" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_ctrl_c_in_process_saves_restores_handlers_and_resumes_exactly(tmp_path):
    import os
    import signal

    from flowzoo.core.training import TrainingInterrupted

    def interrupt_at_12(trainer, step, metrics):
        if step == 12:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    reference = Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path, out_dir=str(tmp_path / "full")))
    reference.fit()
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path), callbacks=[interrupt_at_12]).fit()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    error = info.value
    assert isinstance(error, KeyboardInterrupt) and error.exit_code == 130 and error.step == 12
    assert error.checkpoint == tmp_path / "run" / "checkpoints" / "step_0000012"
    assert "interrupted by SIGINT at step 12/30" in str(error) and "resume=True" in str(error)
    resumed = Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path, resume=True)).fit()
    assert resumed.resumed_from == error.checkpoint and resumed.step == 30
    final = read_checkpoint(tmp_path / "run").model
    assert all(torch.equal(final[k], v) for k, v in reference.model.state_dict().items())


def test_a_second_signal_stops_at_once(tmp_path):
    import os
    import signal

    from flowzoo.core.training import TrainingInterrupted

    def interrupt_twice_at_12(trainer, step, metrics):
        if step == 12:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="second SIGTERM at step 12") as info:
        Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path), callbacks=[interrupt_twice_at_12]).fit()
    assert info.value.exit_code == 143
    assert info.value.checkpoint == latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step_0000010"  # nothing saved after


def test_signal_guard_outside_the_main_thread_leaves_handlers_alone():
    import signal
    import threading

    from flowzoo.core.training.interrupts import SignalGuard

    seen = []

    def run():
        with SignalGuard() as guard:
            seen.append((guard._previous, signal.getsignal(signal.SIGINT)))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [({}, signal.default_int_handler)]


def test_resume_command_drops_overwrite_and_old_resume():
    from flowzoo.core.cli import resume_command

    assert resume_command(["flowzoo", "train", "core", "--trainer.overwrite", "true", "--x", "1"]) == \
        "flowzoo train core --x 1 --trainer.resume true"
    assert resume_command(["python", "-m", "m", "--trainer.resume=runs/a", "--trainer.overwrite", "--y", "a b"]) == \
        "python -m m --y 'a b' --trainer.resume true"
    assert resume_command(["t", "--trainer.resume", "runs/a/checkpoints/step_0000010"]) == "t --trainer.resume true"


def test_divergence_before_the_first_checkpoint_says_so(tmp_path):
    def nan_loss(model, batch):
        loss, metrics = fm_loss(model, batch)
        return loss * float("nan"), metrics

    with pytest.raises(TrainingDivergedError) as info:
        Trainer(new_model(), nan_loss, sample_batch, make_config(tmp_path)).fit()
    message = str(info.value)
    assert "before its first checkpoint" in message and "resume from that checkpoint" not in message


def test_out_dir_naming_a_file_is_a_config_error(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    for out_dir in (tmp_path / "taken", tmp_path / "taken" / "run"):
        with pytest.raises(ConfigError, match="is a file"):
            Trainer(new_model(), fm_loss, sample_batch, make_config(tmp_path, out_dir=str(out_dir))).fit()
