"""Analysis: distribution metrics, vector-field diagnostics and plots.

Import from the subpackage (``from flowzoo.core.analysis import X``) or from the module that defines X.
"""

from __future__ import annotations

from flowzoo.core.analysis.metrics import (
    wasserstein2,
    wasserstein1,
    sliced_wasserstein,
    mmd_rbf,
    energy_distance,
    path_straightness,
    coupling_cost,
)
from flowzoo.core.analysis.diagnostics import jacobian_asymmetry, loop_integral, LoopIntegralResult, random_planes
from flowzoo.core.analysis.plotting import plot_samples_2d, require_matplotlib

__all__ = [
    "wasserstein2",
    "wasserstein1",
    "sliced_wasserstein",
    "mmd_rbf",
    "energy_distance",
    "path_straightness",
    "coupling_cost",
    "jacobian_asymmetry",
    "loop_integral",
    "LoopIntegralResult",
    "random_planes",
    "plot_samples_2d",
    "require_matplotlib",
]
