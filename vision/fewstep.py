r"""The core's few-step methods on images: the objectives of ``python -m flowzoo.vision.train`` and their samplers.

Image glue only; the methods themselves live in :mod:`flowzoo.core.fewstep` (flowzoo time: 0 = Gaussian noise,
1 = data, as in every module cited here; each core module maps its paper's convention in its own docstring).

Training objectives (:func:`flowmap_objective`, :func:`reflow_objective`, :class:`MidTrainingThenDistillation`):

* ``meanflow`` / ``meanflow_fd``: MeanFlow (Geng et al., arXiv 2505.13447, Eq. 6 and 9), the flow map
  :math:`u_\theta(x_s, s, t)` regressed onto :math:`v + (t - s)\,du_\theta/ds`, the total derivative taken
  exactly by forward-mode AD (JVP) or by MF-RAE's central finite difference (arXiv 2511.13019, §3.3).
* ``splitmeanflow``: SplitMeanFlow's interval-splitting consistency (Guo et al., arXiv 2507.16884, Alg. 1).
* ``reflow``: 2-rectified flow (Liu, Gong, Liu, arXiv 2209.03003, Alg. 1): flow matching on (noise, image) pairs
  that a teacher run's ODE produced, fine-tuning the teacher's own network.
* ``mfrae``: MF-RAE's path in pixel space (arXiv 2511.13019, §3): consistency mid-training on chords of the
  teacher's trajectories, then MeanFlow distillation with the teacher's velocity and a finite-difference
  derivative, in pixel space here; the latent path in RAE's representation autoencoder is
  :mod:`flowzoo.vision.latent` (``lfm --objective mfrae``, :mod:`flowzoo.vision.representation`).

Samplers (:func:`sample_chunk`, used by :func:`flowzoo.vision.sampling.generate`): flow-map runs jump with
:func:`~flowzoo.core.fewstep.flowmap_sample` (one evaluation per jump); velocity runs integrate with a core solver,
on BOSS's Bellman-optimal time grid (Nguyen et al., arXiv 2312.16414, §3.1-3.2; phase 1 only, without the
straightening fine-tune) or with FlowTurbo's Heun + pseudo-corrector steps (Zhao et al., arXiv 2409.18128,
Eq. 8). Guidance is constant classifier-free guidance (Ho & Salimans, arXiv 2207.12598) or RAAG's
ratio-aware scale :math:`w = 1 + (w_{\max} - 1)e^{-\alpha\rho}` (Zhu et al., arXiv 2508.03442).

Rationale: every image method reuses the core's objective and sampler, so a fix in the core reaches the images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.fewstep import (MANIFEST_NAME, ConsistencyMidTrainingLoss, MeanFlowLoss, PairStore, ReflowLoss,
                                  SplitMeanFlowLoss, TwoTimeSampler, boss_time_grid, flowmap_sample, flowturbo_sample,
                                  generate_pairs, splitmeanflow_settings)
from flowzoo.core.nets import FlowMapUNet, UNet
from flowzoo.core.sampling import ClassifierFreeGuidance, RatioAwareGuidance, integrate
from flowzoo.core.validation import check_positive_int
from flowzoo.vision.blockwise import blockwise_sample
from flowzoo.vision.blockwise_nets import BlockwiseVelocity
from flowzoo.vision.nets import FlowMapDiT

__all__ = ["SOLVERS", "SAMPLERS", "GUIDANCES", "is_flowmap", "flowmap_objective", "reflow_objective",
           "MidTrainingThenDistillation", "check_teacher", "FrozenTeacher", "reflow_pairs", "PairBatchSampler",
           "guided", "boss_grid", "sample_chunk"]

Tensor = torch.Tensor
SOLVERS = ("euler", "midpoint", "heun", "rk4", "dopri5")
"""The core's ODE solvers (:func:`~flowzoo.core.sampling.integrate`)."""
SAMPLERS = (*SOLVERS, "boss", "flowturbo")
"""Samplers of a velocity run: the solvers, BOSS's Euler on a Bellman-optimal grid, FlowTurbo."""
GUIDANCES = ("cfg", "raag")
"""Classifier-free guidance with a constant scale, or RAAG's ratio-aware scale."""


def is_flowmap(model: nn.Module) -> bool:
    """Whether ``model`` is a two-time flow map ``u(x, s, t, y)`` (sampled by jumps) rather than a velocity.

    Example:
        >>> is_flowmap(FlowMapUNet(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16))
        True
    """
    return isinstance(getattr(model, "module", model), (FlowMapUNet, FlowMapDiT))


def _conditioning(cfg: Any, num_classes: int) -> dict[str, Any]:
    if not cfg.class_cond:
        return {}
    return {"cond_dropout": cfg.cond_dropout, "null_cond": {"y": num_classes}}


def flowmap_objective(kind: str) -> Callable[..., Callable]:
    """The builder ``(cfg, num_classes, teacher=None) -> loss`` of a flow-map method trained from scratch.

    ``kind``: ``"meanflow"`` (JVP target), ``"meanflow_fd"`` (finite-difference target) or ``"splitmeanflow"``.
    MeanFlow keeps 25 % of pairs with s < t (MeanFlow's ImageNet share, which also suited the 64-D digits in
    :func:`~flowzoo.core.fewstep.meanflow_settings`' notes) with logit-normal times shifted towards the data;
    SplitMeanFlow uses :func:`~flowzoo.core.fewstep.splitmeanflow_settings` for its dimension.

    Example:
        >>> from types import SimpleNamespace
        >>> build = flowmap_objective("meanflow_fd")
        >>> build(SimpleNamespace(class_cond=False), 0).derivative
        'finite_difference'
    """
    if kind not in ("meanflow", "meanflow_fd", "splitmeanflow"):
        raise ConfigError(expected("meanflow, meanflow_fd or splitmeanflow", repr(kind), "pick one of those"))

    def build(cfg: Any, num_classes: int, teacher: Callable | None = None) -> Callable:
        if kind == "splitmeanflow":
            return SplitMeanFlowLoss(**splitmeanflow_settings(dim=64), teacher=teacher,
                                     **_conditioning(cfg, num_classes))
        derivative = "jvp" if kind == "meanflow" else "finite_difference"
        sampler = TwoTimeSampler(mean=0.4, std=1.0, distinct_fraction=0.25)
        return MeanFlowLoss(time_sampler=sampler, adaptive_p=0.5, derivative=derivative, teacher=teacher,
                            **_conditioning(cfg, num_classes))
    return build


def reflow_objective(cfg: Any, num_classes: int, teacher: Callable | None = None) -> ReflowLoss:
    """2-rectified flow's loss on the teacher's pairs (U-shaped times, Lee, Lin, Fanti, arXiv 2405.20320).

    Example:
        >>> from types import SimpleNamespace
        >>> reflow_objective(SimpleNamespace(class_cond=False), 0).cond_dropout
        0.0
    """
    return ReflowLoss(**_conditioning(cfg, num_classes))


class MidTrainingThenDistillation:
    r"""MF-RAE's schedule: consistency mid-training for the first ``mid_steps`` updates, then MeanFlow distillation.

    Phase 1 (:class:`~flowzoo.core.fewstep.ConsistencyMidTrainingLoss`) regresses the flow map on chords
    :math:`(x_{t_j} - x_{t_i})/(t_j - t_i)` of the teacher's ``teacher_steps``-step Euler trajectories; phase 2
    (:class:`~flowzoo.core.fewstep.MeanFlowLoss` with ``teacher``) the MeanFlow identity with the teacher's
    velocity, by MF-RAE's central finite difference (δ = 5e-3) and 25 % pairs s < t (arXiv 2511.13019, §3).
    The phase follows ``step()`` (the Trainer's update count), so a resumed run picks up the right phase.

    Example:
        >>> teacher = lambda x, t, **c: torch.ones_like(x)
        >>> objective = MidTrainingThenDistillation(teacher, mid_steps=1, step=lambda: 0)
        >>> loss, metrics = objective(lambda x, s, t: torch.ones_like(x), {"x1": torch.zeros(4, 1, 2, 2)})
        >>> metrics["phase"], loss.item() < 1e-12
        (0.0, True)
    """

    def __init__(self, teacher: Callable[..., Tensor], mid_steps: int, step: Callable[[], int] | None = None,
                 teacher_steps: int = 16, cond_dropout: float = 0.0,
                 null_cond: Mapping[str, object] | None = None):
        self.mid_steps = int(mid_steps)
        self.step = step if step is not None else (lambda: 0)
        self.mid = ConsistencyMidTrainingLoss(teacher, steps=teacher_steps, pairs_per_sample=4)
        self.distill = MeanFlowLoss(time_sampler=TwoTimeSampler(mean=0.4, distinct_fraction=0.25), adaptive_p=0.5,
                                    derivative="finite_difference", teacher=teacher, cond_dropout=cond_dropout,
                                    null_cond=null_cond)

    def __repr__(self) -> str:
        return f"MidTrainingThenDistillation(mid_steps={self.mid_steps}, mid={self.mid!r}, distill={self.distill!r})"

    def __call__(self, model, batch: Mapping[str, Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        mid = int(self.step()) < self.mid_steps
        loss, metrics = (self.mid if mid else self.distill)(model, batch, generator=generator)
        return loss, {**metrics, "phase": 0.0 if mid else 1.0}


def check_teacher(teacher: Any, shape, num_classes: int, class_cond: bool, run: str) -> None:
    """Refuse a teacher run that cannot teach this student: a flow map, another image shape or class count, a
    conditioning that differs, or a SourceFM source (the students start from the standard Gaussian).

    ``teacher`` is a :class:`~flowzoo.vision.train.TrainedImageModel`; ``run`` names it in the message.
    """
    fix = "pass --teacher RUN of an icfm or otcfm run trained on the same --data (and --class_cond)"
    if is_flowmap(teacher.model):
        raise ConfigError(expected("a velocity teacher (icfm, otcfm)", f"{run} is a {teacher.config.method} "
                                   "flow map", fix))
    if tuple(teacher.shape) != tuple(shape):
        raise ShapeError(expected(f"a teacher of images shaped {tuple(shape)}",
                                  f"{run} trained on {teacher.config.data} images {tuple(teacher.shape)}", fix))
    if teacher.class_cond != bool(class_cond) or (class_cond and teacher.num_classes != num_classes):
        raise ConfigError(expected(f"a teacher with class_cond={bool(class_cond)} over {num_classes} classes",
                                   f"{run}: class_cond={teacher.class_cond}, {teacher.num_classes} classes", fix))
    if teacher.source_scale != 1.0:
        raise ConfigError(expected("a teacher trained from the standard Gaussian",
                                   f"{run} ({teacher.config.method}, source scale {teacher.source_scale:.4g})", fix))


class FrozenTeacher(nn.Module):
    """A frozen velocity network that follows its input to the input's device (the Trainer picks the device only
    when it starts), called without gradient.

    Example:
        >>> net = UNet(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16)
        >>> teacher = FrozenTeacher(net)
        >>> teacher(torch.ones(2, 1, 8, 8), torch.zeros(2)).requires_grad
        False
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval().requires_grad_(False)

    def forward(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        weight = next(self.model.parameters(), None)
        if weight is not None and weight.device != x.device:
            self.model.to(x.device)
        with torch.no_grad():
            return self.model(x, t, **cond)


def reflow_pairs(teacher: nn.Module, data: Any, folder: Path, *, n: int = 0, steps: int = 16, seed: int = 0,
                 labels: bool = False, progress: bool = False) -> dict[str, Tensor]:
    """The teacher's (noise, image) pairs for reflow, written once into ``folder`` (reused when it holds a finished
    store, e.g. on resume): ``n`` pairs (0: one per image of ``data``) by ``steps`` Euler steps, with class labels
    drawn from ``data``'s when ``labels``.

    Example:
        >>> import tempfile
        >>> from types import SimpleNamespace
        >>> data = SimpleNamespace(shape=(1, 8, 8), labels=None)
        >>> net = UNet(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16)
        >>> pairs = reflow_pairs(net, data, Path(tempfile.mkdtemp()) / "pairs", n=3, steps=2)
        >>> sorted(pairs), tuple(pairs["x1"].shape)
        (['x0', 'x1'], (3, 1, 8, 8))
    """
    if (folder / MANIFEST_NAME).exists():
        return PairStore(folder).tensors()
    n = n or len(data)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((n, *data.shape), generator=generator)
    cond = {"y": data.labels[torch.randint(0, len(data.labels), (n,), generator=generator)]} if labels else None
    return generate_pairs(teacher, noise, out_dir=folder, method="euler", steps=steps, cond=cond, chunk_size=1024,
                          progress=progress).tensors()


class PairBatchSampler:
    """A Trainer batch sampler over stored pairs: ``sampler(generator) -> {"x0", "x1"[, "y"]}`` drawn uniformly.

    Example:
        >>> pairs = {"x0": torch.zeros(5, 1, 2, 2), "x1": torch.ones(5, 1, 2, 2)}
        >>> sorted(PairBatchSampler(pairs, 3)(torch.Generator().manual_seed(0)))
        ['x0', 'x1']
    """

    def __init__(self, pairs: Mapping[str, Tensor], batch_size: int):
        self.pairs = {("y" if key == "cond.y" else key): value for key, value in pairs.items()}
        self.batch_size = check_positive_int(batch_size, "batch_size")

    def __call__(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        index = torch.randint(0, len(self.pairs["x1"]), (self.batch_size,), generator=generator)
        return {key: value[index] for key, value in self.pairs.items()}


def guided(model: nn.Module, cfg_scale: float, guidance: str, null_class: int | None,
           raag_alpha: float = 1.0) -> Callable[..., Tensor]:
    """The velocity to sample: ``model`` itself, or wrapped in constant CFG (``"cfg"``) or RAAG (``"raag"``) with
    maximal scale ``cfg_scale``. A scale of 1 with ``"cfg"`` is the conditional model alone.

    Example:
        >>> net = lambda x, t, y=None: x * (y[:, None] == 10)
        >>> guided(net, 2.0, "raag", 10, raag_alpha=0.0)(torch.ones(1, 1), torch.zeros(1), y=torch.tensor([3]))
        tensor([[-1.]])
    """
    if guidance not in GUIDANCES:
        raise ConfigError(expected(f"guidance in {GUIDANCES}", repr(guidance), "pass --guidance cfg or raag"))
    if guidance == "cfg" and cfg_scale == 1.0:
        return model
    scale = cfg_scale if guidance == "cfg" else RatioAwareGuidance(max_scale=cfg_scale, alpha=raag_alpha)
    return ClassifierFreeGuidance(model, scale=scale, null_cond={"y": null_class})


def boss_grid(velocity: Callable[..., Tensor], noise: Tensor, steps: int, cond: Mapping[str, Tensor] | None = None,
              fine_steps: int = 100, probes: int = 64) -> Tensor:
    """BOSS's ``steps``-jump time grid for ``velocity`` from a fine Euler reference on ``probes`` noise rows.

    Example:
        >>> grid = boss_grid(lambda x, t: -x * 3 * t[:, None, None, None] ** 2, torch.randn(8, 1, 2, 2), 2,
        ...                  fine_steps=20)
        >>> len(grid), float(grid[0]), float(grid[-1])
        (3, 0.0, 1.0)
    """
    rows = slice(0, min(probes, len(noise)))
    sub = {k: v[rows] for k, v in (cond or {}).items()}
    return boss_time_grid(velocity, noise[rows], num_steps=steps, fine_steps=max(fine_steps, steps), cond=sub)


def sample_chunk(model: Callable[..., Tensor], noise: Tensor, *, steps: int, method: str, flowmap: bool,
                 cond: Mapping[str, Tensor] | None = None, time_grid: Tensor | None = None,
                 refiner: Callable[..., Tensor] | None = None, refiner_steps: int = 0) -> tuple[Tensor, int]:
    """Carry ``noise`` (t = 0) to images (t = 1); returns ``(images, model evaluations per image)``.

    A flow map jumps ``steps`` uniform intervals; a blockwise (BFM) velocity walks its segments with Euler or Heun
    (:func:`~flowzoo.vision.blockwise.blockwise_sample`, ``steps`` shared over them); a velocity integrates with
    ``method`` (``time_grid``: BOSS's
    grid, Euler on it) or FlowTurbo (one Heun step, then ``steps - 2`` pseudo-corrector steps: ``steps`` NFE, then
    ``refiner_steps`` steps of ``refiner``, FlowTurbo's velocity refiner, which cost no evaluation of ``model``).

    Example:
        >>> x, nfe = sample_chunk(lambda x, t: torch.ones_like(x), torch.zeros(2, 1, 2, 2), steps=4,
        ...                       method="flowturbo", flowmap=False)
        >>> nfe, float(x.mean())
        (4, 1.0)
    """
    cond = dict(cond or {})
    if flowmap:
        result = flowmap_sample(model, noise, steps=steps, cond=cond)
    elif isinstance(model, BlockwiseVelocity) and method in ("euler", "heun"):   # a grid with BFM's boundaries
        result = blockwise_sample(model, noise, steps=steps, method=method, cond=cond)
    elif method == "boss":
        result = integrate(model, noise, method="euler", time_grid=time_grid, cond=cond)
    elif method == "flowturbo":
        if steps < 2:
            raise ConfigError(expected("--steps >= 2 for flowturbo (a Heun step costs 2 evaluations)", steps,
                                       "pass --steps 2 or more"))
        result = flowturbo_sample(model, noise, heun_steps=1, pseudo_steps=steps - 2, refiner_steps=refiner_steps,
                                  refiner=refiner, cond=cond)
    else:
        result = integrate(model, noise, method=method, steps=steps, cond=cond)
    return result.x, int(result.nfe)
