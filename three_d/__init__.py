"""flowzoo.three_d: point clouds and 3D shapes — the geometry base for point-cloud upsampling (PUFM, arXiv
2501.15286), self-supervised scene flow (SCOOP, arXiv 2211.14020) and few-step 3D generation.

Modules (imported on demand, so ``import flowzoo.three_d`` loads neither scipy nor matplotlib nor open3d):
    ops          batched torch point operations: FPS, kNN, ball query, gathering, patches, normalisation
    metrics      Chamfer, Hausdorff, EMD, uniformity, point-to-mesh; scene-flow EPE3D, Acc3DS, Acc3DR, Outliers
    io           PLY (ASCII / binary) and XYZ in numpy; PCD, OBJ and OFF through open3d when it imports
    data         seeded synthetic shapes, smooth deformations, upsampling examples, scene-flow pairs
    plotting     3-D scatter panels of clouds and scene-flow arrows, as PNG
"""

__all__ = ["ops", "metrics", "io", "data", "plotting"]
