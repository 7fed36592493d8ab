"""Few-step generation in flowzoo.core: quality against NFE and cost, one table per dataset.

Every method on a dataset uses the same network family (MLP 3x256 in 2-D, 4x512 on digits; flow maps add a
second time embedding), the same seed, batches, optimiser (Adam, cosine decay to 5 %) and number of steps.
Methods that start from the flow-matching (FM) teacher (2-rectified flow and MFD, fine-tuned at half the
learning rate; FlowTurbo's small refiner) are trained after it, on the same data batches (2-RF on its pairs);
their step count is their own (the teacher's is not added). Training steps are interleaved -- one step of
each method in turn, the order rotating -- within each of the two phases (from scratch; from the teacher),
and sampling times are the best of interleaved repeats, so the machine's load hits all methods alike.

Datasets (``--datasets``): ``checkerboard`` (N(0, I) -> checkerboard), ``moons`` (8 Gaussians -> moons),
``digits`` (N(0, I) -> scikit-learn's 8x8 digits scaled to [-1, 1]). Quality is W2 (exact EMD, POT) against
fresh data in 2-D, and a Fréchet distance on a small digit classifier's features on digits
(``benchmarks/digits_features.py``; the classifier is trained once and cached in ``benchmarks/.cache/``).

Rows: FM with Euler 1/2/4/100 steps; BOSS at K = 2, 4 -- its Bellman grid alone on the FM teacher, then the
full method (Bellman grid + the straightening fine-tune of paper §3.3 on redress data generated once), and the
same fine-tune on the uniform grid as the ablation; 2-rectified flow (1, 2 steps; path straightness
before/after); MeanFlow and SplitMeanFlow (1, 2 NFE); MeanFlow distillation (MFD) from the FM teacher (1 NFE);
FlowTurbo's Heun/pseudo-corrector/refiner schedule against Heun at similar NFE. After each table, the issue's
targets with PASS/FAIL as measured (INFO lines: ablations, not targets). ``--methods`` trains a subset
(FM, the baseline, always runs), e.g. ``--methods boss`` or ``--methods meanflow splitmeanflow``.

Run (about 17 minutes on 2 idle CPU cores, twice that on a busy machine; ``--quick``, 300 steps per method:
about 3 minutes):

    .venv/bin/python benchmarks/few_step.py
    .venv/bin/python benchmarks/few_step.py --quick --datasets checkerboard moons
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flowzoo.core.boss import (BossStraighteningLoss, bellman_steps, boss_cost_matrix,  # noqa: E402
                               boss_redress_states)
from flowzoo.core.data import sample_toy  # noqa: E402
from flowzoo.core.flowmap import MLPFlowMap, TwoTimeSampler, flowmap_sample  # noqa: E402
from flowzoo.core.flowturbo import RefinerLoss, VelocityRefiner, flowturbo_sample  # noqa: E402
from flowzoo.core.meanflow import MeanFlowLoss  # noqa: E402
from flowzoo.core.metrics import path_straightness, wasserstein2  # noqa: E402
from flowzoo.core.nets import MLPVelocity  # noqa: E402
from flowzoo.core.objectives import FlowMatchingLoss  # noqa: E402
from flowzoo.core.reflow import generate_pairs, reflow_objective  # noqa: E402
from flowzoo.core.solvers import integrate  # noqa: E402
from flowzoo.core.splitmeanflow import SplitMeanFlowLoss  # noqa: E402

DATASETS = ("checkerboard", "moons", "digits")
METHODS = ("meanflow", "splitmeanflow", "reflow", "mfd", "flowturbo", "boss")
BOSS_STEPS = (2, 4)


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    name: str
    title: str
    dim: int
    hidden: int
    depth: int
    refiner_hidden: int
    source: Callable[[int, torch.Generator], torch.Tensor]
    target: Callable[[int, torch.Generator], torch.Tensor]
    metric: str                                  # column name of the quality figure
    evaluate: Callable[[torch.Tensor], dict] = None
    floor: dict = field(default_factory=dict)    # the metric of real data against the reference
    floor_note: str = ""


def make_dataset(name: str, args) -> Dataset:
    if name in ("checkerboard", "moons"):
        src = "normal" if name == "checkerboard" else "8gaussians"
        title = "N(0, I) -> checkerboard" if name == "checkerboard" else "8 Gaussians -> moons"
        ds = Dataset(name, title, 2, 256, 3, 64,
                     source=lambda n, g: sample_toy(src, n, generator=g),
                     target=lambda n, g: sample_toy(name, n, generator=g), metric="W2")
        reference = sample_toy(name, args.eval_samples, seed=4321)
        ds.evaluate = lambda x: {"W2": wasserstein2(x, reference)}
        ds.floor = ds.evaluate(sample_toy(name, args.eval_samples, seed=999))
        ds.floor_note = "fresh data: the metric's noise floor"
        return ds
    from digits_features import DigitsEvaluator, load_digits_scaled

    data, _ = load_digits_scaled()
    evaluator = DigitsEvaluator.load()
    ds = Dataset(name, "N(0, I) -> 8x8 digits (64-D, [-1, 1])", 64, 512, 4, 128,
                 source=lambda n, g: torch.randn(n, 64, generator=g),
                 target=lambda n, g: data[torch.randint(0, len(data), (n,), generator=g)], metric="FD")
    ds.evaluate = lambda x: {"FD": evaluator.fd(x), "label KL": evaluator.label_kl(x)}
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(999))[:args.eval_samples]
    ds.floor = ds.evaluate(data[pick])
    ds.floor_note = f"{args.eval_samples} real digits (a subset of the reference: optimistic floor)"
    print(f"  digits classifier: test accuracy {evaluator.accuracy:.3f}", flush=True)
    return ds


# --------------------------------------------------------------------------------------------
# interleaved training
# --------------------------------------------------------------------------------------------

@dataclass
class Run:
    name: str
    model: torch.nn.Module
    objective: Callable
    steps: int
    lr: float
    seed: int
    batches: Callable[[int], dict] | None = None   # own batch source (e.g. reflow pairs); None: shared data batch
    seconds: float = 0.0
    done: int = 0
    last: dict = field(default_factory=dict)

    def __post_init__(self):
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=self.lr)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, self.steps, eta_min=0.05 * self.lr)
        self.gen = torch.Generator().manual_seed(self.seed)

    @property
    def ms_per_step(self) -> float:
        return 1e3 * self.seconds / max(self.done, 1)


def train_interleaved(runs: list[Run], data_batch: Callable[[int], dict], desc: str) -> None:
    """One step of each run in turn (the order rotating), each on the same data batch of that step."""
    bars = [tqdm(total=r.steps, desc=f"{desc} {r.name}", position=i, leave=True, mininterval=2.0,
                 file=sys.stderr) for i, r in enumerate(runs)]
    for step in range(max(r.steps for r in runs)):
        batch = data_batch(step)
        rotation = step % len(runs)
        for k in list(range(rotation, len(runs))) + list(range(rotation)):
            run = runs[k]
            if run.done >= run.steps:
                continue
            b = batch if run.batches is None else run.batches(step)
            run.model.train()
            started = time.perf_counter()
            loss, metrics = run.objective(run.model, b, generator=run.gen)
            run.opt.zero_grad(set_to_none=True)
            loss.backward()
            run.opt.step()
            run.sched.step()
            run.seconds += time.perf_counter() - started
            run.done += 1
            run.last = metrics
            bars[k].update(1)
            if run.done % 50 == 0:
                bars[k].set_postfix(loss=f"{metrics['loss']:.4g}", refresh=False)
    for bar in bars:
        bar.close()
    for run in runs:
        run.model.eval()
        if not math.isfinite(run.last.get("loss", float("nan"))):
            print(f"  WARNING: {run.name} ended with a non-finite loss", flush=True)


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------

def interleaved_min_times(fns: list[Callable], reps: int) -> tuple[list[float], list[object]]:
    best, outs = [float("inf")] * len(fns), [None] * len(fns)
    for _ in range(reps):
        for k, fn in enumerate(fns):
            started = time.perf_counter()
            with torch.no_grad():
                outs[k] = fn()
            best[k] = min(best[k], time.perf_counter() - started)
    return best, outs


@dataclass
class Sampler:
    method: str
    sampler: str
    fn: Callable[[], object]          # returns an object with .x and .nfe
    train_ms: float | None = None
    notes: str = ""


@dataclass
class Trained:
    """What the two training phases produce (models inside the runs; None: method not selected) and side costs."""
    fm: Run
    mf: Run | None = None
    smf: Run | None = None
    rf: Run | None = None
    mfd: Run | None = None
    refiner: Run | None = None
    n_pairs: int = 0
    pair_seconds: float = 0.0
    boss_grids: dict = field(default_factory=dict)       # K -> Bellman grid
    boss_runs: dict = field(default_factory=dict)        # (grid kind, K) -> redress Run; kind "bellman"/"uniform"
    boss_seconds: float = 0.0
    boss_paths: int = 0                                  # sources of the redress data


def train_all(ds: Dataset, args) -> Trained:
    """Phase 1 trains FM, MeanFlow and SplitMeanFlow from scratch; phase 2 the methods that need the FM teacher."""
    batch_size = args.batch if ds.dim == 2 else args.digits_batch
    chosen = set(args.methods)

    def stream() -> Callable[[int], dict]:
        """The data batches, the same sequence in both phases (called once per step, in order)."""
        gen = torch.Generator().manual_seed(args.seed + 17)
        return lambda step: {"x0": ds.source(batch_size, gen), "x1": ds.target(batch_size, gen)}

    def net(cls, **kwargs) -> torch.nn.Module:
        torch.manual_seed(args.seed)
        return cls(ds.dim, hidden=ds.hidden, depth=ds.depth, **kwargs)

    steps, lr, seed = args.steps, args.lr, args.seed
    tr = Trained(fm=Run("FM", net(MLPVelocity), FlowMatchingLoss(), steps, lr, seed))
    if "meanflow" in chosen:
        tr.mf = Run("MeanFlow", net(MLPFlowMap), MeanFlowLoss(derivative="jvp", **meanflow_settings()), steps, lr,
                    seed)
    if "splitmeanflow" in chosen:
        tr.smf = Run("SplitMeanFlow", net(MLPFlowMap), SplitMeanFlowLoss(**splitmeanflow_settings()), steps, lr, seed)
    phase1 = [r for r in (tr.fm, tr.mf, tr.smf) if r is not None]
    print(f"  phase 1: {', '.join(r.name for r in phase1)} ({steps} steps, batch {batch_size})", flush=True)
    train_interleaved(phase1, stream(), ds.name)
    teacher = tr.fm.model
    phase2 = []
    n_pairs = args.pairs if ds.dim == 2 else args.pairs // 4

    def bank_batches(bank: dict[str, torch.Tensor], gen_seed: int) -> Callable[[int], dict]:
        gen = torch.Generator().manual_seed(gen_seed)
        size = next(iter(bank.values())).shape[0]
        return lambda step: {k: v[idx] for idx in [torch.randint(0, size, (batch_size,), generator=gen)]
                             for k, v in bank.items()}

    if "reflow" in chosen:
        # 2-rectified flow: pairs from the teacher's ODE, then fine-tune a copy of the teacher on them (the
        # RectifiedFlow README fine-tunes 2-RF from 1-RF) with U-shaped t (rfpp, arXiv 2405.20320).
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="flowzoo-fewstep-") as tmp:
            pairs = generate_pairs(teacher, lambda n, generator=None: ds.source(n, generator), n_pairs,
                                   out_dir=Path(tmp) / "pairs", method="rk4", steps=args.pair_steps,
                                   seed=seed + 5, progress=False).tensors()
        tr.n_pairs, tr.pair_seconds = n_pairs, time.perf_counter() - started
        tr.rf = Run("2-RF", copy.deepcopy(teacher), reflow_objective(), steps, 0.5 * lr, seed,
                    batches=bank_batches({"x0": pairs["x0"], "x1": pairs["x1"]}, seed + 6))
        phase2.append(tr.rf)
    if "mfd" in chosen:
        # MFD (MF-RAE, arXiv 2511.13019): MeanFlow with the teacher's velocity and a finite-difference derivative.
        # Warm start from the teacher: copy the shared layers and zero the gap embedding's output layer, so that
        # the student starts as u(x, s, t) = v_teacher(x, s).
        student = net(MLPFlowMap)
        student.load_state_dict(teacher.state_dict(), strict=False)
        torch.nn.init.zeros_(student.gap_embedding[-1].weight)
        torch.nn.init.zeros_(student.gap_embedding[-1].bias)
        tr.mfd = Run("MFD", student, MeanFlowLoss(derivative="finite_difference", teacher=teacher,
                                                  **meanflow_settings()), steps, 0.5 * lr, seed)
        phase2.append(tr.mfd)
    if "flowturbo" in chosen:
        torch.manual_seed(seed)
        tr.refiner = Run("FlowTurbo refiner", VelocityRefiner(ds.dim, hidden=ds.refiner_hidden, depth=2),
                         RefinerLoss(teacher), steps, lr, seed)
        phase2.append(tr.refiner)
    if "boss" in chosen:
        phase2 += boss_runs(ds, tr, args, n_pairs, bank_batches)
    teacher.requires_grad_(False)
    if phase2:
        print(f"  phase 2 (from the FM teacher): {', '.join(r.name for r in phase2)}", flush=True)
        train_interleaved(phase2, stream(), ds.name)
    return tr


def boss_runs(ds: Dataset, tr: Trained, args, n_paths: int, bank_batches) -> list[Run]:
    """BOSS (arXiv 2312.16414): Bellman grids from the teacher's cost matrix, then its straightening fine-tune.

    Phase 1 of BOSS picks the steps (no training); phase 2 ("redress", paper §3.3 and Alg. 2) fine-tunes a copy
    of the teacher on chords of the teacher's fine Euler solve through the chosen times, generated once for
    ``n_paths`` sources (the same count as the reflow pairs) like the paper's redress data. The same fine-tune
    on the *uniform* grid is the ablation that separates the step choice from the fine-tune.
    """
    teacher, lr, steps, seed = tr.fm.model, args.lr, args.steps, args.seed
    started = time.perf_counter()
    cost, fine = boss_cost_matrix(teacher, ds.source(args.boss_trajectories, torch.Generator().manual_seed(77)),
                                  fine_steps=100)
    tr.boss_grids = {k: fine[bellman_steps(cost, k)].clone() for k in BOSS_STEPS}
    tr.boss_seconds = time.perf_counter() - started
    sources = ds.source(n_paths, torch.Generator().manual_seed(seed + 8))
    tr.boss_paths = n_paths
    runs = []
    for k in BOSS_STEPS:
        for kind, grid in (("bellman", tr.boss_grids[k]), ("uniform", torch.linspace(0, 1, k + 1))):
            trajectory = boss_redress_states(teacher, sources, grid, fine_steps=100).movedim(0, 1).contiguous()
            run = Run(f"BOSS redress {kind} K={k}", copy.deepcopy(teacher), BossStraighteningLoss(teacher, grid),
                      steps, 0.5 * lr, seed, batches=bank_batches({"trajectory": trajectory}, seed + 9 + k))
            tr.boss_runs[(kind, k)] = run
            runs.append(run)
    return runs


def meanflow_settings() -> dict:
    """MeanFlow's time sampler logit-normal(-0.4, 1) in its own time, translated to flowzoo time
    (t = 1 - t_MF, so the mean reads +0.4), with 75 % of pairs s != t (py-meanflow's CIFAR ratio) and
    adaptive weight p = 0.5 (the paper ablates p in {0, 0.5, 1}). One-seed checks on checkerboard:
    at 2000 steps 1-NFE W2 0.55 with p = 0.5, 0.81 with p = 1, 1.71 with mean -0.4; at 6000 steps
    0.392 with 75 % distinct pairs against 0.506 with the ImageNet default of 25 %.

    On 8 Gaussians -> moons (1-NFE W2 0.815 at 6000 steps, FM-100 0.287) nothing here reaches 1.3x: std 2
    0.860, mean 0 / std 2 0.817, time_scale 10 0.851, uniform-gap intervals 1.63 (2000 steps), py-meanflow's
    CIFAR pair (s ~ LN(0.6, 1.6), t ~ LN(4, 1.6)) 1.67 (2000 steps), 18000 steps 0.686. The target
    v + (t - s) du/ds carries the conditional velocity's noise times (t - s) and the map's Jacobian, which
    is large for a map that splits 8 blobs onto 2 thin moons: batch 1024 gave 0.531 after 2000 steps against
    0.811 at batch 512 (variance-limited), i.e. the budget, not a bug, is what is missing."""
    return {"time_sampler": TwoTimeSampler(mean=0.4, std=1.0, distinct_fraction=0.75), "adaptive_p": 0.5}


def splitmeanflow_settings() -> dict:
    """Half of the samples on the flow-matching boundary (the unofficial ports' ``flow_ratio = 0.5``); the other
    half on intervals whose length is uniform on (0, 1) (``TwoTimeSampler(interval="uniform_gap")``), so that
    the long jumps of 1- and 2-step sampling are trained often. One-seed checks at 6000 steps, 1-NFE W2 against
    two sorted uniform draws: moons 0.557 vs 0.669, checkerboard 0.491 vs 0.482; digits FD 42.4 vs 43.7.
    Not enough for 1.3x FM-100 in 2-D: the bootstrapped long-interval targets converge slowly (moons at batch
    1024: 0.617 after 2000 steps against 0.791 at batch 512)."""
    return {"boundary_fraction": 0.5,
            "time_sampler": TwoTimeSampler(distinct_fraction=1.0, interval="uniform_gap")}


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
    for run, label, nfes in ((tr.mf, "from scratch, JVP", (1, 2)), (tr.smf, "from scratch", (1, 2)),
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
        nfe = str(out.nfe) + (f" (+{out.refiner_calls} r)" if getattr(out, "refiner_calls", 0) else "")
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
        for name, run in (("MeanFlow", tr.mf), ("SplitMeanFlow", tr.smf)):
            if run is not None:
                value = _find(rows, name, "flow map 1")[key]
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
    if tr.mf is not None:
        ratio = tr.mf.ms_per_step / tr.fm.ms_per_step
        out.append(("MeanFlow training step <= 2x FM step (CPU)", ratio <= 2.0,
                    f"{tr.mf.ms_per_step:.2f} ms vs {tr.fm.ms_per_step:.2f} ms (ratio {ratio:.2f})"))
    return out


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------

def _fmt(value) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-2 <= abs(value) < 1e4:
            return f"{value:.3f}"
        return f"{value:.3g}"
    return str(value)


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    cells = [keys] + [[_fmt(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) if i in (0, 1, len(keys) - 1) else c[i].rjust(widths[i])
                               for i in range(len(keys))) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="methods to train besides the FM baseline (always trained); default all")
    parser.add_argument("--steps", type=int, default=None, help="training steps per method (default 6000 2-D, "
                        "3000 digits; --quick 300)")
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
            a.steps = 300 if args.quick else (6000 if name != "digits" else 3000)
        if a.eval_samples is None:
            a.eval_samples = 1500 if name != "digits" else 1000
        if args.quick:
            a.pairs = min(a.pairs, 4000)
            a.time_reps = 1
        t0 = time.perf_counter()
        print(f"\n# {name}", flush=True)
        ds = make_dataset(name, a)
        rows, tgts = run_benchmark(ds, a)
        print(f"\n## {ds.title}: {a.steps} steps/method, MLP {ds.depth}x{ds.hidden}, seed {a.seed}, "
              f"{a.eval_samples} samples ({time.perf_counter() - t0:.0f} s)\n")
        print(table(rows))
        print(f"\n### Targets ({ds.name})\n")
        for what, ok, detail in tgts:
            mark = "INFO" if ok is None else "PASS" if ok else "FAIL"
            print(f"- {mark}  {what}: {detail}")
        all_targets += [(name, what, ok) for what, ok, _ in tgts if ok is not None]
        sys.stdout.flush()
    passed = sum(ok for _, _, ok in all_targets)
    print(f"\n{passed}/{len(all_targets)} targets pass. Total {time.perf_counter() - started:.0f} s on "
          f"{args.threads} thread(s).")


if __name__ == "__main__":
    main()
