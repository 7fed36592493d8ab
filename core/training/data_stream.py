"""Batch streams: the three kinds of training data the Trainer accepts, with resumable state.

* a **sampler** — a callable ``sample_batch(generator) -> batch``. The stream owns a
  ``torch.Generator`` seeded from ``(seed, rank)``; its state is checkpointed, so resuming continues
  the same sequence of batches exactly.
* a **map-style dataset** — anything with ``__len__`` and ``__getitem__`` (a ``torch.utils.data.Dataset``,
  or a tensor whose rows are samples). Every epoch draws a permutation from ``(seed, epoch)`` (the
  same on every rank), pads it to a multiple of the world size, gives rank ``r`` the entries
  ``r, r + W, ...`` and cuts that shard into batches of ``batch_size`` (the last incomplete batch is
  dropped, so every batch has the same size). The state is ``(epoch, batch index)``: resuming jumps
  to the exact position. Items are collated with ``torch.utils.data.default_collate``.
* an **iterable** (e.g. a ``DataLoader``) — iterated again when exhausted. Its position cannot be
  restored exactly: a resumed run starts a fresh pass (a warning says so); under DDP it must shard
  itself (e.g. with a ``DistributedSampler``).

A batch that is a bare tensor (or a 1-tuple holding one) is passed on as ``{"x1": tensor}``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, default_collate

from flowzoo.core.errors import ConfigError, EmptyInputError, expected

__all__ = ["BatchStream", "SamplerStream", "DatasetStream", "IterableStream", "make_stream", "derive_seed",
           "as_batch"]


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (so that streams seeded from one ``seed`` are unrelated)."""
    state = np.random.SeedSequence([int(p) % 2**64 for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31 ^ int(state[1])) % 2**63


def as_batch(batch: Any) -> Any:
    """A bare tensor (or a 1-tuple of one) becomes ``{"x1": tensor}``; anything else is returned as is."""
    if isinstance(batch, torch.Tensor):
        return {"x1": batch}
    if isinstance(batch, (tuple, list)) and len(batch) == 1 and isinstance(batch[0], torch.Tensor):
        return {"x1": batch[0]}
    return batch


class BatchStream:
    """An endless source of batches whose position can be saved and restored."""

    exact_resume = True
    epoch = 0

    def next(self) -> Any:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError


class SamplerStream(BatchStream):
    """Batches from ``sample_batch(generator)`` with a generator seeded from ``(seed, rank)``."""

    _TAG = 0x5A3

    def __init__(self, sample_batch: Callable[[torch.Generator], Any], seed: int, rank: int = 0) -> None:
        self.sample_batch = sample_batch
        self.generator = torch.Generator().manual_seed(derive_seed(seed, rank, self._TAG))

    def next(self) -> Any:
        return self.sample_batch(self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "sampler", "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class DatasetStream(BatchStream):
    """Shuffled, sharded, fixed-size batches from a map-style dataset (see the module doc)."""

    _TAG = 0xDA7A

    def __init__(self, dataset: Any, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, collate_fn: Callable[[list], Any] | None = None) -> None:
        self.dataset = dataset
        self.size = len(dataset)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.num_workers = num_workers
        self.collate_fn = collate_fn or default_collate
        self.per_rank = -(-self.size // world_size)
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise ConfigError(expected(f"at least batch_size x world_size = {batch_size * world_size} samples",
                                       f"a dataset of {self.size}", "lower batch_size or add data"))
        self.epoch, self.position = 0, 0
        self._order: list[list[int]] | None = None
        self._loader: Iterator[Any] | None = None

    def _epoch_batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self._TAG))
        order = torch.randperm(self.size, generator=generator)
        padded = self.per_rank * self.world_size
        if padded > self.size:  # wrap around, as DistributedSampler does, so that every rank gets as many
            order = torch.cat([order, order[: padded - self.size]])
        shard = order[self.rank::self.world_size].tolist()
        b = self.batch_size
        return [shard[i * b:(i + 1) * b] for i in range(self.batches_per_epoch)]

    def _fetch(self, indices: list[int]) -> Any:
        if isinstance(self.dataset, torch.Tensor):
            return self.dataset[torch.tensor(indices)]
        return self.collate_fn([self.dataset[i] for i in indices])

    def next(self) -> Any:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._order, self._loader = self.epoch + 1, 0, None, None
        if self._order is None:
            self._order = self._epoch_batches()
        if self.num_workers > 0:
            if self._loader is None:
                # Its own generator: the workers' base seed must not be drawn from the global stream,
                # which the objective uses (and which a resumed run restores at another moment).
                workers_seed = derive_seed(self.seed, self.rank, self.epoch, self.position, self._TAG)
                self._loader = iter(DataLoader(self.dataset, batch_sampler=self._order[self.position:],
                                               num_workers=self.num_workers, collate_fn=self.collate_fn,
                                               generator=torch.Generator().manual_seed(workers_seed)))
            batch = next(self._loader)
        else:
            batch = self._fetch(self._order[self.position])
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "dataset", "epoch": self.epoch, "position": self.position, "size": self.size}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state.get("size", self.size)) != self.size:
            warnings.warn(f"the dataset had {state['size']} samples when the checkpoint was written and has "
                          f"{self.size} now; the resumed run will not repeat the original order", RuntimeWarning)
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order, self._loader = None, None


class IterableStream(BatchStream):
    """Batches from an iterable, restarted when exhausted; not exactly resumable."""

    exact_resume = False

    def __init__(self, iterable: Iterable[Any]) -> None:
        self.iterable = iterable
        self._iterator: Iterator[Any] | None = None
        self.batches = 0

    def next(self) -> Any:
        if self._iterator is None:
            self._iterator = iter(self.iterable)
        try:
            batch = next(self._iterator)
        except StopIteration:
            self.epoch += 1
            self._iterator = iter(self.iterable)
            try:
                batch = next(self._iterator)
            except StopIteration:
                raise EmptyInputError(expected(
                    "an iterable that can be iterated again (e.g. a DataLoader)",
                    f"one that ran out after {self.batches} batches",
                    "pass a DataLoader, a Dataset or a callable sample_batch(generator)")) from None
        self.batches += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "iterable", "batches": self.batches, "epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        warnings.warn("the training data is an iterable (e.g. a DataLoader), whose position cannot be restored: "
                      "the resumed run starts a fresh pass over it. Pass a Dataset or a callable "
                      "sample_batch(generator) for an exact resume", RuntimeWarning)
        self.batches, self.epoch = int(state.get("batches", 0)), int(state.get("epoch", 0))


def make_stream(data: Any, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                num_workers: int = 0) -> BatchStream:
    """Wrap the Trainer's ``data`` argument in the matching :class:`BatchStream`."""
    if isinstance(data, BatchStream):
        return data
    if isinstance(data, (DataLoader, IterableDataset)):
        stream: BatchStream = IterableStream(data)
    elif callable(data):
        stream = SamplerStream(data, seed, rank)
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        if len(data) == 0:
            raise EmptyInputError(expected("a non-empty dataset", "0 samples", "check the data path"))
        stream = DatasetStream(data, batch_size, seed, rank, world_size, num_workers)
    elif isinstance(data, Iterable):
        stream = IterableStream(data)
    else:
        raise ConfigError(expected("training data as a callable sample_batch(generator), a Dataset or an iterable",
                                   type(data).__name__, "wrap the data in one of these"))
    if isinstance(stream, IterableStream) and world_size > 1:
        warnings.warn("the training data is an iterable: under DDP it must shard itself across ranks "
                      "(e.g. a DataLoader with a DistributedSampler)", RuntimeWarning)
    return stream
