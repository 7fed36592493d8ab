"""Sequence generation on the simplex: Gumbel-softmax FM against linear-simplex FM, and STGFlow guidance.

Data: planted-motif HMMs (``flowzoo.biology.sequences.hmm``) at alphabet sizes K = 4, 20, 64 (motif lengths 6, 4, 3),
sequences of length L, a fixed training set of 4000 sequences per K. Contenders at each K share the
backbone (``ConvSequenceNet``), initial weights, data batches, optimiser (Adam, lr 2e-3), and number of
steps; their training steps are interleaved (one step of each in turn) so that machine load hits them
alike. Each draws the same number of sequences with the same number of Euler steps. Contenders:

* Gumbel-softmax FM: flowzoo's default, the fixed-noise interpolant for which the paper's Eq. 13 is the
  exact velocity (``flowzoo.biology.sequences.gumbel_path``);
* Gumbel-softmax FM (paper's path): the tempered interpolant of the paper's Eq. 9 sampled with Eq. 13, as
  published (full mode only);
* Gumbel-softmax score matching on the fixed-noise path (full mode only);
* linear-simplex FM: Dirichlet(1) source, straight paths.

Metrics, all against the true model:

* NLL/token: mean negative log-likelihood per letter under the HMM (exact forward algorithm). The
  true-model row is the target (the NLL of the model's own samples, an estimate of its entropy rate); far
  above it: the samples are off the data, below it: the samples collapse onto the most likely sequences.
* 3-mer JS: Jensen-Shannon divergence (nats) of the samples' 3-mer histogram from the exact 3-mer
  distribution. With K**3 bins (262144 at K = 64) and N x (L - 2) 3-mers the histogram is sparse, so the
  true-model row shows the floor this sample size allows.
* diversity: mean pairwise Hamming distance per position; unique: fraction of distinct sequences.
* motif: fraction of sequences holding the planted motif.

**Advantage** of Gumbel-softmax FM over linear-simplex FM at each K, fixed before running: for each of
three distances to the true model, |NLL - true NLL|, 3-mer JS (its sampling floor is common to both, so
it cancels in the difference) and |diversity - true diversity|, the linear model's distance minus the
Gumbel-softmax model's (> 0: Gumbel-softmax FM is closer). "Grows with K" means strictly increasing over
K = 4, 20, 64, judged for each metric separately; the verdicts are printed as they come out.

Guidance: a clean-sequence classifier (motif present or not) trained on the K = 4 training set steers
the K = 4 models with STGFlow at several strengths; the constraint is "holds the motif".

    .venv/bin/python -m benchmarks.biology_sequences --quick   # two contenders, L = 24: ~1 min of one idle core
    .venv/bin/python -m benchmarks.biology_sequences           # four contenders, L = 32: ~14 min of one idle core

(Times are the CPU time of ``--threads 1`` runs; on a loaded machine the wall time is several times longer.)
"""

import argparse
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from benchmarks.results import reproduce_command, save_markdown_tables
from flowzoo.biology.sequences.gumbel_fm import build_method
from flowzoo.biology.sequences.hmm import (kmer_js_divergence, mean_pairwise_hamming, motif_counts, motif_occupancy,
                                 planted_motif_hmm, unique_fraction, uniform_nll)
from flowzoo.biology.sequences.nets import ConvSequenceNet
from flowzoo.biology.sequences.alphabets import one_hot
from flowzoo.biology.sequences.stgflow import SequenceClassifier, StraightThroughGuidance, train_guide

__all__ = ["run", "main", "Settings", "advantage_lines"]

CONTENDERS = {
    "gumbel_fm": ("Gumbel-softmax FM", {"name": "gumbel_fm"}),
    "gumbel_fm_paper": ("Gumbel-softmax FM (paper's path)", {"name": "gumbel_fm", "noise": "tempered"}),
    "gumbel_score": ("Gumbel-softmax score matching", {"name": "gumbel_score"}),
    "linear_fm": ("linear-simplex FM", {"name": "linear_fm"}),
}
ALPHABETS = (4, 20, 64)


@dataclass
class Settings:
    """Sizes of one benchmark run (``quick`` or full)."""

    length: int
    train_steps: int
    hidden: int
    depth: int
    sample_steps: int
    n_samples: int
    contenders: tuple[str, ...]
    guidance_strengths: tuple[float, ...]

    @classmethod
    def for_mode(cls, quick: bool) -> "Settings":
        if quick:
            return cls(24, 300, 48, 3, 50, 500, ("gumbel_fm", "linear_fm"), (0.0, 2.0))
        return cls(32, 1200, 64, 4, 100, 1000, tuple(CONTENDERS), (0.0, 0.5, 2.0))


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


def advantage_lines(true: dict[int, dict[str, float]], gsfm: dict[int, dict[str, float]],
                    linear: dict[int, dict[str, float]]) -> list[str]:
    """The advantage table of the module doc: per K, each distance for linear, GSFM and their difference."""
    # plain names: a '|' inside a markdown header would split the column
    distances = {"abs(NLL - true)": lambda m, k: abs(m["nll"] - true[k]["nll"]),
                 "3-mer JS": lambda m, k: m["js"],
                 "abs(diversity - true)": lambda m, k: abs(m["div"] - true[k]["div"])}
    lines = ["", "Advantage of Gumbel-softmax FM over linear-simplex FM (distance to the true model: linear, "
             "GSFM, linear - GSFM; > 0: GSFM closer).", "",
             "| K | " + " | ".join(f"{name} linear | {name} GSFM | {name} advantage" for name in distances) + " |",
             "|---|" + "---|---|---|" * len(distances)]
    gains: dict[str, list[float]] = {name: [] for name in distances}
    for k in sorted(gsfm):
        cells = []
        for name, distance in distances.items():
            lin, gs = distance(linear[k], k), distance(gsfm[k], k)
            gains[name].append(lin - gs)
            cells.append(f"{lin:.4f} | {gs:.4f} | {lin - gs:+.4f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, values in gains.items():
        grows = all(a < b for a, b in zip(values, values[1:]))
        lines.append(f"Advantage in {name} " + ("grows" if grows else "does not grow") + " with K ("
                     + ", ".join(f"{v:+.4f}" for v in values) + ").")
    return lines


def run(quick: bool = False, seed: int = 0, progress: bool = True, train_steps: int = 0,
        contenders: tuple[str, ...] = (), width_per_letter: int = 0) -> str:
    """Train, sample and evaluate; return the markdown tables (and the advantage verdicts under them).

    Progress bars go to stderr (``progress=False`` turns them off). ``train_steps`` and ``contenders`` override
    the mode's (0 / empty: keep them; Gumbel-softmax FM and linear-simplex FM always run). ``width_per_letter``
    widens every network to at least that many channels per letter of the alphabet (0: the mode's width).
    """
    cfg = Settings.for_mode(quick)
    if train_steps:
        cfg.train_steps = train_steps
    if contenders:
        cfg.contenders = tuple(dict.fromkeys(("gumbel_fm", "linear_fm", *contenders)))
    lines = [f"Sequences on the simplex: planted-motif HMM, L = {cfg.length}, {cfg.train_steps} training steps, "
             f"{cfg.n_samples} samples, {cfg.sample_steps} Euler steps (NLL in nats/letter; true model = target).",
             "", "| K | model | NLL/token | 3-mer JS | diversity | unique | motif | note |",
             "|---|---|---|---|---|---|---|---|"]
    true, gsfm, linear = {}, {}, {}
    kept = {}
    for k in ALPHABETS:
        hmm = planted_motif_hmm(k, seed=seed)
        data = hmm.sample(4000, cfg.length, generator=torch.Generator().manual_seed(seed + k))
        reference = hmm.sample(cfg.n_samples, cfg.length, generator=torch.Generator().manual_seed(seed + 1000 + k))
        true[k] = _metrics(hmm, reference)
        lines.append(_row(k, "true model (samples)", true[k], f"uniform NLL {uniform_nll(k):.3f}"))
        methods = {name: build_method(alphabet_size=k, **CONTENDERS[name][1]) for name in cfg.contenders}
        nets = {}
        for name in cfg.contenders:
            torch.manual_seed(seed)
            nets[name] = ConvSequenceNet(k, hidden=max(cfg.hidden, width_per_letter * k), depth=cfg.depth)
        seconds = _train(methods, nets, one_hot(data, k), cfg.train_steps, 128, seed, f"K={k}: training", progress)
        results = {}
        for name in cfg.contenders:
            out = methods[name].sample(nets[name], cfg.n_samples, cfg.length, k, steps=cfg.sample_steps,
                                       generator=torch.Generator().manual_seed(seed + 7))
            results[name] = _metrics(hmm, out.tokens)
            lines.append(_row(k, CONTENDERS[name][0], results[name], f"train {seconds[name]:.0f} s"))
        gsfm[k], linear[k] = results["gumbel_fm"], results["linear_fm"]
        if k == 4:
            kept = {"hmm": hmm, "data": data, "methods": methods, "nets": nets}
    lines += advantage_lines(true, gsfm, linear)
    lines += _guidance_lines(kept, cfg, seed)
    return "\n".join(lines)


def _guidance_lines(kept: dict, cfg: Settings, seed: int) -> list[str]:
    hmm, data = kept["hmm"], kept["data"]
    labels = (motif_counts(data, hmm.motif) > 0).long()
    torch.manual_seed(seed)
    guide = SequenceClassifier(hmm.alphabet_size, 2, hidden=32, kernel_size=7)
    train_guide(guide, data, labels, steps=300, seed=seed)
    held_out = hmm.sample(1000, cfg.length, generator=torch.Generator().manual_seed(seed + 99))
    accuracy = float((guide(one_hot(held_out, 4)).argmax(-1) == (motif_counts(held_out, hmm.motif) > 0)).float().mean())
    rows = ["", f"STGFlow guidance at K = 4 toward \"holds the motif\" (guide accuracy {accuracy:.2f} on held-out "
            "sequences; motif = fraction meeting the constraint; note = letter-composition drift: total variation "
            "between the samples' and the training data's letter frequencies, with the samples' frequencies).", "",
            "| K | model | NLL/token | 3-mer JS | diversity | unique | motif | note |",
            "|---|---|---|---|---|---|---|---|"]
    for name in ("gumbel_fm", "linear_fm"):
        for strength in cfg.guidance_strengths:
            guidance = None if strength == 0 else StraightThroughGuidance(
                guide, kept["methods"][name], strength, num_samples=8, target_class=1, seed=seed)
            out = kept["methods"][name].sample(kept["nets"][name], cfg.n_samples, cfg.length, 4,
                                               steps=cfg.sample_steps, guidance=guidance,
                                               generator=torch.Generator().manual_seed(seed + 7))
            label = CONTENDERS[name][0] + (f" + STGFlow γ={strength:g}" if strength else " (unguided)")
            rows.append(_row(4, label, _metrics(hmm, out.tokens), composition_drift(out.tokens, data, 4)))
    return rows


def composition_drift(samples: torch.Tensor, data: torch.Tensor, k: int) -> str:
    """Total variation between the letter frequencies of samples and data, and the samples' frequencies.

    Guidance can meet a motif constraint by drifting the whole composition (e.g. AT-rich DNA full of motif
    repeats); the motif fraction alone would hide that.
    """
    share = torch.bincount(samples.flatten(), minlength=k).double() / samples.numel()
    reference = torch.bincount(data.flatten(), minlength=k).double() / data.numel()
    tv = 0.5 * float((share - reference).abs().sum())
    return f"TV {tv:.3f}; letters " + " ".join(f"{x:.2f}" for x in share.tolist())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two contenders, 300 steps, smaller nets (~1 min)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--train-steps", type=int, default=0, help="training steps per contender (0: the mode's)")
    parser.add_argument("--contenders", nargs="*", default=[], choices=list(CONTENDERS),
                        help="run only these (plus gumbel_fm and linear_fm); default: the mode's")
    parser.add_argument("--width-per-letter", type=int, default=0,
                        help="networks at least this many channels per alphabet letter wide (0: the mode's width)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    text = run(args.quick, args.seed, progress=not args.no_progress, train_steps=args.train_steps,
               contenders=tuple(args.contenders), width_per_letter=args.width_per_letter)
    print(text)
    save_markdown_tables("biology_sequences", text, title=text.splitlines()[0],
                         command=reproduce_command("benchmarks.biology_sequences", argv), quick=args.quick)
    print(f"\n(total {time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
