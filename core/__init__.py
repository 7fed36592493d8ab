"""flowzoo.core: flow matching done well, with few dependencies.

Time runs from t = 0 (source: noise or a prior population) to t = 1 (data). A velocity model is
called ``model(x, t, **cond)`` with ``t`` of shape (B,) and returns a tensor shaped like ``x``.

Modules:
    paths        probability paths and stochastic interpolants, prediction-type conversions
    couplings    how (x0, x1) pairs are formed: independent, exact OT, Sinkhorn, conditional OT, SB, W-CFM
    objectives   losses ``loss(model, batch) -> (scalar, metrics)``
    batching     the batch convention shared by every objective (unpacking, checks, weights)
    timesamplers training-time distributions
    solvers      ODE/SDE integrators, time grids, NFE counting, log-likelihood
    guidance     classifier-free guidance wrapper
    nets         small backbones with time embeddings
    metrics      W1/W2, sliced W, MMD, energy distance, straightness, coupling cost
    data         toy distributions
    training     the Trainer (EMA, checkpoints with exact resume, logging, DDP)
    config       dataclass configs from YAML and the command line
    errors       FlowzooError and its subclasses

Few-step generation and generic methods:
    flowmap                 two-time (flow-map) models u(x, s, t), their samplers, a Gaussian oracle
    meanflow                MeanFlow (JVP or finite differences), CFG in the target, MeanFlow distillation
    forward_ad              Jacobian-vector products of networks without generic forward AD's wasted convolutions
    splitmeanflow           SplitMeanFlow interval-splitting consistency
    few_step_presets        measured settings of MeanFlow, iMF, MeanFlow + OT and SplitMeanFlow (benchmarks')
    consistency_midtraining CMT: chord velocities of a teacher's trajectory
    reflow                  rectified flow: paired noise/endpoint stores on disk, k-rectification, distillation
    rectified_diffusion     re-training a VP eps-prediction model on its own paired noise
    distillation            MDT-dist velocity matching and velocity distillation
    boss                    Bellman-optimal step sizes and straightening
    flowturbo               pseudo-corrector sampler and velocity refiner
    mle_finetune            MLE of reconstructions through the deployed solver
    pfgmpp                  PFGM++ perturbation kernel, prior and sampler
    transition_matching     difference transition matching (DTM)
    diagnostics             non-conservativeness of a learned field (Jacobian asymmetry, loop integrals)
    dispersive              dispersive regularisers (MP1, DM1, Diffuse-and-Disperse) and collapse diagnostics

Submodules are imported on demand (``from flowzoo.core.paths import AffinePath``), so importing
``flowzoo.core`` stays cheap.
"""

__all__ = ["paths", "couplings", "objectives", "batching", "timesamplers", "solvers", "guidance", "nets", "metrics",
           "data", "training", "config", "errors", "plotting", "flowmap", "meanflow", "splitmeanflow",
           "forward_ad", "few_step_presets", "consistency_midtraining", "reflow", "rectified_diffusion",
           "distillation", "boss", "flowturbo", "mle_finetune", "pfgmpp", "transition_matching", "diagnostics",
           "dispersive"]
__version__ = "0.1.0"
