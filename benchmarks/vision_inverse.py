"""Inverse problems with a flow prior, and FlowOpt inversion, on MNIST and natural-image patches.

Trains a pixel I-CFM prior per data set with ``flowzoo.vision.train`` (unconditional: a restoration does not know
the class), measures its per-time velocity error on held-out images once (FLAIR's calibrated regularisation weight,
saved beside the run and reused), then restores held-out images from each task's measurement:

1. ``vision_inverse``: per data set and task (70 % random-pixel inpainting, ×4 average-pool super-resolution, and in
   the full run box inpainting and Gaussian deblurring; σ_y = 0.01), PSNR, SSIM, the Fréchet distance of the
   restorations on the data set's feature classifier, the classifier's accuracy on the recovered digit (MNIST),
   diversity (pixel std across three seeds), NFE and seconds per image for FLAIR, its ablations (without DTA,
   without CRW, without hard data consistency), DPS, projection and the pseudo-inverse, all at equal NFE; and
   FLAIR in a latent space (a small autoencoder and an unconditional latent I-CFM prior trained here with
   ``flowzoo.vision.autoencoder`` / ``flowzoo.vision.latent``, or ``--latent_run``) beside that prior's own
   sample, which ignores the measurement. One figure per data set and task shows the first seed's restorations
   of four images (measurement, pseudo-inverse, DPS, projection, FLAIR, latent FLAIR, ground truth) in
   ``--figures`` (default ``docs/_static/vision``; ``restore_<data>_<task>.quick.png`` for a quick run);
2. ``vision_flowopt``: FlowOpt inversion of held-out digits through 10-step Euler sampling: the error
   ‖f(z_k) − y*‖ after the iterations at step sizes below and above the power-iteration bound 2/λ̂_max, against
   naive ODE reversal and backprop-through-the-solver at equal NFE; the convergence curves go to
   ``flowopt_convergence.png`` in ``--figures``.

Run (``--quick``: minutes on one CPU thread, fewer with ``--work`` holding the priors; measured times in
docs/vision.md)::

    .venv/bin/python -m benchmarks.vision_inverse --quick
    .venv/bin/python -m benchmarks.vision_inverse
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from flowzoo.core.sampling import SampleResult
from flowzoo.core.training import TrainerConfig
from flowzoo.vision.autoencoder import AutoencoderConfig, train_autoencoder
from flowzoo.vision.features import ImageEvaluator
from flowzoo.vision.flowopt import backprop_invert, estimate_step_bound, flowopt_invert, reverse_ode, sample_ode
from flowzoo.vision.latent import generate_latent, load_latent_fm, train_latent_fm
from flowzoo.vision.metrics import psnr, ssim
from flowzoo.vision.operators import Inpainting, build_operator
from flowzoo.vision.restoration import (calibrated_weights, dps_restore, flair_restore, flair_schedule,
                                        load_error_table, measure_velocity_error, projection_restore,
                                        pseudo_inverse_restore, save_error_table)
from flowzoo.vision.train import VisionTrainConfig, load_data, load_trained, train

from benchmarks.results import reproduce_command, save_table

# The quick run works at 16 x 16 with a narrow U-Net: a CPU trains it in minutes (28 x 28 at width 32 costs ~12x).
QUICK = {"train_steps": 1500, "size": 16, "width": 16, "n_images": 48, "nfe": "20", "tasks": "inpaint,sr4",
         "data": "mnist,patches", "flowopt_images": 16, "flowopt_iterations": 12, "ae_steps": 600}
FULL = {"train_steps": 6000, "size": 28, "width": 32, "n_images": 200, "nfe": "20,50",
        "tasks": "inpaint,sr4,inpaint_box,deblur", "data": "mnist,patches", "flowopt_images": 64,
        "flowopt_iterations": 30, "ae_steps": 2000}
COLUMNS = ("data", "task", "method", "nfe", "psnr", "ssim", "fd", "accuracy", "diversity", "s_per_image")
DATA_OPTIONS = {"mnist": {}, "patches": {"channels": 1}}
FIGURES = "docs/_static/vision"
# the figure's columns between the measurement and the ground truth
PANEL_METHODS = ("pseudo-inverse", "DPS", "projection", "FLAIR", "FLAIR, latent prior")
PANEL_IMAGES = 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick setting (see QUICK)")
    for name, default in FULL.items():
        parser.add_argument(f"--{name}", type=type(default), default=None, help=f"full: {default}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--latent_run", default="", help="a latent FM run (train_latent_fm, unconditional) for the "
                        "latent FLAIR rows of every data set; default: train an autoencoder (--ae_steps) and a "
                        "latent prior (--train_steps) per data set in the work folder")
    parser.add_argument("--no-latent", action="store_true", help="skip the latent FLAIR rows")
    parser.add_argument("--work", default="", help="keep the trained priors here (default: a temporary folder)")
    parser.add_argument("--figures", default=FIGURES, help="folder of the figures (the convergence curves and one "
                        "restoration figure per data set and task; a quick run's names end in .quick.png)")
    parser.add_argument("--no-figure", action="store_true", help="write no figure")
    return parser


def _load_options(data: str, args: argparse.Namespace) -> dict:
    return {**DATA_OPTIONS[data], "size": args.size}


def _prior(data: str, args: argparse.Namespace, work: Path):
    out, steps, seed = work / f"prior_{data}_{args.size}", args.train_steps, args.seed
    if not (out / "checkpoints").exists():
        cfg = VisionTrainConfig(method="icfm", data=data, width=args.width, **_load_options(data, args),
                                trainer=TrainerConfig(steps=steps, batch_size=64, lr=2e-4, warmup_steps=100,
                                                      ema_decay=0.999, checkpoint_every=steps, out_dir=str(out),
                                                      seed=seed))
        train(cfg)
    return load_trained(out)


def _latent_prior(data: str, run, args: argparse.Namespace, work: Path):
    """A latent I-CFM prior: ``--latent_run``, or a small autoencoder (4 latent channels, one stride-2 stage) and
    an unconditional latent FM trained on the pixel prior's training split."""
    if args.latent_run:
        return load_latent_fm(args.latent_run)
    out, seed = work / f"latent_{data}_{args.size}", args.seed
    if not (out / "lfm" / "checkpoints").exists():
        images = load_data(run.config, "train")
        trainer = lambda steps, lr, ema: TrainerConfig(steps=steps, batch_size=64, lr=lr, warmup_steps=50,
                                                       ema_decay=ema, checkpoint_every=steps, seed=seed)
        train_autoencoder(images, out / "autoencoder", config=AutoencoderConfig(latent_channels=4, downsample=1,
                                                                               channels=16),
                          trainer=trainer(args.ae_steps, 1e-3, 0.0))
        train_latent_fm(images, out / "autoencoder", out / "lfm", width=args.width, class_cond=False,
                        trainer=trainer(args.train_steps, 2e-4, 0.999))
    return load_latent_fm(out / "lfm")


def _latent_restorers(latent, images: torch.Tensor, path: Path) -> dict:
    """The latent rows: FLAIR with the latent prior (data term through the decoder, CRW from the latent prior's
    own error table) and that prior's unconditioned sample, which ignores y. A class-conditional ``--latent_run``
    gets its null class (a restoration does not know the class)."""
    codec, model = latent.codec, latent.model
    null = (lambda n: torch.full((n,), latent.num_classes)) if latent.class_cond else None
    cond = (lambda n: {"y": null(n)}) if null is not None else (lambda n: None)
    if not path.exists():
        times = torch.linspace(0.02, 0.98, 25)
        save_error_table(path, times, measure_velocity_error(model, codec.encode(images), times, repeats=2,
                                                             cond=cond(len(images))))
    table = load_error_table(path)
    return {
        "FLAIR, latent prior": lambda y, op, nfe, gen: flair_restore(
            model, y, op, shape=codec.latent_shape, steps=nfe, generator=gen, check=False, decoder=codec.decode,
            encoder=codec.encode, cond=cond(len(y)), weights=calibrated_weights(flair_schedule(nfe), *table)),
        "latent prior sample (ignores y)": lambda y, op, nfe, gen: _sample_result(
            generate_latent(model, codec, y.shape[0], steps=nfe, generator=gen,
                            labels=null(len(y)) if null is not None else None)),
    }


def _sample_result(samples) -> SampleResult:
    return SampleResult(x=samples.images.detach(), nfe=samples.nfe)


def _crw_table(run, images: torch.Tensor, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not path.exists():
        times = torch.linspace(0.02, 0.98, 25)
        save_error_table(path, times, measure_velocity_error(run.model, images, times, repeats=2))
    return load_error_table(path)


def _restorers(model, shape, weights_for):
    """name -> restore(y, op, nfe, generator) for every method of the table."""
    def flair(**options):
        return lambda y, op, nfe, gen: flair_restore(model, y, op, shape=shape, steps=nfe, generator=gen,
                                                     check=False, **{**{"weights": weights_for(nfe)}, **options})
    return {
        "pseudo-inverse": lambda y, op, nfe, gen: pseudo_inverse_restore(y, op),
        "projection": lambda y, op, nfe, gen: projection_restore(model, y, op, shape=shape, steps=nfe, generator=gen),
        "DPS": lambda y, op, nfe, gen: dps_restore(model, y, op, shape=shape, steps=nfe, generator=gen),
        "FLAIR": flair(),
        "FLAIR without DTA": flair(dta=False),
        "FLAIR without CRW": flair(weights=None),
        "FLAIR without hard DC": flair(data_steps=0, project_until=0.0),
    }


def _restore_rows(data: str, run, evaluator: ImageEvaluator, images, labels, args,
                  latent=None) -> tuple[list[dict], dict]:
    """The table's rows, and per task the first seed's restorations of the first images at the first NFE (the
    figure shows those: no second solve)."""
    shape = run.shape
    table = _crw_table(run, images, Path(run.checkpoint).parent.parent / "crw.json")
    weights_for = lambda nfe: calibrated_weights(flair_schedule(nfe), *table)
    restorers = _restorers(run.model, shape, weights_for)
    if latent is not None:
        restorers.update(_latent_restorers(latent, images, Path(latent.run_dir) / "crw.json"))
    rows, panels = [], {}
    first_nfe = int(args.nfe.split(",")[0])
    for task in args.tasks.split(","):
        op = build_operator(task, shape[-1], noise_std=0.01)
        y = op.measure(images, generator=torch.Generator().manual_seed(args.seed))
        panel = {"measurement": measurement_image(op, y[:PANEL_IMAGES], shape)}
        for nfe in (int(v) for v in args.nfe.split(",")):
            for name, restore in restorers.items():
                if name == "pseudo-inverse" and nfe != first_nfe:
                    continue
                started = time.perf_counter()
                outs = [restore(y, op, nfe, torch.Generator().manual_seed(args.seed + k)) for k in range(3)]
                seconds = (time.perf_counter() - started) / (3 * len(images))
                x = outs[0].x.detach().clamp(-1, 1)
                if nfe == first_nfe and name in PANEL_METHODS:
                    panel[name] = x[:PANEL_IMAGES]
                rows.append({"data": data, "task": task, "method": name, "nfe": outs[0].nfe,
                             "psnr": float(psnr(x, images).mean()), "ssim": float(ssim(x, images).mean()),
                             "fd": evaluator.fd(x),
                             "accuracy": evaluator.class_accuracy(x, labels) if labels is not None else None,
                             "diversity": float(torch.stack([o.x.detach() for o in outs]).std(0).mean()),
                             "s_per_image": seconds})
                print(f"{data} {task} nfe {nfe} {name}: PSNR {rows[-1]['psnr']:.2f} FD {rows[-1]['fd']:.2f}")
        panels[task] = {"measurement": panel["measurement"], **{m: panel[m] for m in PANEL_METHODS if m in panel},
                        "ground truth": images[:PANEL_IMAGES]}
    return rows, panels


def measurement_image(op, y: torch.Tensor, shape) -> torch.Tensor:
    """The measurement drawn as RGB images (N, 3, H, W) in [0, 1]: image-shaped measurements as they are, smaller
    ones (super-resolution) enlarged by pixel repetition, and the pixels an inpainting mask drops in blue."""
    shown = y if tuple(y.shape[-2:]) == tuple(shape[-2:]) else F.interpolate(y, size=tuple(shape[-2:]))
    rgb = ((shown.clamp(-1, 1) + 1) / 2).mean(1, keepdim=True).expand(-1, 3, -1, -1).clone()
    if isinstance(op, Inpainting):
        missing = (op.mask.mean(0) == 0).expand_as(rgb[:, 0])
        for channel, value in enumerate((0.25, 0.45, 0.85)):
            rgb[:, channel][missing] = value
    return rgb


def restoration_figure(panel: dict, path: Path, title: str) -> Path:
    """One row per image, one labelled column per entry of ``panel`` (images (N, C, H, W) in [−1, 1], or RGB in
    [0, 1] for the measurement), saved as a small PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(panel)
    n = min(len(v) for v in panel.values())
    fig, axes = plt.subplots(n, len(names), figsize=(1.05 * len(names), 1.05 * n + 0.35), squeeze=False)
    for col, name in enumerate(names):
        images = panel[name] if name == "measurement" else (panel[name].clamp(-1, 1) + 1) / 2
        for row in range(n):
            image = images[row].detach().float()
            image = image.permute(1, 2, 0).numpy() if image.shape[0] == 3 else image.mean(0).numpy()
            axes[row, col].imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes[row, col].set_axis_off()
        axes[0, col].set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.2, rect=(0, 0, 1, 1 - 0.3 / (1.05 * n + 0.35)))
    fig.subplots_adjust(hspace=0.06, wspace=0.06)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _claims(rows: list[dict]) -> list[str]:
    notes = []
    for (data, task, nfe) in sorted({(r["data"], r["task"], r["nfe"]) for r in rows if r["method"] == "FLAIR"}):
        pick = {r["method"]: r for r in rows if (r["data"], r["task"], r["nfe"]) == (data, task, nfe)}
        flair = pick["FLAIR"]
        beats = [m for m in ("DPS", "projection") if m in pick and (flair["psnr"] > pick[m]["psnr"]
                                                                     or flair["fd"] < pick[m]["fd"])]
        verdict = "holds" if len(beats) == 2 else f"does not hold (beats only {beats or 'neither'})"
        notes.append(f"{data} {task} NFE {nfe}: 'FLAIR beats DPS and projection on PSNR or FD' {verdict}")
    return notes


def _flowopt_rows(run, images: torch.Tensor, args) -> tuple[list[dict], dict]:
    model, steps, k = run.model, 10, args.flowopt_iterations
    naive = reverse_ode(model, images, steps=steps)
    lam, bound = estimate_step_bound(model, naive, steps=steps)
    curves, rows = {}, []
    naive_error = float((sample_ode(model, naive, steps=steps) - images).flatten(1).norm(dim=1).mean())
    rows.append({"method": "naive ODE reversal", "step_size": None, "iterations": 0, "nfe": 2 * steps,
                 "error": naive_error, "bound": bound})
    for factor in (0.5, 0.9, 1.5):
        out = flowopt_invert(model, images, steps=steps, iterations=k, step_size=factor * bound, init=naive)
        curves[f"η = {factor:g} × bound"] = out.extras["errors"].mean(1).tolist()
        rows.append({"method": f"FlowOpt, η = {factor:g} × 2/λ̂", "step_size": factor * bound, "iterations": k,
                     "nfe": out.nfe + steps, "error": curves[f"η = {factor:g} × bound"][-1], "bound": bound})
    equal_nfe = rows[-1]["nfe"]  # a finer naive reversal that spends what FlowOpt spent, then the same sampler
    fine = reverse_ode(model, images, steps=equal_nfe - steps)
    rows.append({"method": "naive ODE reversal at equal NFE", "step_size": None, "iterations": 0, "nfe": equal_nfe,
                 "error": float((sample_ode(model, fine, steps=steps) - images).flatten(1).norm(dim=1).mean()),
                 "bound": bound})
    back = backprop_invert(model, images, steps=steps, iterations=max(1, k // 2), lr=0.9 * bound, init=naive)
    rows.append({"method": "backprop through the solver", "step_size": 0.9 * bound, "iterations": max(1, k // 2),
                 "nfe": back.nfe + steps, "error": float(back.extras["errors"][-1].mean()), "bound": bound})
    print(f"FlowOpt: λ̂_max {lam:.3f}, bound {bound:.3f}")
    return rows, curves


def _figure(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for label, errors in curves.items():
        ax.semilogy(range(len(errors)), errors, marker="o", ms=3, label=label)
    ax.set_xlabel("iteration k")
    ax.set_ylabel("‖f(z_k) − y*‖ (mean)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace, work: Path) -> dict[str, list[dict]]:
    torch.manual_seed(args.seed)
    restore_rows, flowopt, panels = [], ([], {}), {}
    for data in args.data.split(","):
        run_ = _prior(data, args, work)
        test = load_data(run_.config, "test")
        images, labels = test.images[:args.n_images], test.labels
        labels = labels[:args.n_images] if labels is not None else None
        evaluator = ImageEvaluator.for_dataset(data, verbose=False, **_load_options(data, args))
        latent = None if args.no_latent else _latent_prior(data, run_, args, work)
        rows, data_panels = _restore_rows(data, run_, evaluator, images, labels, args, latent)
        restore_rows += rows
        panels.update({(data, task): panel for task, panel in data_panels.items()})
        if data == "mnist":
            flowopt = _flowopt_rows(run_, test.images[:args.flowopt_images], args)
    return {"restore": restore_rows, "flowopt": flowopt[0], "curves": flowopt[1], "panels": panels}


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if args.work:
        tables = run(args, Path(args.work))
    else:
        with tempfile.TemporaryDirectory() as folder:
            tables = run(args, Path(folder))
    command = reproduce_command("benchmarks.vision_inverse", argv)
    setting = (f"{args.size}x{args.size} images, I-CFM U-Net prior of width {args.width} ({args.train_steps} steps "
               f"of batch 64), {args.n_images} held-out images per task, σ_y = 0.01; three seeds per method")
    if not args.no_latent:
        setting += (f"; latent prior: {args.latent_run}" if args.latent_run else
                    f"; latent prior: autoencoder to 4 x {args.size // 2} x {args.size // 2} ({args.ae_steps} steps), "
                    f"latent I-CFM U-Net of width {args.width} ({args.train_steps} steps)")
    notes = [setting, *_claims(tables["restore"])]
    print("\n".join(notes))
    save_table("vision_inverse", tables["restore"], columns=COLUMNS, title="Image restoration with a flow prior",
               command=command, quick=args.quick, notes=notes)
    if tables["flowopt"]:
        bound = tables["flowopt"][0]["bound"]
        below = [r for r in tables["flowopt"] if "0.9" in r["method"]][0]["error"]
        above = [r for r in tables["flowopt"] if "1.5" in r["method"]][0]["error"]
        fo_notes = [f"10-step Euler sampler; estimated bound 2/λ̂_max = {bound:.3f}",
                    f"below the bound (0.9×) error {below:.3g}; above it (1.5×) {above:.3g}: "
                    f"{'converges below and not above, as the theory says' if below < above else 'no separation'}"]
        save_table("vision_flowopt", tables["flowopt"], title="FlowOpt inversion of held-out digits",
                   command=command, quick=args.quick, notes=fo_notes)
        if not args.no_figure:
            _figure(tables["curves"], Path(args.figures) / "flowopt_convergence.png")
    if not args.no_figure:
        suffix = ".quick.png" if args.quick else ".png"
        for (data, task), panel in tables["panels"].items():
            path = restoration_figure(panel, Path(args.figures) / f"restore_{data}_{task}{suffix}",
                                      f"{data}, {task}, NFE {args.nfe.split(',')[0]}")
            print(f"figure: {path}")
    print(f"\n{time.perf_counter() - started:.0f} s")
    return tables


if __name__ == "__main__":
    main()
