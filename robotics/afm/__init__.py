"""Action Flow Matching: correct planned actions for drifting dynamics (Mallo et al., RSS 2025, arXiv 2504.18471).

Modules (imported on demand, so importing the package loads no simulator):
    method      the flow over action corrections, its lifted path and training
    regimes     dynamics regimes and analytic AFM pre-training pairs
    controller  MPPI + AFM with regime detection and online learning
    waypoints   waypoint missions and drift schedules shared by the simulators
    sim         the AFM simulators: unicycle (here) and MuJoCo point mass (point_mass)
    point_mass  MuJoCo planar point mass with drifting mass, friction and gain
"""

__all__ = ["method", "regimes", "controller", "waypoints", "sim", "point_mass"]
