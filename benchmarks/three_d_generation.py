"""Few-step 3D generation: MDT-dist (arXiv 2509.04406) students of a TRELLIS-style two-stage generator.

Trains the teacher (:func:`flowzoo.three_d.generator.train_teacher`: occupancy VAE, stage-1 structure flow,
stage-2 offset flow) on voxelised synthetic shapes, distils both stages with consistency distillation (CD),
Velocity Matching (VM) and VM + Velocity Distillation (VM + VD), and scores against held-out shapes:

* the teacher at 25 Euler steps per stage, and naively at 1 and 2;
* each student at 1 and 2 steps per stage;
* coverage / MMD with Chamfer and EMD (:mod:`flowzoo.three_d.shape_features`), fidelity (``fid_cd``: mean
  Chamfer distance of a sample to its nearest held-out shape), the Fréchet distance on the in-repo PointNet's
  features (FD), the occupancy IoU with the 25-step teacher's sample from the same noise (``iou_vs_teacher``:
  how faithfully a few-step sampler reproduces the teacher), end-to-end seconds per shape and the speed-up.

The notes say whether VM + VD at 2 steps is within 1.2× of the teacher's FD and ≥ 6× faster. Writes
``three_d_generation[.quick]`` and a figure (teacher vs 1-step VM + VD student) under docs/_static/three_d/.

Run (``--quick`` takes a few minutes on one core, the full run under an hour)::

    .venv/bin/python -m benchmarks.three_d_generation --quick
    .venv/bin/python -m benchmarks.three_d_generation
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from flowzoo.core.fewstep import LOSS_NORMALIZATIONS
from flowzoo.three_d.generator import DISTILL_METHODS, GeneratorConfig, distill_generator, train_teacher
from flowzoo.three_d.shape_features import (coverage_mmd, frechet_distance, load_shape_classifier,
                                           pairwise_cloud_distances, resample_clouds)
from flowzoo.three_d.voxels import devoxelize, make_shape_voxels, occupancy_iou

from benchmarks.results import reproduce_command, save_table

QUICK = {"n_train": 16, "n_test": 12, "n_eval": 12, "emd_shapes": 30, "points": 128, "emd_points": 48,
         "distill_steps": 60, "distill_lr": 1e-3,
         "config": GeneratorConfig(vae_steps=150, structure_steps=300, attribute_steps=150, batch_size=16)}
FULL = {"n_train": 40, "n_test": 20, "n_eval": 20, "emd_shapes": 50, "points": 256, "emd_points": 64,
        "distill_steps": 300, "distill_lr": 1e-3,
        "config": GeneratorConfig(vae_steps=600, structure_steps=1500, attribute_steps=600)}
NAMES = {"cd": "CD", "vm": "VM", "vm_vd": "VM + VD"}
FIGURE = Path(__file__).resolve().parent.parent / "docs" / "_static" / "three_d" / "generation.png"


def _score(shapes, teacher_shapes, reference, ref_features, classifier, settings, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    clouds = shapes.points()
    dense = resample_clouds(clouds, settings["points"], g)
    m = settings["emd_shapes"]  # exact EMD is the slow metric: a fixed subset of both sets
    sparse = resample_clouds(clouds[:m], settings["emd_points"], g)
    chamfer = pairwise_cloud_distances(dense, reference[0], "chamfer")
    cov_cd, mmd_cd = coverage_mmd(chamfer)
    cov_emd, mmd_emd = coverage_mmd(pairwise_cloud_distances(sparse, reference[1][:m], "emd"))
    with torch.no_grad():
        features = classifier.features(dense)
    iou = occupancy_iou(shapes.occupancy, teacher_shapes.occupancy).mean().item()
    fidelity = chamfer.min(1).values.mean().item()
    return {"cov_cd": round(cov_cd, 3), "mmd_cd": round(mmd_cd, 4), "fid_cd": round(fidelity, 4),
            "cov_emd": round(cov_emd, 3), "mmd_emd": round(mmd_emd, 4),
            "fd": round(frechet_distance(features, ref_features), 2), "iou_vs_teacher": round(iou, 3)}


def rows(quick: bool, seed: int = 0, *, progress: bool = True, figure: Path | None = FIGURE,
         settings: dict | None = None, loss_normalization: str | None = None) -> list[dict]:
    """Train, distil and score every row (module docstring); ``settings`` overrides QUICK / FULL (tests);
    ``loss_normalization`` is the VM / VD option of the core's ``VelocityMatchingLoss`` (None: the paper's)."""
    settings = settings or (QUICK if quick else FULL)
    cfg = settings["config"]
    train = make_shape_voxels(settings["n_train"], cfg.classes, cfg.grid_size, seed)
    test = make_shape_voxels(settings["n_test"], cfg.classes, cfg.grid_size, seed + 1)
    classifier, accuracy = load_shape_classifier(cfg.classes, cfg.grid_size, **settings.get("classifier", {}))
    g = torch.Generator().manual_seed(seed)
    test_clouds = devoxelize(test.occupancy, test.offsets)
    reference = (resample_clouds(test_clouds, settings["points"], g),
                 resample_clouds(test_clouds, settings["emd_points"], g))
    with torch.no_grad():
        ref_features = classifier.features(reference[0])
    teacher = train_teacher(train, cfg, seed=seed, progress=progress)
    models = {"teacher": teacher}
    for method in DISTILL_METHODS:
        models[method] = distill_generator(teacher, train, method, steps=settings["distill_steps"],
                                           lr=settings.get("distill_lr", 3e-4), batch_size=cfg.batch_size, seed=seed,
                                           progress=progress, loss_normalization=loss_normalization)
    labels = torch.arange(len(cfg.classes)).repeat(settings["n_eval"])
    plan = [("teacher", 25), ("teacher", 1), ("teacher", 2)] + [(m, k) for m in DISTILL_METHODS for k in (1, 2)]
    table, samples = [], {}
    for name, steps in plan:
        shapes = models[name].sample(labels, steps=steps, generator=torch.Generator().manual_seed(seed + 7))
        samples[(name, steps)] = shapes
        method = "teacher (25 steps)" if steps == 25 else ("naive teacher" if name == "teacher" else NAMES[name])
        table.append({"method": method, "steps_per_stage": steps, "nfe": shapes.nfe,
                      **_score(shapes, samples[("teacher", 25)], reference, ref_features, classifier, settings,
                               seed),
                      "s_per_shape": round(shapes.seconds / len(labels), 4)})
    base = table[0]["s_per_shape"]
    for row in table:
        row["speedup"] = round(base / max(row["s_per_shape"], 1e-9), 2)
    if figure is not None:
        _figure(samples[("teacher", 25)], samples[("vm_vd", 1)], cfg.classes, figure)
    table[0]["classifier_acc"] = round(accuracy, 3)
    return table


def _figure(teacher, student, classes, path: Path) -> None:
    from flowzoo.three_d.plotting import plot_point_clouds

    panels = {}
    for label in range(min(3, len(classes))):
        index = int((teacher.labels == label).nonzero()[0])
        for name, shapes in (("teacher 25+25", teacher), ("VM+VD 1+1", student)):
            cloud = shapes.points()[index]
            panels[f"{classes[label]}: {name}"] = cloud.numpy() if len(cloud) else torch.zeros(1, 3).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_point_clouds(panels, path)


def verdict(table: list[dict]) -> str:
    teacher = table[0]
    row = next(r for r in table if r["method"] == "VM + VD" and r["steps_per_stage"] == 2)
    ratio, speed = row["fd"] / max(teacher["fd"], 1e-9), row["speedup"]
    naive = next(r for r in table if r["method"] == "naive teacher" and r["steps_per_stage"] == 2)
    naive_ratio = naive["fd"] / max(teacher["fd"], 1e-9)
    holds = ratio <= 1.2 and speed >= 6
    caveat = ("; but the naive 2-step teacher is also within 1.2x (FD ratio "
              f"{naive_ratio:.2f}), so FD does not separate the methods at this size") if naive_ratio <= 1.2 else ""
    return (f"target (VM + VD at 2 steps: FD within 1.2x of the teacher's, >= 6x faster): FD ratio {ratio:.2f}, "
            f"speed-up {speed:.1f}x: {'holds' if holds else 'does not hold'}{caveat}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets (a few minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", default=None, help=f"the PNG to write ('' for none; default {FIGURE.name} "
                        "under docs/_static/three_d/)")
    parser.add_argument("--loss_normalization", choices=["none", *LOSS_NORMALIZATIONS[1:]], default="none",
                        help="VM / VD loss normalisation (none: the paper's plain squared error)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    figure = FIGURE if args.figure is None else (Path(args.figure) if args.figure else None)
    normalization = None if args.loss_normalization == "none" else args.loss_normalization
    table = rows(args.quick, args.seed, figure=figure, loss_normalization=normalization)
    columns = list(dict.fromkeys(k for row in table for k in row))
    print(" | ".join(columns))
    for row in table:
        print(" | ".join(str(row.get(c, "")) for c in columns))
    settings = QUICK if args.quick else FULL
    notes = [verdict(table), f"{settings['n_train']} training and {settings['n_test']} held-out shapes per class; "
             f"total {time.perf_counter() - start:.0f} s on one thread",
             "FD: Fréchet distance on the in-repo PointNet's features (its held-out accuracy in classifier_acc)",
             f"VM / VD loss normalisation: {args.loss_normalization}"]
    print("\n".join(notes))
    save_table("three_d_generation", [{c: row.get(c) for c in columns} for row in table],
               title="Few-step 3D generation: MDT-dist students of a two-stage generator", columns=columns,
               command=reproduce_command("benchmarks.three_d_generation", argv), quick=args.quick, notes=notes)
    return table


if __name__ == "__main__":
    main()
