"""Biological sequences on the simplex: Gumbel-softmax flow matching and its guidance.

Modules (imported on demand):
    alphabets     alphabets, FASTA I/O, one-hot encoding
    hmm           planted-motif hidden Markov models with exact likelihoods and k-mer statistics
    gumbel_path   Gumbel-softmax interpolants (the paper's tempered path and the fixed-noise one), Concrete density
    simplex_flow  simplex-flow base class and sampler, the linear-simplex FM baseline
    gumbel_fm     Gumbel-softmax FM and its score-matching variant
    stgflow       straight-through guidance from a classifier trained on clean sequences
    nets          sequence backbones (1-D convolutions, small transformer)
    cli           the sequence commands: train a simplex flow, train a guide, sample (optionally guided)
"""

__all__ = ["alphabets", "hmm", "gumbel_path", "simplex_flow", "gumbel_fm", "stgflow", "nets", "cli"]
