"""Demonstrations on disk, their normaliser, and the (observation history, action chunk) windows policies train on.

**On-disk format** (one directory; DP3's replay-buffer layout flattened into NumPy):

``data.npz`` (uncompressed, ``allow_pickle=False``) holds per-step arrays of T steps, all episodes concatenated:

* one array per observation key of the :class:`~flowzoo.robotics.envs.EnvSpec`: ``state`` (T, 39), or
  ``point_cloud`` (T, N, 3) and ``agent_pos`` (T, P); float32;
* ``action`` (T, A) float32, in environment units;
* ``episode_ends`` (E,) int64: cumulative end indices (exclusive), as DP3's ``meta/episode_ends``; episode e
  covers steps ``episode_ends[e-1] .. episode_ends[e] - 1`` (with ``episode_ends[-1] = 0``);
* optional ``reward`` (T,) and ``success`` (T,) float32.

``meta.json`` holds ``format`` ("flowzoo-demos"), ``format_version``, ``flowzoo_version``, ``spec``
(EnvSpec.to_dict()), ``normalizer`` (``Normalizer.to_dict()``), ``num_episodes``, ``num_steps``,
``episode_success`` (one bool per episode), ``collection`` (the settings that produced the data), the array
names/shapes/dtypes and ``data_sha256`` (checksum of data.npz, so a truncated or swapped file is refused).

Saving writes both files into a hidden staging directory beside the target (temporary file, fsync) and then
renames it into place, so a crash or an error leaves the previous dataset as it was. Loading validates
everything above and raises an error saying what is wrong.

**Windows** (:class:`WindowDataset`, LeRobot-like): the sample at step i of an episode holds the observations of
steps i-n_obs_steps+1 .. i (steps before the episode start repeat its first frame) and the actions of steps
i .. i+horizon-1 (steps past the episode end repeat its last action). Windows never mix two episodes.

The normaliser (:class:`~flowzoo.robotics.normalizer.Normalizer`, :data:`NORMALIZED_KEYS`) lives in
:mod:`flowzoo.robotics.normalizer` and is re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from flowzoo.core.errors import (CheckpointError, ConfigError, EmptyInputError, NonFiniteError, ShapeError,
                                 expected)
from flowzoo.core.validation import check_positive_int
from flowzoo.core.training import atomic_write_bytes, fsync_directory
from flowzoo.robotics.normalizer import Normalizer
from flowzoo.robotics.spec import EnvSpec

__all__ = ["DemoFileError", "DemoDataset", "WindowDataset", "check_output_path", "FORMAT_VERSION"]

FORMAT_NAME = "flowzoo-demos"
FORMAT_VERSION = 1
_PER_STEP_OPTIONAL = ("reward", "success")
# meta.json fields that describe the file itself (rewritten by every save); the others are the dataset's info.
_WRITTEN_BY_SAVE = frozenset({"format", "format_version", "flowzoo_version", "spec", "normalizer", "arrays",
                              "data_sha256", "num_episodes", "num_steps"})


class DemoFileError(CheckpointError):
    """A demonstration directory is missing, truncated or corrupted."""


def _flowzoo_version() -> str:
    try:
        return metadata.version("flowzoo")
    except metadata.PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------------------------ dataset
class DemoDataset:
    """Episodes of (observation, action) steps with their EnvSpec, normaliser and collection metadata.

    Args:
        arrays: per-step arrays (observation keys of ``spec``, ``action``, optional ``reward``/``success``),
            all episodes concatenated.
        episode_ends: (E,) cumulative end indices.
        spec: the environment the data came from.
        normalizer: statistics; fitted on ``arrays`` when None.
        info: JSON-able metadata (e.g. ``{"collection": {...}, "episode_success": [...]}``).

    Raises:
        ShapeError, NonFiniteError, EmptyInputError: the arrays do not fit the spec, hold NaN/Inf, or are empty.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], episode_ends: Sequence[int] | np.ndarray, spec: EnvSpec,
                 normalizer: Normalizer | None = None, info: Mapping[str, Any] | None = None) -> None:
        if not isinstance(spec, EnvSpec):
            raise ConfigError(expected("spec as an EnvSpec", type(spec).__name__,
                                       "pass env_spec(env) or EnvSpec.from_dict(...)"))
        self.spec = spec
        self.arrays = {key: np.asarray(value) for key, value in arrays.items()}
        self.episode_ends = np.asarray(episode_ends)
        self._validate()
        self.normalizer = normalizer if normalizer is not None else Normalizer.fit(self.arrays)
        self.info = dict(info or {})

    @classmethod
    def from_episodes(cls, episodes: Sequence[Mapping[str, np.ndarray]], spec: EnvSpec,
                      info: Mapping[str, Any] | None = None) -> "DemoDataset":
        """Concatenate a list of episode dicts (each key -> (T_e, ...)) into one dataset."""
        if len(episodes) == 0:
            raise EmptyInputError(expected("at least one episode", "0 episodes", "collect demonstrations first"))
        keys = set(episodes[0])
        for number, episode in enumerate(episodes):
            if set(episode) != keys:
                raise ShapeError(expected(f"every episode with keys {sorted(keys)}",
                                          f"episode {number} with {sorted(episode)}",
                                          "give every episode the same keys"))
        lengths = [len(np.asarray(episode["action"])) for episode in episodes]
        arrays = {key: np.concatenate([np.asarray(episode[key]) for episode in episodes]) for key in keys}
        return cls(arrays, np.cumsum(lengths, dtype=np.int64), spec, info=info)

    def _validate(self) -> None:
        ends = self.episode_ends
        if ends.ndim != 1 or ends.size == 0:
            raise EmptyInputError(expected("episode_ends of shape (E,) with E >= 1", tuple(ends.shape),
                                           "a dataset needs at least one episode"))
        if not np.issubdtype(ends.dtype, np.integer):
            raise ShapeError(expected("integer episode_ends", str(ends.dtype), "store end indices as int64"))
        self.episode_ends = ends.astype(np.int64)
        starts = np.concatenate([[0], self.episode_ends[:-1]])
        if np.any(self.episode_ends - starts <= 0):
            empty = int(np.argmax(self.episode_ends - starts <= 0))
            length = int(self.episode_ends[empty] - starts[empty])
            raise EmptyInputError(expected("strictly increasing episode_ends (no empty episode)",
                                           f"episode {empty} with {length} steps", "drop empty episodes"))
        required = ["action", *self.spec.obs_shapes]
        missing = [key for key in required if key not in self.arrays]
        if missing:
            raise ShapeError(expected(f"arrays {required}", f"no {missing} (have {sorted(self.arrays)})",
                                      "collect the data with the obs mode of the spec"))
        steps = int(self.episode_ends[-1])
        shapes = {"action": (self.spec.action_dim,), **{k: tuple(v) for k, v in self.spec.obs_shapes.items()}}
        for key, array in self.arrays.items():
            want = (steps, *shapes[key]) if key in shapes else (steps, *array.shape[1:])
            if tuple(array.shape) != want:
                raise ShapeError(expected(f"{key!r} of shape {want} (episode_ends says {steps} steps)",
                                          tuple(array.shape), "check that every array has one row per step"))
            if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
                raise ShapeError(expected(f"numeric {key!r}", str(array.dtype), "store numbers"))
            if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                bad = int(np.argmax(~np.isfinite(array.reshape(steps, -1)).all(axis=1)))
                episode = int(np.searchsorted(self.episode_ends, bad, side="right"))
                raise NonFiniteError(expected(f"finite {key!r} values", f"NaN/Inf at step {bad} (episode {episode})",
                                              "re-collect or drop that episode"))
        for key in shapes:
            self.arrays[key] = self.arrays[key].astype(np.float32, copy=False)

    # ------------------------------------------------------------------------------------- access
    @property
    def episodes(self) -> int:
        """Number of episodes."""
        return int(self.episode_ends.size)

    @property
    def num_steps(self) -> int:
        """Number of steps over all episodes."""
        return int(self.episode_ends[-1])

    @property
    def obs_keys(self) -> tuple[str, ...]:
        """Observation keys, in the spec's order."""
        return tuple(self.spec.obs_shapes)

    def episode_bounds(self, index: int) -> tuple[int, int]:
        """``(start, end)`` step indices of episode ``index`` (end exclusive)."""
        if not -self.episodes <= index < self.episodes:
            raise IndexError(f"episode {index} out of range for {self.episodes} episodes")
        index %= self.episodes
        start = 0 if index == 0 else int(self.episode_ends[index - 1])
        return start, int(self.episode_ends[index])

    def episode(self, index: int) -> dict[str, np.ndarray]:
        """The arrays of one episode (views), each (T_e, ...)."""
        start, end = self.episode_bounds(index)
        return {key: array[start:end] for key, array in self.arrays.items()}

    def __repr__(self) -> str:
        return (f"DemoDataset(task={self.spec.task!r}, obs_mode={self.spec.obs_mode!r}, "
                f"episodes={self.episodes}, steps={self.num_steps})")

    # ------------------------------------------------------------------------------------- disk
    def save(self, path: str | os.PathLike) -> Path:
        """Write the dataset directory atomically (see the module docstring); returns its path.

        An existing flowzoo dataset at ``path`` is replaced; any other existing file or non-empty directory is
        refused with ConfigError (nothing of the user's is overwritten).
        """
        path = check_output_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            arrays = {**self.arrays, "episode_ends": self.episode_ends}
            with open(staging / "data.npz", "wb") as handle:
                np.savez(handle, **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            digest = _sha256(staging / "data.npz")
            meta = {
                **self.info,  # first, so that the fields below always describe this file
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "flowzoo_version": _flowzoo_version(),
                "spec": self.spec.to_dict(),
                "normalizer": self.normalizer.to_dict(),
                "num_episodes": self.episodes,
                "num_steps": self.num_steps,
                "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
                "data_sha256": digest,
            }
            atomic_write_bytes(staging / "meta.json", json.dumps(meta, indent=1).encode())
            _swap_into_place(staging, path)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DemoDataset":
        """Read and validate a dataset directory written by :meth:`save`.

        Raises:
            DemoFileError: the directory or a file is missing, truncated, corrupted or of another format.
            ShapeError / NonFiniteError / EmptyInputError: the arrays are inconsistent, hold NaN or are empty.
        """
        path = Path(path)
        fix = f"re-collect the demonstrations into {path} (flowzoo robotics collect ...)"
        for name in ("meta.json", "data.npz"):
            if not (path / name).is_file():
                raise DemoFileError(expected(f"a demo directory holding {name}", f"{path} without it", fix))
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DemoFileError(expected("meta.json as valid JSON", f"{error}", fix)) from error
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise DemoFileError(expected(f"meta.json of format {FORMAT_NAME!r}",
                                         repr(meta.get("format") if isinstance(meta, dict) else meta)[:100], fix))
        if meta.get("format_version") != FORMAT_VERSION:
            raise DemoFileError(expected(f"format_version {FORMAT_VERSION}", meta.get("format_version"),
                                         "load it with the flowzoo version that wrote it, or re-collect"))
        digest = _sha256(path / "data.npz")
        if meta.get("data_sha256") not in (None, digest):
            raise DemoFileError(expected("data.npz matching the checksum in meta.json", "a different file "
                                         "(truncated, edited or from another dataset)", fix))
        try:
            with np.load(path / "data.npz", allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
            raise DemoFileError(expected("a readable data.npz", f"{type(error).__name__}: {error}", fix)) from error
        if "episode_ends" not in arrays:
            raise DemoFileError(expected("an episode_ends array in data.npz", sorted(arrays), fix))
        try:
            spec = EnvSpec.from_dict(meta["spec"])
            normalizer = Normalizer.from_dict(meta["normalizer"])
        except (KeyError, ConfigError) as error:
            raise DemoFileError(expected("meta.json with spec and normalizer", f"{error}", fix)) from error
        ends = arrays.pop("episode_ends")
        known = set(spec.obs_shapes) | {"action", *_PER_STEP_OPTIONAL}
        info = {k: v for k, v in meta.items() if k not in _WRITTEN_BY_SAVE}
        return cls({k: v for k, v in arrays.items() if k in known}, ends, spec, normalizer, info)


def check_output_path(path: str | os.PathLike) -> Path:
    """Return ``path`` if a dataset may be written there: new, an empty directory or a flowzoo demo directory.

    Raises:
        ConfigError: ``path`` is a file or a non-empty directory that is not a flowzoo dataset.
    """
    path = Path(path)
    if path.exists():
        is_dataset = path.is_dir() and (path / "meta.json").is_file() and (path / "data.npz").is_file()
        if not (is_dataset or (path.is_dir() and not any(path.iterdir()))):
            raise ConfigError(expected("a new path, an empty directory or an existing flowzoo demo directory",
                                       f"{path} (holds other files)", "choose another output path"))
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _swap_into_place(staging: Path, final: Path) -> None:
    fsync_directory(staging)
    if final.exists():
        trash = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)
        try:
            os.replace(staging, final)
        except OSError:
            os.replace(trash, final)  # put the previous dataset back
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
    fsync_directory(final.parent)


# ------------------------------------------------------------------------------------------------ windows
class WindowDataset(Dataset):
    """Map-style dataset of normalised (observation history, action chunk) windows; one item per step.

    Args:
        demos: the demonstrations.
        n_obs_steps: observation history length (>= 1).
        horizon: action chunk length (>= 1).
        episodes: optional subset of episode indices (e.g. a train/validation split).

    An item is ``{"obs": {key: (n_obs_steps, ...) float32}, "action": (horizon, A) float32}``, normalised
    with ``demos.normalizer``; the default collate of a DataLoader (or the core Trainer) batches it.
    """

    def __init__(self, demos: DemoDataset, n_obs_steps: int = 2, horizon: int = 4,
                 episodes: Sequence[int] | None = None) -> None:
        for name, value in (("n_obs_steps", n_obs_steps), ("horizon", horizon)):
            check_positive_int(value, name, fix=f"pass e.g. {name}=2")
        self.demos, self.n_obs_steps, self.horizon = demos, n_obs_steps, horizon
        chosen = range(demos.episodes) if episodes is None else list(episodes)
        if len(chosen) == 0:
            raise EmptyInputError(expected("at least one episode", "an empty selection", "select episodes"))
        index, first, last = [], [], []
        for episode in chosen:
            start, end = demos.episode_bounds(int(episode))
            index.append(np.arange(start, end))
            first.append(np.full(end - start, start))
            last.append(np.full(end - start, end - 1))
        self._step = torch.from_numpy(np.concatenate(index))
        self._first = torch.from_numpy(np.concatenate(first))
        self._last = torch.from_numpy(np.concatenate(last))
        norm = demos.normalizer
        self._obs = {key: torch.from_numpy(np.ascontiguousarray(norm.normalize(key, demos.arrays[key]),
                                                                dtype=np.float32))
                     for key in demos.obs_keys}
        self._action = torch.from_numpy(np.ascontiguousarray(norm.normalize("action", demos.arrays["action"]),
                                                             dtype=np.float32))
        self._obs_offsets = torch.arange(-n_obs_steps + 1, 1)
        self._action_offsets = torch.arange(horizon)

    def __len__(self) -> int:
        return int(self._step.numel())

    def indices(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global step indices of the observations and actions of window ``item`` (after padding)."""
        if not -len(self) <= item < len(self):
            raise IndexError(f"window {item} out of range for {len(self)} windows")
        step, first, last = self._step[item], self._first[item], self._last[item]
        obs_index = torch.clamp(step + self._obs_offsets, min=int(first))
        action_index = torch.clamp(step + self._action_offsets, max=int(last))
        return obs_index, action_index

    def __getitem__(self, item: int) -> dict[str, Any]:
        obs_index, action_index = self.indices(int(item))
        return {"obs": {key: values[obs_index] for key, values in self._obs.items()},
                "action": self._action[action_index]}

    def batch(self, items: torch.Tensor | Sequence[int]) -> dict[str, Any]:
        """Windows ``items`` gathered at once: ``{"obs": {key: (B, n_obs_steps, ...)}, "action": (B, horizon, A)}``.

        Equal to stacking ``self[i]`` for each i, without a Python loop over the batch.
        """
        items = torch.as_tensor(items, dtype=torch.long).reshape(-1)
        if items.numel() and (int(items.min()) < -len(self) or int(items.max()) >= len(self)):
            raise IndexError(f"window indices must lie in [-{len(self)}, {len(self)}); received "
                             f"[{int(items.min())}, {int(items.max())}]")
        items = items % len(self)
        step = self._step[items][:, None]
        obs_index = torch.maximum(step + self._obs_offsets, self._first[items][:, None])
        action_index = torch.minimum(step + self._action_offsets, self._last[items][:, None])
        return {"obs": {key: values[obs_index] for key, values in self._obs.items()},
                "action": self._action[action_index]}

    def sampler(self, batch_size: int) -> Callable[[torch.Generator], dict[str, Any]]:
        """A ``sample_batch(generator)`` callable drawing ``batch_size`` windows uniformly with replacement,
        for the core Trainer's ``data`` argument (exactly resumable: the trainer owns the generator)."""
        check_positive_int(batch_size, "batch_size", fix="pass e.g. 128")

        def sample_batch(generator: torch.Generator) -> dict[str, Any]:
            return self.batch(torch.randint(len(self), (batch_size,), generator=generator))

        return sample_batch
