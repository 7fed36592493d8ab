"""PUFM / PUFM++ point-cloud upsampling on held-out generated shapes, 4x and 16x (arXiv 2501.15286, Table 1 in
kind, at CPU scale).

Trains on generated deformed shapes (:func:`flowzoo.three_d.train.make_patch_pairs`):

* a Gaussian-source flow (diffusion-style: x0 ~ N(0, I), independent pairing) with the same backbone;
* PUFM stage 1 (noisy midpoints -> EMD-aligned dense patch, cosine times, self-conditioning);
* PUFM++ stage 2 (Chamfer fine-tuning of the one-step endpoint) on top of stage 1;

and evaluates, on held-out shapes with a sparse, noisy, non-uniform input, midpoint interpolation alone (16x as 4x
twice, like the flows) and every
model at 1, 2 and 5 Euler steps per 4x pass (16x = 4x twice): PUFM (stage 1, uniform steps), + stage 2, + stage 3
(the adaptive schedule from the inverted CDF of the per-t loss), + the on-manifold projection. Metrics against the
dense ground truth: Chamfer (squared, x1e3), Hausdorff (x1e2), P2F (x1e3: each point's distance to the local
tangent plane of a 40k-point sample of the true surface, a mesh-free point-to-surface distance), P2F_mesh (x1e3:
each point's exact distance to a 20k-70k-triangle mesh of the true surface, :mod:`flowzoo.three_d.shape_meshes`,
deformed by the same warp as the points, through open3d's RaycastingScene) and the nearest-neighbour uniformity (coefficient of variation, lower is more even). Each stage row's ``verdict`` says
whether it lowered CD and P2F relative to the row before it at the same NFE; the claims compare PUFM++ with the
baselines on CD, P2F and P2F_mesh (NaN, and no claim, without open3d). Inference follows the official
evaluation (:mod:`flowzoo.three_d.pufm_sampling`): the flow starts from the plain midpoints (the σ = 0.02 source
noise is a training-time augmentation), the input points join the FPS merge of the patches, and the projection
pulls toward the interpolated input.

Run (``--quick``: about 3 minutes on one busy core, a smoke test with too little training to test the claims; the
full run about 20 minutes; --steps, --stage2_steps, ... override its setting)::

    .venv/bin/python -m benchmarks.three_d_upsampling --quick
    .venv/bin/python -m benchmarks.three_d_upsampling
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from flowzoo.core.errors import MissingDependencyError
from flowzoo.core.training import TrainerConfig
from flowzoo.three_d.data import SHAPES, random_deformation, sample_surface
from flowzoo.three_d.io import require_open3d
from flowzoo.three_d.metrics import chamfer_distance, hausdorff_distance, nn_uniformity, point_to_mesh_distance
from flowzoo.three_d.ops import gather_points, knn
from flowzoo.three_d.point_nets import PointNetConfig
from flowzoo.three_d.pufm_sampling import upsample
from flowzoo.three_d.shape_meshes import deformed_mesh
from flowzoo.three_d.train import PUFMTrainConfig, load_upsampler, train_pufm

from benchmarks.results import reproduce_command, save_table

__all__ = ["QUICK", "FULL", "held_out_shapes", "p2f", "mesh_p2f", "rows", "claims", "main"]

QUICK = {"shapes": 4, "patches": 8, "steps": 40, "stage2_steps": 15, "test_shapes": 1, "n_sparse": 64, "nfe": (1,),
         "curve_points": 11}
FULL = {"shapes": 40, "patches": 8, "steps": 800, "stage2_steps": 300, "test_shapes": 3, "n_sparse": 128,
        "nfe": (1, 2, 5), "curve_points": 51}
FIGURE = Path(__file__).resolve().parent.parent / "docs" / "_static" / "three_d" / "pufm_upsampling.png"


def held_out_shapes(count: int, n_sparse: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Held-out examples: a sparse noisy input denser on one side, the 4x / 16x even dense truths, a 40k-point
    reference of the same deformed surface (for P2F) and its mesh (for P2F_mesh; no random draws)."""
    rng = np.random.default_rng(10_000 + seed)
    examples = []
    for i in range(count):
        shape = SHAPES[i % len(SHAPES)]
        warp = random_deformation(rng, amplitude=0.1)
        pool = sample_surface(shape, 4 * n_sparse, rng)
        direction = rng.normal(size=3)
        weights = np.exp(pool @ (direction / np.linalg.norm(direction)))
        chosen = rng.choice(len(pool), size=n_sparse, replace=False, p=weights / weights.sum())
        sparse = warp(pool[chosen]) + rng.normal(scale=0.005, size=(n_sparse, 3)).astype(np.float32)
        examples.append({"shape": shape, "sparse": torch.from_numpy(sparse.astype(np.float32)),
                         4: torch.from_numpy(warp(sample_surface(shape, 4 * n_sparse, rng, even=True))),
                         16: torch.from_numpy(warp(sample_surface(shape, 16 * n_sparse, rng, even=True))),
                         "reference": torch.from_numpy(warp(sample_surface(shape, 40_000, rng))),
                         "mesh": tuple(map(torch.from_numpy, deformed_mesh(shape, warp)))})
    return examples


def p2f(points: torch.Tensor, reference: torch.Tensor, k: int = 8) -> float:
    """Mean distance of ``points`` (N, 3) to the plane fitted to their k nearest ``reference`` points."""
    _, idx = knn(points[None], reference[None], k, chunk=256)
    near = gather_points(reference[None], idx)[0]  # (N, k, 3)
    centre = near.mean(dim=1)
    normal = torch.linalg.eigh(torch.einsum("nki,nkj->nij", near - centre[:, None], near - centre[:, None]))[1][..., 0]
    return float(((points - centre) * normal).sum(-1).abs().mean())


def mesh_p2f(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor) -> float:
    """Mean exact distance of ``points`` (N, 3) to the mesh (open3d's RaycastingScene); NaN without open3d."""
    try:
        require_open3d()
    except MissingDependencyError:
        return float("nan")
    return float(point_to_mesh_distance(points[None], vertices, faces, backend="open3d").mean())


def _metrics(out: torch.Tensor, example: dict, ratio: int) -> dict[str, float]:
    truth = example[ratio][None]
    return {"CD_x1e3": 1e3 * float(chamfer_distance(out[None], truth)),
            "HD_x1e2": 1e2 * float(hausdorff_distance(out[None], truth)),
            "P2F_x1e3": 1e3 * p2f(out, example["reference"]), "P2F_mesh_x1e3": 1e3 * mesh_p2f(out, *example["mesh"]),
            "uniformity": float(nn_uniformity(out[None]))}


def _train(folder: Path, setting: dict, seed: int, source: str, stage2: int):
    trainer = TrainerConfig(steps=setting["steps"], batch_size=8, lr=2e-3, warmup_steps=20, ema_decay=0.995,
                            checkpoint_every=0, log_every=50, out_dir=str(folder / source), tensorboard=False,
                            seed=seed)
    cfg = PUFMTrainConfig(shapes=setting["shapes"], patches_per_shape=setting["patches"], data_seed=seed,
                          source=source, stage2_steps=stage2, curve_points=setting["curve_points"],
                          model=PointNetConfig(), trainer=trainer)
    train_pufm(cfg)
    return folder / source


def _variants(folder: Path, setting: dict, seed: int):
    gauss = load_upsampler(_train(folder, setting, seed, "gaussian", 0))
    run = _train(folder, setting, seed, "midpoints", setting["stage2_steps"])
    stage1, stage2 = load_upsampler(run, stage=1), load_upsampler(run)
    stage1.info = {k: v for k, v in stage1.info.items() if k != "loss_curve"}
    return [("Gaussian-source flow", gauss, {"adaptive": False}),
            ("PUFM (stage 1)", stage1, {"adaptive": False}),
            ("PUFM++ stages 1+2", stage2, {"adaptive": False}),
            ("PUFM++ stages 1+2+3 (adaptive steps)", stage2, {"adaptive": True}),
            ("PUFM++ full (+ on-manifold projection)", stage2, {"adaptive": True, "project": 0.01})]


def _verdict(row: dict, previous: dict | None) -> str:
    if previous is None:
        return ""
    better = [name for name in ("CD_x1e3", "P2F_x1e3") if row[name] < previous[name]]
    return "helps (CD and P2F)" if len(better) == 2 else (f"helps on {better[0]} only" if better else
                                                          "does not help here")


def rows(quick: bool = True, seed: int = 0, *, figure: Path | None = None,
         overrides: dict | None = None) -> list[dict]:
    """Train the models and return the table's rows (one per method, ratio and NFE per 4x pass); ``overrides``
    replaces entries of the QUICK / FULL setting."""
    setting = {**(QUICK if quick else FULL), **(overrides or {})}
    torch.manual_seed(seed)
    examples = held_out_shapes(setting["test_shapes"], setting["n_sparse"], seed)
    table: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        variants = _variants(Path(folder), setting, seed)
        for ratio in (4, 16):
            outs = [_midpoints(ex["sparse"], ratio) for ex in examples]
            table.append(_row("midpoint interpolation", ratio, 0, outs, examples, None))
            for nfe in setting["nfe"]:
                previous = None
                for name, model, options in variants:
                    gen = torch.Generator().manual_seed(seed)
                    outs = [model(ex["sparse"], ratio, steps=nfe, generator=gen, **options) for ex in examples]
                    row = _row(name, ratio, nfe, outs, examples, previous if name.startswith("PUFM++") else None)
                    table.append(row)
                    previous = row if name.startswith("PUFM") else previous
                    shown = ratio == 4 and nfe == min(2, max(setting["nfe"])) and name.startswith("PUFM++ full")
                    if figure is not None and shown:
                        _figure(figure, examples[0], outs[0], nfe)
    return table


def _midpoints(sparse: torch.Tensor, ratio: int) -> torch.Tensor:
    """Midpoint interpolation, 16x as 4x twice like the flows."""
    out = upsample(None, sparse, 4)
    return upsample(None, out, 4) if ratio == 16 else out


def _row(name: str, ratio: int, nfe: int, outs: list, examples: list, previous: dict | None) -> dict:
    values = [_metrics(out, ex, ratio) for out, ex in zip(outs, examples)]
    row = {"method": name, "ratio": ratio, "NFE_per_pass": nfe}
    row.update({key: round(float(np.mean([v[key] for v in values])), 4) for key in values[0]})
    row["verdict"] = _verdict(row, previous)
    return row


def _figure(path: Path, example: dict, pufm: torch.Tensor, nfe: int) -> None:
    from flowzoo.three_d.plotting import plot_point_clouds

    path.parent.mkdir(parents=True, exist_ok=True)
    plot_point_clouds({"sparse input": example["sparse"], "midpoints": upsample(None, example["sparse"], 4),
                       f"PUFM++ ({nfe} NFE)": pufm, "ground truth": example[4]}, path, point_size=3.0, dpi=70)


def claims(table: list[dict]) -> list[str]:
    """The claim, per ratio and NFE: PUFM++ (full) below midpoints and the Gaussian-source flow on CD, on P2F and on
    the mesh P2F (when measured)."""
    notes = []
    for ratio in (4, 16):
        mid = next(r for r in table if r["ratio"] == ratio and r["NFE_per_pass"] == 0)
        for nfe in sorted({r["NFE_per_pass"] for r in table if r["NFE_per_pass"]}):
            pick = {r["method"]: r for r in table if r["ratio"] == ratio and r["NFE_per_pass"] == nfe}
            best = pick["PUFM++ full (+ on-manifold projection)"]
            for other, ref in (("midpoints", mid), ("the Gaussian-source flow", pick["Gaussian-source flow"])):
                verdicts = [f"{'beats' if best[key] < ref[key] else 'does NOT beat'} {other} on {key[:-5]}"
                            for key in ("CD_x1e3", "P2F_x1e3", "P2F_mesh_x1e3") if not np.isnan(ref[key])]
                notes.append(f"{ratio}x, {nfe} NFE/pass: PUFM++ full " + ", ".join(verdicts))
    return notes


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick setting (see QUICK)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-figure", action="store_true", help="do not write the docs figure")
    for name in ("shapes", "steps", "stage2_steps", "test_shapes", "n_sparse"):
        parser.add_argument(f"--{name}", type=int, default=None, help=f"override (full: {FULL[name]})")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    overrides = {name: getattr(args, name) for name in ("shapes", "steps", "stage2_steps", "test_shapes", "n_sparse")
                 if getattr(args, name) is not None}
    table = rows(args.quick, args.seed, figure=None if args.no_figure else FIGURE, overrides=overrides)
    setting = {**(QUICK if args.quick else FULL), **overrides}
    notes = [f"{setting['shapes']} training shapes x {setting['patches']} patches (32 -> 128 points), stage 1 "
             f"{setting['steps']} updates, stage 2 {setting['stage2_steps']} updates; {setting['test_shapes']} "
             f"held-out shapes with {setting['n_sparse']} sparse points", *claims(table),
             "16x midpoints run 4x twice, like the flows; P2F is the distance to the local tangent plane of a "
             "40k-point sample of the true surface, P2F_mesh the exact distance to a triangle mesh of it (20k-70k "
             "triangles, deformed like the points)"]
    columns = list(table[0])
    print(" | ".join(columns))
    for row in table:
        print(" | ".join(str(row[c]) for c in columns))
    print("\n".join(notes))
    save_table("three_d_upsampling", table, title="Point-cloud upsampling on held-out generated shapes",
               command=reproduce_command("benchmarks.three_d_upsampling", argv), quick=args.quick, notes=notes)
    print(f"{time.perf_counter() - started:.0f} s")
    return table


if __name__ == "__main__":
    main()
