"""flowzoo.three_d: point clouds and 3D shapes — point-cloud upsampling (PUFM / PUFM++, arXiv 2501.15286),
self-supervised scene flow (SCOOP, arXiv 2211.14020) and few-step 3D generation (a TRELLIS-style two-stage generator
distilled with MDT-dist, arXiv 2509.04406), on a geometry base of batched torch operations, metrics and file I/O.

Modules (imported on demand, so ``import flowzoo.three_d`` loads neither scipy nor matplotlib nor open3d):
    ops             batched torch point operations: FPS, kNN, ball query, gathering, patches, normalisation
    metrics         Chamfer, Hausdorff, EMD, uniformity, point-to-mesh; scene-flow EPE3D, Acc3DS, Acc3DR, Outliers
    io              PLY (ASCII / binary) and XYZ in numpy; PCD, OBJ, OFF, meshes and to_open3d / from_open3d via open3d
    data            seeded synthetic shapes and compositions, smooth deformations, upsampling examples
    shape_meshes    triangle meshes of the generated shapes (deformed like their points): the true surface for P2F
    scene_pairs     seeded scene-flow pairs: per-object rigid motion, ego motion, occlusion, ground-truth flow
    shape_folders   a user's meshes (sampled by area) and folders of meshes / point clouds as training clouds
    plotting        3-D scatter panels of clouds and scene-flow arrows, as PNG
    point_nets      the PUFM++ backbone: RIN read-compute-write transformer, kNN condition encoder, self-conditioning
    pufm            PUFM / PUFM++ training: midpoints, EMD alignment, cosine times, stages 1-2, stage 3's loss curve
    pufm_sampling   PUFM / PUFM++ inference: adaptive steps, on-manifold projection, sampler, patch-wise upsample
    scoop_model     SCOOP correspondence model: SetConv features, one Sinkhorn iteration, soft matches
    scoop           SCOOP self-supervised loss, test-time flow refinement, scene sets, train/load
    voxels          occupancy grids of shapes, the conv-3D VAE of the sparse structure, marching cubes
    generator       the two-stage generator (structure flow, attribute flow), teacher sampling, distilled students
    shape_features  a point-cloud classifier trained in-repo for Fréchet distance; coverage and MMD
    train           ``python -m flowzoo.three_d.train <method>``: METHODS (pufm, scoop, ...), load_upsampler
    cli_upsample    ``flowzoo three_d upsample``
    cli_scene_flow  ``flowzoo three_d scene-flow``
    cli_generate    ``flowzoo three_d generate``
    cli             ``flowzoo three_d ...``: the command table
"""

__all__ = ["ops", "metrics", "io", "data", "shape_meshes", "scene_pairs", "shape_folders", "plotting", "point_nets",
           "pufm", "pufm_sampling", "scoop_model", "scoop", "voxels", "generator", "shape_features", "train",
           "cli_upsample", "cli_scene_flow", "cli_generate", "cli"]
