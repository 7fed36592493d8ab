"""Discrete flow matching: mixture paths over token sequences, their losses, Euler CTMC sampler and ELBO.

Gat et al., arXiv 2407.15595; Campbell et al., arXiv 2402.04997; Shaul et al., arXiv 2412.03487.
Import from the subpackage (``from flowzoo.core.discrete import X``) or from the module that defines X.
"""

from __future__ import annotations

from flowzoo.core.discrete.schedulers import (KappaOutput, ConvexScheduler, PolynomialConvexScheduler,
                                              LinearConvexScheduler, CosineConvexScheduler, CONVEX_SCHEDULERS,
                                              get_convex_scheduler)
from flowzoo.core.discrete.path import (SOURCES, DiscreteSource, masked_source, uniform_source, DiscretePathSample,
                                        MixtureDiscretePath, check_token_ids)
from flowzoo.core.discrete.losses import (LOSS_KINDS, DiscreteFlowMatchingLoss, generalized_kl, call_posterior,
                                          check_discrete_batch)
from flowzoo.core.discrete.likelihood import discrete_elbo, elbo_per_token
from flowzoo.core.discrete.data import TEXT8_ALPHABET, MarkovText
from flowzoo.core.discrete.nets import DiscreteTransformer
from flowzoo.core.discrete.solver import (discrete_sample, posterior_probs, jump_rates, step_kernel,
                                          sample_categorical)

__all__ = [
    "KappaOutput", "ConvexScheduler", "PolynomialConvexScheduler", "LinearConvexScheduler", "CosineConvexScheduler",
    "CONVEX_SCHEDULERS", "get_convex_scheduler",
    "SOURCES", "DiscreteSource", "masked_source", "uniform_source", "DiscretePathSample", "MixtureDiscretePath",
    "check_token_ids",
    "LOSS_KINDS", "DiscreteFlowMatchingLoss", "generalized_kl", "call_posterior", "check_discrete_batch",
    "discrete_sample", "posterior_probs", "jump_rates", "step_kernel", "sample_categorical",
    "discrete_elbo", "elbo_per_token", "TEXT8_ALPHABET", "MarkovText", "DiscreteTransformer",
]
