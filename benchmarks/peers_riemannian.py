"""Riemannian flow matching: flowzoo.core.manifolds side by side with facebookresearch/flow_matching.

Both libraries train the same MLP (same initial weights, same batches of source and data, same number of Adam
steps, same seed) on two manifolds, in one process, one step of each in turn in a random order:

* the sphere S²: an earth-like mixture of six von Mises–Fisher "continents" (exact density);
* the flat torus T²: a Ramachandran-like mixture of wrapped normals on the backbone angles (φ, ψ) (exact density).

flowzoo trains with ``RiemannianFlowMatchingLoss`` (closed-form geodesic velocity) and samples with
``integrate_manifold``; flow_matching with ``GeodesicProbPath(CondOTScheduler())`` (velocity by ``torch.func.jvp``
under ``vmap``), the tangent-projected MSE, and ``RiemannianODESolver``. Each row reports the geodesic MMD and the
geodesic W2 of 1000 samples (midpoint, 32 steps) to 1000 held-out data points, the NLL of held-out data (flowzoo's
``manifold_log_likelihood``, rk4, 16 steps: flow_matching has no likelihood on manifolds, so its model is
evaluated with flowzoo's), the median training-step time and the sampling time, with the ratios
flowzoo / flow_matching (below 1: flowzoo is faster). Reference rows give the exact NLL of the data and the MMD of
a second data sample (the noise floor) and of the uniform base.

Run (a few minutes on 2 CPU cores; ``--quick`` for a smoke run):

    .venv/bin/python -m benchmarks.peers_riemannian
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from flowzoo.core.manifolds import (FlatTorus, ManifoldMLP, RiemannianFlowMatchingLoss, Sphere, earth_like_mixture,
                                    geodesic_mmd, geodesic_w2, integrate_manifold, manifold_log_likelihood,
                                    ramachandran_like_mixture)

from benchmarks.results import reproduce_command, save_table

SAMPLE_STEPS = 32
NLL_STEPS = 16


def riemannian_peers() -> dict:
    """flow_matching's Riemannian pieces (SystemExit naming the install command when it is missing)."""
    try:
        from flow_matching.path import GeodesicProbPath
        from flow_matching.path.scheduler import CondOTScheduler
        from flow_matching.solver import RiemannianODESolver
        from flow_matching.utils.manifolds import FlatTorus as PeerTorus
        from flow_matching.utils.manifolds import Sphere as PeerSphere
    except ImportError as err:
        raise SystemExit(f"flow_matching missing ({err}). Install it with:\n"
                         "  .venv/bin/pip install --no-deps -c constraints.txt flow_matching==1.0.10")
    return dict(GeodesicProbPath=GeodesicProbPath, CondOTScheduler=CondOTScheduler,
                RiemannianODESolver=RiemannianODESolver, PeerSphere=PeerSphere, PeerTorus=PeerTorus)


def _cases(peers: dict) -> list[tuple[str, object, object, object]]:
    return [("sphere S^2 (vMF mixture)", Sphere(2), peers["PeerSphere"](), earth_like_mixture()),
            ("torus T^2 (Ramachandran-like)", FlatTorus(2), peers["PeerTorus"](), ramachandran_like_mixture())]


class _PeerVelocity(torch.nn.Module):
    """flow_matching's solver calls ``model(x=..., t=...)`` with a 0-d time; ours take (B,) times."""

    def __init__(self, net: torch.nn.Module, manifold):
        super().__init__()
        self.net, self.manifold = net, manifold

    def forward(self, x, t):
        return self.manifold.proju(x, self.net(x, t.expand(x.shape[0]) if t.dim() == 0 else t))


def _train(args, manifold, peer_manifold, data, peers) -> dict:
    """Train both libraries on the same batches, interleaved in a random order; return models and step times."""
    torch.manual_seed(args.seed)
    base = ManifoldMLP(manifold, hidden=128, depth=3, project=False)   # projection happens in each library's loss
    gen = torch.Generator().manual_seed(args.seed)
    objective = RiemannianFlowMatchingLoss(manifold)
    path = peers["GeodesicProbPath"](peers["CondOTScheduler"](), peer_manifold)

    def flowzoo_step(model, x0, x1, rng):
        loss, _ = objective(model, {"x1": x1, "x0": x0}, generator=rng)
        return loss

    def peer_step(model, x0, x1, rng):
        t = torch.rand(x1.shape[0], generator=rng)
        sample = path.sample(x_0=x0, x_1=x1, t=t)
        prediction = peer_manifold.proju(sample.x_t, model(sample.x_t, t))
        return torch.pow(prediction - sample.dx_t, 2).mean()

    runs = {}
    for name, step in (("flowzoo", flowzoo_step), ("flow_matching", peer_step)):
        model = copy.deepcopy(base)
        runs[name] = dict(model=model, opt=torch.optim.Adam(model.parameters(), lr=2e-3), step=step,
                          rng=torch.Generator().manual_seed(args.seed + 1), times=[])
    order = np.random.default_rng(args.seed)
    names = list(runs)
    for _ in range(args.steps):
        x0, x1 = manifold.random_base(args.batch, generator=gen), data.sample(args.batch, generator=gen)
        for index in order.permutation(len(names)):
            run = runs[names[index]]
            started = time.perf_counter()
            loss = run["step"](run["model"], x0, x1, run["rng"])
            run["opt"].zero_grad(set_to_none=True)
            loss.backward()
            run["opt"].step()
            run["times"].append(time.perf_counter() - started)
    return runs


def _sample_both(manifold, peer_manifold, runs, x0, peers, reps: int) -> tuple[dict, dict]:
    """Samples of each library's model with its own solver, and the best of ``reps`` interleaved solve times."""
    ours = runs["flowzoo"]["model"].eval()
    theirs = _PeerVelocity(runs["flow_matching"]["model"].eval(), peer_manifold)
    solver = peers["RiemannianODESolver"](peer_manifold, theirs)
    grid = torch.linspace(0.0, 1.0, SAMPLE_STEPS + 1)
    fns = {"flowzoo": lambda: integrate_manifold(ours, x0, manifold=manifold, method="midpoint",
                                                 time_grid=grid).x,
           "flow_matching": lambda: solver.sample(x0, step_size=None, method="midpoint", time_grid=grid)}
    best, samples = {k: float("inf") for k in fns}, {}
    with torch.no_grad():
        for _ in range(reps):
            for name, fn in fns.items():
                started = time.perf_counter()
                samples[name] = fn()
                best[name] = min(best[name], time.perf_counter() - started)
    return samples, best


def bench_riemannian(args, peers) -> list[dict]:
    """The table: one row per manifold and library, plus reference rows (data, base). ``args`` needs ``steps``,
    ``batch``, ``seed`` and ``quick`` (``eval_samples`` is optional, default 1000); ``peers`` may be any dict
    (e.g. core_vs_peers' peers): the flow_matching pieces missing from it are imported here."""
    peers = {**riemannian_peers(), **(peers or {})}
    rows = []
    for label, manifold, peer_manifold, data in _cases(peers):
        print(f"  {label}: training {args.steps} steps", flush=True)
        runs = _train(args, manifold, peer_manifold, data, peers)
        gen = torch.Generator().manual_seed(args.seed + 2)
        n_eval = getattr(args, "eval_samples", 1000)
        n_nll = min(500, n_eval)
        held_out, second = data.sample(n_eval, generator=gen), data.sample(n_eval, generator=gen)
        x0 = manifold.random_base(n_eval, generator=gen)
        samples, solve_time = _sample_both(manifold, peer_manifold, runs, x0, peers, reps=2 if args.quick else 5)
        step_ms = {k: 1e3 * float(np.median(r["times"])) for k, r in runs.items()}
        for name in ("flowzoo", "flow_matching"):
            model = runs[name]["model"]
            nll = -manifold_log_likelihood(lambda x, t: model(x, t), held_out[:n_nll], manifold=manifold,
                                           steps=NLL_STEPS).mean().item()
            rows.append({"manifold": label, "library": name,
                         "geodesic MMD": geodesic_mmd(samples[name], held_out, manifold),
                         "geodesic W2": geodesic_w2(samples[name], held_out, manifold), "NLL (nats)": nll,
                         "train step (ms)": step_ms[name],
                         "step / flow_matching": step_ms[name] / step_ms["flow_matching"],
                         "sampling (ms)": 1e3 * solve_time[name],
                         "sampling / flow_matching": solve_time[name] / solve_time["flow_matching"]})
        rows.append({"manifold": label, "library": "reference: data",
                     "geodesic MMD": geodesic_mmd(second, held_out, manifold),
                     "geodesic W2": geodesic_w2(second, held_out, manifold),
                     "NLL (nats)": -data.log_prob(held_out[:n_nll]).mean().item()})
        rows.append({"manifold": label, "library": "reference: uniform base",
                     "geodesic MMD": geodesic_mmd(x0, held_out, manifold),
                     "geodesic W2": geodesic_w2(x0, held_out, manifold),
                     "NLL (nats)": -manifold.base_log_prob(held_out[:1]).item()})
        for row in rows[-4:-2]:
            print(f"    {row['library']}: MMD {row['geodesic MMD']:.4f}, NLL {row['NLL (nats)']:.3f}, "
                  f"step {row['train step (ms)']:.2f} ms", flush=True)
    return rows


def _table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [columns] + [[f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns]
                         for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) for i in range(len(columns))) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps per library and manifold")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--eval-samples", type=int, default=1000, help="samples and held-out points per metric")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="200 training steps (smoke run)")
    args = parser.parse_args(argv)
    if args.quick and "--steps" not in (argv if argv is not None else __import__("sys").argv[1:]):
        args.steps = 200
    torch.set_num_threads(args.threads)
    rows = bench_riemannian(args, riemannian_peers())
    title = (f"Riemannian flow matching vs flow_matching: MLP 3x128, Adam 2e-3, {args.steps} steps, "
             f"batch {args.batch}, "
             f"{args.threads} thread(s); step time = median, sampling = best of interleaved solves "
             f"({args.eval_samples} samples, midpoint, {SAMPLE_STEPS} steps)")
    notes = ["NLL: flowzoo's manifold_log_likelihood (rk4, 16 steps, exact divergence) for both libraries' models; "
             "flow_matching has no likelihood on manifolds",
             "ratios below 1: flowzoo is faster; MMD: Gaussian kernels of the geodesic distance at 0.5, 1, 2 x the "
             "median distance"]
    print(f"\n## {title}\n")
    print(_table(rows))
    save_table("riemannian_vs_peers", rows, title=title, notes=notes, quick=args.quick,
               command=reproduce_command("benchmarks.peers_riemannian", argv))


if __name__ == "__main__":
    main()
