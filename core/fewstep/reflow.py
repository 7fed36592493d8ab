r"""Rectified flow / reflow and its k-step distillation (Liu, Gong, Liu, arXiv 2209.03003).

Reflow (Alg. 1 of the paper): with a trained flow :math:`v_k`, draw noise :math:`Z_0`, integrate the ODE to
:math:`Z_1 = \mathrm{ODE}_{v_k}(Z_0)` and retrain flow matching on the *coupled* pairs
:math:`(Z_0, Z_1)` (the same loss, Eq. 1, with x0 = Z0, x1 = Z1). The new coupling is deterministic, so the
rectified paths cross less: the straightness :math:`S = E\int\|(Z_1 - Z_0) - \dot Z_t\|^2 dt` decays like
O(1/k) and a convex transport cost never increases (Thm 3.5). Noise and endpoint must stay **exactly**
paired, so :func:`generate_pairs` stores both tensors, chunk by chunk, and :class:`PairStore` yields
``{"x0": noise, "x1": endpoint}`` — a batch for :class:`~flowzoo.core.objectives.FlowMatchingLoss`.

Time convention: flowzoo's t = 0 is the noise and t = 1 the data, the same as the official RectifiedFlow
code (which feeds the net ``t * 999`` and samples t ~ U(1e-3, 1)); nothing needs remapping.

k-step distillation (§2.3 of the paper): train a student so that k Euler steps on the integer grid
:math:`t_i = i/k` from Z0 land on Z1 (:class:`ReflowDistillationLoss`; k = 1 is the paper's ``'t0'`` schedule).

Example:
    >>> import tempfile, torch
    >>> model = lambda x, t: -x                                   # any velocity model
    >>> with tempfile.TemporaryDirectory() as d:
    ...     store = generate_pairs(model, torch.randn(10, 2), out_dir=d, chunk_size=4, steps=8, progress=False)
    ...     len(store), store.num_chunks, sorted(store[0])
    (10, 3, ['x0', 'x1'])
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from flowzoo.core.validation import check_positive_int, check_tensor
from flowzoo.core.training.checkpoint import atomic_write_bytes
from flowzoo.core.errors import CheckpointError, ConfigError, ShapeError, expected
from flowzoo.core.batching import call_model, per_sample_mean, reduce_weighted, unpack_batch
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import integrate, uniform_grid
from flowzoo.core.paths import UShapedTime

__all__ = ["PairStore", "generate_pairs", "ReflowLoss", "rectify", "ReflowDistillationLoss", "MANIFEST_NAME"]

Tensor = torch.Tensor
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


def _write_chunk(path: Path, tensors: dict[str, Tensor]) -> str:
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _draw_source(source, n: int | None, generator: torch.Generator) -> Callable[[int, int], Tensor]:
    """Return ``take(start, count)`` giving source rows ``start:start+count`` (tensor) or fresh draws."""
    if isinstance(source, Tensor):
        x0 = check_tensor(source, "x0")
        if n is not None and n != x0.shape[0]:
            raise ShapeError(expected(f"n equal to the number of given noise samples {x0.shape[0]}", n,
                                      "omit n when passing an x0 tensor"))
        return lambda start, count: x0[start:start + count]
    if not callable(source):
        raise ConfigError(expected("an x0 tensor or a sampler callable (n, generator=...) -> Tensor",
                                   type(source).__name__, "pass e.g. torch.randn(n, 2)"))

    def take(start: int, count: int) -> Tensor:
        x0 = check_tensor(source(count, generator=generator), "source sample")
        if x0.shape[0] != count:
            raise ShapeError(expected(f"the sampler to return {count} rows", tuple(x0.shape), "return n samples"))
        return x0
    return take


@torch.no_grad()
def generate_pairs(model: Callable[..., Tensor], source, n: int | None = None, *, out_dir: str | os.PathLike,
                   chunk_size: int = 4096, method: str = "rk4", steps: int = 50,
                   cond: Mapping[str, Tensor] | None = None, seed: int = 0, progress: bool = True,
                   dtype: torch.dtype = torch.float32) -> "PairStore":
    r"""Integrate noise → data with ``model`` and store every noise exactly with its endpoint.

    Chunks ``pairs-00000.safetensors, ...`` are written atomically (temporary file, fsync, rename); the
    manifest — count, shapes, dtype, solver, steps, seed and each chunk's size and SHA-256 — is written last,
    so an interrupted run leaves no manifest and :class:`PairStore` refuses the folder.

    Args:
        model: the trained velocity model ``model(x, t, **cond)`` (the k-rectified flow).
        source: an x0 tensor (B, ...) or a sampler ``source(n, generator=g) -> Tensor``.
        n: number of pairs (required with a sampler; omitted or equal to the length with a tensor).
        out_dir: folder to write to (created; must not hold a manifest already).
        chunk_size: pairs per file and per ODE batch.
        method, steps: the solver of :func:`~flowzoo.core.sampling.ode.integrate` (a bad solver bakes its bias
            into the pairs: use rk4 / many steps).
        cond: optional per-pair conditioning tensors (n first); stored with the pairs and yielded as batch keys.
        seed: seed of the generator passed to a sampler.
        progress: show a tqdm bar over chunks.
        dtype: storage dtype.

    Returns:
        the :class:`PairStore` over ``out_dir``.
    """
    out = Path(out_dir)
    check_positive_int(chunk_size, "chunk_size", fix="pass e.g. 4096")
    if not isinstance(source, Tensor):
        check_positive_int(n, "n (pairs to draw from a sampler)", fix="pass n=number of pairs")
    total = source.shape[0] if isinstance(source, Tensor) and n is None else n
    cond = dict(cond or {})
    for key, value in cond.items():
        if key in ("x0", "x1", "weight") or not isinstance(value, Tensor) or value.dim() == 0 \
                or value.shape[0] != total:
            raise ShapeError(expected(f"cond[{key!r}] as a tensor with {total} rows (not named x0/x1/weight)",
                                      getattr(value, "shape", type(value).__name__), "give one condition per pair"))
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST_NAME).exists():
        raise CheckpointError(expected("an out_dir without a finished pair store", str(out),
                                       "pick a new folder or delete the old store"))
    generator = torch.Generator().manual_seed(seed)
    take = _draw_source(source, n, generator)
    chunks, sample_shape = [], None
    starts = range(0, total, chunk_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(starts), desc="reflow pairs")
    for index, start in enumerate(starts):
        count = min(chunk_size, total - start)
        x0 = take(start, count)
        chunk_cond = {k: v[start:start + count].to(x0.device) for k, v in cond.items()}
        x1 = integrate(model, x0, method=method, steps=steps, cond=chunk_cond).x
        sample_shape = list(x0.shape[1:])
        name = f"pairs-{index:05d}.safetensors"
        digest = _write_chunk(out / name, {"x0": x0.to(dtype), "x1": x1.to(dtype),
                                           **{f"cond.{k}": v for k, v in chunk_cond.items()}})
        chunks.append({"file": name, "count": count, "sha256": digest})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    manifest = {"format": "flowzoo.reflow.pairs", "version": FORMAT_VERSION, "count": total,
                "sample_shape": sample_shape, "dtype": str(dtype).replace("torch.", ""), "solver": method,
                "steps": steps, "seed": seed, "cond_keys": sorted(cond), "chunks": chunks}
    atomic_write_bytes(out / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
    return PairStore(out)


class PairStore(torch.utils.data.Dataset):
    """A torch Dataset over a pair folder written by :func:`generate_pairs`, yielding ``{"x0", "x1", cond...}``.

    Chunks are loaded lazily (a small LRU cache of ``cache_chunks`` files) and checked against the manifest's
    count and SHA-256 when first read; a missing manifest, a missing, truncated or altered chunk raise
    :class:`~flowzoo.core.errors.CheckpointError`. Each file is hashed once (``verify=False`` skips it) and
    then memory-mapped by safetensors. Fully random access over more than ``cache_chunks`` chunks (the
    Trainer's shuffling) reopens files often; prefer large chunks, a larger cache, :meth:`tensors` for
    stores that fit in memory, or :meth:`chunk_shuffled_indices` (whole chunks in random order).
    """

    def __init__(self, root: str | os.PathLike, cache_chunks: int = 8, verify: bool = True):
        self.root = Path(root)
        manifest_path = self.root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise CheckpointError(expected(f"a finished pair store with {MANIFEST_NAME}", str(self.root),
                                           "the generation was interrupted or the path is wrong; regenerate"))
        try:
            self.manifest = json.loads(manifest_path.read_text())
            chunks = self.manifest["chunks"]
            counts = [int(c["count"]) for c in chunks]
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(expected("a readable pair-store manifest", repr(err),
                                           "regenerate the pairs")) from None
        if sum(counts) != self.manifest.get("count"):
            raise CheckpointError(expected(f"chunk counts summing to {self.manifest.get('count')}", sum(counts),
                                           "the manifest is corrupted; regenerate the pairs"))
        missing = [c["file"] for c in chunks if not (self.root / c["file"]).is_file()]
        if missing:
            raise CheckpointError(expected("every chunk file listed in the manifest", f"missing {missing[:3]}",
                                           "the store is incomplete; regenerate it"))
        self.counts = counts
        self.offsets = [0]
        for count in counts:
            self.offsets.append(self.offsets[-1] + count)
        self.cache_chunks, self.verify = max(1, int(cache_chunks)), verify
        self._verified: set[int] = set()
        self._cache: OrderedDict[int, dict[str, Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return self.offsets[-1]

    @property
    def num_chunks(self) -> int:
        return len(self.counts)

    def load_chunk(self, index: int) -> dict[str, Tensor]:
        """All tensors of chunk ``index`` (cached); keys ``x0``, ``x1`` and conditioning keys."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        info = self.manifest["chunks"][index]
        path = self.root / info["file"]
        try:
            if self.verify and index not in self._verified:  # hash each file once per store object
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
                if digest.hexdigest() != info["sha256"]:
                    raise CheckpointError(expected(f"{info['file']} matching its manifest checksum",
                                                   "a different checksum", "the chunk is corrupted; regenerate"))
                self._verified.add(index)
            raw = load_file(str(path))  # safetensors memory-maps the file
        except CheckpointError:
            raise
        except Exception as err:  # safetensors raises its own errors on truncated files
            raise CheckpointError(expected(f"a readable chunk {info['file']}", repr(err), "regenerate")) from None
        tensors = {k.removeprefix("cond."): v for k, v in raw.items()}
        if tensors["x0"].shape[0] != info["count"] or tensors["x1"].shape != tensors["x0"].shape:
            raise CheckpointError(expected(f"{info['count']} paired rows in {info['file']}",
                                           f"x0 {tuple(tensors['x0'].shape)}, x1 {tuple(tensors['x1'].shape)}",
                                           "regenerate the pairs"))
        self._cache[index] = tensors
        while len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return tensors

    def _locate(self, index: int) -> tuple[int, int]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"pair index {index} out of range for {len(self)} pairs")
        import bisect
        chunk = bisect.bisect_right(self.offsets, index) - 1
        return chunk, index - self.offsets[chunk]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        chunk, row = self._locate(int(index))
        return {k: v[row] for k, v in self.load_chunk(chunk).items()}

    def chunk_shuffled_indices(self, generator: torch.Generator | None = None) -> list[int]:
        """A permutation of all indices that visits chunks one at a time (random chunk order, random rows)."""
        order = []
        for chunk in torch.randperm(self.num_chunks, generator=generator).tolist():
            rows = torch.randperm(self.counts[chunk], generator=generator) + self.offsets[chunk]
            order.extend(rows.tolist())
        return order

    def tensors(self) -> dict[str, Tensor]:
        """Every pair concatenated in memory (for small stores and tests)."""
        parts = [self.load_chunk(i) for i in range(self.num_chunks)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


class ReflowLoss(FlowMatchingLoss):
    """The reflow loss (arXiv 2209.03003, Alg. 1): :class:`FlowMatchingLoss` on stored pairs, U-shaped times by default.

    Lee, Lin, Fanti (arXiv 2405.20320, §3.1) show that reflow's loss concentrates near t = 0 and t = 1 and
    train it with :class:`~flowzoo.core.paths.timesamplers.UShapedTime` (parameter ``a``); ``u_shaped=False``
    keeps uniform t (the original paper). The batch must hold the paired noise under ``"x0"`` (a
    :class:`PairStore` batch): drawing fresh noise would silently train plain flow matching. There is no
    coupling: the stored pairs are the coupling. Other arguments are :class:`FlowMatchingLoss`'s.

    Example:
        >>> loss, metrics = ReflowLoss()(lambda x, t: x, {"x0": torch.zeros(4, 2), "x1": torch.zeros(4, 2)})
        >>> loss.item(), sorted(metrics)
        (0.0, ['loss'])
    """

    def __init__(self, u_shaped: bool = True, a: float = 4.0, *, path=None, time_sampler=None,
                 cond_dropout: float = 0.0, null_cond: Mapping[str, object] | None = None, coupling: None = None):
        if coupling is not None:
            raise ConfigError(expected("no coupling for reflow (the pairs are the coupling)", coupling,
                                       "drop the coupling argument"))
        if u_shaped and time_sampler is None:
            time_sampler = UShapedTime(a)
        super().__init__(path=path, time_sampler=time_sampler, cond_dropout=cond_dropout, null_cond=null_cond)

    def __repr__(self) -> str:
        return (f"ReflowLoss(path={self.path!r}, time_sampler={self.time_sampler!r}, "
                f"cond_dropout={self.cond_dropout})")

    def __call__(self, model, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        _require_pairs(batch)
        return super().__call__(model, batch, generator=generator)


def _require_pairs(batch: object) -> None:
    if not isinstance(batch, Mapping) or batch.get("x0") is None:
        raise ConfigError(expected('a batch with the paired noise under "x0"', type(batch).__name__,
                                   "reflow trains on the stored pairs; use a PairStore"))


def rectify(model: torch.nn.Module, pairs: PairStore | Mapping[str, Tensor], steps: int, *, lr: float = 1e-3,
            batch_size: int = 256, objective: Callable | None = None, seed: int = 0,
            grad_clip: float | None = 1.0) -> torch.nn.Module:
    """Fine-tune a COPY of ``model`` on reflow pairs (k-rectified flow → (k+1)-rectified flow).

    The official README fine-tunes 2-RF from the 1-RF checkpoint rather than training from scratch; this helper
    does the same with Adam for ``steps`` updates on chunk-shuffled minibatches. ``objective`` defaults to
    :class:`ReflowLoss` (U-shaped t); the same call distils with :class:`ReflowDistillationLoss`.
    For real runs, plug :class:`PairStore` into the Trainer instead.
    """
    check_positive_int(steps, "steps", fix="pass e.g. steps=2000")
    data = pairs.tensors() if isinstance(pairs, PairStore) else dict(pairs)
    if "x0" not in data or "x1" not in data:
        raise ConfigError(expected('pairs with keys "x0" and "x1"', sorted(data), "pass a PairStore"))
    student = copy.deepcopy(model)
    student.train()
    objective = ReflowLoss() if objective is None else objective
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = data["x1"].shape[0]
    for _ in range(steps):
        index = torch.randint(0, n, (min(batch_size, n),), generator=generator)
        loss, _ = objective(student, {k: v[index] for k, v in data.items()}, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(student.parameters(), grad_clip)
        optimizer.step()
    student.eval()
    return student


class ReflowDistillationLoss:
    r"""k-step distillation of a rectified flow (arXiv 2209.03003, §2.3).

    Loss :math:`\|\mathrm{Euler}^k_\theta(Z_0) - Z_1\|^2`.

    The student takes ``steps`` Euler steps on the grid :math:`t_i = i/k` (k = 1: one jump from t = 0, the
    paper's ``'t0'`` schedule, which uses t = 1e-3 because its network never saw 0; k > 1: the integer
    schedule) from the paired noise ``x0`` and is regressed in L2 onto the paired endpoint ``x1``; the
    gradient flows through all k steps. Per-sample weights and conditioning follow FlowMatchingLoss.

    Example:
        >>> loss, m = ReflowDistillationLoss(steps=1)(lambda x, t: torch.ones_like(x),
        ...                                            {"x0": torch.zeros(3, 2), "x1": torch.ones(3, 2)})
        >>> loss.item()
        0.0
    """

    def __init__(self, steps: int = 1):
        check_positive_int(steps, "steps (1 or 2 typically)", fix="use steps=1")
        self.steps = steps

    def __repr__(self) -> str:
        return f"ReflowDistillationLoss(steps={self.steps})"

    def __call__(self, model, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        _require_pairs(batch)
        data = unpack_batch(batch, generator)
        grid = uniform_grid(self.steps, dtype=data.x1.dtype, device=data.x1.device)
        x = data.x0
        n = x.shape[0]
        for t, t_next in zip(grid[:-1], grid[1:]):
            x = x + (t_next - t) * call_model(model, x, t.expand(n), data.cond)
        per_sample = per_sample_mean((x - data.x1) ** 2)
        loss = reduce_weighted(per_sample, data.weight)
        return loss, {"loss": loss.item()}
