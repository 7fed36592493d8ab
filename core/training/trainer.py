"""The training engine: :class:`Trainer` and its :class:`TrainerConfig`.

One loop for every flowzoo method. Per update ``s`` (0-based) it sets the learning rate of
:mod:`~flowzoo.core.training.schedule` (linear warm-up, cosine decay), draws a batch, calls
``objective(model, batch) -> (loss, metrics)`` under optional autocast, stops with
:class:`~flowzoo.core.errors.TrainingDivergedError` on a NaN/Inf loss, back-propagates (through a
``GradScaler`` in fp16), clips the gradient norm, steps AdamW and updates the EMA. Around that it
logs (``metrics.csv``, TensorBoard, a tqdm bar), evaluates every ``eval_every`` steps and at the end
(EMA weights), and writes crash-safe checkpoints from which ``resume`` continues the run exactly:
on the CPU an interrupted and resumed run ends with bit-identical weights.

Under ``torchrun`` the Trainer joins the process group itself (Gloo on CPU, NCCL on GPU), wraps the
model in ``DistributedDataParallel`` and shards the data; only rank 0 logs, evaluates and writes.
``batch_size`` is per process.

Precision: ``bf16`` autocasts to bfloat16 (CPU and GPU); ``fp16`` autocasts to float16 with a
``GradScaler`` (loss scaling). Where the device cannot autocast to the requested type the run is
refused before it starts with a ConfigError that suggests ``bf16`` or ``fp32``. Weights, optimiser
state and EMA stay in float32 in every mode.

Optimiser kernel: ``fused`` selects AdamW's fused implementation (one kernel for all parameters).
``auto`` fuses when every trainable parameter is on CUDA and otherwise keeps PyTorch's default (``foreach``
on GPUs, a loop on the CPU); ``true`` fuses on any device with a fused AdamW kernel, the CPU included (same
update, computed in one pass); ``false`` never fuses. A resumed run uses the configured kernel, not the
checkpoint's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from flowzoo.core.errors import ConfigError, DTypeError, ShapeError, TrainingDivergedError, expected
from flowzoo.core.training import distributed as ddp
from flowzoo.core.training.data_stream import SamplerStream, as_batch, derive_seed, make_stream
from flowzoo.core.training.ema import EMA
from flowzoo.core.training.interrupts import SignalGuard, TrainingInterrupted, signal_name
from flowzoo.core.training.randomness import preserved_rng, seed_everything
from flowzoo.core.training.run_logging import RunLogger, logger
from flowzoo.core.training.schedule import WarmupCosineSchedule
from flowzoo.core.training.trainer_config import TrainerConfig
from flowzoo.core.training.trainer_state import TrainerCheckpoints

__all__ = ["Trainer", "TrainResult", "Objective", "Evaluate", "Callback"]

Objective = Callable[[nn.Module, Any], "tuple[torch.Tensor, Mapping[str, float]]"]
Evaluate = Callable[[nn.Module, int, Path], Mapping[str, float]]
Callback = Callable[["Trainer", int, Mapping[str, float]], None]

@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    step: int
    finished: bool
    metrics: dict[str, float]
    eval_metrics: dict[str, float]
    out_dir: Path
    checkpoint: Path | None
    metrics_csv: Path | None
    seconds: float
    resumed_from: Path | None = None


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _float_metrics(metrics: Any, who: str) -> dict[str, float]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise DTypeError(expected(f"{who} to return a dict of floats", type(metrics).__name__,
                                  "return {'name': value, ...}"))
    try:
        return {str(k): float(v.detach().float().mean()) if isinstance(v, torch.Tensor) else float(v)
                for k, v in metrics.items()}
    except (TypeError, ValueError) as error:
        raise DTypeError(expected(f"numeric values in the metrics from {who}", repr(metrics), str(error))) from error


class Trainer:
    """Trains ``model`` on ``objective`` over ``data`` (see the module doc for the loop).

    Args:
        model: the network; moved to the run's device (and wrapped in DDP under ``torchrun``).
        objective: ``objective(model, batch) -> (scalar loss, dict of floats)``.
        data: a callable ``sample_batch(generator) -> batch``, a map-style Dataset (or a tensor of
            samples), or an iterable such as a DataLoader (not exactly resumable); see
            :mod:`~flowzoo.core.training.data_stream`.
        config: the :class:`TrainerConfig` (defaults if None).
        evaluate: ``evaluate(model, step, eval_dir) -> dict of floats``, called on rank 0 with the
            EMA model (or the model without EMA) in eval mode every ``eval_every`` updates and at
            the end; ``eval_dir = out_dir/eval/step_0001000`` exists and may receive PNGs. It runs
            with the global random state saved and restored, so evaluation never changes training.
        run_config: the entrypoint's own config dataclass, saved as ``config.yaml`` with each checkpoint.
        callbacks: ``callback(trainer, step, metrics)`` called on every rank after each update.

    Example:
        >>> import torch, tempfile
        >>> net = torch.nn.Linear(3, 2)
        >>> def objective(model, batch):
        ...     x = batch["x1"]; t = torch.rand(len(x), 1)
        ...     loss = (model(torch.cat([x, t], 1)) - x).pow(2).mean()
        ...     return loss, {}
        >>> cfg = TrainerConfig(steps=5, batch_size=8, out_dir=tempfile.mkdtemp(), progress=False, tensorboard=False)
        >>> result = Trainer(net, objective, lambda g: torch.randn(8, 2, generator=g), cfg).fit()
        >>> result.step, result.checkpoint.name
        (5, 'step_0000005')
    """

    def __init__(self, model: nn.Module, objective: Objective, data: Any, config: TrainerConfig | None = None,
                 evaluate: Evaluate | None = None, *, run_config: Any = None,
                 callbacks: Sequence[Callback] = ()) -> None:
        if not isinstance(model, nn.Module):
            raise DTypeError(expected("model as a torch.nn.Module", type(model).__name__, "pass the network"))
        if not callable(objective):
            raise DTypeError(expected("objective as a callable loss(model, batch)", type(objective).__name__,
                                      "pass e.g. FlowMatchingLoss()"))
        if evaluate is not None and not callable(evaluate):
            raise DTypeError(expected("evaluate as a callable evaluate(model, step, eval_dir) or None",
                                      type(evaluate).__name__, "pass a function"))
        config = TrainerConfig() if config is None else config
        if not isinstance(config, TrainerConfig):
            raise ConfigError(expected("config as a TrainerConfig", type(config).__name__,
                                       "build it with TrainerConfig(...) or parse_config"))
        if run_config is not None and not isinstance(run_config, Mapping) and not (
                dataclasses.is_dataclass(run_config) and not isinstance(run_config, type)):
            raise ConfigError(expected("run_config as a dataclass instance (or a dict)", type(run_config).__name__,
                                       "pass the entrypoint's parsed config"))
        self.model, self.objective, self.data, self.config = model, objective, data, config
        self.evaluate, self.run_config, self.callbacks = evaluate, run_config, list(callbacks)
        self.out_dir = Path(config.out_dir)
        self.step = 0
        self.last_metrics: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self._started = False

    # ------------------------------------------------------------------------------------- setup
    def _resolve_device(self) -> torch.device:
        wanted = self.config.device
        if wanted == "cuda" and not torch.cuda.is_available():
            raise ConfigError(expected("a CUDA device for device=cuda", "none available", "use --trainer.device cpu"))
        if wanted == "cpu" or (wanted == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        return torch.device("cuda", ddp.local_rank() if ddp.launched_with_torchrun() else torch.cuda.current_device())

    def _check_precision(self) -> None:
        precision, kind = self.config.precision, self.device.type
        if precision == "fp32":
            return
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        try:
            if kind == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
                raise RuntimeError("this GPU has no bfloat16 support")
            with torch.autocast(kind, dtype=dtype):
                torch.ones(2, 2, device=self.device) @ torch.ones(2, 2, device=self.device)
            if precision == "fp16":
                torch.amp.GradScaler(kind)
        except RuntimeError as error:
            alternative = "bf16 or fp32" if precision == "fp16" else "fp32 (or fp16 on a GPU)"
            raise ConfigError(expected(f"a {kind} device that can autocast to {precision}", str(error),
                                       f"use --trainer.precision {alternative}")) from error

    def _build_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(expected("a model with trainable parameters", "none", "check requires_grad"))
        decay = [p for p in params if p.ndim >= 2]
        rest = [p for p in params if p.ndim < 2]
        groups = [{"params": g, "weight_decay": wd} for g, wd in
                  ((decay, self.config.weight_decay), (rest, 0.0)) if g]
        wanted = self.config.fused
        self.fused = bool(all(p.is_cuda for p in params) if wanted == "auto" else wanted)
        try:
            return torch.optim.AdamW(groups, lr=self.config.lr, betas=self.config.betas,
                                     **({"fused": True} if self.fused else {}))
        except RuntimeError as error:  # a device or dtype without a fused kernel
            raise ConfigError(expected("parameters that AdamW's fused kernel supports for trainer.fused true",
                                       " ".join(str(error).split()), "use --trainer.fused auto (or false)")) from error

    def _restore_optimizer_kernel(self) -> None:
        # A checkpoint's param groups carry the kernel choice of the run that wrote them; keep this run's.
        for group in self.optimizer.param_groups:
            group["fused"] = True if self.fused else None
            if self.fused:
                group["foreach"] = None

    def _check_out_dir(self) -> None:
        # Before anything is written: a file in the way would surface as a raw FileExistsError much later.
        for path in (self.out_dir, *self.out_dir.parents):
            if path.exists():
                if not path.is_dir():
                    raise ConfigError(expected("trainer.out_dir to be a folder (or a path that can become one)",
                                               f"{self.out_dir}, where {path} is a file",
                                               "choose another --trainer.out_dir"))
                return

    def _setup(self) -> None:
        cfg = self.config
        self._check_out_dir()
        self.device = self._resolve_device()
        self._owns_group = ddp.init_distributed(device=self.device)
        self.rank, self.world_size = ddp.rank(), ddp.world_size()
        self.is_main = self.rank == 0
        self._check_precision()
        seed_everything(cfg.seed if self.rank == 0 else derive_seed(cfg.seed, self.rank))
        self.model.to(self.device).train()
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 and self.is_main else None
        self.optimizer = self._build_optimizer()
        self.schedule = WarmupCosineSchedule(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.stream = make_stream(self.data, batch_size=cfg.batch_size, seed=cfg.seed, rank=self.rank,
                                  world_size=self.world_size, num_workers=cfg.num_workers)
        self.checkpoints = TrainerCheckpoints(self)
        self.resumed_from = self.checkpoints.resume()
        self._restore_optimizer_kernel()
        self.train_model: nn.Module = self.model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=cfg.ddp_find_unused_parameters)
        self.logger = RunLogger(self.out_dir, enabled=self.is_main, tensorboard=cfg.tensorboard,
                                resume_step=self.step)
        self.checkpoints.write_run_config()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    @property
    def tensorboard_writer(self) -> Any:
        """The run's TensorBoard ``SummaryWriter`` (rank 0, ``tensorboard`` on and installed, during
        :meth:`fit`), else None; an ``evaluate`` function may add images to it."""
        board = getattr(getattr(self, "logger", None), "tensorboard", None)
        return None if board is None else board.writer

    def say(self, message: str, *, always: bool = False) -> None:
        """Tell the user something on rank 0 (through the progress bar if shown; ``always``: even without it)."""
        if self.is_main:
            logger.info(message)
            if self.config.progress or always:
                tqdm.write(message, file=sys.stderr)

    # ------------------------------------------------------------------------------------- steps
    def _diverged(self, what: str, value: float) -> TrainingDivergedError:
        good = self.checkpoints.last
        fix = "Lower lr, clip gradients (grad_clip) or use precision fp32"
        if good:
            fix = f"the run stopped; the last good checkpoint is {good}. {fix}, then resume from that checkpoint"
        else:
            fix = f"the run stopped before its first checkpoint. {fix}, then start the run again"
        error = TrainingDivergedError(expected(f"a finite {what}", f"{value} at step {self.step + 1}", fix))
        error.step, error.checkpoint = self.step + 1, good
        return error

    def train_step(self) -> dict[str, float]:
        """One update; returns the step's metrics (loss, the objective's metrics, lr, grad_norm)."""
        lr = self.schedule.apply(self.optimizer, self.step)
        batch = _to_device(as_batch(self.stream.next()), self.device)
        with self._autocast():
            out = self.objective(self.train_model, batch)
        loss, metrics = (out if isinstance(out, (tuple, list)) and len(out) == 2 else (out, {}))
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ShapeError(expected("the objective to return (scalar loss tensor, metrics)",
                                      f"{type(loss).__name__} {tuple(getattr(loss, 'shape', ()))}",
                                      "return (loss.mean(), {...})"))
        metrics = _float_metrics(metrics, "the objective")
        loss_value = float(ddp.all_reduce_mean(loss.detach().float().reshape(())))
        if not math.isfinite(loss_value):
            raise self._diverged("loss", loss_value)
        self.scaler.scale(loss.reshape(())).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.config.grad_clip > 0:
            grad_norm = nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        else:
            grad_norm = nn.utils.get_total_norm([p.grad for p in params])
        grad_norm_value = float(grad_norm)
        if not math.isfinite(grad_norm_value) and not self.scaler.is_enabled():
            raise self._diverged("gradient norm", grad_norm_value)  # fp16 skips such steps by design
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        metrics = {k: v for k, v in metrics.items() if k not in ("loss", "lr", "grad_norm")}
        return {"loss": loss_value, **metrics, "lr": lr, "grad_norm": grad_norm_value}

    def run_evaluation(self) -> dict[str, float]:
        """Evaluate the EMA (or plain) model now on rank 0; logs and returns the metrics."""
        if self.evaluate is None or not self.is_main:
            return {}
        eval_dir = self.out_dir / "eval" / f"step_{self.step:07d}"
        eval_dir.mkdir(parents=True, exist_ok=True)
        model = self.ema.module if self.ema is not None else self.model
        was_training = model.training
        model.eval()
        try:
            with preserved_rng(self.device):
                metrics = _float_metrics(self.evaluate(model, self.step, eval_dir), "evaluate")
        finally:
            model.train(was_training)
        self.logger.log_eval(self.step, metrics)
        self.last_eval = metrics
        return metrics

    # ------------------------------------------------------------------------------------- loop
    def fit(self) -> TrainResult:
        """Train to ``config.steps`` (or stop at ``max_steps``), evaluating and checkpointing on the way.

        Every global random stream (torch, NumPy, Python) is seeded from ``config.seed`` first
        (from ``(seed, rank)`` on ranks other than 0), then restored from the checkpoint when resuming.
        The loss reported is the mean over ranks (and over the updates since the last log).
        """
        if self._started:
            raise ConfigError(expected("fit() called once per Trainer", "a second call",
                                       "build a new Trainer with resume=true to continue"))
        self._started = True
        started = time.perf_counter()
        bar = None
        try:
            self._setup()
            cfg = self.config
            end = cfg.steps if cfg.max_steps is None else min(cfg.steps, cfg.max_steps)
            bar = tqdm(total=cfg.steps, initial=self.step, disable=not (cfg.progress and self.is_main),
                       desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)
            # SIGINT/SIGTERM finish the current update, then save below; a second one stops at once.
            with SignalGuard(on_second=self._stop_now) as guard:
                evaluated_at, saved_at, stopped_by = self._loop(end, bar, guard)
                finished = self.step >= cfg.steps and stopped_by is None
                if finished and evaluated_at != self.step:
                    self.run_evaluation()
                if saved_at != self.step:
                    self.checkpoints.save()
            if stopped_by is not None:
                raise self._interrupted(stopped_by)
        finally:
            if bar is not None:
                bar.close()
            if hasattr(self, "logger"):
                self.logger.close()
            if getattr(self, "_owns_group", False):
                ddp.cleanup()
        return TrainResult(step=self.step, finished=finished, metrics=dict(self.last_metrics),
                           eval_metrics=dict(self.last_eval), out_dir=self.out_dir, checkpoint=self.checkpoints.last,
                           metrics_csv=self.logger.csv_path, seconds=time.perf_counter() - started,
                           resumed_from=self.resumed_from)

    def _loop(self, end: int, bar: Any, guard: SignalGuard) -> tuple[int, int, int | None]:
        """Update until ``end`` or a stop signal; returns (step last evaluated, step last saved, signal or None)."""
        cfg = self.config
        sums: dict[str, float] = {}
        count, busy = 0, 0.0
        evaluated_at = -1
        saved_at = self.step if self.resumed_from is not None else -1
        while self.step < end:
            tic = time.perf_counter()
            step_metrics = self.train_step()
            busy += time.perf_counter() - tic
            self.step += 1
            count += 1
            for key, value in step_metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update(1)
            if self.step % min(cfg.log_every, 10) == 0:
                bar.set_postfix(loss=f"{step_metrics['loss']:.4g}", refresh=False)
            if self.step % cfg.log_every == 0 or self.step == end:
                self._log(sums, count, busy, step_metrics)
                sums, count, busy = {}, 0, 0.0
            for callback in self.callbacks:
                callback(self, self.step, step_metrics)
            stop = self._stop_signal(guard)
            if cfg.eval_every and self.step % cfg.eval_every == 0 and stop is None:
                self.run_evaluation()
                evaluated_at = self.step
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.checkpoints.save()
                saved_at = self.step
            if stop is not None:
                return evaluated_at, saved_at, stop
        return evaluated_at, saved_at, None

    def _stop_signal(self, guard: SignalGuard) -> int | None:
        """The signal that asks this run to stop (under DDP: any rank's, so that all ranks save together)."""
        signum = guard.received or 0
        if self.world_size > 1:
            signum = ddp.all_reduce_max(signum)
        return signum or None

    def _interrupted(self, signum: int) -> TrainingInterrupted:
        where = self.checkpoints.last
        return TrainingInterrupted(
            f"interrupted by {signal_name(signum)} at step {self.step}/{self.config.steps}: checkpoint saved in {where}",
            signum=signum, step=self.step, checkpoint=where)

    def _stop_now(self, signum: int) -> None:
        where = self.checkpoints.last
        saved = f"the last checkpoint is {where}" if where else "no checkpoint was written"
        raise TrainingInterrupted(f"stopped at once by a second {signal_name(signum)} at step {self.step}; {saved}",
                                  signum=signum, step=self.step, checkpoint=where)

    def _log(self, sums: Mapping[str, float], count: int, busy: float, last: Mapping[str, float]) -> None:
        row = {k: v / count for k, v in sums.items() if k not in ("lr",)}
        row["lr"] = last["lr"]
        row["steps_per_sec"] = count / busy if busy > 0 else float("nan")
        if not isinstance(self.stream, SamplerStream):
            row["epoch"] = float(self.stream.epoch)
        if self.scaler.is_enabled():
            row["loss_scale"] = float(self.scaler.get_scale())
        self.last_metrics = row
        self.logger.log_train(self.step, row)
        if self.is_main:
            logger.debug("step %d: %s", self.step, row)
