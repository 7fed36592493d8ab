"""flowzoo.biology: single-cell populations (Meta Flow Matching) and biological sequences (Gumbel-softmax FM).

Modules (imported on demand, so ``import flowzoo.biology`` loads neither scanpy nor torch-geometric):
    populations   AnnData populations paired control -> treated, splits
    offline_populations   offline data: the paper's letters, pbmc68k pseudo-patients with a simulated treatment
    nets          kNN-GCN and DeepSets population encoders, the conditioned flow network
    meta_fm       Meta Flow Matching and its baselines (FM, per-population FM), prediction into a copy of AnnData
    meta_fm_objective   Meta FM's population batch sampler and training objective (re-exported by meta_fm)
    metrics       W1, W2, multi-bandwidth MMD, mean-marker MSE, r2 of pairwise feature correlations
    sequences     alphabets, FASTA I/O, one-hot encoding
    hmm           planted-motif hidden Markov models with exact likelihoods and k-mer statistics
    gumbel_fm     Gumbel-softmax FM and its score-matching variant (re-exports the two modules below)
    gumbel_path   Gumbel-softmax interpolants (the paper's tempered path and the fixed-noise one), Concrete density
    simplex_flow  simplex-flow base class and sampler, the linear-simplex FM baseline
    stgflow       straight-through guidance from a classifier trained on clean sequences
    seq_nets      sequence backbones (1-D convolutions, small transformer)
    train, cli, sequence_cli   ``python -m flowzoo.biology.train meta_fm|gumbel_fm``, ``flowzoo biology predict|sample``
"""

__all__ = ["populations", "offline_populations", "nets", "meta_fm", "metrics", "sequences", "hmm", "gumbel_fm", "gumbel_path",
           "simplex_flow", "meta_fm_objective", "stgflow", "seq_nets",
           "train", "cli", "sequence_cli"]
