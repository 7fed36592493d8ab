"""flowzoo.core side by side with torchcfm, facebookresearch/flow_matching and torchdiffeq.

Everything runs in one process on the same data, network, initial weights, seed and number of
steps, so the table shows ratios, not machine-dependent absolute times.

Install the peers first (their own dependencies would pull a CUDA build of torch):

    .venv/bin/pip install --no-deps -c constraints.txt torchcfm==1.0.7 flow_matching==1.0.10

Run (sections 1-3 take about 4 minutes on 2 CPU cores, 4-5 about 20 more; ``--quick`` for a smoke run):

    .venv/bin/python -m benchmarks.core_vs_peers

``--sections training`` runs the training table alone; on a machine busy with other work, ``--threads 1``
gives steadier ratios (two threads per contender wait on each other whenever the other cores are taken).

Sections:
1. 8 Gaussians -> moons: W2 at 1, 2, 4 and 100 Euler steps, and training steps/s (1 / the median step
   time, steps in a fresh random order each round), for flowzoo I-CFM and
   OT-CFM, torchcfm's ConditionalFlowMatcher and ExactOptimalTransportConditionalFlowMatcher, and
   flow_matching's AffineProbPath(CondOTScheduler) (sampled with its ODESolver). "step time / fastest
   peer" is paired: in every round each method's step time is divided by a peer's step time in that same
   round (same batch, same machine state), the median is taken over the rounds, and the column shows the
   largest of these medians over the peers (see :func:`relative_step_times`).
2. Exact minibatch OT: flowzoo's ExactOTCoupling vs torchcfm's OTPlanSampler at batch 256/1024/4096
   for d = 2 and d = 3072, with the fraction of unique sources each keeps.
3. ODE sampling throughput: flowzoo's integrate vs torchdiffeq.odeint at each ``--sample-batch``
   (best of interleaved runs in a random order each round; the ratio is torchdiffeq's time / flowzoo's, so
   above 1 flowzoo is faster).
4. Riemannian flow matching on S^2 and T^2 against flow_matching (:mod:`benchmarks.peers_riemannian`, table
   ``riemannian_vs_peers``): geodesic MMD / W2 to held-out samples, NLL, step and sampling time ratios.
5. Discrete flow matching on HMM and Markov-text sequences against flow_matching and the biology package's
   simplex flows (:mod:`benchmarks.peers_discrete`, table ``discrete_vs_peers``): NLL per token (ELBO), 3-mer
   JS, step ratio. These two are long (about 16 minutes for the discrete one on 2 cores).

Every contender is measured the same way: the same model class and initial weights, the same optimiser,
batches and thread count, the same timer around the same part of the step, and a seeded random order.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from flowzoo.core.couplings import ExactOTCoupling
from flowzoo.core.data import sample_toy
from flowzoo.core.analysis import wasserstein2
from flowzoo.core.nets import MLPVelocity
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import integrate

from benchmarks import peers_discrete, peers_riemannian
from benchmarks.results import reproduce_command, save_table


def _peers():
    try:
        from flow_matching.path import AffineProbPath
        from flow_matching.path.scheduler import CondOTScheduler
        from flow_matching.solver import ODESolver
        from torchcfm.conditional_flow_matching import (
            ConditionalFlowMatcher,
            ExactOptimalTransportConditionalFlowMatcher,
        )
        from torchcfm.optimal_transport import OTPlanSampler
    except ImportError as err:
        raise SystemExit(f"peers missing ({err}). Install them with:\n"
                         "  .venv/bin/pip install --no-deps -c constraints.txt torchcfm==1.0.7 flow_matching==1.0.10")
    return dict(AffineProbPath=AffineProbPath, CondOTScheduler=CondOTScheduler, ODESolver=ODESolver,
                CFM=ConditionalFlowMatcher, OTCFM=ExactOptimalTransportConditionalFlowMatcher,
                OTPlanSampler=OTPlanSampler)


# --------------------------------------------------------------------------------------------
# 1. training quality and speed
# --------------------------------------------------------------------------------------------

def _make_step(name: str, peers: dict):
    """Return step(model, x0, x1) -> loss tensor for one library's way of building the target."""
    if name.startswith("flowzoo"):
        objective = FlowMatchingLoss(coupling=ExactOTCoupling() if "OT" in name else None)

        def step(model, x0, x1):
            return objective(model, {"x0": x0, "x1": x1})[0]
        return step
    if name.startswith("torchcfm"):
        matcher = peers["OTCFM"](sigma=0.0) if "OT" in name else peers["CFM"](sigma=0.0)

        def step(model, x0, x1):
            t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
            return ((model(xt, t) - ut) ** 2).mean()
        return step
    path = peers["AffineProbPath"](scheduler=peers["CondOTScheduler"]())

    def step(model, x0, x1):
        t = torch.rand(x0.shape[0])
        sample = path.sample(t=t, x_0=x0, x_1=x1)
        return ((model(sample.x_t, sample.t) - sample.dx_t) ** 2).mean()
    return step


TRAINING_METHODS = ("flowzoo I-CFM", "torchcfm CFM", "flow_matching CondOT", "flowzoo OT-CFM", "torchcfm OT-CFM")


def time_training(args, peers) -> dict[str, dict]:
    """Train every method on the same batches and time each step (model, optimiser and per-step wall times
    per method). Steps are interleaved (one step of each in turn, in a random order) so that a slow-down of
    the shared machine hits all of them alike."""
    torch.manual_seed(args.seed)
    base = MLPVelocity(2, hidden=256, depth=3)
    gen = torch.Generator().manual_seed(args.seed)
    batches = [(sample_toy("8gaussians", args.batch, generator=gen), sample_toy("moons", args.batch, generator=gen))
               for _ in range(args.steps)]
    # Where the allocator puts a model's weights shifts its step time by a few tenths of a percent (identical
    # steps on copies made one after the other ran slower the earlier the copy was made), so the models are
    # made in a seeded random order rather than the first-listed method always first.
    order_rng = np.random.default_rng(args.seed)
    runs = {}
    for index in order_rng.permutation(len(TRAINING_METHODS)):
        name = TRAINING_METHODS[index]
        model = copy.deepcopy(base)
        # Each method draws its times and noise from its own stream, seeded alike.
        runs[name] = dict(model=model, opt=torch.optim.Adam(model.parameters(), lr=1e-3),
                          step=_make_step(name, peers), rng=torch.Generator().manual_seed(args.seed),
                          np_rng=np.random.RandomState(args.seed), times=[])
    # A fresh random order every step, so that every method follows every other equally often: the step
    # before leaves the caches and the allocator in its state, and a rotating order would put one method
    # after the same (heavy, OT) neighbour four steps in five. The order's own stream leaves the methods' alone.
    runs = {name: runs[name] for name in TRAINING_METHODS}
    for x0, x1 in batches:
        for index in order_rng.permutation(len(runs)):
            name = TRAINING_METHODS[index]
            run = runs[name]
            torch.random.set_rng_state(run["rng"].get_state())
            np.random.set_state(run["np_rng"].get_state())
            started = time.perf_counter()
            loss = run["step"](run["model"], x0, x1)
            run["opt"].zero_grad(set_to_none=True)
            loss.backward()
            run["opt"].step()
            run["times"].append(time.perf_counter() - started)
            run["rng"].set_state(torch.random.get_rng_state())
            run["np_rng"].set_state(np.random.get_state())
    return runs


def steps_per_second(times: list[float]) -> float:
    """1 / the median step time. On a shared machine a step that loses the CPU to another process costs
    milliseconds; a mean lets those few steps decide a ratio between methods that differ by microseconds,
    the median does not. Every method is measured the same way."""
    return 1.0 / float(np.median(times))


def paired_ratio(times: list[float], reference: list[float]) -> float:
    """Median over rounds of ``times[r] / reference[r]``: two methods' step times compared round by round.

    Both steps of a round ran back to back on the same batch, so a slow spell of the shared machine that
    lasts longer than a round scales both and cancels in their ratio; an unpaired ratio of medians would
    keep whatever the load did to each method's rounds.

    Example:
        >>> paired_ratio([2.0, 4.0, 30.0], [1.0, 2.0, 10.0])
        2.0
    """
    return float(np.median(np.asarray(times, dtype=float) / np.asarray(reference, dtype=float)))


def relative_step_times(times: dict[str, list[float]], peers: list[str]) -> dict[str, float]:
    """Each method's step time relative to the fastest peer: the largest :func:`paired_ratio` against a peer.

    Against itself a peer scores 1, so the fastest peer gets exactly 1 and a method below 1 was faster than
    every peer. Every method, flowzoo's and the peers', gets the same statistic.

    Example:
        >>> relative_step_times({"a": [1.0, 1.0], "b": [2.0, 2.0]}, peers=["b"])
        {'a': 0.5, 'b': 1.0}
    """
    return {name: max(paired_ratio(own, times[peer]) for peer in peers) for name, own in times.items()}


def bench_training(args, peers) -> list[dict]:
    """The training table: steps/s (:func:`steps_per_second`), the step time relative to the fastest peer
    (:func:`relative_step_times`) and W2 at 1, 2, 4 and 100 Euler steps."""
    runs = time_training(args, peers)
    relative = relative_step_times({name: run["times"] for name, run in runs.items()},
                                   [name for name in runs if not name.startswith("flowzoo")])
    eval_x0 = sample_toy("8gaussians", args.eval_samples, seed=1234)
    eval_x1 = sample_toy("moons", args.eval_samples, seed=4321)
    rows = []
    for name, run in runs.items():
        model = run["model"].eval()
        row = {"method": name, "steps/s": steps_per_second(run["times"])}
        for n in (1, 2, 4, 100):
            if name.startswith("flow_matching"):
                solver = peers["ODESolver"](velocity_model=model)
                with torch.no_grad():
                    x = solver.sample(x_init=eval_x0, step_size=1.0 / n, method="euler")
            else:
                x = integrate(model, eval_x0, method="euler", steps=n).x
            row[f"W2@{n}"] = wasserstein2(x, eval_x1)
        row["step time / fastest peer"] = relative[name]
        rows.append(row)
        print(f"  {name}: {row['steps/s']:.0f} steps/s, {relative[name]:.3f}x the fastest peer's step time, "
              f"W2@100 {row['W2@100']:.3f}", flush=True)
    return rows


# --------------------------------------------------------------------------------------------
# 2. exact OT coupling time and unique sources
# --------------------------------------------------------------------------------------------

def _interleaved_min_times(fns, reps: int, order_rng: np.random.Generator | None = None
                           ) -> tuple[list[float], list[object]]:
    """Minimum wall time of each function over ``reps`` rounds, the functions alternating in each round
    (in a fresh random order each round when ``order_rng`` is given, so that none always runs first)."""
    best, outs = [float("inf")] * len(fns), [None] * len(fns)
    for _ in range(reps):
        for k in (range(len(fns)) if order_rng is None else order_rng.permutation(len(fns))):
            started = time.perf_counter()
            outs[k] = fns[k]()
            best[k] = min(best[k], time.perf_counter() - started)
    return best, outs


def bench_ot(args, peers) -> list[dict]:
    sampler = peers["OTPlanSampler"](method="exact")
    ours = ExactOTCoupling()
    rows = []
    sizes = (256, 1024) if args.quick else (256, 1024, 4096)
    for dim in (2, 3072):
        for n in sizes:
            gen = torch.Generator().manual_seed(n + dim)
            x0, x1 = torch.randn(n, dim, generator=gen), torch.randn(n, dim, generator=gen)
            reps = 15 if n <= 1024 else 2
            np.random.seed(0)

            def peer():
                pi = sampler.get_map(x0, x1)
                return sampler.sample_map(pi, n, replace=True)
            (t_ours, t_peer), (pairing, (i, _)) = _interleaved_min_times([lambda: ours(x0, x1), peer], reps)
            rows.append({"d": dim, "batch": n, "flowzoo ms": 1e3 * t_ours, "torchcfm ms": 1e3 * t_peer,
                         "speed-up": t_peer / t_ours,
                         "flowzoo unique src": len(set(pairing.index0.tolist())) / n,
                         "torchcfm unique src": len(set(np.asarray(i).tolist())) / n})
            print(f"  OT d={dim} n={n}: {rows[-1]['speed-up']:.2f}x", flush=True)
    return rows


# --------------------------------------------------------------------------------------------
# 3. ODE sampling throughput
# --------------------------------------------------------------------------------------------

def bench_sampling(args, peers) -> list[dict]:
    import torchdiffeq

    torch.manual_seed(args.seed)
    model = MLPVelocity(2, hidden=256, depth=3).eval()
    order_rng = np.random.default_rng(args.seed)
    rows = []
    for batch in args.sample_batch:
        x = torch.randn(batch, 2)
        # Small batches take milliseconds, so more rounds cost little and steady the best-of.
        reps = args.sample_reps or (4 if batch >= 1024 else 15)
        for method, steps in (("euler", 100), ("rk4", 25), ("dopri5", None)):
            rows.append(_sampling_row(model, x, method, steps, reps, order_rng, torchdiffeq))
    return rows


def _sampling_row(model, x, method: str, steps: int | None, reps: int, order_rng, torchdiffeq) -> dict:
    """One solver at one batch: flowzoo's integrate against torchdiffeq.odeint, each in its documented use."""
    grid = torch.linspace(0, 1, (steps or 1) + 1)

    def ours():
        return integrate(model, x, method=method, steps=steps, atol=1e-5, rtol=1e-5).x

    def func(t, y):
        return model(y, t.expand(y.shape[0]))

    def peer():
        with torch.no_grad():
            if steps is None:
                ends = torch.tensor([0.0, 1.0])
                return torchdiffeq.odeint(func, x, ends, method=method, atol=1e-5, rtol=1e-5)[-1]
            return torchdiffeq.odeint(func, x, grid, method=method)[-1]
    (t_ours, t_peer), (a, b) = _interleaved_min_times([ours, peer], reps, order_rng)
    return {"batch": len(x), "solver": method, "steps": steps or "adaptive", "flowzoo samples/s": len(x) / t_ours,
            "torchdiffeq samples/s": len(x) / t_peer, "ratio": t_peer / t_ours,
            "max |diff|": float((a - b).abs().max())}


def _table(rows: list[dict], floatfmt: str = "{:.3f}") -> str:
    keys = list(rows[0])
    cells = [[k for k in keys]] + [[floatfmt.format(r[k]) if isinstance(r[k], float) else str(r[k]) for k in keys]
                                   for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    lines = ["| " + " | ".join(c[i].rjust(widths[i]) for i in range(len(keys))) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


SECTIONS = ("training", "ot", "sampling", "riemannian", "discrete")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--eval-samples", type=int, default=1500)
    parser.add_argument("--sample-batch", type=int, nargs="+", default=[4096],
                        help="batch size(s) of the sampling table, e.g. 32 256 4096")
    parser.add_argument("--sample-reps", type=int, default=None,
                        help="interleaved rounds per sampling row (default: 4 at batch >= 1024, else 15)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="300 steps and no batch-4096 OT (smoke run)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="the tables to run (default: all five)")
    args = parser.parse_args()
    if args.quick:
        args.steps = 300
    torch.set_num_threads(args.threads)
    peers = _peers()
    tables = []  # (results name, rows, title, float format)
    if "training" in args.sections:
        print("1. training: 8gaussians -> moons", flush=True)
        training = bench_training(args, peers)
        tables.append(("training", training, f"Training 8 Gaussians -> moons, MLP 3x256, Adam 1e-3, {args.steps} "
                       f"steps, batch {args.batch}, {args.threads} thread(s); steps/s from the median step, "
                       "step time / fastest peer paired by round", "{:.3f}"))
    if "ot" in args.sections:
        print("2. exact OT", flush=True)
        tables.append(("ot", bench_ot(args, peers),
                       "Exact minibatch OT: best of interleaved runs (ms), fraction of unique sources kept", "{:.2f}"))
    if "sampling" in args.sections:
        print("3. sampling", flush=True)
        tables.append(("sampling", bench_sampling(args, peers),
                       f"ODE sampling throughput at batch {', '.join(map(str, args.sample_batch))}; ratio = "
                       "torchdiffeq time / flowzoo time (best of interleaved runs)", "{:.4g}"))
    command = reproduce_command("benchmarks.core_vs_peers")
    for part, rows, title, floatfmt in tables:
        print(f"\n## {title}\n")
        print(_table(rows, floatfmt))
        save_table(f"core_vs_peers_{part}", rows, title=title, command=command, quick=args.quick)
    # The manifold and token sections are whole benchmarks of their own (benchmarks.peers_riemannian,
    # benchmarks.peers_discrete): run here with the same seed, threads and mode, they write their own tables.
    shared = ["--seed", str(args.seed), "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    if "riemannian" in args.sections:
        print("\n4. Riemannian flow matching on the sphere and the torus", flush=True)
        peers_riemannian.main(shared)
    if "discrete" in args.sections:
        print("\n5. discrete flow matching on sequences", flush=True)
        peers_discrete.main(shared)


if __name__ == "__main__":
    main()
