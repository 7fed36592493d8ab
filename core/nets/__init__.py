"""Networks: small backbones with time embeddings.

Import from the subpackage (``from flowzoo.core.nets import X``) or from the module that defines X.
"""

from __future__ import annotations

from flowzoo.core.nets.mlp import SinusoidalTimeEmbedding, MLPVelocity, ACTIVATIONS

__all__ = [
    "SinusoidalTimeEmbedding",
    "MLPVelocity",
    "ACTIVATIONS",
]
