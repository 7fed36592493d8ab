"""SCOOP self-supervised scene flow: the training loss, test-time refinement and the glue to train and load.

SCOOP (Lang et al., CVPR 2023, arXiv 2211.14020) trains the correspondence model of
:mod:`flowzoo.three_d.scoop_model` with **no ground-truth flow** (§3.2, Eq. 5–7) on

    L = (1/N) Σ_i c_i · min_j ‖x_i + F_i − y_j‖²  [+ w_b · (1/M) Σ_j min_i ‖y_j − x_i − F_i‖²]
        + 0.1 · (1 − mean_i c_i) + 10 · (1/N) Σ_i (1/k) Σ_{l ∈ kNN(i)} ‖F_i − F_l‖₁,

a confidence-weighted Chamfer term (forward only by default, as for KITTI and FT3D_o), a term that keeps the
confidences c from collapsing to zero, and flow smoothness over the source's kNN graph (k = 32). At test time
(§3.3, Eq. 8) the network is frozen and a free per-point residual R (initialised at 0) is optimised with Adam
(lr 0.05, 1000 steps): F* = F + R minimising the confidence-weighted Chamfer(X + F*, Y) + 1 · smooth(F*).
Starting from F = 0 with the same objective is Neural Scene Flow Prior-style pure optimisation (Li et al.,
arXiv 2111.01253, without its MLP prior), a baseline.

Batch convention (a departure from flow matching, which this is not: no time, no path, no velocity): a batch
is ``{"x0": source scans (B, N, 3), "x1": target scans (B, M, 3)}`` — frame 1 is the source (time 0) and
frame 2 the target (time 1) of the library's convention — plus an optional per-scene ``"weight"`` ``(B,)``;
the model is called ``model(x0, x1)`` and returns a :class:`~flowzoo.three_d.scoop_model.SceneFlowEstimate`.
Scans are in metres; the flow of a source point is its displacement to the target frame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowzoo.core.errors import CheckpointError, ConfigError, ShapeError, expected
from flowzoo.core.validation import check_int, check_nonnegative, check_positive, check_tensor
from flowzoo.core.training import Trainer, TrainerConfig, TrainResult, read_checkpoint

from flowzoo.three_d.scene_pairs import make_scene_flow_pair
from flowzoo.three_d.ops import check_points, gather_points, knn
from flowzoo.three_d.scoop_model import SCOOPModel

__all__ = ["MAX_SCALE_RATIO", "scan_scale", "check_scan_pair", "nearest_squared", "flow_smoothness", "SCOOPLoss",
           "RefinedFlow", "refine_flow", "estimate_flow", "estimate_flows", "SceneSet", "make_scene_set",
           "scene_batch_sampler", "train_scoop", "load_scoop"]

MAX_SCALE_RATIO = 10.0  # two scans of one scene never differ in extent by 10×; a unit mix-up (m vs mm) does


def scan_scale(points: torch.Tensor) -> torch.Tensor:
    """Root-mean-square distance of each scan's points ``(B, N, 3)`` to its centroid, ``(B,)``.

    Example:
        >>> scan_scale(torch.tensor([[[1.0, 0, 0], [-1.0, 0, 0]]])).tolist()
        [1.0]
    """
    return (points - points.mean(dim=1, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()


def check_scan_pair(points_a: object, points_b: object, *, names: tuple[str, str] = ("points_a", "points_b"),
                    max_scale_ratio: float = MAX_SCALE_RATIO) -> tuple[torch.Tensor, torch.Tensor]:
    """Two scans checked as finite, non-empty ``(B, N, 3)`` / ``(B, M, 3)`` clouds (``(N, 3)`` gains a batch
    dimension) with the same batch size and extents within ``max_scale_ratio`` of each other.

    Raises:
        ConfigError: the scans' scales differ by more than ``max_scale_ratio`` (the message names both).

    Example:
        >>> a, b = check_scan_pair(torch.rand(20, 3), torch.rand(30, 3))
        >>> a.shape, b.shape
        (torch.Size([1, 20, 3]), torch.Size([1, 30, 3]))
    """
    scans = []
    for name, scan in zip(names, (points_a, points_b)):
        scan = check_tensor(scan, name, min_dim=2)
        scans.append(check_points(scan[None] if scan.dim() == 2 else scan, name))
    a, b = scans
    if a.shape[0] != b.shape[0]:
        raise ShapeError(expected(f"{names[0]} and {names[1]} with the same batch size",
                                  f"{a.shape[0]} and {b.shape[0]}", "pair scan i of one with scan i of the other"))
    scale_a, scale_b = scan_scale(a), scan_scale(b)
    ratio = torch.maximum(scale_a, scale_b) / torch.minimum(scale_a, scale_b).clamp(min=1e-12)
    worst = int(ratio.argmax())
    if float(ratio[worst]) > max_scale_ratio:
        raise ConfigError(expected(
            f"two scans of one scene at the same scale (extents within {max_scale_ratio:g}x)",
            f"{names[0]} spans {float(scale_a[worst]):.4g} and {names[1]} {float(scale_b[worst]):.4g} "
            f"(rms radius, ratio {float(ratio[worst]):.3g})",
            "express both scans in the same unit (e.g. metres), or pass them in the right order"))
    return a, b


def nearest_squared(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared distance of each point of ``x`` ``(B, N, 3)`` to its nearest point of ``y`` ``(B, M, 3)``, ``(B, N)``;
    differentiable in both (the neighbour is chosen without gradient, the distance recomputed exactly).

    Example:
        >>> nearest_squared(torch.zeros(1, 1, 3), torch.tensor([[[0.0, 0, 2], [0.0, 3, 0]]])).tolist()
        [[4.0]]
    """
    with torch.no_grad():
        index = torch.cdist(x, y).argmin(dim=-1)
    return (x - gather_points(y, index)).pow(2).sum(-1)


def flow_smoothness(flow: torch.Tensor, neighbors: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """SCOOP's smoothness per scan ``(B,)``: the mean over points and their ``k`` graph neighbours (the first
    column of ``neighbors``, the point itself, skipped) of the L1 norm of the flow difference.

    Example:
        >>> flow = torch.tensor([[[0.0, 0, 0], [1.0, 1, 0]]]); nb = torch.tensor([[[0, 1], [1, 0]]])
        >>> flow_smoothness(flow, nb).tolist()
        [2.0]
    """
    others = neighbors[..., 1:] if k is None else neighbors[..., 1:k + 1]
    if others.shape[-1] == 0:
        return flow.new_zeros(flow.shape[0])
    return (flow[:, :, None] - gather_points(flow, others)).abs().sum(-1).mean(dim=(1, 2))


def _weighted_chamfer(moved: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None,
                      backward_weight: float) -> torch.Tensor:
    forward = nearest_squared(moved, target)
    forward = (forward if weights is None else forward * weights).mean(-1)
    if backward_weight > 0:
        forward = forward + backward_weight * nearest_squared(target, moved).mean(-1)
    return forward


@dataclass
class SCOOPLoss:
    """SCOOP's self-supervised loss (module doc, Eq. 5–7) on a batch ``{"x0": source, "x1": target}``.

    Args:
        confidence_weight: weight of 1 − mean confidence (SCOOP: 0.1).
        smoothness_weight: weight of the flow smoothness (SCOOP: 10).
        smoothness_neighbors: graph neighbours of the smoothness term (SCOOP: 32; at most the model's k − 1).
        backward_weight: weight of the target → prediction Chamfer direction (0 for scans with occlusions).

    Returns ``(loss, {"chamfer", "confidence", "smoothness"})``.

    Example:
        >>> from flowzoo.three_d.scoop_model import SCOOPModel
        >>> model = SCOOPModel(channels=4, neighbors=4, top_k=3)
        >>> loss, logs = SCOOPLoss()(model, {"x0": torch.rand(2, 16, 3), "x1": torch.rand(2, 16, 3)})
        >>> loss.dim(), sorted(logs)
        (0, ['chamfer', 'confidence', 'smoothness'])
    """

    confidence_weight: float = 0.1
    smoothness_weight: float = 10.0
    smoothness_neighbors: int = 32
    backward_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("confidence_weight", "smoothness_weight", "backward_weight"):
            setattr(self, name, check_nonnegative(getattr(self, name), name))
        self.smoothness_neighbors = check_int(self.smoothness_neighbors, "smoothness_neighbors", low=1)

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor,
                                                                                            dict[str, float]]:
        if not isinstance(batch, Mapping) or "x0" not in batch or "x1" not in batch:
            raise ConfigError(expected("a batch {'x0': source scans (B, N, 3), 'x1': target scans (B, M, 3)}",
                                       type(batch).__name__ if not isinstance(batch, Mapping) else sorted(batch),
                                       "build batches with scene_batch_sampler"))
        source, target = batch["x0"], batch["x1"]
        estimate = model(source, target)
        chamfer = _weighted_chamfer(estimate.matched, target, estimate.confidence, self.backward_weight)
        confidence = estimate.confidence.mean(-1)
        smooth = flow_smoothness(estimate.flow, estimate.neighbors, self.smoothness_neighbors)
        per_scene = chamfer + self.confidence_weight * (1.0 - confidence) + self.smoothness_weight * smooth
        weight = batch.get("weight")
        loss = per_scene.mean() if weight is None else (per_scene * weight).sum() / weight.sum().clamp(min=1e-12)
        return loss, {"chamfer": float(chamfer.detach().mean()), "confidence": float(confidence.detach().mean()),
                      "smoothness": float(smooth.detach().mean())}


@dataclass
class RefinedFlow:
    """The result of :func:`refine_flow`: the refined ``flow`` ``(B, N, 3)`` and the objective before each Adam
    step, ``losses`` (one float per step, the mean over the batch)."""

    flow: torch.Tensor
    losses: list[float] = field(default_factory=list)


def refine_flow(points_a: torch.Tensor, points_b: torch.Tensor, initial_flow: torch.Tensor | None = None, *,
                steps: int = 1000, lr: float = 0.05, smoothness: float = 1.0, neighbors: int = 32,
                weights: torch.Tensor | None = None, backward_weight: float = 0.0,
                progress: Callable[[int, float], None] | None = None) -> RefinedFlow:
    """Test-time refinement (module doc, Eq. 8): Adam on a free residual R, F* = ``initial_flow`` + R, minimising
    the (``weights``-weighted, e.g. by the model's confidence) Chamfer(a + F*, b) + ``smoothness`` · smooth(F*)
    over the kNN graph of ``points_a``. ``initial_flow=None`` starts from zero (pure optimisation).

    ``progress(step, loss)`` is called after each step. The scans are checked once with :func:`check_scan_pair`.

    Example:
        >>> a = torch.rand(1, 64, 3, generator=torch.Generator().manual_seed(0))
        >>> shift = torch.tensor([0.1, 0.0, 0.0])
        >>> out = refine_flow(a, a + shift, steps=200, lr=0.02, neighbors=8)
        >>> bool((out.flow - shift).norm(dim=-1).mean() < 0.01), out.losses[-1] < out.losses[0]
        (True, True)
    """
    a, b = check_scan_pair(points_a, points_b)
    steps = check_int(steps, "steps", low=0)
    lr = check_positive(lr, "lr")
    smoothness = check_nonnegative(smoothness, "smoothness")
    backward_weight = check_nonnegative(backward_weight, "backward_weight")
    neighbors = check_int(neighbors, "neighbors", low=1)
    start = torch.zeros_like(a) if initial_flow is None else check_tensor(initial_flow, "initial_flow").detach()
    if start.dim() == 2:
        start = start[None]
    if start.shape != a.shape:
        raise ShapeError(expected(f"initial_flow shaped like points_a {tuple(a.shape)}", tuple(start.shape),
                                  "pass one flow vector per point of the first scan"))
    if weights is not None:
        weights = check_tensor(weights, "weights").detach().reshape(a.shape[:2])
    graph = knn(a, a, min(neighbors + 1, a.shape[1]))[1] if smoothness > 0 else None
    residual = torch.zeros_like(a, requires_grad=True)
    optimizer = torch.optim.Adam([residual], lr=lr)
    losses = []
    with torch.enable_grad():
        for step in range(steps):
            flow = start + residual
            loss = _weighted_chamfer(a + flow, b, weights, backward_weight)
            if graph is not None:
                loss = loss + smoothness * flow_smoothness(flow, graph)
            loss = loss.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step, losses[-1])
    return RefinedFlow((start + residual).detach(), losses)


@torch.no_grad()
def estimate_flow(model: SCOOPModel | None, points_a: torch.Tensor, points_b: torch.Tensor, *,
                  refine_steps: int = 0, lr: float = 0.05, smoothness: float = 1.0, neighbors: int = 32,
                  progress: Callable[[int, float], None] | None = None) -> torch.Tensor:
    """Scene flow ``(B, N, 3)`` of ``points_a`` towards ``points_b``: the model's correspondence flow, then
    ``refine_steps`` of confidence-weighted refinement; ``model=None`` refines from zero (needs steps > 0).

    Example:
        >>> model = SCOOPModel(channels=4, neighbors=4, top_k=3).eval()
        >>> estimate_flow(model, torch.rand(1, 16, 3), torch.rand(1, 16, 3), refine_steps=2).shape
        torch.Size([1, 16, 3])
    """
    if isinstance(points_a, (list, tuple)) or isinstance(points_b, (list, tuple)):
        raise ConfigError(expected("scans as one batch tensor (B, N, 3) or one scan (N, 3)", "a list of scans",
                                   "stack scans of one size into a tensor, or call estimate_flows(model, scans_a, "
                                   "scans_b) for scans of unequal point counts"))
    a, b = check_scan_pair(points_a, points_b)
    refine_steps = check_int(refine_steps, "refine_steps", low=0)
    if model is None and refine_steps == 0:
        raise ConfigError(expected("a model, or refine_steps > 0", "model=None and refine_steps=0",
                                   "pass a trained SCOOPModel or ask for refinement steps"))
    flow, weights = None, None
    if model is not None:
        estimate = model(a, b)
        flow, weights = estimate.flow, estimate.confidence
    if refine_steps == 0:
        return flow
    return refine_flow(a, b, flow, steps=refine_steps, lr=lr, smoothness=smoothness, neighbors=neighbors,
                       weights=weights, progress=progress).flow


def estimate_flows(model: SCOOPModel | None, scans_a: Sequence[torch.Tensor], scans_b: Sequence[torch.Tensor],
                   **options: Any) -> list[torch.Tensor]:
    """Scene flows of scan pairs whose point counts differ from pair to pair: one ``(N_i, 3)`` flow per pair.

    Each pair runs on its own through :func:`estimate_flow` (``options``: refine_steps, lr, ...), so no padding
    enters the kNN graphs, the transport plan or the refinement's Chamfer term.

    Example:
        >>> model = SCOOPModel(channels=4, neighbors=4, top_k=3).eval()
        >>> scans_a, scans_b = [torch.rand(16, 3), torch.rand(24, 3)], [torch.rand(20, 3), torch.rand(24, 3)]
        >>> flows = estimate_flows(model, scans_a, scans_b)
        >>> [tuple(f.shape) for f in flows]
        [(16, 3), (24, 3)]
    """
    lists = isinstance(scans_a, (list, tuple)) and isinstance(scans_b, (list, tuple))
    if not lists or len(scans_a) != len(scans_b):
        raise ShapeError(expected("two lists of scans of one length (pair i = scans_a[i], scans_b[i])",
                                  f"{type(scans_a).__name__} of {_length(scans_a)} and {type(scans_b).__name__} of "
                                  f"{_length(scans_b)}", "pass one target scan per source scan"))
    flows = []
    for i, (a, b) in enumerate(zip(scans_a, scans_b)):
        a, b = check_scan_pair(a, b, names=(f"scans_a[{i}]", f"scans_b[{i}]"))
        if a.shape[0] != 1:
            raise ShapeError(expected(f"scans_a[{i}] as one scan (N, 3)", tuple(a.shape), "pass scans, not batches"))
        flows.append(estimate_flow(model, a, b, **options)[0])
    return flows


def _length(value: object) -> object:
    return len(value) if isinstance(value, (list, tuple)) else "?"


@dataclass
class SceneSet:
    """Generated scene-flow pairs stacked as tensors: ``source``, ``target`` ``(S, N, 3)``, ground-truth ``flow``
    ``(S, N, 3)`` and ``valid`` ``(S, N)`` (the flow is for evaluation only; training never sees it)."""

    source: torch.Tensor
    target: torch.Tensor
    flow: torch.Tensor
    valid: torch.Tensor

    def __len__(self) -> int:
        return self.source.shape[0]


def make_scene_set(n_scenes: int, *, seed: int = 0, n_points: int = 1024, **scene_options: object) -> SceneSet:
    """``n_scenes`` pairs of :func:`flowzoo.three_d.scene_pairs.make_scene_flow_pair` from one seeded generator.

    Example:
        >>> scenes = make_scene_set(2, n_points=64)
        >>> len(scenes), scenes.source.shape
        (2, torch.Size([2, 64, 3]))
    """
    n_scenes = check_int(n_scenes, "n_scenes", low=1)
    rng = np.random.default_rng(seed)
    pairs = [make_scene_flow_pair(rng, n_points=n_points, **scene_options) for _ in range(n_scenes)]

    def stack(name: str) -> torch.Tensor:
        return torch.as_tensor(np.stack([getattr(p, name) for p in pairs]))

    return SceneSet(stack("pc1"), stack("pc2"), stack("flow"), stack("valid"))


def scene_batch_sampler(scenes: SceneSet, batch_size: int) -> Callable[[torch.Generator], dict[str, torch.Tensor]]:
    """A Trainer data callable: ``sample(generator) -> {"x0": sources, "x1": targets}`` of ``batch_size`` scenes
    drawn with replacement.

    Example:
        >>> sample = scene_batch_sampler(make_scene_set(3, n_points=32), 2)
        >>> sample(torch.Generator().manual_seed(0))["x0"].shape
        torch.Size([2, 32, 3])
    """
    batch_size = check_int(batch_size, "batch_size", low=1)

    def sample(generator: torch.Generator) -> dict[str, torch.Tensor]:
        index = torch.randint(len(scenes), (batch_size,), generator=generator)
        return {"x0": scenes.source[index], "x1": scenes.target[index]}

    return sample


def train_scoop(scenes: SceneSet, config: TrainerConfig, *, model: SCOOPModel | None = None,
                loss: SCOOPLoss | None = None, run_config: object = None) -> tuple[SCOOPModel, TrainResult]:
    """Train a SCOOP model (default settings unless ``model``) on ``scenes`` with the core Trainer; returns the
    model carrying the EMA weights when the run keeps an EMA (else the trained weights), and the run's result.

    Example:
        >>> import tempfile
        >>> cfg = TrainerConfig(steps=2, batch_size=2, out_dir=tempfile.mkdtemp(), progress=False, tensorboard=False)
        >>> model, result = train_scoop(make_scene_set(2, n_points=32), cfg, model=SCOOPModel(4, 4, 4))
        >>> result.step
        2
    """
    model = SCOOPModel() if model is None else model
    trainer = Trainer(model, loss or SCOOPLoss(), scene_batch_sampler(scenes, config.batch_size), config,
                      run_config=run_config)
    result = trainer.fit()
    if result.checkpoint is not None:
        return load_scoop(result.checkpoint), result
    return model.eval(), result


def load_scoop(run: str | Path, *, ema: bool = True) -> SCOOPModel:
    """A :class:`SCOOPModel` rebuilt from a checkpoint (a step directory or a run's ``out_dir``): the EMA weights
    when present and ``ema``, in eval mode on the CPU.

    Raises:
        CheckpointError: the checkpoint does not hold a SCOOP model.
    """
    checkpoint = read_checkpoint(run)
    weights = checkpoint.ema if (ema and checkpoint.ema is not None) else checkpoint.model
    if "settings" not in weights:
        raise CheckpointError(expected("a checkpoint of a SCOOP model (a 'settings' entry in its weights)",
                                       f"{checkpoint.path} without one", "pass a run trained with method scoop"))
    channels, neighbors, top_k, max_distance, iterations = weights["settings"].tolist()
    model = SCOOPModel(int(channels), int(neighbors), int(top_k), float(max_distance), int(iterations))
    model.load_state_dict(weights)
    return model.eval()
