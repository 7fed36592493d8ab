"""Sequence generation on the simplex: Gumbel-softmax FM against linear-simplex FM, and STGFlow guidance.

Data: planted-motif HMMs (``flowzoo.biology.hmm``) at alphabet sizes K = 4, 20, 64 (motif lengths 6, 4, 3),
sequences of length L, a fixed training set of 4000 sequences per K. Contenders at each K share the
backbone (``ConvSequenceNet``), initial weights, data batches, optimiser (Adam, lr 2e-3), and number of
steps; their training steps are interleaved (one step of each in turn) so that machine load hits them
alike. Each draws 500 sequences with the same number of Euler steps. Metrics, all against the true model:

* NLL/token: mean negative log-likelihood per letter under the HMM (exact forward algorithm). The
  true-model row is the target (its entropy rate estimate); far above it: the samples are off the data,
  far below it: the samples collapse onto the most likely sequences.
* 3-mer JS: Jensen-Shannon divergence (nats) of the samples' 3-mer histogram from the exact 3-mer
  distribution. With K**3 bins (262144 at K = 64) and 500 x (L - 2) 3-mers the histogram is sparse, so the
  true-model row shows the floor this sample size allows.
* diversity: mean pairwise Hamming distance per position; unique: fraction of distinct sequences.
* motif: fraction of sequences holding the planted motif.

Guidance: a clean-sequence classifier (motif present or not) trained on the K = 4 training set steers
the K = 4 models with STGFlow at several strengths; the constraint is "holds the motif".

    .venv/bin/python benchmarks/biology_sequences.py --quick   # ~5 min on a busy 2-core machine
    .venv/bin/python benchmarks/biology_sequences.py           # + score matching, 1500 steps: ~35 min on a busy machine
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm.auto import tqdm

from flowzoo.biology.gumbel_fm import build_method
from flowzoo.biology.hmm import (kmer_js_divergence, mean_pairwise_hamming, motif_counts, motif_occupancy,
                                 planted_motif_hmm, unique_fraction, uniform_nll)
from flowzoo.biology.seq_nets import ConvSequenceNet
from flowzoo.biology.sequences import one_hot
from flowzoo.biology.stgflow import SequenceClassifier, StraightThroughGuidance, train_guide

__all__ = ["run", "main"]

METHOD_LABELS = {"gumbel_fm": "Gumbel-softmax FM", "gumbel_score": "Gumbel-softmax score matching",
                 "linear_fm": "linear-simplex FM"}


def _metrics(hmm, tokens: torch.Tensor) -> dict[str, float]:
    return {"nll": hmm.nll_per_token(tokens), "js": kmer_js_divergence(tokens, hmm, hmm.alphabet_size),
            "div": mean_pairwise_hamming(tokens), "unique": unique_fraction(tokens),
            "motif": motif_occupancy(tokens, hmm.motif)}


def _row(k: int, label: str, m: dict[str, float], extra: str = "") -> str:
    return (f"| {k} | {label} | {m['nll']:.3f} | {m['js']:.4f} | {m['div']:.3f} | {m['unique']:.2f} | "
            f"{m['motif']:.2f} | {extra} |")


def _train(methods: dict[str, object], nets: dict[str, torch.nn.Module], data: torch.Tensor, steps: int,
           batch: int, seed: int, desc: str = "training", progress: bool = True) -> dict[str, float]:
    optimisers = {name: torch.optim.Adam(net.parameters(), lr=2e-3) for name, net in nets.items()}
    seconds = dict.fromkeys(nets, 0.0)
    data_gen = torch.Generator().manual_seed(seed)
    path_gens = {name: torch.Generator().manual_seed(seed + 1) for name in nets}
    order = list(nets)
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        x1 = data[torch.randint(0, data.shape[0], (batch,), generator=data_gen)]
        for name in order[step % len(order):] + order[: step % len(order)]:
            start = time.perf_counter()
            loss, _ = methods[name](nets[name], {"x1": x1}, generator=path_gens[name])
            optimisers[name].zero_grad()
            loss.backward()
            optimisers[name].step()
            seconds[name] += time.perf_counter() - start
    for net in nets.values():
        net.eval()
    return seconds


def run(quick: bool = False, seed: int = 0, progress: bool = True) -> str:
    """Train, sample and evaluate; return the markdown table (and a short summary under it).

    Progress bars go to stderr (``progress=False`` turns them off).
    """
    length = 24 if quick else 32
    steps = 400 if quick else 1500
    hidden, depth = (64, 3) if quick else (64, 4)
    sample_steps, n_samples = (50, 500) if quick else (100, 1000)
    names = ["gumbel_fm", "linear_fm"] if quick else ["gumbel_fm", "gumbel_score", "linear_fm"]
    lines = [f"Sequences on the simplex: planted-motif HMM, L = {length}, {steps} training steps, {n_samples} "
             f"samples, {sample_steps} Euler steps (NLL in nats/letter; true model = target).", "",
             "| K | model | NLL/token | 3-mer JS | diversity | unique | motif | note |",
             "|---|---|---|---|---|---|---|---|"]
    gaps: dict[int, float] = {}
    js_ratios: dict[int, float] = {}
    kept = {}
    for k in (4, 20, 64):
        hmm = planted_motif_hmm(k, seed=seed)
        data = hmm.sample(4000, length, generator=torch.Generator().manual_seed(seed + k))
        reference = hmm.sample(n_samples, length, generator=torch.Generator().manual_seed(seed + 1000 + k))
        lines.append(_row(k, "true model (samples)", _metrics(hmm, reference), f"uniform NLL {uniform_nll(k):.3f}"))
        methods = {name: build_method(name, k) for name in names}
        nets = {}
        for name in names:
            torch.manual_seed(seed)
            nets[name] = ConvSequenceNet(k, hidden=hidden, depth=depth)
        seconds = _train(methods, nets, one_hot(data, k), steps, 128, seed, f"K={k}: {', '.join(names)}", progress)
        results = {}
        for name in names:
            out = methods[name].sample(nets[name], n_samples, length, k, steps=sample_steps,
                                       generator=torch.Generator().manual_seed(seed + 7))
            results[name] = _metrics(hmm, out.tokens)
            lines.append(_row(k, METHOD_LABELS[name], results[name], f"train {seconds[name]:.0f} s"))
        true_nll = _metrics(hmm, reference)["nll"]
        gaps[k] = abs(results["linear_fm"]["nll"] - true_nll) - abs(results["gumbel_fm"]["nll"] - true_nll)
        js_ratios[k] = results["gumbel_fm"]["js"] / max(results["linear_fm"]["js"], 1e-12)
        if k == 4:
            kept = {"hmm": hmm, "data": data, "methods": methods, "nets": nets}
    lines += _guidance_rows(kept, length, n_samples, sample_steps, quick, seed)
    grows = gaps[4] < gaps[20] < gaps[64]
    lines += ["", "GSFM advantage in NLL (|NLL - true| of linear-simplex FM minus that of GSFM; > 0: GSFM closer): "
              + ", ".join(f"K={k}: {gap:+.3f}" for k, gap in gaps.items())
              + (" -- grows with K." if grows else " -- does not grow monotonically with K."),
              "3-mer JS of GSFM / linear-simplex FM (< 1: GSFM closer): "
              + ", ".join(f"K={k}: {ratio:.2f}" for k, ratio in js_ratios.items()) + "."]
    return "\n".join(lines)


def _guidance_rows(kept: dict, length: int, n_samples: int, sample_steps: int, quick: bool, seed: int) -> list[str]:
    hmm, data = kept["hmm"], kept["data"]
    labels = (motif_counts(data, hmm.motif) > 0).long()
    torch.manual_seed(seed)
    guide = SequenceClassifier(hmm.alphabet_size, 2, hidden=32, kernel_size=7)
    train_guide(guide, data, labels, steps=300, seed=seed)
    held_out = hmm.sample(1000, length, generator=torch.Generator().manual_seed(seed + 99))
    accuracy = float((guide(one_hot(held_out, 4)).argmax(-1) == (motif_counts(held_out, hmm.motif) > 0)).float().mean())
    rows = []
    strengths = (0.0, 0.5, 2.0) if quick else (0.0, 0.25, 0.5, 1.0, 2.0)
    for name in ("gumbel_fm", "linear_fm"):
        for strength in strengths:
            guidance = None if strength == 0 else StraightThroughGuidance(
                guide, kept["methods"][name], strength, num_samples=8, target_class=1, seed=seed)
            out = kept["methods"][name].sample(kept["nets"][name], n_samples, length, 4, steps=sample_steps,
                                               generator=torch.Generator().manual_seed(seed + 7), guidance=guidance)
            label = METHOD_LABELS[name] + (f" + STGFlow γ={strength:g}" if strength else " (unguided)")
            rows.append(_row(4, label, _metrics(hmm, out.tokens), f"guide accuracy {accuracy:.2f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="400 steps, two models, smaller nets (~3 min)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    print(run(args.quick, args.seed, progress=not args.no_progress))
    print(f"\n(total {time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
