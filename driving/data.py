"""Driving scenes on disk: the ``.npz`` schema, synthetic generation, saving, loading and a torch ``Dataset``.

A scene set is a directory of shards ``shard_00000.npz, ...`` (each at most ``shard_size`` scenes) and
``meta.json``. Every shard holds these arrays (N scenes; padded rows are NaN, or excluded by their mask):

==================  ===================  =======  ===========================================================
key                 shape                dtype    meaning (ego frame at the current time: x forward, y left)
==================  ===================  =======  ===========================================================
bev                 (N, C, H, W)         uint8    raster, channels ``meta["channels"]`` (see ``raster``)
ego_state           (N, 3)               float32  speed m/s, longitudinal acceleration m/s², yaw rate rad/s
command             (N,)                 int8     driving command, index into ``meta["commands"]``
trajectory          (N, T, 3)            float32  expert poses (x, y, θ) at dt, 2·dt, ... T·dt seconds
goal_candidates     (N, G, 3)            float32  end poses of the expert's feasible routes
goal_mask           (N, G)               bool     which candidates exist
goal_index          (N,)                 int16    the candidate the expert drove (its last pose)
routes              (N, G, K, 2)         float32  centreline of each candidate's route, from the ego on
reference_progress  (N,)                 float32  best feasible progress (m), the denominator of EP
drivable            (N, V, 2)            float32  drivable-area polygon's exterior ring (NaN-padded)
agent_boxes         (N, A, 5)            float32  other vehicles now: x, y, θ, length, width
agent_futures       (N, A, T, 3)         float32  their poses at the plan times
agent_mask          (N, A)               bool     which agent rows exist
lanes               (N, L, K, 2)         float32  lane centrelines resampled to K points (NaN-padded)
kind                (N,)                 int8     index into ``meta["kinds"]``
scene_seed          (N,)                 int64    seed that regenerates the scene
==================  ===================  =======  ===========================================================

``meta.json`` holds ``format`` ("flowzoo-driving-scenes"), ``version``, ``seed``, ``dt``, ``horizon``,
``extent`` (raster x and y ranges), ``raster_size``, ``channels``, ``commands``, ``kinds``, ``ego_size`` and
``count``. :func:`load_scenes` checks all of it and names what is wrong and how to fix it.

Converting real data (a sketch, not run here). For each NAVSIM / nuPlan frame (``navsim.common.dataclasses``
``Scene``; poses are rear-axle, so shift them forward by half the wheelbase first) or each Argoverse 2 motion
forecasting scenario (10 Hz, 5 s history, 6 s future; subsample to 2 Hz and keep 4 s):

1. transform every position into the ego frame of the current time (translate by −ego_xy, rotate by −ego_yaw);
2. ``trajectory``: the ego's future poses at 0.5 ... 4 s; ``ego_state`` from the ego status (NAVSIM:
   ``ego_velocity``, ``ego_acceleration``, yaw rate from consecutive headings); ``command`` from NAVSIM's
   driving command (drop its fourth, unknown, class), or from the route's turn (Argoverse);
3. ``drivable``: the union of the map's lane or drivable-area polygons within the raster extent (NAVSIM map API
   ``get_proximal_map_objects`` with ``LANE``, ``LANE_CONNECTOR``, ``INTERSECTION``; Argoverse 2
   ``ArgoverseStaticMap.get_scenario_vector_drivable_areas``), its exterior ring; ``lanes``: lane centrelines;
4. ``agent_boxes`` / ``agent_futures``: vehicles' current boxes and future poses (annotations / tracks); a track
   that ends early is padded with its last pose;
5. ``goal_candidates`` / ``routes``: the lane paths reachable from the ego's lane (route planner or lane graph)
   with the end pose of the logged trajectory on the one the ego took (``goal_index``); ``reference_progress``:
   the logged trajectory's progress (or PDM-Closed's, as NAVSIM);
6. ``bev`` from these with :func:`flowzoo.driving.raster.rasterize`, then :func:`save_scenes`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from flowzoo.core.errors import ConfigError, FlowzooError, expected
from flowzoo.core.validation import check_int, check_positive_int
from flowzoo.driving.expert import choose_plan, plan_routes
from flowzoo.driving.geometry import EGO_LENGTH, EGO_WIDTH, polygon_vertices, resample_polyline
from flowzoo.driving.raster import CHANNELS, RasterSpec, ego_state, rasterize_scene
from flowzoo.driving.scenes import COMMANDS, DT, HORIZON, SCENE_KINDS, sample_scene

__all__ = ["FORMAT", "VERSION", "SCHEMA", "SceneSchemaError", "generate_scenes", "save_scenes", "load_scenes",
           "scene_arrays", "SceneDataset"]

FORMAT, VERSION = "flowzoo-driving-scenes", 1
POINTS = 48  # vertices per stored route or lane (about 2-4 m apart)
# key -> (dtype kind, dimensions after N, named sizes the dimensions must share across keys)
SCHEMA: dict[str, tuple[str, tuple[str, ...]]] = {
    "bev": ("uint8", ("C", "H", "W")), "ego_state": ("float32", ("E",)), "command": ("int8", ()),
    "trajectory": ("float32", ("T", "3")), "goal_candidates": ("float32", ("G", "3")), "goal_mask": ("bool", ("G",)),
    "goal_index": ("int16", ()), "routes": ("float32", ("G", "K", "2")), "reference_progress": ("float32", ()),
    "drivable": ("float32", ("V", "2")), "agent_boxes": ("float32", ("A", "5")),
    "agent_futures": ("float32", ("A", "T", "3")), "agent_mask": ("bool", ("A",)),
    "lanes": ("float32", ("L", "K", "2")), "kind": ("int8", ()), "scene_seed": ("int64", ()),
}


class SceneSchemaError(FlowzooError, ValueError):
    """A scene file does not follow the schema (a key, shape, dtype or metadata field is wrong)."""


def _record(scene, seed: int, rng: np.random.Generator, spec: RasterSpec) -> dict[str, np.ndarray] | None:
    plans = plan_routes(scene)
    if not plans:
        return None
    chosen = choose_plan(plans, rng)
    routes = [resample_polyline(scene.routes[p.route].path, POINTS) for p in plans]
    lanes = [resample_polyline(lane, POINTS) for lane in scene.lanes]
    return {
        "bev": rasterize_scene(scene, spec), "ego_state": ego_state(scene),
        "command": np.int8(scene.routes[plans[chosen].route].command),
        "trajectory": plans[chosen].poses.astype(np.float32),
        "goal_candidates": np.stack([p.poses[-1] for p in plans]).astype(np.float32),
        "goal_index": np.int16(chosen), "routes": np.stack(routes).astype(np.float32),
        "reference_progress": np.float32(max(p.progress for p in plans)),
        "drivable": polygon_vertices(scene.drivable).astype(np.float32),
        "agent_boxes": scene.agent_boxes.astype(np.float32), "agent_futures": scene.agent_futures.astype(np.float32),
        "lanes": np.stack(lanes).astype(np.float32), "kind": np.int8(SCENE_KINDS.index(scene.kind)),
        "scene_seed": np.int64(seed),
    }


def _stack(records: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-scene records into schema arrays, padding the ragged keys."""
    def padded(key: str, tail: tuple[int, ...]) -> np.ndarray:
        size = max(len(r[key]) for r in records)
        return np.stack([np.pad(r[key], [(0, size - len(r[key]))] + [(0, 0)] * len(tail), constant_values=np.nan)
                         for r in records]).astype(np.float32)

    out = {key: np.stack([r[key] for r in records]) for key in ("bev", "ego_state", "command", "trajectory",
                                                                 "goal_index", "reference_progress", "kind",
                                                                 "scene_seed")}
    out["goal_candidates"], out["routes"] = padded("goal_candidates", (3,)), padded("routes", (POINTS, 2))
    out["drivable"], out["lanes"] = padded("drivable", (2,)), padded("lanes", (POINTS, 2))
    out["agent_boxes"], out["agent_futures"] = padded("agent_boxes", (5,)), padded("agent_futures", (HORIZON, 3))
    out["goal_mask"] = ~np.isnan(out["goal_candidates"][..., 0])
    out["agent_mask"] = ~np.isnan(out["agent_boxes"][..., 0])
    return out


def _attempt(seed: int, attempt: int, kinds: tuple[str, ...], spec: RasterSpec) -> dict[str, np.ndarray] | None:
    """The record of scene attempt ``attempt`` of ``seed``, or None when the expert finds no feasible route.

    Each attempt draws from its own generator, so attempts can run in any order or process."""
    scene_seed = int(np.random.SeedSequence([int(seed), attempt]).generate_state(1)[0])
    rng = np.random.default_rng(scene_seed)
    return _record(sample_scene(rng, kinds[int(rng.integers(0, len(kinds)))]), scene_seed, rng, spec)


def _attempt_chunk(seed: int, attempts: range, kinds: tuple[str, ...],
                   spec: RasterSpec) -> list[dict[str, np.ndarray] | None]:
    return [_attempt(seed, a, kinds, spec) for a in attempts]


def _serial_records(n: int, seed: int, kinds, spec, bar) -> list[dict[str, np.ndarray]]:
    records, attempt = [], 0
    while len(records) < n:
        record = _attempt(seed, attempt, kinds, spec)
        attempt += 1
        if record is not None:
            records.append(record)
            bar.update(1)
    return records


def _parallel_records(n: int, seed: int, kinds, spec, bar, workers: int) -> list[dict[str, np.ndarray]]:
    """The first ``n`` successful attempts in attempt order from a process pool: chunks of consecutive attempts
    are submitted in order, a few per worker in flight, and read back in the order they were submitted. The
    result is the serial one because each attempt is seeded independently of the others."""
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, min(16, n // (4 * workers)))
    records: list[dict[str, np.ndarray]] = []
    # The platform's default start method (fork on Linux, as torch's DataLoader workers): a spawned worker would
    # re-import torch and shapely, seconds per process; the workers run numpy and shapely only, never torch.
    with ProcessPoolExecutor(workers) as pool:
        pending, next_attempt = deque(), 0
        while len(records) < n:
            while len(pending) < 3 * workers:  # keep every worker busy; at most these chunks are wasted at the end
                pending.append(pool.submit(_attempt_chunk, seed, range(next_attempt, next_attempt + chunk), kinds,
                                           spec))
                next_attempt += chunk
            for record in pending.popleft().result():
                if record is not None and len(records) < n:
                    records.append(record)
                    bar.update(1)
        for future in pending:
            future.cancel()
    return records


def generate_scenes(n: int, seed: int = 0, *, kinds: tuple[str, ...] = SCENE_KINDS, spec: RasterSpec = RasterSpec(),
                    progress: bool = False, workers: int = 1) -> dict[str, np.ndarray]:
    """``n`` synthetic scenes with expert plans, as schema arrays (see the module docstring).

    Scene ``i`` is drawn from ``numpy.random.default_rng([seed, attempt])``; a scene in which the expert finds
    no feasible route is replaced by the next attempt, so the result is a deterministic function of ``seed``.
    With ``workers`` > 1 the attempts run in a process pool and the first ``n`` successes are kept in attempt
    order: the arrays are identical to those of ``workers=1``. Where processes are spawned (macOS, Windows), a
    script that calls this with ``workers`` > 1 must do so under ``if __name__ == "__main__":``.

    Example:
        >>> data = generate_scenes(3, seed=0)
        >>> data["bev"].shape, data["trajectory"].shape, bool(data["goal_mask"][:, 0].all())
        ((3, 4, 64, 64), (3, 8, 3), True)
    """
    n = check_positive_int(n, "n", fix="ask for at least one scene, e.g. --n 5000")
    workers = check_positive_int(workers, "workers", fix="pass 1 for no process pool, or up to the CPU count")
    for kind in kinds:
        if kind not in SCENE_KINDS:
            raise ConfigError(expected(f"scene kinds among {SCENE_KINDS}", repr(kind), "drop the unknown kind"))
    kinds = tuple(kinds)
    with tqdm(total=n, desc="scenes", disable=not progress, unit="scene") as bar:
        if workers == 1:
            records = _serial_records(n, seed, kinds, spec, bar)
        else:
            records = _parallel_records(n, seed, kinds, spec, bar, workers)
    return _stack(records)


def _meta(arrays: dict[str, np.ndarray], seed: int | None, spec: RasterSpec) -> dict:
    return {"format": FORMAT, "version": VERSION, "seed": seed, "dt": DT, "horizon": HORIZON,
            "extent": {"x": list(spec.x_range), "y": list(spec.y_range)}, "raster_size": spec.size,
            "channels": list(CHANNELS), "commands": list(COMMANDS), "kinds": list(SCENE_KINDS),
            "ego_size": [EGO_LENGTH, EGO_WIDTH], "count": int(len(arrays["bev"]))}


def _check_arrays(arrays, where: str) -> int:
    """Check schema keys, dtypes and shapes; returns N."""
    missing = [key for key in SCHEMA if key not in arrays]
    if missing:
        raise SceneSchemaError(expected(f"the keys {sorted(SCHEMA)} in {where}", f"no {missing}",
                                        "regenerate with flowzoo driving make-scenes, or add the keys (see "
                                        "flowzoo.driving.data's schema)"))
    sizes: dict[str, int] = {"3": 3, "2": 2, "5": 5}
    n = len(arrays["bev"])
    for key, (dtype, dims) in SCHEMA.items():
        value = np.asarray(arrays[key])
        if value.dtype != np.dtype(dtype):
            raise SceneSchemaError(expected(f"{key} of dtype {dtype} in {where}", value.dtype,
                                            f"convert it with .astype(np.{dtype})"))
        if value.ndim != 1 + len(dims) or len(value) != n:
            raise SceneSchemaError(expected(f"{key} of shape (N={n}, {', '.join(dims)}) in {where}", value.shape,
                                            "follow the schema in flowzoo.driving.data"))
        for name, size in zip(dims, value.shape[1:]):
            if sizes.setdefault(name, size) != size:
                raise SceneSchemaError(expected(f"{key} with {name} = {sizes[name]} (as the other keys) in {where}",
                                                f"shape {value.shape}", "make the shared dimensions agree"))
    return n


def save_scenes(path: str | Path, arrays: dict[str, np.ndarray], *, seed: int | None = None,
                spec: RasterSpec = RasterSpec(), shard_size: int = 1000, overwrite: bool = False) -> Path:
    """Write schema ``arrays`` as a scene directory, atomically (a hidden sibling directory renamed into place).

    Raises:
        ConfigError: ``path`` exists and ``overwrite`` is False (nothing is written).
        SceneSchemaError: the arrays do not follow the schema.
    """
    path = Path(path)
    shard_size = check_positive_int(shard_size, "shard_size")
    if path.exists() and not overwrite:
        raise ConfigError(expected(f"{path} not to exist", "an existing path",
                                   "choose another --out, or pass --overwrite to replace it"))
    n = _check_arrays(arrays, "the arrays to save")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.staging-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        for i, start in enumerate(range(0, n, shard_size)):
            with open(staging / f"shard_{i:05d}.npz", "wb") as handle:
                np.savez(handle, **{k: np.asarray(arrays[k])[start:start + shard_size] for k in SCHEMA})
                handle.flush()
                os.fsync(handle.fileno())
        (staging / "meta.json").write_text(json.dumps(_meta(arrays, seed, spec), indent=2))
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(staging, path)
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return path


def load_scenes(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a scene directory (or one ``.npz`` shard beside its ``meta.json``); returns (arrays, meta).

    Raises:
        SceneSchemaError: a missing file, key or metadata field, or a wrong dtype or shape, named with its fix.
    """
    path = Path(path)
    folder = path.parent if path.suffix == ".npz" else path
    if not (folder / "meta.json").is_file():
        raise SceneSchemaError(expected(f"a scene directory with meta.json at {folder}", "none",
                                        "create one with flowzoo driving make-scenes --out DIR"))
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise SceneSchemaError(expected(f"meta.json with format {FORMAT!r} version {VERSION}",
                                        f"{meta.get('format')!r} version {meta.get('version')}",
                                        "regenerate the scenes with this flowzoo version"))
    shards = [path] if path.suffix == ".npz" else sorted(folder.glob("shard_*.npz"))
    if not shards:
        raise SceneSchemaError(expected(f"shard_*.npz files in {folder}", "none", "regenerate the scenes"))
    parts = []
    for shard in shards:
        with np.load(shard, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        _check_arrays(arrays, shard.name)
        parts.append(arrays)
    arrays = {key: _concat([p[key] for p in parts]) for key in SCHEMA}
    if arrays["trajectory"].shape[1] != meta["horizon"] or arrays["bev"].shape[1] != len(meta["channels"]):
        raise SceneSchemaError(expected(f"{meta['horizon']} poses and {len(meta['channels'])} channels (meta.json)",
                                        f"trajectory {arrays['trajectory'].shape}, bev {arrays['bev'].shape}",
                                        "make meta.json describe the arrays"))
    return arrays, meta


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate shards whose padded dimensions may differ (pad with NaN, or False for masks)."""
    shape = np.max([p.shape for p in parts], axis=0)
    fill = False if parts[0].dtype == bool else (np.nan if parts[0].dtype.kind == "f" else 0)
    return np.concatenate([np.pad(p, [(0, 0)] + [(0, s - d) for s, d in zip(shape[1:], p.shape[1:])],
                                  constant_values=fill) for p in parts])


def scene_arrays(arrays: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    """Scene ``index``'s arrays with the padding removed (the input of :func:`flowzoo.driving.metrics.evaluate_plans`
    after building the polygon)."""
    index = check_int(index, "index", low=0, high=len(arrays["bev"]) - 1)
    goals, agents = arrays["goal_mask"][index], arrays["agent_mask"][index]
    drivable = arrays["drivable"][index]
    return {"drivable": drivable[~np.isnan(drivable).any(-1)], "agent_boxes": arrays["agent_boxes"][index][agents],
            "agent_futures": arrays["agent_futures"][index][agents], "routes": arrays["routes"][index][goals],
            "goal_candidates": arrays["goal_candidates"][index][goals],
            "lanes": [lane[~np.isnan(lane).any(-1)] for lane in arrays["lanes"][index] if not np.isnan(lane).all()],
            **{key: arrays[key][index] for key in ("bev", "ego_state", "command", "trajectory", "goal_index",
                                                   "reference_progress", "kind", "scene_seed")}}


class SceneDataset(torch.utils.data.Dataset):
    """Scenes as training examples: ``{"x1": trajectory (T, 3), "bev": (C, H, W) float in [0, 1],
    "ego_state": (3,), "command": long, "goal": (3,)}`` (the flowzoo batch convention: ``x1`` is the data).

    Example:
        >>> ds = SceneDataset(generate_scenes(2, seed=1))
        >>> len(ds), ds[0]["x1"].shape, ds[0]["bev"].dtype
        (2, torch.Size([8, 3]), torch.float32)
    """

    def __init__(self, arrays: dict[str, np.ndarray]):
        _check_arrays(arrays, "the dataset's arrays")
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays["bev"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        a = self.arrays
        goal = a["goal_candidates"][index, int(a["goal_index"][index])]
        return {"x1": torch.from_numpy(a["trajectory"][index].copy()),
                "bev": torch.from_numpy(a["bev"][index].astype(np.float32) / 255.0),
                "ego_state": torch.from_numpy(a["ego_state"][index].copy()),
                "command": torch.tensor(int(a["command"][index])), "goal": torch.from_numpy(goal.copy())}
