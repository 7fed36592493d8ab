"""Peer parity: flowzoo.core against facebookresearch/flow_matching 1.0.10 and torchcfm 1.0.7, feature by feature.

Every row feeds the same inputs (float64, fixed seeds) through a peer's API and flowzoo's counterpart and reports
the largest absolute difference of the outputs; ``docs/peers.md`` shows the table. The tests in
``tests/core/test_peer_parity.py`` assert the same agreements.

Install the peers first (their own dependencies would pull a CUDA build of torch):

    .venv/bin/pip install --no-deps -c constraints.txt torchcfm==1.0.7 flow_matching==1.0.10

Run (a few seconds; ``--quick`` uses smaller batches):

    .venv/bin/python -m benchmarks.peer_parity
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch

from flowzoo.core.analysis import wasserstein1, wasserstein2
from flowzoo.core.couplings import ExactOTCoupling, SinkhornCoupling
from flowzoo.core.paths import (AffinePath, ConstantGamma, CosineScheduler, LinearScheduler, LinearVPScheduler,
                                PolynomialScheduler, ScheduleTransformedModel, SchrodingerBridgePath, SigmaMinOTPath,
                                StochasticInterpolant, VPScheduler, sample_conditional_flow)
from flowzoo.core.sampling import integrate, log_likelihood, standard_normal_log_prob

from benchmarks.results import reproduce_command, save_table

__all__ = ["INSTALL", "COLUMNS", "CONVERSIONS", "SECTIONS", "parity_row", "scheduler_rows", "matcher_rows",
           "coupling_rows", "solver_rows", "run", "main"]

F64 = torch.float64
INSTALL = ".venv/bin/pip install --no-deps -c constraints.txt torchcfm==1.0.7 flow_matching==1.0.10"
COLUMNS = ["feature", "peer API", "flowzoo API", "max abs diff", "tolerance", "agrees"]


def _peers() -> dict:
    try:
        from flow_matching.path import AffineProbPath
        from flow_matching.path.scheduler import (CondOTScheduler, CosineScheduler as FMCosine, LinearVPScheduler as
                                                  FMLinearVP, PolynomialConvexScheduler, ScheduleTransformedModel as
                                                  FMTransform, VPScheduler as FMVP)
        from flow_matching.solver import ODESolver
        from torchcfm import conditional_flow_matching as cfm
        from torchcfm import optimal_transport as ot
    except ImportError as err:
        raise SystemExit(f"peers missing ({err}). Install them with:\n  {INSTALL}")
    schedulers = [("CondOT", LinearScheduler(), CondOTScheduler()), ("Cosine", CosineScheduler(), FMCosine()),
                  ("VP", VPScheduler(), FMVP()), ("LinearVP", LinearVPScheduler(), FMLinearVP()),
                  ("PolynomialConvex(2)", PolynomialScheduler(2), PolynomialConvexScheduler(2))]
    return dict(AffineProbPath=AffineProbPath, FMTransform=FMTransform, ODESolver=ODESolver, cfm=cfm, ot=ot,
                schedulers=schedulers)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _times(n: int, low: float = 0.02, high: float = 0.98) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=F64)


def _diff(*pairs: tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]) -> float:
    return max(float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))
               for a, b in pairs)


def parity_row(feature: str, peer: str, ours: str, diff: float, tolerance: float) -> dict:
    return {"feature": feature, "peer API": peer, "flowzoo API": ours, "max abs diff": float(f"{diff:.3g}"),
            "tolerance": tolerance, "agrees": "yes" if diff <= tolerance else "**no**"}


CONVERSIONS = [("velocity_to_x1", "velocity_to_target"), ("velocity_to_x0", "velocity_to_epsilon"),
               ("x1_to_velocity", "target_to_velocity"), ("x0_to_velocity", "epsilon_to_velocity"),
               ("x0_to_x1", "epsilon_to_target"), ("x1_to_x0", "target_to_epsilon")]


def scheduler_rows(peers: dict, n: int) -> list[dict]:
    """Coefficients, path samples, the six conversions and snr_inverse for every shared scheduler."""
    rows = []
    x0, x1, pred, t = _randn(n, 3, seed=2), _randn(n, 3, seed=3), _randn(n, 3, seed=4), _times(n)
    for name, ours, theirs in peers["schedulers"]:
        a, b = ours(t), theirs(t)
        mine, peer = AffinePath(ours), peers["AffineProbPath"](theirs)
        sample, peer_sample = mine.sample(x0, x1, t), peer.sample(x_0=x0, x_1=x1, t=t)
        rows.append(parity_row(f"{name} path x_t, dx_t", f"AffineProbPath({type(theirs).__name__}()).sample",
                         f"AffinePath({type(ours).__name__}()).sample",
                         _diff((a.alpha, b.sigma_t), (a.beta, b.alpha_t), (sample.x_t, peer_sample.x_t),
                               (sample.dx_t, peer_sample.dx_t)), 1e-10))
        conversions = [(getattr(mine, m)(pred, x1, t), getattr(peer, p)(pred, x1, t[:, None])) for m, p in CONVERSIONS]
        rows.append(parity_row(f"{name} x1 / epsilon / velocity conversions", "AffineProbPath.*_to_*",
                         "AffinePath.velocity_to_x1, x0_to_x1, ...", _diff(*conversions), 1e-8))
        snr = a.beta / a.alpha
        rows.append(parity_row(f"{name} snr_inverse", f"{type(theirs).__name__}.snr_inverse",
                         f"{type(ours).__name__}.snr_inverse", _diff((ours.snr_inverse(snr), theirs.snr_inverse(snr))),
                         1e-9))
    field = lambda x, t: (1.5 - x) / (1 - t.reshape(-1, 1))  # noqa: E731  exact velocity to a point mass
    x, r = _randn(n, 2, seed=6), _times(n, 0.1, 0.9)
    by_name = {name: (ours, theirs) for name, ours, theirs in peers["schedulers"]}
    for old, new in (("CondOT", "Cosine"), ("CondOT", "LinearVP"), ("VP", "Cosine")):
        (o_old, t_old), (o_new, t_new) = by_name[old], by_name[new]
        mine = ScheduleTransformedModel(field, o_old, o_new)(x, r)
        peer = peers["FMTransform"](field, t_old, t_new)(x=x, t=r[:, None])
        rows.append(parity_row(f"scheduler change {old} -> {new}", "ScheduleTransformedModel",
                         "paths.ScheduleTransformedModel", _diff((mine, peer)), 1e-8))
    return rows


def matcher_rows(peers: dict, n: int) -> list[dict]:
    """torchcfm's matchers against sample_conditional_flow on the same pairs, t and noise."""
    cfm, rows = peers["cfm"], []
    x0, x1, t = _randn(n, 2, seed=7), _randn(n, 2, seed=8) + 3.0, _times(n)
    for sigma in (0.0, 0.1):
        for peer_name, scheduler in (("ConditionalFlowMatcher", LinearScheduler()),
                                     ("VariancePreservingConditionalFlowMatcher", CosineScheduler())):
            torch.manual_seed(0)
            _, xt, ut, eps = getattr(cfm, peer_name)(sigma).sample_location_and_conditional_flow(
                x0, x1, t=t, return_noise=True)
            path = AffinePath(scheduler) if sigma == 0 else StochasticInterpolant(scheduler, ConstantGamma(sigma))
            mine = sample_conditional_flow(x0, x1, path=path, t=t, z=eps if sigma else None)
            ours = (f"AffinePath({type(scheduler).__name__}())" if sigma == 0 else
                    f"StochasticInterpolant({type(scheduler).__name__}(), ConstantGamma({sigma}))")
            rows.append(parity_row(f"{peer_name}(sigma={sigma}) (t, x_t, u_t)", f"{peer_name}.sample_location_and_"
                             "conditional_flow", ours, _diff((mine.x_t, xt), (mine.dx_t, ut)), 1e-12))
        torch.manual_seed(0)
        _, xt, ut, eps = cfm.TargetConditionalFlowMatcher(sigma).sample_location_and_conditional_flow(
            x0, x1, t=t, return_noise=True)
        mine = SigmaMinOTPath(sigma).sample(eps, x1, t)
        rows.append(parity_row(f"TargetConditionalFlowMatcher(sigma={sigma}), its noise as x0", "TargetConditionalFlow"
                         "Matcher", f"SigmaMinOTPath({sigma})", _diff((mine.x_t, xt), (mine.dx_t, ut)), 1e-9))
    sigma, eps, t_sb = 0.5, _randn(n, 2, seed=12), _times(n, 0.05, 0.95)
    matcher = cfm.SchrodingerBridgeConditionalFlowMatcher(sigma)
    xt = matcher.sample_xt(x0, x1, t_sb, eps)
    path = SchrodingerBridgePath(sigma)
    mine = path.sample(x0, x1, t_sb, z=eps)
    lam = matcher.compute_lambda(t_sb)
    rows.append(parity_row("SchrodingerBridgeConditionalFlowMatcher(0.5) x_t, u_t (torchcfm adds 1e-8)",
                     "sample_xt, compute_conditional_flow", "SchrodingerBridgePath(0.5).sample",
                     _diff((mine.x_t, xt), (mine.dx_t, matcher.compute_conditional_flow(x0, x1, t_sb, xt))), 1e-6))
    rows.append(parity_row("SB-CFM score weight lambda(t) and score target", "compute_lambda, -eps / lambda",
                     "score_weight, sigma^2 / 2 * score_target",
                     _diff((path.score_weight(t_sb), lam),
                           (sigma**2 / 2 * path.score_target(mine), -eps / lam[:, None])), 1e-6))
    return rows


def coupling_rows(peers: dict, n: int) -> list[dict]:
    """Exact and entropic OT plans, and the Wasserstein distances."""
    ot, rows = peers["ot"], []
    for dim in (2, 32):
        x0, x1 = _randn(n, dim, seed=13), _randn(n, dim, seed=14) + 1.0
        pairing = ExactOTCoupling()(x0, x1)
        plan = np.zeros((n, n))
        plan[pairing.index0.numpy(), pairing.index1.numpy()] = 1.0 / n
        rows.append(parity_row(f"exact OT plan, n = {n}, d = {dim}", "OTPlanSampler('exact').get_map",
                         "ExactOTCoupling (permutation)",
                         _diff((plan, ot.OTPlanSampler(method="exact").get_map(x0, x1))), 1e-12))
    x0, x1 = _randn(n, 2, seed=15), _randn(n, 2, seed=16) + 2.0
    mine = SinkhornCoupling(reg=0.5, relative=False, tol=1e-10, max_iter=10_000).plan(x0, x1)
    rows.append(parity_row("Sinkhorn plan, reg = 0.5", "OTPlanSampler('sinkhorn', reg=0.5).get_map",
                     "SinkhornCoupling(0.5, relative=False).plan",
                     _diff((mine, ot.OTPlanSampler(method="sinkhorn", reg=0.5).get_map(x0, x1))), 1e-8))
    x, y = _randn(n, 3, seed=19), _randn(n + 20, 3, seed=20) * 1.5
    rows.append(parity_row("Wasserstein distance W1, W2", "optimal_transport.wasserstein(power=1, 2)",
                     "analysis.wasserstein1, wasserstein2",
                     _diff((wasserstein1(x, y), ot.wasserstein(x, y, power=1)),
                           (wasserstein2(x, y), ot.wasserstein(x, y, power=2))), 1e-9))
    return rows


ROTATION = torch.tensor([[-0.3, 1.2], [-1.2, -0.3]], dtype=F64)


def _linear_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return x @ ROTATION.T


def _time_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.cos(3.0 * torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1)) * x


def solver_rows(peers: dict, n: int) -> list[dict]:
    """integrate against ODESolver.sample for every fixed-step method and dopri5; log-likelihoods."""
    solver, rows, x = peers["ODESolver"], [], _randn(n, 2, seed=21)
    grid = torch.linspace(0, 1, 21, dtype=F64)
    rk4_note = ", linear field (torchdiffeq's rk4 is the 3/8 rule)"
    for ours, theirs, field, note in (("euler", "euler", _time_field, ""), ("midpoint", "midpoint", _time_field, ""),
                                      ("heun", "heun2", _time_field, ""), ("rk4", "rk4", _linear_field, rk4_note)):
        mine = integrate(field, x, method=ours, steps=20).x
        peer = solver(field).sample(x_init=x, step_size=None, method=theirs, time_grid=grid)
        rows.append(parity_row(f"ODE solver {ours}, 20 steps{note}", f"ODESolver.sample(method='{theirs}')",
                         f"sampling.integrate(method='{ours}')", _diff((mine, peer)), 1e-12))
    times = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    mine = integrate(_time_field, x, method="dopri5", time_grid=times, atol=1e-9, rtol=1e-9, return_trajectory=True)
    peer = solver(_time_field).sample(x_init=x, step_size=None, method="dopri5", time_grid=times, atol=1e-9,
                                      rtol=1e-9, return_intermediates=True)
    rows.append(parity_row("ODE solver dopri5 with intermediates", "ODESolver.sample(return_intermediates=True)",
                     "integrate(return_trajectory=True).trajectory", _diff((mine.trajectory, peer)), 1e-10))
    x1 = 2.0 * _randn(n, 2, seed=26)
    mine, _ = log_likelihood(_linear_field, x1, method="dopri5", atol=1e-10, rtol=1e-10)
    _, peer = solver(_linear_field).compute_likelihood(x_1=x1, log_p0=standard_normal_log_prob, step_size=None,
                                                       method="dopri5", atol=1e-10, rtol=1e-10,
                                                       time_grid=torch.tensor([1.0, 0.0], dtype=F64),
                                                       exact_divergence=True)
    exact = standard_normal_log_prob(x1 @ torch.linalg.matrix_exp(-ROTATION).T) - torch.trace(ROTATION)
    rows.append(parity_row("log-likelihood, exact divergence", "ODESolver.compute_likelihood(exact_divergence=True)",
                     "sampling.log_likelihood(estimator='exact')", _diff((mine, peer)), 1e-8))
    rows.append(parity_row("log-likelihood against the analytic value", "(analytic)", "sampling.log_likelihood",
                     _diff((mine, exact)), 1e-6))
    return rows


SECTIONS: dict[str, Callable[[dict, int], list[dict]]] = {
    "schedulers": scheduler_rows, "matchers": matcher_rows, "couplings": coupling_rows, "solvers": solver_rows}


def run(quick: bool = False, save: bool = True) -> list[dict]:
    """Compute every row, print the markdown table, and save it as ``peer_parity`` (``.quick`` with ``quick``)."""
    peers = _peers()
    n = 16 if quick else 128
    rows = [row for section in SECTIONS.values() for row in section(peers, n)]
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    if save:
        argv = ["--quick"] if quick else []
        save_table("peer_parity", rows, columns=COLUMNS, quick=quick,
                   title="flowzoo.core against flow_matching 1.0.10 and torchcfm 1.0.7: largest absolute difference "
                         "of the same computation (float64)",
                   command=reproduce_command("benchmarks.peer_parity", argv),
                   notes=[f"batch size {n}; inputs drawn with fixed seeds in float64",
                          "flow_matching's alpha_t / sigma_t are flowzoo's beta / alpha (data / source coefficient)",
                          "torchcfm's SB-CFM adds 1e-8 to 2t(1 - t) and to sigma^2, hence its 1e-6 tolerance "
                          "(t in [0.05, 0.95])"])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(quick=args.quick)
    failed = [row["feature"] for row in rows if row["agrees"] != "yes"]
    if failed:
        raise SystemExit(f"{len(failed)} feature(s) disagree: {failed}")


if __name__ == "__main__":
    main()
