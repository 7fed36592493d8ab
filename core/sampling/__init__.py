"""Sampling: ODE and SDE integrators, time grids, log-likelihood and guidance wrappers.

Import from the subpackage (``from flowzoo.core.sampling import X``) or from the module that defines X.
"""

from __future__ import annotations

from flowzoo.core.sampling.ode import (
    ODEResult,
    StepFunction,
    euler_step,
    midpoint_step,
    heun_step,
    rk4_step,
    FIXED_STEP_METHODS,
    ADAPTIVE_METHODS,
    METHODS,
    integrate,
    uniform_grid,
    shifted_grid,
)
from flowzoo.core.sampling.sde import integrate_sde
from flowzoo.core.sampling.likelihood import log_likelihood, standard_normal_log_prob, ESTIMATORS, PROBES
from flowzoo.core.sampling.guidance import GuidanceSchedule, ConstantGuidance, RatioAwareGuidance, ClassifierFreeGuidance

__all__ = [
    "ODEResult",
    "StepFunction",
    "euler_step",
    "midpoint_step",
    "heun_step",
    "rk4_step",
    "FIXED_STEP_METHODS",
    "ADAPTIVE_METHODS",
    "METHODS",
    "integrate",
    "uniform_grid",
    "shifted_grid",
    "integrate_sde",
    "log_likelihood",
    "standard_normal_log_prob",
    "ESTIMATORS",
    "PROBES",
    "GuidanceSchedule",
    "ConstantGuidance",
    "RatioAwareGuidance",
    "ClassifierFreeGuidance",
]
