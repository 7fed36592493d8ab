"""Inference latency of the robot policies at four network sizes: 10-step FM policy vs one-step MP1 (issue 4).

Issue 4 asks that MP1 at 1 NFE be >= 8x faster per action than the 10-step flow-matching policy. The
observation encoder runs once per chunk whatever the number of sampling steps, so with E the encoder's time and U
one U-Net pass no one-step sampler beats (E + 10U) / (E + U). ``benchmarks/robotics_metaworld.py`` trains its
state rows on a tiny U-Net, (32, 64), where the state encoder is negligible; with point clouds the DP3 encoder
costs a third of a pass of that U-Net, capping the speed-up at 7.8-7.9x, so its point-cloud rows train (128, 256),
where the cap is 9.4x and an update costs 1.7x as much (the encoder dominates training). This script measures
the two policies, untrained (latency does not depend on the weights), at

* ``benchmark``: the Meta-World benchmark's state network, U-Net (32, 64) (128 points in the point-cloud row);
* ``benchmark-cloud``: its point-cloud network, U-Net (128, 256), 128 points;
* ``flowzoo-default``: :class:`~flowzoo.robotics.policy.PolicyConfig`'s defaults, U-Net (64, 128, 256), and
  ``make_env``'s 512 points;
* ``mp1-paper``: MP1's network (LogSSim/MP1 ``config/mp1.yaml``; research notes §1): U-Net (512, 1024, 2048),
  time embedding 128, 512 points, encoder features 64 per key and step, n_obs_steps 2, horizon 4, all 4 actions
  executed.

Observations are Meta-World-like: ``state`` (39 values), or ``point_cloud`` (N, 3) + ``agent_pos`` (MP1's 9
values; flowzoo's own environments give 4 or 7, a difference of a few hundred multiply-adds); actions have 4
dimensions. For each size and observation mode the table gives the time of one ``predict_action_chunk`` at batch 1
on one thread for the FM policy (10 Euler steps) and for MP1 (one flow-map jump; MeanFlow's sampler is the same),
per chunk and per action (chunk / n_action_steps), the measured speed-up, and its **Amdahl bound**: with E the
encoder's time and U one U-Net pass, no sampler can beat (E + 10U) / (E + U), because the encoder is paid once
per chunk by both. "Overhead" is what a chunk costs beyond E + (number of passes) x U: normalisation, validation,
the solver's Python loop, clipping, and cache misses. The chunk is also timed inside ``torch.inference_mode()``
(``predict_action_chunk`` itself runs under ``no_grad``).

Timing (:func:`time_interleaved`). Every time is the fastest over N rounds; a round calls each measured function
three times back to back, one function after the other, so that the load of a shared machine falls on all of them
alike. The minimum, as ``chunk_latency_ms`` of ``benchmarks/robotics_metaworld.py`` takes, because other
processes only ever add time. The main columns are **warm** times (the 2nd and 3rd calls: the policy's weights
are in the cache, as when ``chunk_latency_ms`` times one policy back to back and as for the 2nd to 10th passes of
the FM loop). The **cold** columns are the first call of each round, after the other policy ran: the tiny
networks (0.4-5 M parameters, 2-20 MB) then miss the 1 MB L2 cache. A one-pass sampler pays that once per chunk
in full while the 10-step loop amortises it, so cold ratios are lower; it is the closer picture of a robot loop
that runs a simulator or a camera between chunks. MP1's network (1 GB of weights) never fits a cache.

    python -m benchmarks.robotics_latency --quick   # the benchmark's two + flowzoo-default sizes, 40 rounds: ~1 min
    python -m benchmarks.robotics_latency           # + MP1's size, 100 rounds (10 at MP1's size): ~3 min

Run it with ``OMP_NUM_THREADS=1`` on an otherwise idle core for the cleanest numbers; it sets one torch thread.
On a machine shared with other jobs the absolute times move by 10-25 % from run to run (the neighbours' use of
the shared cache and memory bandwidth slows every call, not only a few), the ratios much less; the "overhead"
column, a difference of two such times, is then only good to about +-U at the FM policy's row.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from benchmarks.results import reproduce_command, save_markdown_tables
from flowzoo.core.errors import ConfigError, expected
from flowzoo.robotics.normalizer import Normalizer
from flowzoo.robotics.spec import EnvSpec
from flowzoo.robotics.policy import FlowPolicy
from flowzoo.robotics.policy_config import PolicyConfig

__all__ = ["NetworkSize", "SIZES", "OBS_MODES", "LatencyRow", "Timings", "build_policy", "meta_world_spec",
           "time_interleaved", "measure", "run_latency", "format_table", "main"]

STATE_DIM = 39            # Meta-World's state vector
AGENT_POS_DIM = 9         # MP1's Meta-World agent_pos
ACTION_DIM = 4            # Meta-World: hand xyz + gripper
FM_STEPS = 10             # the FM policy's Euler steps (and FlowPolicy's / MP1's baseline)
OBS_MODES = ("state", "pointcloud")
PAPER_MP1_MS = 6.8        # MP1's reported latency per inference, on the paper's own hardware (research notes §1)


@dataclass(frozen=True)
class NetworkSize:
    """One network size: U-Net channels, points per cloud, time-embedding size, and a cap on the repeats."""

    name: str
    down_dims: tuple[int, ...]
    num_points: int
    time_dim: int = 64
    max_repeats: int | None = None  # the largest network takes seconds per round; fewer rounds suffice there


SIZES: dict[str, NetworkSize] = {
    "benchmark": NetworkSize("benchmark", (32, 64), 128),
    "benchmark-cloud": NetworkSize("benchmark-cloud", (128, 256), 128),  # robotics_metaworld.CLOUD_DOWN_DIMS
    "flowzoo-default": NetworkSize("flowzoo-default", (64, 128, 256), 512),
    "mp1-paper": NetworkSize("mp1-paper", (512, 1024, 2048), 512, time_dim=128, max_repeats=10),
}
QUICK_SIZES = ("benchmark", "benchmark-cloud", "flowzoo-default")


@dataclass
class LatencyRow:
    """The times (ms, fastest of ``repeats``) of one network size and observation mode."""

    size: NetworkSize
    obs: str
    params_m: float
    repeats: int
    n_action_steps: int
    encoder_ms: float
    unet_ms: float            # one velocity pass of the U-Net (FM's network call)
    flowmap_ms: float         # one flow-map pass (MP1's call: two time embeddings)
    fm_chunk_ms: float
    mp1_chunk_ms: float
    fm_chunk_inference_ms: float
    mp1_chunk_inference_ms: float
    fm_chunk_cold_ms: float   # first call of a round (the other functions' data in the cache)
    mp1_chunk_cold_ms: float

    @property
    def speedup(self) -> float:
        return self.fm_chunk_ms / self.mp1_chunk_ms

    @property
    def cold_speedup(self) -> float:
        return self.fm_chunk_cold_ms / self.mp1_chunk_cold_ms

    @property
    def amdahl_bound(self) -> float:
        """(E + 10U) / (E + U): the speed-up a 1-pass sampler would reach if nothing but the networks cost time."""
        return (self.encoder_ms + FM_STEPS * self.unet_ms) / (self.encoder_ms + self.unet_ms)

    @property
    def fm_overhead_ms(self) -> float:
        return self.fm_chunk_ms - self.encoder_ms - FM_STEPS * self.unet_ms

    @property
    def mp1_overhead_ms(self) -> float:
        return self.mp1_chunk_ms - self.encoder_ms - self.flowmap_ms


def meta_world_spec(obs: str, num_points: int) -> EnvSpec:
    """A Meta-World-like :class:`EnvSpec` (actions in [-1, 1]^4) for ``obs`` in ``("state", "pointcloud")``."""
    if obs == "state":
        shapes: dict[str, tuple[int, ...]] = {"state": (STATE_DIM,)}
    elif obs == "pointcloud":
        shapes = {"point_cloud": (num_points, 3), "agent_pos": (AGENT_POS_DIM,)}
    else:
        raise ConfigError(expected(f"obs in {OBS_MODES}", repr(obs), "pass 'state' or 'pointcloud'"))
    return EnvSpec(f"metaworld-like-{obs}", obs, shapes, ACTION_DIM, (-1.0,) * ACTION_DIM, (1.0,) * ACTION_DIM, 500)


def _unit_normalizer(spec: EnvSpec) -> Normalizer:
    stats = {"action": {"min": [-1.0] * spec.action_dim, "max": [1.0] * spec.action_dim}}
    for key, shape in spec.obs_shapes.items():
        if key != "point_cloud":
            stats[key] = {"min": [-1.0] * shape[0], "max": [1.0] * shape[0]}
    return Normalizer(stats)


def build_policy(method: str, size: NetworkSize, obs: str, seed: int = 0, device: str = "cpu") -> FlowPolicy:
    """An untrained :class:`FlowPolicy` (``method`` "fm": 10 Euler steps; "mp1": 1 NFE) in eval mode on ``device``."""
    torch.manual_seed(seed)
    spec = meta_world_spec(obs, size.num_points)
    steps = FM_STEPS if method == "fm" else 1
    config = PolicyConfig(method=method, sample_steps=steps, down_dims=size.down_dims, time_dim=size.time_dim)
    return FlowPolicy(spec, _unit_normalizer(spec), config).eval().to(device)


@dataclass
class Timings:
    """Fastest times (ms) per function: ``warm`` (a call right after a call of the same function) and ``cold``
    (the first call of a round, after the other functions filled the cache)."""

    warm: dict[str, float]
    cold: dict[str, float]


def time_interleaved(functions: Mapping[str, Callable[[], object]], repeats: int, calls_per_round: int = 3,
                     warmup: int = 3, device: str = "cpu") -> Timings:
    """Fastest time of each function over ``repeats`` rounds; each round runs every function in turn.

    In a round each function is called ``calls_per_round`` times back to back, each call timed. The first call
    of a round finds the cache filled by the other functions (cold: like a policy called once after a simulator
    step); the later ones find its own weights there (warm: as when one function is timed alone, as
    ``chunk_latency_ms`` does, and as the passes inside the FM policy's 10-step loop). With one call per round
    the warm times are the cold ones. Runs on one torch thread (restored afterwards); ``warmup`` untimed calls of
    each function come first. On a CUDA ``device`` every timed call ends with a synchronisation, so a time is
    the call's whole latency, kernels included (a robot needs the action, not its launch).
    """
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for function in functions.values():
            for _ in range(warmup):
                function()
        warm = {name: math.inf for name in functions}
        cold = dict(warm)
        for _ in range(max(1, repeats)):
            for name, function in functions.items():
                for call in range(max(1, calls_per_round)):
                    sync()
                    start = time.perf_counter()
                    function()
                    sync()
                    elapsed = 1000.0 * (time.perf_counter() - start)
                    if call == 0:
                        cold[name] = min(cold[name], elapsed)
                    if call > 0 or calls_per_round <= 1:
                        warm[name] = min(warm[name], elapsed)
    finally:
        torch.set_num_threads(threads)
    return Timings(warm, cold)


def _observation(spec: EnvSpec, n_obs_steps: int, generator: torch.Generator,
                 device: str = "cpu") -> dict[str, torch.Tensor]:
    return {key: (torch.rand(1, n_obs_steps, *shape, generator=generator) * 2 - 1).to(device)
            for key, shape in spec.obs_shapes.items()}


def measure(size: NetworkSize, obs: str, repeats: int, seed: int = 0, device: str = "cpu") -> LatencyRow:
    """Time the FM-10 and MP1 policies of one size and observation mode, and their encoder / U-Net parts."""
    fm, mp1 = build_policy("fm", size, obs, seed, device), build_policy("mp1", size, obs, seed, device)
    generator = torch.Generator().manual_seed(seed)
    raw = _observation(fm.spec, fm.config.n_obs_steps, generator, device)
    with torch.no_grad():
        normalized = fm.normalize_obs(raw)
        features = fm.obs_encoder(normalized)
    noise = torch.randn(1, fm.config.horizon, fm.spec.action_dim, generator=generator).to(device)
    start_time, end_time = torch.zeros(1, device=device), torch.ones(1, device=device)

    def under(context: Callable[[], object], call: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with context():
                return call()
        return run

    repeats = min(repeats, size.max_repeats) if size.max_repeats else repeats
    timings = time_interleaved({
        "fm": lambda: fm.predict_action_chunk(raw),
        "mp1": lambda: mp1.predict_action_chunk(raw),
        "fm_inference": under(torch.inference_mode, lambda: fm.predict_action_chunk(raw)),
        "mp1_inference": under(torch.inference_mode, lambda: mp1.predict_action_chunk(raw)),
        "encoder": under(torch.no_grad, lambda: fm.obs_encoder(normalized)),
        "unet": under(torch.no_grad, lambda: fm.net(noise, start_time, cond=features)),
        "flowmap": under(torch.no_grad, lambda: mp1.net(noise, start_time, end_time, cond=features)),
    }, repeats, device=device)
    times = timings.warm
    return LatencyRow(size=size, obs=obs, params_m=sum(p.numel() for p in fm.parameters()) / 1e6,
                      repeats=repeats, n_action_steps=fm.config.n_action_steps, encoder_ms=times["encoder"],
                      unet_ms=times["unet"], flowmap_ms=times["flowmap"], fm_chunk_ms=times["fm"],
                      mp1_chunk_ms=times["mp1"], fm_chunk_inference_ms=times["fm_inference"],
                      mp1_chunk_inference_ms=times["mp1_inference"], fm_chunk_cold_ms=timings.cold["fm"],
                      mp1_chunk_cold_ms=timings.cold["mp1"])


def run_latency(sizes: Sequence[NetworkSize], obs_modes: Sequence[str] = OBS_MODES, repeats: int = 100,
                seed: int = 0, progress: bool = False, device: str = "cpu") -> list[LatencyRow]:
    """:func:`measure` every (size, observation mode); the policies of one pair are freed before the next."""
    from tqdm import tqdm

    pairs = [(size, obs) for size in sizes for obs in obs_modes]
    rows = []
    for size, obs in tqdm(pairs, desc="sizes x obs", file=sys.stderr, disable=not progress):
        rows.append(measure(size, obs, repeats, seed, device))
        row = rows[-1]  # as it comes, so that a run stopped early still says something
        print(f"{size.name} {obs}: FM-10 {row.fm_chunk_ms:.2f} ms, MP1 {row.mp1_chunk_ms:.2f} ms per chunk",
              file=sys.stderr, flush=True)
        gc.collect()  # MP1's size holds ~1 GB of weights per policy
    return rows


def format_table(rows: Sequence[LatencyRow]) -> str:
    """One markdown table, a row per (size, observation mode)."""
    lines = [
        "| obs | network (U-Net down_dims, points) | params (M) | encoder E ms | U-Net pass U ms (velocity / flow map) "
        "| FM-10 ms / chunk | MP1 1-NFE ms / chunk | FM-10 ms / action | MP1 ms / action | speed-up (measured) "
        "| Amdahl bound (E+10U)/(E+U) | overhead ms (FM / MP1) | inference_mode ms / chunk (FM / MP1) "
        "| cold ms / chunk (FM / MP1) | speed-up, cold |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        points = f", {r.size.num_points} pts" if r.obs == "pointcloud" else ""
        lines.append(
            f"| {r.obs} | {r.size.name} {r.size.down_dims}{points} | {r.params_m:.1f} | {r.encoder_ms:.3f} | "
            f"{r.unet_ms:.3f} / {r.flowmap_ms:.3f} | {r.fm_chunk_ms:.2f} | {r.mp1_chunk_ms:.2f} | "
            f"{r.fm_chunk_ms / r.n_action_steps:.3f} | {r.mp1_chunk_ms / r.n_action_steps:.3f} | "
            f"{r.speedup:.1f}x | {r.amdahl_bound:.1f}x | {r.fm_overhead_ms:.2f} / {r.mp1_overhead_ms:.2f} | "
            f"{r.fm_chunk_inference_ms:.2f} / {r.mp1_chunk_inference_ms:.2f} | "
            f"{r.fm_chunk_cold_ms:.2f} / {r.mp1_chunk_cold_ms:.2f} | {r.cold_speedup:.1f}x |")
    return "\n".join(lines)


def _summary(rows: Sequence[LatencyRow], where: str = "this CPU, one thread") -> list[str]:
    lines = []
    for r in rows:
        verdict = "PASS" if r.speedup >= 8 else "FAIL"
        lines.append(f"Target ({r.obs}, {r.size.name}): MP1 >= 8x faster per action than FM-10: {r.speedup:.1f}x "
                     f"({verdict}; bound {r.amdahl_bound:.1f}x, encoder = {r.encoder_ms / r.unet_ms:.2f} U-Net passes)")
    paper = [r for r in rows if r.size.name == "mp1-paper" and r.obs == "pointcloud"]
    for r in paper:
        lines.append(f"MP1 at its paper size, point clouds, {where}: {r.mp1_chunk_ms:.1f} ms per chunk "
                     f"({r.mp1_chunk_ms / r.n_action_steps:.1f} ms per action); the paper reports {PAPER_MP1_MS} ms "
                     "per inference on its own hardware.")
    gains = [(1 - r.fm_chunk_inference_ms / r.fm_chunk_ms, 1 - r.mp1_chunk_inference_ms / r.mp1_chunk_ms)
             for r in rows]
    flat = [g for pair in gains for g in pair]
    lines.append(f"torch.inference_mode vs no_grad: chunk time {100 * min(flat):+.1f} % to {100 * max(flat):+.1f} % "
                 "shorter (positive: inference_mode faster).")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip MP1's size, 40 rounds (about a minute)")
    parser.add_argument("--sizes", nargs="*", choices=sorted(SIZES), help="override the sizes")
    parser.add_argument("--obs", nargs="*", choices=OBS_MODES, help="override the observation modes")
    parser.add_argument("--repeats", type=int, default=0, help="rounds per size (0: 40 quick, 100 full; "
                        "at most 10 at MP1's size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (times then include a synchronisation)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.sizes or (QUICK_SIZES if args.quick else tuple(SIZES))
    repeats = args.repeats or (40 if args.quick else 100)
    started = time.perf_counter()
    rows = run_latency([SIZES[name] for name in names], args.obs or OBS_MODES, repeats, args.seed,
                       progress=not args.no_progress, device=args.device)
    print(f"\nInference latency at batch 1 on {args.device}, one CPU thread, untrained policies, "
          f"Meta-World-like specs (action 4-d; "
          f"state 39-d; point cloud + agent_pos {AGENT_POS_DIM}-d); n_obs_steps 2, horizon 4, 4 actions per chunk. "
          f"Fastest of {repeats} interleaved rounds of 3 calls (at most {SIZES['mp1-paper'].max_repeats} rounds at "
          f"mp1-paper); warm = 2nd/3rd call of a round, cold = 1st. "
          f"torch {torch.__version__}.\n")
    table = format_table(rows)
    print(table)
    print()
    where = (f"{torch.cuda.get_device_name(args.device)} (GPU)" if torch.device(args.device).type == "cuda"
             else "this CPU, one thread")
    summary = _summary(rows, where)
    print("\n".join(summary))
    save_markdown_tables("robotics_latency", table, title=f"Policy inference latency at batch 1 on {args.device}, "
                         f"fastest of {repeats} interleaved rounds", notes=[line.lstrip("- ") for line in summary],
                         command=reproduce_command("benchmarks.robotics_latency", argv), quick=args.quick,
                         device=args.device)
    print(f"\nTotal {time.perf_counter() - started:.0f} s wall.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
