"""Training entrypoint of flowzoo.biology: ``python -m flowzoo.biology.train <method> [options]``.

* ``meta_fm``: Meta Flow Matching (or, with ``--model.method fm | per_population_fm``, its baselines) on the
  control -> treated population pairs of an AnnData file::

      python -m flowzoo.biology.train meta_fm --adata screen.h5ad --population_key patient \\
          --condition_key condition --control control --out runs/mfm

  The run directory receives the Trainer's checkpoints (weights, EMA, ``config.yaml``), ``populations.json``
  (the split, the treatments and training populations in index order), ``final_metrics.json`` (W1, W2, MMD,
  mean-marker MSE, r2 on the test populations) and ``prediction_test.png``. ``--help`` lists every option
  as ``--population_key`` (the spelling the docs use); dashes are accepted too (``--population-key``).
  Every population left out of the pairs, or whose cells were partly left out, is printed with the reason; a
  population the split column holds out by name must be usable, and a run needs a validation population
  unless ``--val_fraction 0``. The progress bar shows the time left; ``docs/biology.md`` gives the measured
  cost of the default budget (``--trainer.steps 3000``, from ``python -m benchmarks.meta_fm_budget``), and
  ``--trainer.steps`` trades quality for time.
* ``gumbel_fm``: sequence models, handed to :func:`flowzoo.biology.sequences.cli.train_main` (the rest of the
  command line, without the word ``gumbel_fm``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowzoo.biology.cells.meta_fm import (MetaFMOptions, build_model, evaluate_pairs, fit, plot_prediction, predict_population)
from flowzoo.biology.cells.nets import PopulationFlow
from flowzoo.biology.cells.populations import load_populations
from flowzoo.core.config import config_from_dict, option_help, parse_config
from flowzoo.core.errors import CheckpointError, ConfigError, expected
from flowzoo.core.training import TrainerConfig, atomic_write_bytes, read_checkpoint

__all__ = ["MetaFMConfig", "run_meta_fm", "load_trained", "normalize_option_names", "meta_fm_main", "main",
           "POPULATIONS_FILE"]

POPULATIONS_FILE = "populations.json"




def _default_trainer() -> TrainerConfig:
    return TrainerConfig(steps=3000, batch_size=1, lr=1e-3, warmup_steps=100, ema_decay=0.999, eval_every=1000,
                         checkpoint_every=1000, out_dir="runs/meta_fm")


@dataclass
class MetaFMConfig:
    """Meta Flow Matching on an AnnData file's control -> treated population pairs.

    A batch is model.populations_per_batch populations x model.cells_per_population cells; trainer.batch_size
    is not used.
    """

    adata: str = field(metadata=option_help("the .h5ad file (read only)"))
    population_key: str = field(default="population", metadata=option_help(".obs column naming each cell's population"))
    condition_key: str = field(default="condition", metadata=option_help(".obs column with control / treated"))
    control: str = field(default="control", metadata=option_help("condition value of the control cells"))
    treated: str | None = field(default=None, metadata=option_help("condition value of treated cells (none: all others)"))
    treatment_key: str | None = field(default=None, metadata=option_help(".obs column naming the treatment (none: condition)"))
    rep: str = field(default="X", metadata=option_help("X, an .obsm key (e.g. X_pca) or a .layers key"))
    cell_condition_key: str | None = field(default=None, metadata=option_help(".obs column of per-cell encoder channels"))
    split_key: str | None = field(default=None, metadata=option_help(".obs column with train/validation/test per population"))
    val_fraction: float = field(default=0.15, metadata=option_help("validation populations (seeded split)"))
    test_fraction: float = field(default=0.15, metadata=option_help("held-out test populations (seeded split)"))
    split_seed: int = field(default=0, metadata=option_help("seed of the population split"))
    out: str | None = field(default=None, metadata=option_help("run directory (sets trainer.out_dir)"))
    eval_steps: int = field(default=50, metadata=option_help("Euler steps when evaluating"))
    eval_pairs: int = field(default=8, metadata=option_help("validation pairs evaluated during training"))
    model: MetaFMOptions = field(default_factory=MetaFMOptions)
    trainer: TrainerConfig = field(default_factory=_default_trainer)


def normalize_option_names(argv: Sequence[str]) -> list[str]:
    """``--population-key v`` -> ``--population_key v`` (values are left alone)."""
    out = []
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            name, sep, value = token[2:].partition("=")
            token = "--" + name.replace("-", "_") + sep + value
        out.append(token)
    return out


def run_meta_fm(cfg: MetaFMConfig) -> dict[str, float]:
    """Load the pairs, train, evaluate on the test populations and write the run directory's files."""
    if cfg.out:
        cfg.trainer.out_dir = cfg.out
    gcn = cfg.model.method == "meta_fm" and cfg.model.encoder == "gcn"
    popset = load_populations(cfg.adata, population_key=cfg.population_key, condition_key=cfg.condition_key,
                              control_value=cfg.control, treated_value=cfg.treated, treatment_key=cfg.treatment_key,
                              rep=cfg.rep, cell_condition_key=cfg.cell_condition_key, split_key=cfg.split_key,
                              val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.split_seed,
                              min_cells=cfg.model.knn_k + 1 if gcn else 2)
    for name, reason in popset.dropped.items():
        print(f"population {name!r}: {reason}")
    if not popset.split("train"):
        raise ConfigError(expected("at least one training population", "none after the split",
                                   "lower val_fraction / test_fraction or fix the split column"))
    if not popset.split("validation") and cfg.val_fraction > 0:
        where = (f"the split column {cfg.split_key!r} marks none 'validation'" if cfg.split_key else
                 f"val_fraction={cfg.val_fraction} of {len(popset.populations('train')) + len(popset.populations('test'))}"
                 " populations rounds to none")
        raise ConfigError(expected("at least one validation population (training evaluates on them)", where,
                                   "mark some populations 'validation' (or raise --val_fraction), or pass "
                                   "--val_fraction 0 to train without validation"))
    model, result = fit(popset, cfg.model, cfg.trainer, run_config=cfg, eval_steps=cfg.eval_steps,
                        eval_pairs=cfg.eval_pairs)
    out_dir = Path(cfg.trainer.out_dir)
    meta = {"method": cfg.model.method, "dim": popset.dim, "rep": popset.rep, "treatments": popset.treatments,
            "train_populations": model.train_populations, "cell_conditions": popset.cell_conditions,
            "feature_names": popset.feature_names,
            "splits": {name: popset.populations(name) for name in ("train", "validation", "test")}}
    atomic_write_bytes(out_dir / POPULATIONS_FILE, json.dumps(meta, indent=1).encode("utf-8"))
    test = popset.split("test")
    metrics: dict[str, Any] = {"train_seconds": result.seconds, "steps": result.step}
    if test:
        metrics.update({f"test_{k}": v for k, v in evaluate_pairs(model, test, steps=cfg.eval_steps).items()})
        pair = test[0]
        predicted = predict_population(model, pair.source, treatment=pair.treatment, source_cond=pair.source_cond,
                                       population=pair.population, steps=cfg.eval_steps, allow_unseen=True)
        plot_prediction(pair.source, predicted, pair.target, out_dir / "prediction_test.png",
                        title=f"{cfg.model.method}: held-out {pair.population} ({pair.treatment})")
    clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in metrics.items()}
    atomic_write_bytes(out_dir / "final_metrics.json", json.dumps(clean, indent=2).encode("utf-8"))
    return metrics


def load_trained(path: str | Path) -> tuple[PopulationFlow, MetaFMConfig, dict[str, Any]]:
    """Rebuild a trained model from a run directory (or one of its checkpoints); EMA weights when present.

    Returns ``(model in eval mode, the run's MetaFMConfig, the populations.json metadata)``; the metadata also
    names the checkpoint read, its step and a SHA-256 of the weights loaded (for a prediction's provenance).
    """
    if not Path(path).exists():
        raise CheckpointError(expected("the run directory (or a checkpoint) of a meta_fm training run",
                                       f"{path} (does not exist)",
                                       "pass the --out directory of `python -m flowzoo.biology.train meta_fm`"))
    checkpoint = read_checkpoint(path)
    candidates = [Path(path) / POPULATIONS_FILE, checkpoint.path.parent.parent / POPULATIONS_FILE]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None or checkpoint.config is None:
        missing = "no config.yaml" if checkpoint.config is None else f"no {POPULATIONS_FILE}"
        raise CheckpointError(expected(f"{POPULATIONS_FILE} and config.yaml of a meta_fm run", f"{path} ({missing})",
                                       "pass the --out directory of `python -m flowzoo.biology.train meta_fm`"))
    meta = json.loads(found.read_text())
    cfg = config_from_dict(MetaFMConfig, checkpoint.config)
    model = build_model(cfg.model, dim=meta["dim"], treatments=meta["treatments"],
                        train_populations=meta["train_populations"], cond_dim=len(meta["cell_conditions"]))
    model.cell_conditions = list(meta["cell_conditions"])
    weights = checkpoint.inference_weights
    model.load_state_dict(weights)
    meta.update(checkpoint=str(checkpoint.path), step=checkpoint.step, weights_sha256=_weights_digest(weights))
    return model.eval(), cfg, meta


def _weights_digest(weights: dict[str, Any]) -> str:
    """SHA-256 over the loaded weights (names and bytes): names the exact model that made a prediction."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode("utf-8"))
        digest.update(weights[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def meta_fm_main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowzoo.biology.train meta_fm ...``: train and print the test metrics as JSON."""
    argv = normalize_option_names(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(MetaFMConfig, argv, prog="python -m flowzoo.biology.train meta_fm")
    metrics = run_meta_fm(cfg)
    print(json.dumps({k: v for k, v in metrics.items()}, indent=2, default=str))
    print(f"outputs in {Path(cfg.trainer.out_dir).resolve()} (checkpoints/, {POPULATIONS_FILE}, final_metrics.json)")
    return 0


_USAGE = ("usage: python -m flowzoo.biology.train meta_fm --adata file.h5ad --population_key KEY "
          "--condition_key KEY [--control VALUE] --out DIR\n"
          "       python -m flowzoo.biology.train gumbel_fm --fasta seqs.fa --out DIR\n"
          "Run either with --help to list its options.")


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch on the method: ``meta_fm`` here, ``gumbel_fm`` to :mod:`flowzoo.biology.sequences.cli`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_USAGE + "\n\nmeta_fm options (gumbel_fm's: python -m flowzoo.biology.train gumbel_fm --help):")
        try:
            parse_config(MetaFMConfig, ["--help"], prog="python -m flowzoo.biology.train meta_fm")
        except SystemExit:
            pass
        return 0
    method, rest = argv[0], argv[1:]
    if method == "meta_fm":
        return meta_fm_main(rest)
    if method == "gumbel_fm":
        from flowzoo.biology.sequences.cli import train_main

        return int(train_main(rest) or 0)
    raise ConfigError(expected("a method first, meta_fm or gumbel_fm", repr(method),
                               "run e.g. python -m flowzoo.biology.train meta_fm --help"))


if __name__ == "__main__":  # pragma: no cover
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(main, prog="python -m flowzoo.biology.train"))
