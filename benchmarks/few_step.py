"""Few-step generation in flowzoo.core: quality against NFE and cost, one table per dataset.

Every method on a dataset uses the same network family (MLP 3x256 on checkerboard, 3x512 on moons, 4x512 on
digits; flow maps add a second time embedding), the same seed, batches, optimiser (Adam, cosine decay to 5 %)
and number of steps: every method trained from scratch (FM, the MeanFlow rows, SplitMeanFlow) gets
``--steps`` (checkerboard 6000, moons 12000, digits 3000). Methods that start from the flow-matching (FM) teacher
(2-rectified flow and MFD, fine-tuned at half the learning rate; FlowTurbo's small refiner; BOSS's fine-tune)
are trained after it, on the same data batches (2-RF on its pairs), for ``--finetune-steps`` (6000 in 2-D,
3000 on digits; the teacher's steps are not added). Training steps are interleaved -- one step of
each method in turn, the order rotating -- within each of the two phases (from scratch; from the teacher),
and sampling times are the best of interleaved repeats, so the machine's load hits all methods alike.

Datasets (``--datasets``): ``checkerboard`` (N(0, I) -> checkerboard), ``moons`` (8 Gaussians -> moons),
``digits`` (N(0, I) -> scikit-learn's 8x8 digits scaled to [-1, 1]). Quality is W2 (exact EMD, POT) against
fresh data in 2-D, and a Fréchet distance on a small digit classifier's features on digits
(:mod:`flowzoo.vision.vector_features`; the classifier is trained once and cached in
``flowzoo.vision.features.default_cache_dir()``).

Rows: FM with Euler 1/2/4/100 steps; BOSS at K = 2, 4 -- its Bellman grid alone on the FM teacher, then the
full method (Bellman grid + the straightening fine-tune of paper §3.3 on redress data generated once), and the
same fine-tune on the uniform grid as the ablation; 2-rectified flow (1, 2 steps; path straightness
before/after); MeanFlow, MeanFlow-iMF (improved MeanFlow's tangent, arXiv 2512.02012), MeanFlow + OT (on minibatch-OT
pairs with uniform-gap intervals: its own row, the FM baseline keeps independent pairs) and SplitMeanFlow
(1, 2 NFE); MeanFlow distillation (MFD) from the FM teacher (1 NFE); FlowTurbo's Heun/pseudo-corrector/refiner
schedule against Heun at similar NFE. After each table, the issue's targets with PASS/FAIL as measured (INFO
lines: ablations, not targets). ``--methods`` trains a subset (FM, the baseline, always runs), e.g.
``--methods boss`` or ``--methods meanflow splitmeanflow`` (``meanflow`` trains the three MeanFlow rows).

Files: this script (rows, targets, CLI), ``few_step_data.py`` (datasets, timing, table),
``few_step_runs.py`` (the interleaved training of every method); each flow-map method's configuration and the
alternatives measured for it are :mod:`flowzoo.core.fewstep.presets`.

Run (checkerboard and digits 14 and 8 minutes measured on 2 threads of a shared machine; moons, with its wider
network and twice the steps, 72 minutes measured on 1 thread while another benchmark shared the machine (4292 s),
an estimated 30-40 on 2 idle cores; ``--quick``, 300 steps per method: a few minutes):

    .venv/bin/python -m benchmarks.few_step
    .venv/bin/python -m benchmarks.few_step --quick --datasets checkerboard moons
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks.few_step_data import DEFAULT_STEPS, DATASETS, Dataset, interleaved_min_times, make_dataset, table
from benchmarks.few_step_runs import METHODS, Trained, train_all
from benchmarks.results import reproduce_command, save_table
from flowzoo.core.fewstep import flowmap_sample
from flowzoo.core.fewstep import flowturbo_sample
from flowzoo.core.analysis import path_straightness
from flowzoo.core.sampling import integrate

__all__ = ["Sampler", "samplers_of", "run_benchmark", "targets", "main"]


@dataclass
class Sampler:
    method: str
    sampler: str
    fn: Callable[[], object]          # returns an object with .x and .nfe
    train_ms: float | None = None
    notes: str = ""


def samplers_of(ds: Dataset, tr: Trained, x0: torch.Tensor, args) -> list[Sampler]:
    teacher = tr.fm.model
    out = [Sampler("FM", f"Euler {n}", lambda n=n: integrate(teacher, x0, method="euler", steps=n), tr.fm.ms_per_step)
           for n in (1, 2, 4, 100)]
    for k, grid in tr.boss_grids.items():
        note = (f"grid [{', '.join(f'{g:.2f}' for g in grid.tolist())}]; DP on {args.boss_trajectories} paths, "
                f"{tr.boss_seconds:.1f} s")
        out.append(Sampler("FM", f"BOSS Euler {k}", lambda g=grid: integrate(teacher, x0, method="euler", time_grid=g),
                           notes=note + "; steps only, no fine-tune"))
        for kind, label in (("bellman", "BOSS"), ("uniform", "uniform")):
            run = tr.boss_runs[(kind, k)]
            g = tr.boss_grids[k] if kind == "bellman" else torch.linspace(0, 1, k + 1)
            out.append(Sampler(f"{label}+redress", f"Euler {k}",
                               lambda g=g, m=run.model: integrate(m, x0, method="euler", time_grid=g), run.ms_per_step,
                               notes=("Bellman grid" if kind == "bellman" else "ablation: uniform grid") +
                               f"; fine-tuned on {tr.boss_paths} teacher paths"))
    if tr.rf is not None:
        rf = tr.rf.model
        for n in (1, 2, 100):
            out.append(Sampler("2-RF", f"Euler {n}", lambda n=n: integrate(rf, x0, method="euler", steps=n),
                               tr.rf.ms_per_step, notes=f"{tr.n_pairs} rk4-{args.pair_steps} pairs "
                               f"({tr.pair_seconds:.1f} s); fine-tuned from FM, U-shaped t" if n < 100 else ""))
    for run, label, nfes in ((tr.mf, "from scratch, JVP", (1, 2)),
                             (tr.imf, "from scratch, JVP along its own velocity", (1, 2)),
                             (tr.mf_ot, "JVP, minibatch-OT pairs (not the FM baseline's), uniform-gap intervals",
                              (1, 2)),
                             (tr.smf, "from scratch", (1, 2)),
                             (tr.mfd, "finite diff., teacher v, warm start", (1,))):
        if run is None:
            continue
        for n in nfes:
            out.append(Sampler(run.name, f"flow map {n}", lambda n=n, m=run.model: flowmap_sample(m, x0, steps=n),
                               run.ms_per_step, notes=label))
    if tr.refiner is not None:
        h, p, r = args.turbo
        refiner = tr.refiner.model
        out.append(Sampler("FlowTurbo", f"H{h}/P{p}/R{r}",
                           lambda: flowturbo_sample(teacher, x0, heun_steps=h, pseudo_steps=p, refiner_steps=r,
                                                    refiner=refiner), tr.refiner.ms_per_step,
                           notes=f"refiner {refiner.flops()} MACs vs predictor {_macs(teacher)}"))
        out.append(Sampler("FlowTurbo", f"H{h}/P{p + r}/R0",
                           lambda: flowturbo_sample(teacher, x0, heun_steps=h, pseudo_steps=p + r, refiner_steps=0),
                           notes="pseudo-corrector only"))
        out += [Sampler("FM", f"Heun {n}", lambda n=n: integrate(teacher, x0, method="heun", steps=n)) for n in (3, 4)]
    return out


def run_benchmark(ds: Dataset, args) -> tuple[list[dict], list[tuple[str, bool, str]]]:
    tr = train_all(ds, args)
    x0 = ds.source(args.eval_samples, torch.Generator().manual_seed(1234))
    samplers = samplers_of(ds, tr, x0, args)
    times, outs = interleaved_min_times([s.fn for s in samplers], args.time_reps)
    rows = []
    for s, seconds, out in zip(samplers, times, outs):
        refiner_calls = out.extras.get("refiner_calls", 0)
        nfe = str(out.nfe) + (f" (+{refiner_calls} r)" if refiner_calls else "")
        rows.append({"method": s.method, "sampler": s.sampler, "NFE": nfe, **ds.evaluate(out.x),
                     "ms/sample": 1e3 * seconds / len(x0), "train ms/step": "-" if s.train_ms is None else s.train_ms,
                     "straightness": "-", "notes": s.notes})
    rows.append({"method": "data", "sampler": "real sample", "NFE": "-", **ds.floor, "ms/sample": "-",
                 "train ms/step": "-", "straightness": "-", "notes": ds.floor_note})
    straight_x0 = x0[:args.straightness_samples]
    s_before = path_straightness(tr.fm.model, straight_x0, steps=100)
    _find(rows, "FM", "Euler 100")["straightness"] = s_before
    s_after = None
    if tr.rf is not None:
        s_after = path_straightness(tr.rf.model, straight_x0, steps=100)
        _find(rows, "2-RF", "Euler 100")["straightness"] = s_after
    return rows, targets(ds, rows, tr, s_before, s_after)


def _macs(model: torch.nn.Module) -> int:
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def _find(rows: list[dict], method: str, sampler: str) -> dict:
    return next(r for r in rows if r["method"] == method and r["sampler"] == sampler)


def targets(ds: Dataset, rows: list[dict], tr: Trained, s_before: float,
            s_after: float | None) -> list[tuple[str, bool | None, str]]:
    """The issue's targets, measured: (what, passed, numbers); passed None marks an informative line."""
    key = ds.metric
    fm100, fm1 = _find(rows, "FM", "Euler 100")[key], _find(rows, "FM", "Euler 1")[key]
    out = []
    if ds.dim == 2:
        for run in (tr.mf, tr.imf, tr.mf_ot, tr.smf):
            if run is not None:
                name, value = run.name, _find(rows, run.name, "flow map 1")[key]
                out.append((f"{name} 1-NFE {key} <= 1.3x FM Euler-100", value <= 1.3 * fm100,
                            f"{value:.3f} vs {fm100:.3f} (ratio {value / fm100:.2f})"))
    out.append((f"FM 1 step far worse (>= 2x FM Euler-100 {key})", fm1 >= 2 * fm100,
                f"{fm1:.3f} vs {fm100:.3f} (ratio {fm1 / fm100:.2f})"))
    if s_after is not None:
        ratio = s_before / max(s_after, 1e-12)
        out.append(("reflow cuts straightness >= 5x", ratio >= 5,
                    f"{s_before:.4f} -> {s_after:.4f} ({ratio:.2f}x)"))
    for k in tr.boss_grids:
        uniform = _find(rows, "FM", f"Euler {k}")[key]
        boss = _find(rows, "BOSS+redress", f"Euler {k}")[key]
        steps_only = _find(rows, "FM", f"BOSS Euler {k}")[key]
        ablation = _find(rows, "uniform+redress", f"Euler {k}")[key]
        out.append((f"BOSS (Bellman steps + straightening) beats uniform Euler at K={k}", boss < uniform,
                    f"{boss:.3f} vs {uniform:.3f}"))
        out.append((f"Bellman steps alone (no fine-tune) vs uniform Euler at K={k}", None,
                    f"{steps_only:.3f} vs {uniform:.3f}"))
        out.append((f"straightening on the Bellman grid vs on the uniform grid at K={k}", None,
                    f"{boss:.3f} vs {ablation:.3f}"))
    for run in (tr.mf, tr.imf, tr.mf_ot):
        if run is not None:
            ratio = run.ms_per_step / tr.fm.ms_per_step
            detail = f"{run.ms_per_step:.2f} ms vs {tr.fm.ms_per_step:.2f} ms (ratio {ratio:.2f})"
            if run is tr.mf_ot:  # not a target: most of this step is the exact OT solve on the batch
                out.append((f"{run.name} training step vs FM step (CPU; includes the OT solve)", None, detail))
            else:
                out.append((f"{run.name} training step <= 2x FM step (CPU)", ratio <= 2.0, detail))
    return out



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="methods to train besides the FM baseline (always trained); default all")
    parser.add_argument("--steps", type=int, default=None, help="training steps of the methods trained from "
                        "scratch (default: checkerboard 6000, moons 12000, digits 3000; --quick 300)")
    parser.add_argument("--finetune-steps", type=int, default=None, help="training steps of the methods that "
                        "start from the FM teacher (default: checkerboard and moons 6000, digits 3000; --quick 300)")
    parser.add_argument("--batch", type=int, default=512, help="batch size in 2-D")
    parser.add_argument("--digits-batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-samples", type=int, default=None, help="default 1500 (2-D) / 1000 (digits)")
    parser.add_argument("--pairs", type=int, default=20000, help="reflow pairs in 2-D (a quarter on digits)")
    parser.add_argument("--pair-steps", type=int, default=25, help="rk4 steps per reflow pair (4 NFE each)")
    parser.add_argument("--boss-trajectories", type=int, default=256)
    parser.add_argument("--straightness-samples", type=int, default=500)
    parser.add_argument("--turbo", type=int, nargs=3, default=(1, 5, 3), metavar=("H", "P", "R"),
                        help="FlowTurbo Heun / pseudo-corrector / refiner steps (uniform grid, h <= 0.12)")
    parser.add_argument("--time-reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="300 training steps, fewer pairs (smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    all_targets = []
    started = time.perf_counter()
    for name in args.datasets:
        a = copy.copy(args)
        if a.steps is None:
            a.steps = 300 if args.quick else DEFAULT_STEPS[name][0]
        if a.finetune_steps is None:
            a.finetune_steps = 300 if args.quick else DEFAULT_STEPS[name][1]
        if a.eval_samples is None:
            a.eval_samples = 1500 if name != "digits" else 1000
        if args.quick:
            a.pairs = min(a.pairs, 4000)
            a.time_reps = 1
        t0 = time.perf_counter()
        print(f"\n# {name}", flush=True)
        ds = make_dataset(name, a)
        rows, tgts = run_benchmark(ds, a)
        title = (f"{ds.title}: {a.steps} steps from scratch, {a.finetune_steps} from the teacher, "
                 f"MLP {ds.depth}x{ds.hidden}, seed {a.seed}, {a.eval_samples} samples")
        print(f"\n## {title} ({time.perf_counter() - t0:.0f} s)\n")
        print(table(rows))
        print(f"\n### Targets ({ds.name})\n")
        notes = []
        for what, ok, detail in tgts:
            mark = "INFO" if ok is None else "PASS" if ok else "FAIL"
            notes.append(f"{mark}  {what}: {detail}")
            print(f"- {notes[-1]}")
        save_table(f"few_step_{name}", rows, title=title, command=reproduce_command("benchmarks.few_step"),
                   quick=args.quick, notes=notes)
        all_targets += [(name, what, ok) for what, ok, _ in tgts if ok is not None]
        sys.stdout.flush()
    passed = sum(ok for _, _, ok in all_targets)
    print(f"\n{passed}/{len(all_targets)} targets pass. Total {time.perf_counter() - started:.0f} s on "
          f"{args.threads} thread(s).")



if __name__ == "__main__":
    main()
