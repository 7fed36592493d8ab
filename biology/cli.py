"""Commands of ``flowzoo biology ...``: ``train``, ``predict`` (Meta Flow Matching) and ``sample`` (sequences).

``flowzoo biology predict --checkpoint run/ --adata new.h5ad --out pred.h5ad`` predicts the treated state of
every control population in ``new.h5ad`` with a model trained by ``python -m flowzoo.biology.train meta_fm``
and writes an annotated copy to ``--out`` (``.obsm``/``.layers`` key ``--key_added``, default ``X_<method>``:
``X_meta_fm``, ``X_fm`` or ``X_per_population_fm``; see :func:`flowzoo.biology.cells.meta_fm.predict`). The
input file is only read; the output is written atomically (temporary file in the same folder, fsync, rename),
may not be the input file, and an existing ``--out`` is replaced only with ``--overwrite``. ``.uns[key]``
records what made the prediction: method, solver, steps, checkpoint path and step, weights SHA-256 and the
flowzoo version. The ``.obs`` keys default to the ones the model was trained with.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from flowzoo.core.config import option_help, parse_config
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.training import atomic_write_with
from flowzoo.core.validation import check_new_outputs

__all__ = ["PredictConfig", "predict_main", "commands"]




@dataclass
class PredictConfig:
    """Predict treated populations from control populations with a trained Meta FM run."""

    checkpoint: str = field(metadata=option_help("run directory (or checkpoint) of `python -m flowzoo.biology.train meta_fm`"))
    adata: str = field(metadata=option_help("the .h5ad with the control populations (read only)"))
    out: str = field(metadata=option_help("the .h5ad to write (a new file; never the input)"))
    treatment: str | None = field(default=None, metadata=option_help("treatment to predict (none: the model's only one)"))
    population_key: str | None = field(default=None, metadata=option_help(".obs population column (none: as in training)"))
    condition_key: str | None = field(default=None, metadata=option_help(".obs condition column (none: as in training)"))
    control: str | None = field(default=None, metadata=option_help("control value (none: as in training)"))
    key_added: str | None = field(default=None, metadata=option_help(".obsm / .layers key (none: X_<method>, e.g. X_meta_fm)"))
    steps: int = field(default=100, metadata=option_help("ODE steps"))
    method: str = field(default="euler", metadata=option_help("ODE method: euler, midpoint, heun, rk4, dopri5"))
    allow_unseen: bool = field(default=False, metadata=option_help("per_population_fm: map new populations to the null row"))
    plot: str | None = field(default=None, metadata=option_help("PNG of the first population: control, predicted, observed"))
    overwrite: bool = field(default=False, metadata=option_help("replace an existing --out file"))
    progress: bool = field(default=True, metadata=option_help("progress bar over populations"))


def _write_h5ad_atomically(adata, path: Path) -> None:
    atomic_write_with(path, adata.write_h5ad, suffix=".h5ad")


def predict_main(argv: Sequence[str] | None = None) -> int:
    """Entrypoint of ``flowzoo biology predict``; returns 0 after writing ``--out``."""
    from flowzoo.biology.cells.meta_fm import plot_prediction, predict
    from flowzoo.biology.cells.populations import read_adata, representation
    from flowzoo.biology.train import load_trained, normalize_option_names

    argv = normalize_option_names(sys.argv[1:] if argv is None else argv)
    cfg = parse_config(PredictConfig, argv, prog="flowzoo biology predict")
    source, out = Path(cfg.adata), Path(cfg.out)
    if out.suffix != ".h5ad":
        raise ConfigError(expected("--out ending in .h5ad", str(out), "name the output e.g. pred.h5ad"))
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise ConfigError(expected("--out different from --adata (the input is never overwritten)", str(out),
                                   "write the prediction to a new file"))
    check_new_outputs([out], cfg.overwrite)
    model, trained, meta = load_trained(cfg.checkpoint)
    population_key = cfg.population_key or trained.population_key
    condition_key = cfg.condition_key or trained.condition_key
    control = cfg.control if cfg.control is not None else trained.control
    adata = read_adata(source)
    key = cfg.key_added or f"X_{trained.model.method}"
    provenance = {"checkpoint": meta["checkpoint"], "checkpoint_step": meta["step"],
                  "weights_sha256": meta["weights_sha256"]}
    result = predict(model, adata, population_key=population_key, condition_key=condition_key, control_value=control,
                     rep=meta["rep"], treatment=cfg.treatment, cell_condition_key=trained.cell_condition_key,
                     key_added=key, steps=cfg.steps, method=cfg.method, allow_unseen=cfg.allow_unseen,
                     provenance=provenance, progress=cfg.progress)
    _write_h5ad_atomically(result, out)
    where = ".obsm" if key in result.obsm else ".layers"
    print(f"predicted {len(result.uns[key]['populations'])} populations with {trained.model.method}; wrote {out} "
          f"({where}[{key!r}])")
    if cfg.plot:
        populations = result.obs[population_key].astype(str).to_numpy()
        control_rows = result.obs[condition_key].astype(str).to_numpy() == str(control)
        first = result.uns[key]["populations"][0]
        matrix, _ = representation(result, meta["rep"])
        stored = result.obsm[key] if key in result.obsm else result.layers[key]
        rows = control_rows & (populations == first)
        observed_rows = ~control_rows & (populations == first)
        observed = matrix[observed_rows] if observed_rows.any() else stored[rows]
        note = "" if observed_rows.any() else " (no treated cells in the file: the prediction is shown twice)"
        plot_prediction(torch.from_numpy(matrix[rows]), torch.from_numpy(stored[rows]), torch.from_numpy(observed),
                        cfg.plot, title=f"{first}: control, predicted, observed{note}")
        print(f"plot written to {cfg.plot}")
    return 0


def _train(argv: Sequence[str]) -> int:
    from flowzoo.biology.train import main

    return main(argv)


def _sample(argv: Sequence[str]) -> int | None:
    from flowzoo.biology.sequences.cli import sample_main

    return sample_main(argv)


def commands() -> dict[str, Callable[[Sequence[str]], int | None]]:
    """The biology command table for ``flowzoo`` (entry point ``biology = flowzoo.biology.cli:commands``)."""
    return {"train": _train, "predict": predict_main, "sample": _sample}
