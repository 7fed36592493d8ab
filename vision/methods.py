r"""The method registry of ``python -m flowzoo.vision.train``: name -> :class:`VisionMethod` (objective builder, flags).

Each entry names the paper it implements in its module: pixel flow matching (I-CFM, Lipman et al., arXiv 2210.02747,
Eq. 23; OT-CFM, Tong et al., arXiv 2302.00482, Alg. 2), SourceFM (Lee, Kim, Lee, TMLR 2025,
:mod:`flowzoo.vision.sourcefm`) and the core's few-step methods (:mod:`flowzoo.vision.fewstep`: MeanFlow, arXiv
2505.13447; SplitMeanFlow, arXiv 2507.16884; 2-rectified flow, arXiv 2209.03003; MF-RAE, arXiv 2511.13019;
FlowTurbo's refiner, arXiv 2409.18128, :mod:`flowzoo.vision.refiner`) and blockwise FM (BFM, arXiv 2510.21167,
:mod:`flowzoo.vision.blockwise`). Time runs from 0 (noise) to 1 (data) in
all of them as written here. Rationale: one table that the entry point, its ``--help`` and the network builder
read, so that a new method is one entry.

Example:
    >>> sorted(name for name, method in METHODS.items() if method.teacher)
    ['mfrae', 'refiner', 'reflow']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowzoo.core.couplings import get_coupling
from flowzoo.core.fewstep import RefinerLoss
from flowzoo.vision.blockwise import BlockwiseFlowMatchingLoss
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.vision.fewstep import MidTrainingThenDistillation, flowmap_objective, reflow_objective

__all__ = ["VisionMethod", "METHODS", "GUIDANCE_EPOCHS", "guidance_classifier"]


@dataclass(frozen=True)
class VisionMethod:
    """One training method: a summary line and ``objective(cfg, num_classes, teacher) -> loss(model, batch)``.

    ``norm_aligned_source``: train (and sample) from SourceFM's norm-aligned Gaussian, whose scale is computed from
    the training images and stored with the checkpoint. ``flowmap``: the network is a two-time flow map
    (:class:`~flowzoo.core.nets.FlowMapUNet`, :class:`~flowzoo.vision.nets.FlowMapDiT`), sampled by jumps.
    ``teacher``: needs ``--teacher RUN`` (its velocity reaches the objective). ``pairs``: trains on (noise, image)
    pairs that the teacher's ODE produced, starting from the teacher's network and weights (reflow). ``refiner``:
    the network is FlowTurbo's small velocity refiner (:class:`~flowzoo.vision.refiner.ImageRefiner`) of the
    teacher, used by ``flowzoo vision sample --sampler flowturbo --refiner RUN`` rather than sampled itself.
    ``blockwise``: the network is BFM's :class:`~flowzoo.vision.blockwise_nets.BlockwiseVelocity` (one block per
    time segment), sampled segment by segment.
    """

    summary: str
    objective: Callable[..., Callable]
    norm_aligned_source: bool = False
    flowmap: bool = False
    teacher: bool = False
    pairs: bool = False
    refiner: bool = False
    blockwise: bool = False


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


GUIDANCE_EPOCHS = 4  # the guidance classifier's epochs: another network than the evaluation one (its default)


def guidance_classifier(cfg: Any) -> Any:
    """BFM's representation network for ``--bfm_guidance``: the data set's cached feature classifier trained for
    :data:`GUIDANCE_EPOCHS` epochs (the paper uses DINOv2, which flowzoo does not ship), frozen."""
    from flowzoo.vision.features import load_feature_classifier

    classifier, _ = load_feature_classifier(cfg.data, epochs=GUIDANCE_EPOCHS, verbose=False, **cfg.load_options())
    return classifier.eval().requires_grad_(False)


def _blockwise(cfg: Any, num_classes: int, teacher: Callable | None = None) -> BlockwiseFlowMatchingLoss:
    representation = guidance_classifier(cfg).features if cfg.bfm_guidance else None
    return BlockwiseFlowMatchingLoss(representation=representation, feature_weight=cfg.bfm_feature_weight,
                                     cond_dropout=cfg.cond_dropout if cfg.class_cond else 0.0,
                                     null_cond={"y": num_classes} if cfg.class_cond else None)


def _refiner(cfg: Any, num_classes: int, teacher: Callable | None = None) -> RefinerLoss:
    return RefinerLoss(teacher, max_dt=cfg.refiner_max_dt)


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
    "refiner": VisionMethod("FlowTurbo's velocity refiner of --teacher (sample with --sampler flowturbo --refiner RUN)",
                            _refiner, teacher=True, refiner=True),
    "bfm": VisionMethod("Blockwise FM: one small velocity block per time segment (--bfm_segments, --bfm_guidance)",
                        _blockwise, blockwise=True),
}
"""Method name -> :class:`VisionMethod`; a later method adds one entry."""
