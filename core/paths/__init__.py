"""Probability paths: schedulers, affine paths, stochastic interpolants, training-time distributions.

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
)
from flowzoo.core.paths.affine import PathSample, AffinePath, CondOTPath
from flowzoo.core.paths.interpolants import (
    GammaOutput,
    Gamma,
    BrownianGamma,
    BSquaredGamma,
    SineSquaredGamma,
    ConstantGamma,
    StochasticInterpolant,
)
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
    "PathSample",
    "AffinePath",
    "CondOTPath",
    "GammaOutput",
    "Gamma",
    "BrownianGamma",
    "BSquaredGamma",
    "SineSquaredGamma",
    "ConstantGamma",
    "StochasticInterpolant",
    "TimeSampler",
    "UniformTime",
    "LogitNormalTime",
    "UShapedTime",
    "TIME_SAMPLERS",
    "get_time_sampler",
]
