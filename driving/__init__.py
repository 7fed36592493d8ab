"""flowzoo.driving: goal-driven trajectory generation for driving (GoalFlow, arXiv 2503.05689), evaluated the
NAVSIM way.

What exists: synthetic bird's-eye-view scenes with an expert planner, their on-disk schema, PDM-style metrics and
GoalFlow's goal vocabulary and normalisation. The GoalFlow planner, its training and closed-loop evaluation come
next. Modules (imported on demand, so ``import flowzoo.driving`` loads neither shapely nor matplotlib):
    geometry     poses, vehicle boxes and their overlap, polylines, the drivable polygon (shapely)
    scenes       seeded synthetic scenes: straight and curved multi-lane roads, junctions, other vehicles
    expert       the expert planner: a smooth, safe plan per feasible route; one drawn at random
    metrics      NC, DAC, TTC, comfort, EP and the PDM-style score; minADE / FDE; the shadow-vehicle test
    raster       BEV rasters (drivable area, lanes, vehicles now and later) and the ego-state vector
    data         the .npz scene schema, generation, atomic save, checked load, a torch Dataset
    vocabulary   goal-point vocabulary (k-means), goal-scorer targets, GoalFlow's trajectory normalisation
    plotting     BEV figures of a scene with expert, sampled and chosen plans and the goal
    cli          ``flowzoo driving make-scenes``
"""

__all__ = ["geometry", "scenes", "expert", "metrics", "raster", "data", "vocabulary", "plotting", "cli"]
