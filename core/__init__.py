"""flowzoo.core: flow matching done well, with few dependencies.

Time runs from t = 0 (source: noise or a prior population) to t = 1 (data). A velocity model is
called ``model(x, t, **cond)`` with ``t`` of shape (B,) and returns a tensor shaped like ``x``.

Foundations:
    paths        schedulers, affine probability paths, stochastic interpolants, training-time distributions
    couplings    how (x0, x1) pairs are formed: independent, exact OT, Sinkhorn, conditional OT, SB, W-CFM
    objectives   losses ``loss(model, batch) -> (scalar, metrics)``
    batching     the batch convention shared by every objective (unpacking, checks, weights)
    sampling     ODE/SDE integrators, time grids, NFE counting, log-likelihood, guidance wrappers
    nets         backbones with time embeddings
    training     the Trainer (EMA, checkpoints with exact resume, logging, DDP)
    validation   the checks every public function runs on its inputs
    config, errors, data, cli, train, demo

Methods:
    fewstep      flow maps, MeanFlow, SplitMeanFlow, CMT, reflow, distillation, BOSS, FlowTurbo, MLE fine-tuning,
                 dispersive regularisers, measured presets
    families     generative families beside flow matching: PFGM++, rectified diffusion, transition matching
    manifolds    Riemannian flow matching: spheres, tori, SO(3), products; geodesic paths, projected solvers,
                 likelihood on the manifold, geodesic OT
    discrete     discrete flow matching: mixture paths over tokens, DFM losses, CTMC Euler sampler, ELBO
    analysis     metrics (W1/W2, sliced W, MMD, energy distance, straightness), diagnostics, plots

Subpackages are imported on demand (``from flowzoo.core.paths import AffinePath``), so importing
``flowzoo.core`` stays cheap.
"""

__all__ = ["paths", "couplings", "objectives", "batching", "sampling", "nets", "training", "validation", "config",
           "config_types", "errors", "data", "cli", "train", "demo", "fewstep", "families", "manifolds", "discrete",
           "analysis"]
__version__ = "0.1.0"
