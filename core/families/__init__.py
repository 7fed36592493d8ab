"""Generative families beside flow matching: PFGM++, rectified diffusion, transition matching.

Import from the subpackage (``from flowzoo.core.families import X``) or from the module that defines X.
"""

from __future__ import annotations

from flowzoo.core.families.pfgmpp import (
    sample_perturbation,
    sample_prior,
    sample_radius,
    PFGMPPLoss,
    EDMPrecond,
    edm_sigma_grid,
    pfgmpp_sample,
)
from flowzoo.core.families.rectified_diffusion import (
    EpsilonPredictionLoss,
    RectifiedDiffusionLoss,
    EpsilonAsVelocity,
    ddim_sample,
    x1_prediction_variance,
)
from flowzoo.core.families.transition_matching import DTMModel, DTMLoss, dtm_sample

__all__ = [
    "sample_perturbation",
    "sample_prior",
    "sample_radius",
    "PFGMPPLoss",
    "EDMPrecond",
    "edm_sigma_grid",
    "pfgmpp_sample",
    "EpsilonPredictionLoss",
    "RectifiedDiffusionLoss",
    "EpsilonAsVelocity",
    "ddim_sample",
    "x1_prediction_variance",
    "DTMModel",
    "DTMLoss",
    "dtm_sample",
]
