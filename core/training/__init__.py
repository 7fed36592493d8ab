"""The flowzoo training engine.

:class:`Trainer` runs any ``objective(model, batch) -> (loss, metrics)`` with AdamW, a warm-up +
cosine learning-rate schedule, gradient clipping, EMA, optional autocast (bf16 / fp16), logging
(``metrics.csv``, TensorBoard, tqdm), periodic evaluation, crash-safe checkpoints with exact resume,
and DDP under ``torchrun`` with no change to the entrypoint. Configure it with :class:`TrainerConfig`
(usually nested in an entrypoint's config and parsed by :func:`flowzoo.core.config.parse_config`).
"""

from flowzoo.core.training.checkpoint import (
    Checkpoint,
    atomic_write_bytes,
    atomic_write_with,
    fsync_directory,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    read_checkpoint_record,
    resolve_checkpoint,
    verify_checkpoint,
    write_checkpoint,
)
from flowzoo.core.training.data_stream import DatasetStream, IterableStream, SamplerStream, derive_seed
from flowzoo.core.training.distributed import (
    cleanup,
    init_distributed,
    is_distributed,
    is_main_process,
    rank,
    world_size,
)
from flowzoo.core.training.ema import EMA, unwrap_model
from flowzoo.core.training.interrupts import TrainingInterrupted
from flowzoo.core.training.run_logging import RunLogger
from flowzoo.core.training.schedule import WarmupCosineSchedule, warmup_cosine_factor
from flowzoo.core.training.randomness import preserved_rng, seed_everything
from flowzoo.core.training.trainer import Trainer, TrainResult
from flowzoo.core.training.trainer_config import TrainerConfig, refuse_fresh_run_over_checkpoints

__all__ = [
    "Trainer",
    "TrainerConfig",
    "refuse_fresh_run_over_checkpoints",
    "TrainResult",
    "TrainingInterrupted",
    "seed_everything",
    "preserved_rng",
    "EMA",
    "unwrap_model",
    "WarmupCosineSchedule",
    "warmup_cosine_factor",
    "RunLogger",
    "Checkpoint",
    "atomic_write_bytes",
    "atomic_write_with",
    "fsync_directory",
    "write_checkpoint",
    "read_checkpoint",
    "read_checkpoint_record",
    "verify_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "resolve_checkpoint",
    "SamplerStream",
    "DatasetStream",
    "IterableStream",
    "derive_seed",
    "is_distributed",
    "rank",
    "world_size",
    "is_main_process",
    "init_distributed",
    "cleanup",
]
