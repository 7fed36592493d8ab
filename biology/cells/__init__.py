"""Single-cell populations and Meta Flow Matching (Atanackovic et al., ICLR 2025, arXiv 2408.14608).

Modules (imported on demand):
    populations          AnnData populations paired control -> treated, splits
    offline_populations  offline data: the paper's letters, pbmc68k pseudo-patients with a simulated treatment
    nets                 kNN-GCN and DeepSets population encoders, the conditioned flow network
    objective            Meta FM's population batch sampler and training objective
    meta_fm              Meta Flow Matching and its baselines (FM, per-population FM), prediction into AnnData
    metrics              W1, W2, multi-bandwidth MMD, mean-marker MSE, r2 of pairwise feature correlations
"""

__all__ = ["populations", "offline_populations", "nets", "objective", "meta_fm", "metrics"]
