"""flowzoo.biology: single-cell populations (Meta Flow Matching) and biological sequences (Gumbel-softmax FM).

Subpackages (imported on demand, so ``import flowzoo.biology`` loads neither scanpy nor torch-geometric):
    cells       Meta Flow Matching: populations from AnnData, offline data sets, encoders, objective, metrics
    sequences   alphabets and FASTA, planted-motif HMMs, Gumbel-softmax FM, simplex flows, STGFlow guidance
Modules:
    train, cli  ``python -m flowzoo.biology.train meta_fm|gumbel_fm``, ``flowzoo biology train|predict|sample``
"""

__all__ = ["cells", "sequences", "train", "cli"]
