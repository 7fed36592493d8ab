"""Discrete flow matching side by side: flowzoo.core.discrete, flow_matching's DFM and the simplex flows.

Two datasets whose likelihood is known: (a) planted-motif HMM sequences (``flowzoo.biology.sequences.hmm``,
K = 4 letters) and (b) text8-like character sequences from a seeded order-1 Markov chain over 27 symbols
(``flowzoo.core.discrete.MarkovText``). On each, in one process, with the same backbone
(``ConvSequenceNet`` on one-hot inputs: K channels, K + 1 with a mask id), the same initial weights, data
batches, Adam (lr 2e-3), number of steps and sampling steps:

* flowzoo DFM, masked source and uniform source (cross-entropy loss, linear κ, ``discrete_sample``);
* flow_matching DFM, masked and uniform source (``MixtureDiscreteProbPath``, cross-entropy,
  ``MixtureDiscreteEulerSolver``), when flow_matching is installed;
* Gumbel-softmax FM and linear-simplex FM of ``flowzoo.biology.sequences``.

Training steps are interleaved in a fresh random order each round (every method steps on the round's batch) so that
machine load hits every method alike; "train step ms" is the median step. Columns: NLL/token is the negative ELBO
per token (``flowzoo.core.discrete.elbo_per_token``: the same estimator and path for flowzoo's and flow_matching's
models; "n/a" for the simplex flows, which have no discrete likelihood bound); entropy/token is the data's (exact
for the Markov chain; a Monte Carlo estimate from 20000 sequences for the HMM); sample NLL/token is the true model's
NLL of the generated sequences; 3-mer JS is the Jensen-Shannon divergence of the samples' 3-mer histogram from
held-out data's ("data (held out)" row: the sampling floor); "vs flow_matching" is the paired step-time ratio to
flow_matching's DFM with the same source (the masked one for the simplex flows): the median over rounds of the two
methods' step-time ratio within the round (:func:`paired_step_ratio`, the statistic of
``benchmarks.core_vs_peers``), which cancels load that lasts longer than a round, where a ratio of unpaired medians
would not; "ratio 95% CI" is a bootstrap interval of that median over rounds (:func:`ratio_interval`); "sample
ms" is the best of three interleaved rounds of drawing 200 sequences.

The "flow_matching DFM (mask), A/A" row trains a second, identical copy of flow_matching's masked DFM (same
initial weights, batches and random draws) in the same rounds and reports its ratio to the first copy: a method
compared with itself, so its distance from 1.0 is the noise floor of the ratio column (order within the round,
caches, allocator state), the resolution with which any other ratio can be read. It is timed only (its other
columns are "n/a").

    .venv/bin/python -m benchmarks.peers_discrete --quick      # a smoke run, under two minutes on one core
    .venv/bin/python -m benchmarks.peers_discrete              # the table in docs/discrete.md, ~15 minutes
    .venv/bin/python -m benchmarks.peers_discrete --figure docs/_static/discrete_sampling.png
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from torch import nn

from benchmarks.results import reproduce_command, save_table
from flowzoo.biology.sequences.alphabets import one_hot
from flowzoo.biology.sequences.gumbel_fm import build_method
from flowzoo.biology.sequences.hmm import kmer_js_divergence, planted_motif_hmm
from flowzoo.biology.sequences.nets import ConvSequenceNet
from flowzoo.core.discrete import (DiscreteFlowMatchingLoss, MarkovText, MixtureDiscretePath, discrete_sample,
                                   elbo_per_token)

__all__ = ["SETTINGS", "discrete_peers", "OneHotTokenNet", "paired_step_ratio", "ratio_interval", "bench_discrete",
           "draw_sampling_figure", "rounded", "format_table", "main"]

SETTINGS = {  # quick / full
    True: dict(train_steps=200, length=16, hidden=48, depth=3, batch=128, sample_steps=32, n_samples=400,
               n_time=16, n_eval=200, train_size=4000),
    False: dict(train_steps=1000, length=24, hidden=64, depth=3, batch=128, sample_steps=64, n_samples=1000,
                n_time=32, n_eval=500, train_size=20000),
}
COLUMNS = ["dataset", "method", "NLL/token", "entropy/token", "sample NLL/token", "3-mer JS", "train step ms",
           "vs flow_matching", "ratio 95% CI", "sample ms"]
AA_COPY = "flow_matching DFM (mask), A/A"
BOOTSTRAP_RESAMPLES = 2000
TIMED_SAMPLES, TIMING_ROUNDS = 200, 3


def discrete_peers() -> dict:
    """flow_matching's discrete classes by name, or an empty dict when it is not installed."""
    try:
        from flow_matching.path import MixtureDiscreteProbPath
        from flow_matching.path.scheduler import PolynomialConvexScheduler
        from flow_matching.solver import MixtureDiscreteEulerSolver
    except ImportError:
        return {}
    return dict(MixtureDiscreteProbPath=MixtureDiscreteProbPath, PolynomialConvexScheduler=PolynomialConvexScheduler,
                MixtureDiscreteEulerSolver=MixtureDiscreteEulerSolver)


class OneHotTokenNet(nn.Module):
    """Token ids -> one-hot over ``num_states`` -> ConvSequenceNet -> logits over the ``vocab_size`` data tokens."""

    def __init__(self, num_states: int, vocab_size: int, hidden: int, depth: int):
        super().__init__()
        self.num_states, self.vocab_size = num_states, vocab_size
        self.net = ConvSequenceNet(num_states, hidden=hidden, depth=depth)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(nn.functional.one_hot(x, self.num_states).float(), t)[..., :self.vocab_size]


class _Dataset:
    """A dataset: training / held-out / evaluation sequences, the true model's NLL and the entropy per token."""

    def __init__(self, name: str, cfg: dict, seed: int):
        self.name = name
        gen = torch.Generator().manual_seed(seed)
        if name == "HMM (K=4)":
            self.model = planted_motif_hmm(4, seed=seed)
            self.vocab_size = 4
            draw = lambda n: self.model.sample(n, cfg["length"], generator=gen)
            self.nll = self.model.nll_per_token
            self.entropy = self.model.nll_per_token(draw(20000))
        else:
            self.model = MarkovText(vocab_size=27, order=1, seed=seed)
            self.vocab_size = 27
            draw = lambda n: self.model.sample(n, cfg["length"], generator=gen)
            self.nll = self.model.nll_per_token
            self.entropy = self.model.entropy_per_token(cfg["length"])
        self.train, self.held_out, self.evaluation = (draw(cfg["train_size"]), draw(cfg["n_samples"]),
                                                      draw(cfg["n_eval"]))


def _contenders(vocab: int, cfg: dict, peers: dict) -> dict[str, dict]:
    """name -> {net, step(x1, generator) -> loss, sample(n, generator) -> tokens, path (DFM only), ref}."""
    out = {}
    for source in ("mask", "uniform"):
        path = MixtureDiscretePath(vocab, source=source)
        net = OneHotTokenNet(path.num_states, vocab, cfg["hidden"], cfg["depth"])
        loss = DiscreteFlowMatchingLoss(path, kind="cross_entropy")

        def step(x1, gen, net=net, loss=loss):
            return loss(net, {"x1": x1}, generator=gen)[0]

        def sample(n, gen, net=net, path=path):
            x0 = path.source.sample((n, cfg["length"]), generator=gen)
            return discrete_sample(net, x0, path=path, steps=cfg["sample_steps"], generator=gen).x
        out[f"flowzoo DFM ({source})"] = dict(net=net, step=step, sample=sample, path=path,
                                             ref=f"flow_matching DFM ({source})")
    if peers:
        for source in ("mask", "uniform"):
            out[f"flow_matching DFM ({source})"] = _flow_matching_contender(vocab, source, cfg, peers)
        out[AA_COPY] = dict(_flow_matching_contender(vocab, "mask", cfg, peers), timing_only=True)
    for name, label in (("gumbel_fm", "Gumbel-softmax FM"), ("linear_fm", "linear-simplex FM")):
        method = build_method(name, alphabet_size=vocab)
        net = ConvSequenceNet(vocab, hidden=cfg["hidden"], depth=cfg["depth"])

        def step(x1, gen, net=net, method=method):
            return method(net, {"x1": one_hot(x1, vocab)}, generator=gen)[0]

        def sample(n, gen, net=net, method=method):
            return method.sample(net, n, cfg["length"], vocab, steps=cfg["sample_steps"], generator=gen).tokens
        out[label] = dict(net=net, step=step, sample=sample, path=None, ref="flow_matching DFM (mask)")
    return out


def _flow_matching_contender(vocab: int, source: str, cfg: dict, peers: dict) -> dict:
    ours = MixtureDiscretePath(vocab, source=source)           # the same source, for the ELBO and the draws
    fm_path = peers["MixtureDiscreteProbPath"](peers["PolynomialConvexScheduler"](n=1.0))
    net = OneHotTokenNet(ours.num_states, vocab, cfg["hidden"], cfg["depth"])

    def step(x1, gen):
        x0 = ours.source.sample(x1.shape, generator=gen)
        t = torch.rand(x1.shape[0], generator=gen) * (1 - 1e-3)
        x_t = fm_path.sample(x_0=x0, x_1=x1, t=t).x_t
        return nn.functional.cross_entropy(net(x_t, t).flatten(0, 1), x1.flatten())

    def probabilities(x, t):                                     # their solver wants probabilities over all ids
        p = torch.softmax(net(x, t), -1)
        return nn.functional.pad(p, (0, ours.num_states - vocab))

    def sample(n, gen):
        solver = peers["MixtureDiscreteEulerSolver"](model=probabilities, path=fm_path, vocabulary_size=ours.num_states)
        x0 = ours.source.sample((n, cfg["length"]), generator=gen)
        with torch.no_grad():
            return solver.sample(x_init=x0, step_size=1.0 / cfg["sample_steps"])
    return dict(net=net, step=step, sample=sample, path=ours, ref=f"flow_matching DFM ({source})")


def _share_initial_weights(contenders: dict[str, dict]) -> None:
    """flow_matching's nets start from flowzoo's (same source), the simplex flows' from the uniform DFM's."""
    for source in ("mask", "uniform"):
        if f"flow_matching DFM ({source})" in contenders:
            contenders[f"flow_matching DFM ({source})"]["net"].load_state_dict(
                copy.deepcopy(contenders[f"flowzoo DFM ({source})"]["net"].state_dict()))
    if AA_COPY in contenders:
        contenders[AA_COPY]["net"].load_state_dict(copy.deepcopy(contenders["flowzoo DFM (mask)"]["net"].state_dict()))
    for label in ("Gumbel-softmax FM", "linear-simplex FM"):
        uniform_backbone = contenders["flowzoo DFM (uniform)"]["net"].net
        contenders[label]["net"].load_state_dict(copy.deepcopy(uniform_backbone.state_dict()))


def _train(contenders: dict[str, dict], data: torch.Tensor, cfg: dict, seed: int) -> dict[str, list[float]]:
    optimisers = {name: torch.optim.Adam(c["net"].parameters(), lr=2e-3) for name, c in contenders.items()}
    times = {name: [] for name in contenders}
    data_gen = torch.Generator().manual_seed(seed)
    gens = {name: torch.Generator().manual_seed(seed + 1) for name in contenders}
    rngs = {name: torch.random.get_rng_state() for name in contenders}   # flow_matching draws from the global RNG
    order = np.random.default_rng(seed)
    names = list(contenders)
    for _ in range(cfg["train_steps"]):
        x1 = data[torch.randint(0, data.shape[0], (cfg["batch"],), generator=data_gen)]
        for index in order.permutation(len(names)):
            name = names[index]
            torch.random.set_rng_state(rngs[name])
            started = time.perf_counter()
            loss = contenders[name]["step"](x1, gens[name])
            optimisers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimisers[name].step()
            times[name].append(time.perf_counter() - started)
            rngs[name] = torch.random.get_rng_state()
    return times


def paired_step_ratio(times: list[float], reference: list[float]) -> float:
    """Median over training rounds of ``times[r] / reference[r]`` (both stepped back to back on round r's batch).

    Load that lasts longer than a round scales both steps and cancels in their ratio.

    Example:
        >>> paired_step_ratio([2.0, 4.0, 30.0], [1.0, 2.0, 10.0])
        2.0
    """
    return float(np.median(np.asarray(times, dtype=float) / np.asarray(reference, dtype=float)))


def ratio_interval(times: list[float], reference: list[float], *, level: float = 0.95, seed: int = 0) -> str:
    """Percentile bootstrap interval of :func:`paired_step_ratio` over rounds, as ``"[low, high]"`` (3 decimals).

    Rounds are resampled with replacement :data:`BOOTSTRAP_RESAMPLES` times; consecutive rounds share load, so the
    interval is a lower bound on the real uncertainty, which the A/A row (module doc) shows directly.

    Example:
        >>> ratio_interval([1.0] * 50, [1.0] * 50)
        '[1.000, 1.000]'
    """
    ratios = np.asarray(times, dtype=float) / np.asarray(reference, dtype=float)
    rng = np.random.default_rng(seed)
    medians = np.median(ratios[rng.integers(0, len(ratios), (BOOTSTRAP_RESAMPLES, len(ratios)))], axis=1)
    low, high = np.quantile(medians, [(1 - level) / 2, (1 + level) / 2])
    return f"[{low:.3f}, {high:.3f}]"


def _time_sampling(contenders: dict[str, dict], n: int, seed: int) -> dict[str, float]:
    """Best wall time (ms) of drawing ``n`` sequences, over interleaved rounds in a fresh random order."""
    best = dict.fromkeys(contenders, float("inf"))
    order = np.random.default_rng(seed + 11)
    names = list(contenders)
    for contender in contenders.values():
        contender["net"].eval()
    for _ in range(TIMING_ROUNDS):
        for index in order.permutation(len(names)):
            started = time.perf_counter()
            contenders[names[index]]["sample"](n, torch.Generator().manual_seed(seed))
            best[names[index]] = min(best[names[index]], 1e3 * (time.perf_counter() - started))
    return best


def bench_discrete(args, peers: dict | None = None) -> list[dict]:
    """Train, sample and score every contender on both datasets (module doc); return the table's rows.

    ``args`` needs ``quick``, ``seed`` (and optionally ``discrete_train_steps`` to override the mode's step
    count, ``discrete_overrides`` a dict of :data:`SETTINGS` keys); ``peers`` is :func:`discrete_peers`' dict
    (None: look it up; empty: no flow_matching rows).
    """
    peers = discrete_peers() if peers is None else peers
    cfg = dict(SETTINGS[bool(getattr(args, "quick", False))])
    if getattr(args, "discrete_train_steps", None):
        cfg["train_steps"] = args.discrete_train_steps
    cfg.update(getattr(args, "discrete_overrides", None) or {})
    seed = getattr(args, "seed", 0)
    rows = []
    for dataset_name in ("HMM (K=4)", "Markov text (V=27)"):
        data = _Dataset(dataset_name, cfg, seed)
        rows.append({"dataset": dataset_name, "method": "data (held out)", "NLL/token": "n/a",
                     "entropy/token": data.entropy, "sample NLL/token": data.nll(data.held_out),
                     "3-mer JS": kmer_js_divergence(data.evaluation, data.held_out, data.vocab_size, 3),
                     "train step ms": "n/a", "vs flow_matching": "n/a", "ratio 95% CI": "n/a", "sample ms": "n/a"})
        torch.manual_seed(seed)
        contenders = _contenders(data.vocab_size, cfg, peers)
        _share_initial_weights(contenders)
        times = _train(contenders, data.train, cfg, seed)
        medians = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
        scored = {name: c for name, c in contenders.items() if not c.get("timing_only")}
        sampling_ms = _time_sampling(scored, min(TIMED_SAMPLES, cfg["n_samples"]), seed)
        for name, contender in contenders.items():
            reference = times.get(contender["ref"])
            ratio = paired_step_ratio(times[name], reference) if reference else "n/a"
            interval = ratio_interval(times[name], reference, seed=seed) if reference else "n/a"
            if contender.get("timing_only"):
                rows.append({"dataset": dataset_name, "method": name, **dict.fromkeys(COLUMNS[2:], "n/a"),
                             "train step ms": medians[name], "vs flow_matching": ratio, "ratio 95% CI": interval})
                continue
            torch.manual_seed(seed + 7)       # flow_matching's solver draws from the global generator
            samples = contender["sample"](cfg["n_samples"], torch.Generator().manual_seed(seed + 7))
            nll = "n/a" if contender["path"] is None else elbo_per_token(
                contender["net"], data.evaluation, path=contender["path"], n_time=cfg["n_time"],
                generator=torch.Generator().manual_seed(seed + 3))
            rows.append({"dataset": dataset_name, "method": name, "NLL/token": nll, "entropy/token": data.entropy,
                         "sample NLL/token": data.nll(samples),
                         "3-mer JS": kmer_js_divergence(samples, data.held_out, data.vocab_size, 3),
                         "train step ms": medians[name],
                         "vs flow_matching": ratio, "ratio 95% CI": interval, "sample ms": sampling_ms[name]})
            print(f"  {dataset_name} | {name}: NLL/token {nll if isinstance(nll, str) else f'{nll:.3f}'}, "
                  f"step {medians[name]:.1f} ms", flush=True)
    return rows


def draw_sampling_figure(filename: str, seed: int = 0, train_steps: int = 600, length: int = 32) -> None:
    """Train flowzoo DFM (masked source) on the Markov text briefly and plot sequences filling in over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chain = MarkovText(vocab_size=27, order=1, seed=seed)
    data = chain.sample(20000, length, generator=torch.Generator().manual_seed(seed))
    path = MixtureDiscretePath(27, source="mask")
    torch.manual_seed(seed)
    net = OneHotTokenNet(path.num_states, 27, hidden=64, depth=3)
    contender = {"net": net, "step": lambda x1, gen: DiscreteFlowMatchingLoss(path)(net, {"x1": x1}, generator=gen)[0]}
    _train({"dfm": contender}, data, dict(train_steps=train_steps, batch=128), seed)
    net.eval()
    steps, shown = 16, (0, 2, 4, 6, 8, 10, 12, 14, 16)
    out = discrete_sample(net, path.source.sample((3, length)), path=path, steps=steps, return_trajectory=True,
                          generator=torch.Generator().manual_seed(seed + 1))
    fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=110)
    ax.set_axis_off()
    row = 0
    for k in range(3):
        previous = None
        for index in shown:
            tokens = out.trajectory[index, k].tolist()
            ax.text(0, -row, f"t={float(out.times[index]):.2f}", family="monospace", fontsize=8, va="center")
            for j, token in enumerate(tokens):
                new = previous is not None and previous[j] == path.source.mask_id and token != path.source.mask_id
                char = "·" if token == path.source.mask_id else ("␣" if token == 26 else chain.decode(
                    torch.tensor([[token]]))[0])
                ax.text(7 + j, -row, char, family="monospace", fontsize=9, va="center", ha="center",
                        color="#bbbbbb" if token == path.source.mask_id else ("#c0392b" if new else "black"),
                        weight="bold" if new else "normal")
            previous, row = tokens, row + 1
        row += 0.8
    ax.set_xlim(-0.5, 7 + length)
    ax.set_ylim(-row, 1)
    ax.set_title("flowzoo DFM (masked source) filling in Markov-text sequences; red: unmasked since the row above",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(filename)
    plt.close(fig)


DIGITS = {"NLL/token": 3, "entropy/token": 3, "sample NLL/token": 3, "3-mer JS": 4, "train step ms": 2,
          "vs flow_matching": 3, "sample ms": 1}


def rounded(rows: list[dict]) -> list[dict]:
    """The rows with their floats rounded for the saved table (:data:`DIGITS` decimals per column)."""
    return [{key: round(value, DIGITS[key]) if isinstance(value, float) and key in DIGITS else value
             for key, value in row.items()} for row in rows]


def format_table(rows: list[dict]) -> str:
    """The rows as a markdown table (floats with 3 decimals)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c])
                                       for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short training and small nets (smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1: steadiest ratios)")
    parser.add_argument("--discrete-train-steps", type=int, default=0, help="training steps (0: the mode's)")
    parser.add_argument("--figure", default="", help="only draw the sampling figure to this PNG and exit")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.figure:
        draw_sampling_figure(args.figure, args.seed)
        print(f"wrote {args.figure}")
        return
    peers = discrete_peers()
    if not peers:
        print("flow_matching is not installed: its rows are left out "
              "(.venv/bin/pip install --no-deps -c constraints.txt flow_matching==1.0.10)")
    cfg = SETTINGS[args.quick]
    steps = args.discrete_train_steps or cfg["train_steps"]
    title = (f"Discrete flow matching vs peers: {steps} training steps, length {cfg['length']}, ConvSequenceNet "
             f"{cfg['depth']}x{cfg['hidden']}, {cfg['sample_steps']} sampling steps, {cfg['n_samples']} samples, "
             f"{args.threads} thread(s); NLL/token = negative ELBO ({cfg['n_time']} times), nats; sampling time: "
             f"{TIMED_SAMPLES} sequences, best of {TIMING_ROUNDS} interleaved rounds")
    rows = bench_discrete(args, peers)
    print(f"\n## {title}\n\n{format_table(rows)}")
    save_table("discrete_vs_peers", rounded(rows), columns=COLUMNS, title=title,
               command=reproduce_command("benchmarks.peers_discrete", argv), quick=args.quick)


if __name__ == "__main__":
    main()
