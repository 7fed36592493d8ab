"""flowzoo.driving: goal-driven trajectory generation for driving (GoalFlow, arXiv 2503.05689), evaluated the
NAVSIM way.

Synthetic bird's-eye-view scenes with an expert planner and their on-disk schema, PDM-style metrics, the GoalFlow
planner with its baselines, training and open-loop evaluation, and closed-loop episodes in highway-env.

Modules (imported on demand, so ``import flowzoo.driving`` loads neither shapely nor matplotlib):
    geometry     poses, vehicle boxes and their overlap, polylines, the drivable polygon (shapely)
    scenes       seeded synthetic scenes: straight and curved multi-lane roads, junctions, other vehicles
    expert       the expert planner: a smooth, safe plan per feasible route; one drawn at random
    metrics      NC, DAC, TTC, comfort, EP and the PDM-style score; minADE / FDE; the shadow-vehicle test
    raster       BEV rasters (drivable area, lanes, vehicles now and later) and the ego-state vector
    data         the .npz scene schema, generation, atomic save, checked load, a torch Dataset
    vocabulary   goal-point vocabulary (k-means), goal-scorer targets, GoalFlow's trajectory normalisation
    plotting     BEV figures of a scene with expert, sampled and chosen plans and the goal
    nets         scene encoder, goal scorer, trajectory velocity network
    goalflow     GoalFlow: losses, goal selection, trajectory scorer, shadow fallback, GoalFlowPlanner
    baselines    constant velocity, ego-MLP, single-trajectory regressor
    train        ``python -m flowzoo.driving.train goalflow|ego_mlp|regressor``; load_planner
    evaluate     open-loop PDM-style evaluation, ``flowzoo driving evaluate``
    lqr_tracking NAVSIM's LQR tracker on a kinematic bicycle at 10 Hz: tracked open-loop scoring
    highway      headless highway-env adapter: BEV conversion, IDM/MOBIL expert, perturbations
    tracking     pure-pursuit + speed-loop tracker of a plan (highway-env's bicycle inverted)
    simulate     closed-loop episodes, their metrics, expert demonstrations
    cli_simulate ``flowzoo driving simulate``: options, checks, summary line
    cli          ``flowzoo driving make-scenes | train | evaluate | simulate``
"""

__all__ = ["geometry", "scenes", "expert", "metrics", "raster", "data", "vocabulary", "plotting", "nets", "goalflow",
           "baselines", "train", "evaluate", "lqr_tracking",
           "highway", "tracking", "simulate", "cli_simulate", "cli"]
