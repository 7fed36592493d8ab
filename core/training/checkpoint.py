"""Crash-safe checkpoints: staged, hashed, renamed into place.

A checkpoint is a directory ``<root>/step_0001000/`` holding

* ``model.safetensors`` — the trained weights; ``ema.safetensors`` — the EMA weights (if enabled);
* ``state.pt`` — optimiser, scaler, step, RNG states and data position (``torch.load(weights_only=True)``);
* ``config.yaml`` (and ``trainer.yaml``) — the resolved config;
* ``manifest.json`` — written **last**: the format, the step and the SHA-256 and size of every file.

Writing: every file is written atomically (temporary file, ``fsync``, ``os.replace``) into a hidden
staging directory, which is renamed into place once complete; then the ``<root>/latest`` pointer is
replaced atomically and old checkpoints are pruned. A crash at any point leaves either the previous
checkpoint or the new one, never a half-written one; the next save removes what such a crash left behind
(hidden staging folders, a temporary ``latest`` pointer).

Reading: :func:`read_checkpoint` checks the manifest and every hash before deserialising anything;
a missing or corrupted file raises :class:`~flowzoo.core.errors.CheckpointError` naming it, and
reading never writes to disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import yaml

from flowzoo.core.errors import CheckpointError, expected

__all__ = [
    "Checkpoint",
    "atomic_write_bytes",
    "atomic_write_with",
    "fsync_directory",
    "checkpoint_name",
    "list_checkpoints",
    "latest_checkpoint",
    "checkpoint_candidates",
    "resolve_checkpoint",
    "write_checkpoint",
    "read_checkpoint",
    "read_checkpoint_record",
    "verify_checkpoint",
    "weights_to_bytes",
    "weights_from_bytes",
    "MANIFEST",
]

MANIFEST = "manifest.json"
LATEST = "latest"
FORMAT = "flowzoo-checkpoint"
_STEP_DIR = re.compile(r"^step_(\d{7,})$")
_STAGING_PREFIX = ".staging-"


def fsync_directory(path: str | Path) -> None:
    """Flush a directory entry (after a rename into it) where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_with(path: str | Path, write: Callable[[Path], Any], *, suffix: str = "") -> Path:
    """Atomically create ``path`` with a writer that needs a file name (``adata.write_h5ad``, ``imageio.imwrite``):
    ``write(temporary)`` writes a hidden file beside ``path`` (ending in ``suffix``, for writers that pick the
    format from it), which is fsynced and renamed over ``path``; on any error the temporary file is removed and
    ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_directory(path.parent)
    return path


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint after ``step`` updates: ``step_0001000``."""
    return f"step_{step:07d}"


def weights_to_bytes(state: Mapping[str, Any]) -> bytes:
    """Serialise a state dict's tensors with safetensors (tied tensors are stored once per name)."""
    tensors = {name: value.detach().to("cpu").contiguous().clone()
               for name, value in state.items() if isinstance(value, torch.Tensor)}
    return safetensors.torch.save(tensors)


def weights_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """Inverse of :func:`weights_to_bytes`."""
    return safetensors.torch.load(data)


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete-looking checkpoint directories under ``root``, oldest step first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint that ``<root>/latest`` names (or the newest directory if the pointer is missing).

    Raises:
        CheckpointError: the pointer names a directory that does not exist.
    """
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        target = root / name
        if not _STEP_DIR.match(name) or not target.is_dir():
            raise CheckpointError(expected(f"{pointer} to name an existing checkpoint directory",
                                           repr(name), "pass an existing checkpoint directory as resume, "
                                           "or delete the pointer to use the newest checkpoint"))
        return target
    # Crash between the rename and the pointer update: the newest directory is complete.
    candidates = list_checkpoints(root)
    return candidates[-1] if candidates else None


def checkpoint_candidates(root: str | Path) -> list[Path]:
    """The checkpoints under ``root`` in the order a resume tries them: the one ``latest`` names, then newest first.

    A pointer that names no existing checkpoint is ignored here (:func:`latest_checkpoint` reports it).
    """
    root = Path(root)
    found = list_checkpoints(root)[::-1]
    pointer = root / LATEST
    if pointer.is_file():
        target = root / pointer.read_text(encoding="utf-8").strip()
        if target in found:
            found.remove(target)
            found.insert(0, target)
    return found


def resolve_checkpoint(path: str | Path) -> Path:
    """Turn a checkpoint directory, a ``checkpoints`` root or a run's ``out_dir`` into a checkpoint path."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(expected("an existing checkpoint directory or run directory", str(path),
                                       "check the path, or resume=true to continue the latest run in out_dir"))
    if path.is_file():
        if path.name == MANIFEST:
            return path.parent
        raise CheckpointError(expected("a checkpoint directory", f"the file {path}", "pass its directory"))
    if (path / MANIFEST).exists() or _STEP_DIR.match(path.name) or (path / "state.pt").exists():
        return path
    for root in (path, path / "checkpoints"):
        found = latest_checkpoint(root) if root.is_dir() else None
        if found is not None:
            return found
    raise CheckpointError(expected("a directory holding a checkpoint", f"{path} (none found)",
                                   "pass a step_XXXXXXX directory or the run's out_dir"))


def write_checkpoint(root: str | Path, step: int, files: Mapping[str, bytes], *, keep: int = 0) -> Path:
    """Write ``files`` as the checkpoint of ``step`` under ``root``, update ``latest`` and prune.

    Args:
        root: the checkpoints directory (``out_dir/checkpoints``).
        step: number of completed updates.
        files: file name -> content (``manifest.json`` is added).
        keep: number of newest checkpoints to keep (0 keeps all); the new one is always kept.

    Returns:
        The checkpoint directory.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(_STAGING_PREFIX + "*"):  # left by a crash during an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(f".{LATEST}.tmp-*"):  # a crash between writing the pointer and renaming it
        stale.unlink(missing_ok=True)
    name = checkpoint_name(step)
    staging = root / f"{_STAGING_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        entries = {}
        for file_name, data in files.items():
            atomic_write_bytes(staging / file_name, data)
            entries[file_name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        manifest = {"format": FORMAT, "version": 1, "step": step, "files": entries}
        atomic_write_bytes(staging / MANIFEST, json.dumps(manifest, indent=2).encode("utf-8"))
        fsync_directory(staging)
        final = root / name
        if final.exists():  # re-running a step after resuming from an older checkpoint
            trash = root / f"{_STAGING_PREFIX}old-{name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, trash)
            os.replace(staging, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, final)
        fsync_directory(root)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    atomic_write_bytes(root / LATEST, (name + "\n").encode("utf-8"))
    if keep > 0:
        for old in list_checkpoints(root)[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(expected(f"{manifest_path}", "no such file (the checkpoint was never completed "
                                       "or was damaged)", "resume from another checkpoint"))
    try:
        manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError("not a flowzoo checkpoint manifest")
        for entry in files.values():
            str(entry["sha256"]), int(entry["size"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise CheckpointError(expected(f"a complete manifest in {manifest_path}",
                                       f"a truncated or corrupted file ({error})",
                                       "resume from another checkpoint")) from error
    return manifest


def verify_checkpoint(path: str | Path) -> dict[str, bytes]:
    """Read every file named by the manifest and check its size and SHA-256; returns name -> bytes.

    Raises:
        CheckpointError: the manifest or a file is missing, truncated or does not match its hash.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(expected("an existing checkpoint directory", str(path), "check the path"))
    manifest = _read_manifest(path)
    contents: dict[str, bytes] = {}
    for name, entry in manifest["files"].items():
        file_path = path / name
        if not file_path.is_file():
            raise CheckpointError(expected(f"{file_path} listed in the manifest", "no such file",
                                           "resume from another checkpoint"))
        data = file_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != int(entry["size"]) or digest != entry["sha256"]:
            raise CheckpointError(expected(
                f"{file_path} with sha256 {entry['sha256']} ({entry['size']} bytes)",
                f"sha256 {digest} ({len(data)} bytes): the file is corrupted",
                "resume from another checkpoint (out_dir/checkpoints/step_*)"))
        contents[name] = data
    return contents


@dataclass
class Checkpoint:
    """A verified checkpoint: weights, training state and config, all on the CPU."""

    path: Path
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    state: dict[str, Any]
    config: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)

    @property
    def inference_weights(self) -> dict[str, torch.Tensor]:
        """The weights to sample with: the EMA copy when the run kept one, else the trained weights."""
        return self.ema if self.ema is not None else self.model


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Verify and load a checkpoint (a step directory, a checkpoints root or a run's ``out_dir``).

    Never writes to disk. Raises :class:`CheckpointError` naming the missing or corrupted file.
    """
    path = resolve_checkpoint(path)
    contents = verify_checkpoint(path)
    for required in ("model.safetensors", "state.pt"):
        if required not in contents:
            raise CheckpointError(expected(f"{required} in the manifest of {path}", "not listed",
                                           "resume from a checkpoint written by the flowzoo Trainer"))
    try:
        model = weights_from_bytes(contents["model.safetensors"])
        ema = weights_from_bytes(contents["ema.safetensors"]) if "ema.safetensors" in contents else None
        state = torch.load(io.BytesIO(contents["state.pt"]), map_location="cpu", weights_only=True)
        config = yaml.safe_load(contents["config.yaml"].decode("utf-8")) if "config.yaml" in contents else None
    except Exception as error:  # hashes matched, so the writer itself produced something unreadable
        raise CheckpointError(expected(f"readable files in {path}", repr(error),
                                       "the checkpoint was written by an incompatible version; start a new run")) from error
    return Checkpoint(path=path, step=int(state.get("step", -1)), model=model, ema=ema, state=state,
                      config=config, files=sorted(contents))


def read_checkpoint_record(path: str | Path, key: str, *, run_of: str, fix: str,
                           required: str | None = None) -> tuple[Checkpoint, dict[str, Any], dict[str, Any]]:
    """Read the checkpoint of a run whose ``config.yaml`` records ``key`` (what a domain loader needs to rebuild its
    network): ``(checkpoint, the record, the rest of the config)``.

    ``run_of`` names the kind of run in the errors and ``fix`` says what to pass instead; ``required`` is a field the
    record must hold. Never writes to disk. Raises CheckpointError for a path that does not exist or a checkpoint
    without the record.
    """
    if not Path(path).exists():
        raise CheckpointError(expected(f"the run directory (or a checkpoint) of {run_of}", f"{path} (does not exist)",
                                       fix))
    checkpoint = read_checkpoint(path)
    rest = dict(checkpoint.config or {})
    record = rest.pop(key, None)
    if not isinstance(record, Mapping) or (required is not None and required not in record):
        raise CheckpointError(expected(f"a checkpoint of {run_of} (its config.yaml records '{key}')",
                                       f"{checkpoint.path} (no {key} record)", fix))
    return checkpoint, dict(record), rest
