"""Few-step generation: flow maps, MeanFlow, SplitMeanFlow, CMT, distillation, reflow, BOSS, FlowTurbo, MLE fine-tuning, dispersive regularisers and the measured presets.

Import from the subpackage (``from flowzoo.core.fewstep import X``) or from the module that defines X.
"""

from __future__ import annotations

from flowzoo.core.fewstep.flowmap import MLPFlowMap, FlowMapAsVelocity, flowmap_sample, TwoTimeSampler, GaussianOracle
from flowzoo.core.fewstep.forward_ad import LeanForwardAD, jvp
from flowzoo.core.fewstep.target_passes import (
    unwrap_parallel,
    functional_model,
    has_active_dropout,
    padded_gap_index,
    rng_state,
    set_rng_state,
)
from flowzoo.core.fewstep.meanflow import MeanFlowLoss, DERIVATIVES, FORMULATIONS
from flowzoo.core.fewstep.splitmeanflow import SplitMeanFlowLoss, interval_split_target
from flowzoo.core.fewstep.consistency_midtraining import teacher_trajectory, TrajectoryBank, ConsistencyMidTrainingLoss
from flowzoo.core.fewstep.reflow import (
    PairStore,
    generate_pairs,
    ReflowLoss,
    rectify,
    ReflowDistillationLoss,
    MANIFEST_NAME,
)
from flowzoo.core.fewstep.distillation import (
    LOSS_NORMALIZATIONS,
    ConsistencyDistillationLoss,
    FlowMapToData,
    VelocityMatchingLoss,
    VelocityDistillationLoss,
    MDTDistillationLoss,
    one_step_sample,
)
from flowzoo.core.fewstep.boss import (
    boss_cost_matrix,
    bellman_steps,
    boss_time_grid,
    boss_redress_states,
    BossStraighteningLoss,
)
from flowzoo.core.fewstep.flowturbo import (
    pseudo_corrector_step,
    refiner_step,
    VelocityRefiner,
    RefinerLoss,
    flowturbo_sample,
)
from flowzoo.core.fewstep.mle_finetune import coupled_pairs, SolverReconstructionLoss
from flowzoo.core.fewstep.dispersive import (
    dispersive_loss,
    DISPERSIVE_KINDS,
    DEFAULT_TEMPERATURES,
    pairwise_sq_distances,
    effective_rank,
    mean_pairwise_distance,
)
from flowzoo.core.fewstep.presets import (
    meanflow_settings,
    imf_settings,
    meanflow_ot_settings,
    MEANFLOW_OT_LR_FACTOR,
    splitmeanflow_settings,
)

__all__ = [
    "MLPFlowMap",
    "FlowMapAsVelocity",
    "flowmap_sample",
    "TwoTimeSampler",
    "GaussianOracle",
    "LeanForwardAD",
    "jvp",
    "unwrap_parallel",
    "functional_model",
    "has_active_dropout",
    "padded_gap_index",
    "rng_state",
    "set_rng_state",
    "MeanFlowLoss",
    "DERIVATIVES",
    "FORMULATIONS",
    "SplitMeanFlowLoss",
    "interval_split_target",
    "teacher_trajectory",
    "TrajectoryBank",
    "ConsistencyMidTrainingLoss",
    "PairStore",
    "generate_pairs",
    "ReflowLoss",
    "rectify",
    "ReflowDistillationLoss",
    "MANIFEST_NAME",
    "LOSS_NORMALIZATIONS",
    "ConsistencyDistillationLoss",
    "FlowMapToData",
    "VelocityMatchingLoss",
    "VelocityDistillationLoss",
    "MDTDistillationLoss",
    "one_step_sample",
    "boss_cost_matrix",
    "bellman_steps",
    "boss_time_grid",
    "boss_redress_states",
    "BossStraighteningLoss",
    "pseudo_corrector_step",
    "refiner_step",
    "VelocityRefiner",
    "RefinerLoss",
    "flowturbo_sample",
    "coupled_pairs",
    "SolverReconstructionLoss",
    "dispersive_loss",
    "DISPERSIVE_KINDS",
    "DEFAULT_TEMPERATURES",
    "pairwise_sq_distances",
    "effective_rank",
    "mean_pairwise_distance",
    "meanflow_settings",
    "imf_settings",
    "meanflow_ot_settings",
    "MEANFLOW_OT_LR_FACTOR",
    "splitmeanflow_settings",
]
