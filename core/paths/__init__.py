"""Probability paths: schedulers, affine paths, stochastic interpolants, training-time distributions,
scheduler change after training, and one-call sampling of conditional-flow targets.

Import from the subpackage (``from flowzoo.core.paths import X``) or from the module that defines X.
"""

from __future__ import annotations

from flowzoo.core.paths.schedulers import (
    SchedulerOutput,
    Scheduler,
    LinearScheduler,
    CosineScheduler,
    VPScheduler,
    PolynomialScheduler,
    LinearVPScheduler,
    SigmaMinScheduler,
)
from flowzoo.core.paths.affine import PathSample, AffinePath, CondOTPath, SigmaMinOTPath
from flowzoo.core.paths.interpolants import (
    GammaOutput,
    Gamma,
    BrownianGamma,
    BSquaredGamma,
    SineSquaredGamma,
    ConstantGamma,
    StochasticInterpolant,
    SchrodingerBridgePath,
)
from flowzoo.core.paths.schedule_transform import ScheduleTransformedModel
from flowzoo.core.paths.conditional_flow import CoupledPathSample, sample_conditional_flow
from flowzoo.core.paths.timesamplers import (
    TimeSampler,
    UniformTime,
    LogitNormalTime,
    UShapedTime,
    TIME_SAMPLERS,
    get_time_sampler,
)

__all__ = [
    "SchedulerOutput",
    "Scheduler",
    "LinearScheduler",
    "CosineScheduler",
    "VPScheduler",
    "PolynomialScheduler",
    "LinearVPScheduler",
    "SigmaMinScheduler",
    "PathSample",
    "AffinePath",
    "CondOTPath",
    "SigmaMinOTPath",
    "GammaOutput",
    "Gamma",
    "BrownianGamma",
    "BSquaredGamma",
    "SineSquaredGamma",
    "ConstantGamma",
    "StochasticInterpolant",
    "SchrodingerBridgePath",
    "ScheduleTransformedModel",
    "CoupledPathSample",
    "sample_conditional_flow",
    "TimeSampler",
    "UniformTime",
    "LogitNormalTime",
    "UShapedTime",
    "TIME_SAMPLERS",
    "get_time_sampler",
]
