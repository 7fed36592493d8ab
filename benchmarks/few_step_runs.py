"""Training for ``benchmarks/few_step.py``: the runs of every method, trained interleaved on shared batches.

Phase 1 trains FM, MeanFlow (and MeanFlow-iMF) and SplitMeanFlow from scratch; phase 2 the methods that start
from the FM teacher (2-rectified flow, MFD, FlowTurbo's refiner, BOSS's straightening fine-tune). Within a
phase one step of each run is taken in turn, the order rotating, all on the same data batch of that step, so
that the machine's load hits every method alike; each run's own time is its training cost per step.
"""

from __future__ import annotations

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

from benchmarks.few_step_data import Dataset
from flowzoo.core.fewstep import (MEANFLOW_OT_LR_FACTOR, imf_settings, meanflow_ot_settings, meanflow_settings,
                               splitmeanflow_settings)
from flowzoo.core.fewstep import BossStraighteningLoss, bellman_steps, boss_cost_matrix, boss_redress_states
from flowzoo.core.couplings import ExactOTCoupling
from flowzoo.core.fewstep import MLPFlowMap
from flowzoo.core.fewstep import RefinerLoss, VelocityRefiner
from flowzoo.core.fewstep import MeanFlowLoss
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.fewstep import ReflowLoss, generate_pairs
from flowzoo.core.fewstep import SplitMeanFlowLoss

__all__ = ["METHODS", "BOSS_STEPS", "Run", "train_interleaved", "Trained", "train_all", "boss_runs"]

METHODS = ("meanflow", "splitmeanflow", "reflow", "mfd", "flowturbo", "boss")
BOSS_STEPS = (2, 4)


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



@dataclass
class Trained:
    """What the two training phases produce (models inside the runs; None: method not selected) and side costs."""
    fm: Run
    mf: Run | None = None
    imf: Run | None = None
    mf_ot: Run | None = None
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
    """Phase 1 trains FM, MeanFlow (both formulations) and SplitMeanFlow from scratch for ``args.steps``; phase 2
    the methods that need the FM teacher, for ``args.finetune_steps``."""
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
        tr.imf = Run("MeanFlow-iMF", net(MLPFlowMap), MeanFlowLoss(derivative="jvp", **imf_settings()), steps, lr,
                     seed)
        # Its own row, never in place of the independent-coupling one: minibatch OT changes the problem (straighter
        # paths), and the FM baseline keeps independent pairs.
        tr.mf_ot = Run("MeanFlow + OT", net(MLPFlowMap),
                       MeanFlowLoss(derivative="jvp", coupling=ExactOTCoupling(), **meanflow_ot_settings()), steps,
                       MEANFLOW_OT_LR_FACTOR * lr, seed)
    if "splitmeanflow" in chosen:
        tr.smf = Run("SplitMeanFlow", net(MLPFlowMap), SplitMeanFlowLoss(**splitmeanflow_settings(ds.dim)), steps,
                     lr, seed)
    phase1 = [r for r in (tr.fm, tr.mf, tr.imf, tr.mf_ot, tr.smf) if r is not None]
    print(f"  phase 1: {', '.join(r.name for r in phase1)} ({steps} steps, batch {batch_size})", flush=True)
    train_interleaved(phase1, stream(), ds.name)
    teacher = tr.fm.model
    phase2 = []
    n_pairs = args.pairs if ds.dim == 2 else args.pairs // 4
    steps = args.finetune_steps

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
        tr.rf = Run("2-RF", copy.deepcopy(teacher), ReflowLoss(), steps, 0.5 * lr, seed,
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
    teacher, lr, steps, seed = tr.fm.model, args.lr, args.finetune_steps, args.seed
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

