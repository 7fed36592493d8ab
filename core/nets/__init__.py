"""Networks with time embeddings: an MLP for vectors, an image U-Net and its two-time flow-map variant.

Import from the subpackage (``from flowzoo.core.nets import X``) or from the module that defines X.
"""

from __future__ import annotations

from flowzoo.core.nets.mlp import SinusoidalTimeEmbedding, MLPVelocity, ACTIVATIONS
from flowzoo.core.nets.unet import UNet, FlowMapUNet

__all__ = [
    "SinusoidalTimeEmbedding",
    "MLPVelocity",
    "ACTIVATIONS",
    "UNet",
    "FlowMapUNet",
]
