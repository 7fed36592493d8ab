r"""The method registry of ``python -m flowzoo.vision.train``: name -> :class:`VisionMethod` (objective builder, flags).

Each entry names the paper it implements in its module: pixel flow matching (I-CFM, Lipman et al., arXiv 2210.02747,
Eq. 23; OT-CFM, Tong et al., arXiv 2302.00482, Alg. 2), SourceFM (Lee, Kim, Lee, TMLR 2025,
:mod:`flowzoo.vision.sourcefm`) and the core's few-step methods (:mod:`flowzoo.vision.fewstep`: MeanFlow, arXiv
2505.13447; SplitMeanFlow, arXiv 2507.16884; 2-rectified flow, arXiv 2209.03003; MF-RAE, arXiv 2511.13019). Time
runs from 0 (noise) to 1 (data) in all of them as written here. Rationale: one table that the entry point, its
``--help`` and the network builder read, so that a new method is one entry.

Example:
    >>> sorted(name for name, method in METHODS.items() if method.teacher)
    ['mfrae', 'reflow']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowzoo.core.couplings import get_coupling
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.vision.fewstep import MidTrainingThenDistillation, flowmap_objective, reflow_objective

__all__ = ["VisionMethod", "METHODS"]


@dataclass(frozen=True)
class VisionMethod:
    """One training method: a summary line and ``objective(cfg, num_classes, teacher) -> loss(model, batch)``.

    ``norm_aligned_source``: train (and sample) from SourceFM's norm-aligned Gaussian, whose scale is computed from
    the training images and stored with the checkpoint. ``flowmap``: the network is a two-time flow map
    (:class:`~flowzoo.core.nets.FlowMapUNet`, :class:`~flowzoo.vision.nets.FlowMapDiT`), sampled by jumps.
    ``teacher``: needs ``--teacher RUN`` (its velocity reaches the objective). ``pairs``: trains on (noise, image)
    pairs that the teacher's ODE produced, starting from the teacher's network and weights (reflow).
    """

    summary: str
    objective: Callable[..., Callable]
    norm_aligned_source: bool = False
    flowmap: bool = False
    teacher: bool = False
    pairs: bool = False


def _flow_matching(coupling: str) -> Callable[..., FlowMatchingLoss]:
    def build(cfg: Any, num_classes: int, teacher: Callable | None = None) -> FlowMatchingLoss:
        dropout = cfg.cond_dropout if cfg.class_cond else 0.0
        null = {"y": num_classes} if cfg.class_cond else None
        return FlowMatchingLoss(coupling=get_coupling(coupling), cond_dropout=dropout, null_cond=null)
    return build


def _mfrae(cfg: Any, num_classes: int, teacher: Callable | None = None) -> MidTrainingThenDistillation:
    null = {"y": num_classes} if cfg.class_cond else None
    return MidTrainingThenDistillation(teacher, round(cfg.mid_fraction * cfg.trainer.steps),
                                       teacher_steps=cfg.teacher_steps,
                                       cond_dropout=cfg.cond_dropout if cfg.class_cond else 0.0, null_cond=null)


METHODS: dict[str, VisionMethod] = {
    "icfm": VisionMethod("I-CFM: flow matching with independent noise-image pairs", _flow_matching("independent")),
    "otcfm": VisionMethod("OT-CFM: flow matching with minibatch exact-OT pairs", _flow_matching("exact_ot")),
    "sourcefm_icfm": VisionMethod("SourceFM I-CFM: I-CFM from the norm-aligned Gaussian source",
                                  _flow_matching("independent"), norm_aligned_source=True),
    "sourcefm_otcfm": VisionMethod("SourceFM OT-CFM: OT-CFM from the norm-aligned Gaussian source",
                                   _flow_matching("exact_ot"), norm_aligned_source=True),
    "meanflow": VisionMethod("MeanFlow: a flow map on the MeanFlow identity, exact JVP target",
                             flowmap_objective("meanflow"), flowmap=True),
    "meanflow_fd": VisionMethod("MeanFlow: the same with a finite-difference target (no forward-mode AD)",
                                flowmap_objective("meanflow_fd"), flowmap=True),
    "splitmeanflow": VisionMethod("SplitMeanFlow: a flow map on interval-splitting consistency",
                                  flowmap_objective("splitmeanflow"), flowmap=True),
    "reflow": VisionMethod("2-rectified flow: fine-tune --teacher on pairs of its own ODE", reflow_objective,
                           teacher=True, pairs=True),
    "mfrae": VisionMethod("MF-RAE's path: consistency mid-training, then MeanFlow distillation of --teacher",
                          _mfrae, flowmap=True, teacher=True),
}
"""Method name -> :class:`VisionMethod`; a later method adds one entry."""
