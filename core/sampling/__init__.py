"""Sampling: one result type, time grids, ODE and SDE integrators, log-likelihood and guidance wrappers.

Import from the subpackage (``from flowzoo.core.sampling import X``) or from the module that defines X.
"""

from __future__ import annotations

from flowzoo.core.sampling.result import (SampleResult, Callback, StepRecorder, check_cond, check_callback,
                                          check_output, check_end_state, progress_bar)
from flowzoo.core.sampling.grids import uniform_grid, shifted_grid, edm_grid, resolve_grid
from flowzoo.core.sampling.ode import (
    StepFunction,
    euler_step,
    midpoint_step,
    heun_step,
    rk4_step,
    FIXED_STEP_METHODS,
    ADAPTIVE_METHODS,
    METHODS,
    check_method,
    integrate,
)
from flowzoo.core.sampling.sde import integrate_sde
from flowzoo.core.sampling.likelihood import log_likelihood, standard_normal_log_prob, draw_probes, ESTIMATORS, PROBES
from flowzoo.core.sampling.guidance import GuidanceSchedule, ConstantGuidance, RatioAwareGuidance, ClassifierFreeGuidance

__all__ = [
    "SampleResult",
    "Callback",
    "StepRecorder",
    "check_cond",
    "check_callback",
    "check_output",
    "check_end_state",
    "progress_bar",
    "resolve_grid",
    "check_method",
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
    "edm_grid",
    "integrate_sde",
    "log_likelihood",
    "standard_normal_log_prob",
    "draw_probes",
    "ESTIMATORS",
    "PROBES",
    "GuidanceSchedule",
    "ConstantGuidance",
    "RatioAwareGuidance",
    "ClassifierFreeGuidance",
]
