"""Saving and restoring a :class:`~flowzoo.core.training.Trainer`'s complete state (internal).

The files and their crash-safe writing are :mod:`flowzoo.core.training.checkpoint`'s business; this
module decides what goes in them: the weights, the EMA weights, the resolved config, and in
``state.pt`` the optimiser, the loss scaler, the step and, for every rank, the RNG states (torch
CPU and CUDA, NumPy, Python) and the data position, so that resuming continues the run exactly.
"""

from __future__ import annotations

import io
import random
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from flowzoo.core.config import config_to_dict
from flowzoo.core.errors import CheckpointError, ConfigError, expected
from flowzoo.core.training import distributed as ddp
from flowzoo.core.training.checkpoint import (
    LATEST,
    MANIFEST,
    Checkpoint,
    atomic_write_bytes,
    checkpoint_candidates,
    checkpoint_name,
    list_checkpoints,
    read_checkpoint,
    resolve_checkpoint,
    weights_to_bytes,
    write_checkpoint,
)

__all__ = ["TrainerCheckpoints"]


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # Stored as a tensor and plain numbers so that state.pt loads with weights_only=True.
    return {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(state: Mapping[str, Any]) -> None:
    np.random.set_state((state["name"], state["keys"].numpy().astype(np.uint32), state["pos"],
                         state["has_gauss"], state["cached_gaussian"]))


class TrainerCheckpoints:
    """Saves and restores a :class:`~flowzoo.core.training.Trainer`'s complete state.

    ``state.pt`` holds the optimiser, the loss scaler, the step and, for every rank, the RNG states
    (torch CPU, CUDA, NumPy, Python) and the data position, gathered to rank 0 so that a DDP run
    also resumes exactly (with the same world size).
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.root = Path(trainer.out_dir) / "checkpoints"
        self.last: Path | None = None

    def _config_files(self) -> dict[str, bytes]:
        t = self.trainer
        trainer_yaml = yaml.safe_dump(config_to_dict(t.config), sort_keys=False).encode("utf-8")
        if t.run_config is None:
            return {"config.yaml": trainer_yaml, "trainer.yaml": trainer_yaml}
        run = t.run_config if isinstance(t.run_config, Mapping) else config_to_dict(t.run_config)
        return {"config.yaml": yaml.safe_dump(dict(run), sort_keys=False).encode("utf-8"),
                "trainer.yaml": trainer_yaml}

    def write_run_config(self) -> None:
        """Write the resolved config next to the checkpoints (``out_dir/config.yaml``), on rank 0."""
        if self.trainer.is_main:
            for name, data in self._config_files().items():
                atomic_write_bytes(Path(self.trainer.out_dir) / name, data)

    def _rank_state(self) -> dict[str, Any]:
        t = self.trainer
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(t.device) if t.device.type == "cuda" else None,
                "numpy": _numpy_state(), "python": random.getstate(), "data": t.stream.state_dict()}

    def save(self) -> Path:
        """Checkpoint the current step (collective under DDP: every rank must call it)."""
        t = self.trainer
        ranks = ddp.all_gather_object(self._rank_state())
        if t.is_main:
            state = {"format_version": 1, "step": t.step, "world_size": t.world_size,
                     "optimizer": t.optimizer.state_dict(), "scaler": t.scaler.state_dict(), "ranks": ranks}
            files = {"model.safetensors": weights_to_bytes(t.model.state_dict()), "state.pt": _torch_bytes(state)}
            if t.ema is not None:
                files["ema.safetensors"] = weights_to_bytes(t.ema.state_dict())
            files.update(self._config_files())
            write_checkpoint(self.root, t.step, files, keep=t.config.keep_checkpoints)
        ddp.barrier()
        self.last = self.root / checkpoint_name(t.step)
        return self.last

    def _candidates(self) -> list[Path]:
        """The checkpoints ``config.resume`` selects, in the order to try them (empty: a fresh run)."""
        t, resume = self.trainer, self.trainer.config.resume
        if resume is False:
            if list_checkpoints(self.root) or (self.root / LATEST).exists():
                if not t.config.overwrite:
                    raise ConfigError(expected(
                        "an out_dir without checkpoints for a fresh run (resume=false)", f"checkpoints in {self.root}",
                        "pass --trainer.resume true to continue that run, --trainer.overwrite true to delete it "
                        "and start over, or choose another --trainer.out_dir"))
                if t.is_main:
                    out = Path(t.out_dir)
                    for path in (self.root, out / "eval", out / "tensorboard"):
                        shutil.rmtree(path, ignore_errors=True)
                    for path in (out / "metrics.csv", out / "eval.jsonl"):
                        path.unlink(missing_ok=True)
                ddp.barrier()
            return []
        if resume is True:
            found = checkpoint_candidates(self.root)
            if not found:
                t.say(f"no checkpoint in {self.root}: starting a fresh run")
            return found
        path = Path(resume)
        if path.is_dir() and not ((path / MANIFEST).exists() or (path / "state.pt").exists()):
            for root in (path, path / "checkpoints"):  # a run or checkpoints folder: fall back within it
                found = checkpoint_candidates(root)
                if found:
                    return found
        return [resolve_checkpoint(path)]  # the one checkpoint the user named: no fallback

    def _first_verified(self, candidates: list[Path]) -> Checkpoint:
        """Read the first checkpoint that verifies, saying which ones were skipped and why.

        Raises the newest one's CheckpointError when none verifies.
        """
        t = self.trainer
        root = candidates[0].parent
        pointer = root / LATEST
        if pointer.is_file():
            named = pointer.read_text(encoding="utf-8").strip()
            if not (root / named).is_dir():
                t.say(f"{pointer} names {named!r}, which does not exist: trying the newest checkpoints",
                      always=True)
        errors: list[CheckpointError] = []
        for path in candidates:
            try:
                checkpoint = read_checkpoint(path)
            except CheckpointError as error:
                errors.append(error)
                if len(candidates) > 1:
                    t.say(f"skipped checkpoint {path}: {error}", always=True)
                continue
            if errors:
                t.say(f"resuming from {path}, the newest checkpoint that verifies", always=True)
            return checkpoint
        raise errors[0]

    def resume(self) -> Path | None:
        """Restore the checkpoint that ``config.resume`` selects; returns its path (None: fresh run).

        With ``resume=true`` (or a run folder) a checkpoint that does not verify is skipped, with a message,
        for the next newest. Reads only; raises CheckpointError (missing, none verifies, incompatible)
        before changing anything.
        """
        t = self.trainer
        candidates = self._candidates()
        if not candidates:
            return None
        checkpoint = self._first_verified(candidates)
        try:
            t.model.load_state_dict(checkpoint.model)
            if t.ema is not None:
                t.ema.load_state_dict(checkpoint.ema if checkpoint.ema is not None else t.model.state_dict())
            t.optimizer.load_state_dict(checkpoint.state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(expected(f"weights and optimiser state in {checkpoint.path} that fit the model",
                                           str(error).splitlines()[0],
                                           "resume with the model config the run was started with")) from error
        for group in t.optimizer.param_groups:  # the config may change these on resume
            group["initial_lr"], group["betas"] = t.config.lr, tuple(t.config.betas)
        if t.scaler.is_enabled() and checkpoint.state.get("scaler"):
            t.scaler.load_state_dict(checkpoint.state["scaler"])
        ranks = checkpoint.state["ranks"]
        if len(ranks) == t.world_size:
            mine = ranks[t.rank]
            torch.set_rng_state(mine["torch"])
            if mine["cuda"] is not None and t.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"], t.device)
            _set_numpy_state(mine["numpy"])
            random.setstate(mine["python"])
            t.stream.load_state_dict(mine["data"])
        else:
            warnings.warn(f"the checkpoint was written by {len(ranks)} processes and this run has {t.world_size}: "
                          "training continues, but not with the exact random streams of the original run",
                          RuntimeWarning)
            if ranks[0]["data"].get("kind") == "dataset":
                t.stream.load_state_dict(ranks[0]["data"])
        t.step = checkpoint.step
        self.last = checkpoint.path
        t.say(f"resumed from {checkpoint.path} at step {checkpoint.step}")
        return checkpoint.path
