"""Couplings: how (x0, x1) pairs are formed, and the assignment solvers behind them.

Import from the subpackage (``from flowzoo.core.couplings import X``) or from the module that defines X.
"""

from __future__ import annotations

from flowzoo.core.couplings.base import Condition, Pairing, Coupling, cond_rows
from flowzoo.core.couplings.minibatch import (
    IndependentCoupling,
    ExactOTCoupling,
    SinkhornCoupling,
    SchrodingerBridgeCoupling,
    ConditionalOTCoupling,
    GibbsWeightedCoupling,
    get_coupling,
)
from flowzoo.core.couplings.assignment import (
    SOLVERS,
    squared_euclidean_cost,
    interaction_rank,
    data_interaction_rank,
    choose_solver,
    solve_assignment,
    log_sinkhorn,
)

__all__ = [
    "Condition",
    "Pairing",
    "Coupling",
    "cond_rows",
    "IndependentCoupling",
    "ExactOTCoupling",
    "SinkhornCoupling",
    "SchrodingerBridgeCoupling",
    "ConditionalOTCoupling",
    "GibbsWeightedCoupling",
    "get_coupling",
    "SOLVERS",
    "squared_euclidean_cost",
    "interaction_rank",
    "data_interaction_rank",
    "choose_solver",
    "solve_assignment",
    "log_sinkhorn",
]
