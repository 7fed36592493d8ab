"""What a Meta Flow Matching training run costs here: seconds per update at the CLI's defaults, per thread count.

``python -m flowzoo.biology.train meta_fm`` trains ``--trainer.steps 3000`` updates of 8 populations x 128 cells with
the kNN-GCN encoder by default. This benchmark times those updates on pbmc68k pseudo-patients (scanpy's bundled
data, :func:`flowzoo.biology.cells.offline_populations.pbmc_pseudo_patients`) through the same entry point, with
evaluation and checkpoints switched off, and projects the default budget from the measured rate, so that the
documentation can say how long a default run takes on a machine like this one.

Run: ``python -m benchmarks.meta_fm_budget [--quick] [--threads 1 2]`` (``--quick``: 10 updates per row, ~1 min).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.results import reproduce_command, save_table

DEFAULT_STEPS = 3000  # the CLI's --trainer.steps default (biology/train.py)


def seconds_per_update(adata_path: Path, out_dir: Path, steps: int, threads: int) -> float:
    """Wall seconds per update of a default meta_fm run (after a 2-update warm-up run with the same options)."""
    from flowzoo.biology import train

    torch.set_num_threads(threads)
    base = ["meta_fm", "--adata", str(adata_path), "--population_key", "patient", "--condition_key", "condition",
            "--val_fraction", "0", "--test_fraction", "0", "--eval_pairs", "0", "--trainer.progress", "false",
            "--trainer.tensorboard", "false", "--trainer.eval_every", "0", "--trainer.checkpoint_every", "100000"]
    train.main(base + ["--out", str(out_dir / "warmup"), "--trainer.steps", "2"])
    timings = []
    for length in (steps, 2 * steps):  # the difference cancels the fixed cost of loading data and writing files
        start = time.perf_counter()
        train.main(base + ["--out", str(out_dir / f"run{length}"), "--trainer.steps", str(length)])
        timings.append(time.perf_counter() - start)
    return (timings[1] - timings[0]) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.meta_fm_budget", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 updates per row instead of 40")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    parser.add_argument("--patients", type=int, default=60, help="pbmc pseudo-patients (populations)")
    args = parser.parse_args(argv)
    from flowzoo.biology.cells.offline_populations import pbmc_pseudo_patients

    steps = 10 if args.quick else 40
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
               notes=[f"pbmc68k pseudo-patients ({args.patients}), {steps} and {2 * steps} updates timed, the "
                      "difference divided by the extra updates; evaluation and checkpoints off",
                      "a loaded machine is slower: compare with another run's rows on the same host only"])


if __name__ == "__main__":
    main()
