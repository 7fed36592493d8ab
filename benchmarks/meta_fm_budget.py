"""What a Meta Flow Matching training run costs here: seconds per update at the CLI's defaults, per thread count.

``python -m flowzoo.biology.train meta_fm`` trains ``--trainer.steps 3000`` updates of 8 populations x 128 cells with
the kNN-GCN encoder by default. This benchmark times those updates on pbmc68k pseudo-patients (scanpy's bundled
data, :func:`flowzoo.biology.cells.offline_populations.pbmc_pseudo_patients`) through the same entry point, with
evaluation and checkpoints switched off, and projects the default budget from the measured rate, so that the
documentation can say how long a default run takes on a machine like this one.

Run: ``python -m benchmarks.meta_fm_budget [--quick] [--threads 1 2]`` (a few minutes; ``--quick`` about one).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.results import reproduce_command, save_table

DEFAULT_STEPS = 3000  # the CLI's --trainer.steps default (biology/train.py)


def seconds_per_update(adata_path: Path, out_dir: Path, steps: int, threads: int, repeats: int = 3) -> float:
    """Wall seconds per update of a default meta_fm run (after a 2-update warm-up run with the same options)."""
    from flowzoo.biology import train
    from flowzoo.biology.train import MetaFMConfig
    from flowzoo.core.config import parse_config

    torch.set_num_threads(threads)
    base = ["--adata", str(adata_path), "--population_key", "patient", "--condition_key", "condition",
            "--val_fraction", "0", "--test_fraction", "0", "--eval_pairs", "0", "--trainer.progress", "false",
            "--trainer.tensorboard", "false", "--trainer.eval_every", "0", "--trainer.checkpoint_every", "100000"]
    train.run_meta_fm(parse_config(MetaFMConfig, base + ["--out", str(out_dir / "warmup"), "--trainer.steps", "2"]))
    best = {}
    # The difference of two lengths cancels the fixed cost of set-up, final evaluation and save; the best of
    # `repeats` per length drops the runs another process on the machine slowed down.
    for repeat in range(repeats):
        for length in (steps, 3 * steps):
            out = out_dir / f"run{length}_{repeat}"
            cfg = parse_config(MetaFMConfig, base + ["--out", str(out), "--trainer.steps", str(length)])
            seconds = train.run_meta_fm(cfg)["train_seconds"]
            best[length] = min(seconds, best.get(length, seconds))
    return (best[3 * steps] - best[steps]) / (2 * steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.meta_fm_budget", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="timed runs of 15 and 45 updates instead of 60 and 180")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    parser.add_argument("--patients", type=int, default=60, help="pbmc pseudo-patients (populations)")
    args = parser.parse_args(argv)
    from flowzoo.biology.cells.offline_populations import pbmc_pseudo_patients

    steps = 15 if args.quick else 60
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pbmc.h5ad"
        pbmc_pseudo_patients(n_patients=args.patients, seed=0).write_h5ad(path)
        for threads in args.threads:
            rate = seconds_per_update(path, Path(folder) / f"t{threads}", steps, threads)
            rows.append({"threads": threads, "s / update": round(rate, 4),
                         f"default run ({DEFAULT_STEPS} updates), min": round(rate * DEFAULT_STEPS / 60, 1)})
            print(f"{threads} thread(s): {rate:.3f} s / update -> {rate * DEFAULT_STEPS / 60:.1f} min for "
                  f"{DEFAULT_STEPS} updates")
    save_table("meta_fm_budget", rows, title="Meta FM training cost at the CLI defaults (8 populations x 128 cells, "
               "GCN encoder)", command=reproduce_command("benchmarks.meta_fm_budget", argv), quick=args.quick,
               notes=[f"pbmc68k pseudo-patients ({args.patients}): the Trainer's seconds for runs of {steps} and "
                      f"{3 * steps} updates, the difference divided by the {2 * steps} extra updates, best of 3 runs "
                      "per length; evaluation during training and intermediate checkpoints off",
                      "a loaded machine is slower: compare with another run's rows on the same host only"])


if __name__ == "__main__":
    main()
