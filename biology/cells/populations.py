"""Cell populations from AnnData: pairing control -> treated per population, and splitting them.

Meta Flow Matching (Atanackovic et al., ICLR 2025, arXiv 2408.14608, Eq. 17) learns a map from an initial
population p0 (e.g. a patient's untreated cells) to the population p1 it becomes (the same patient's treated
cells). This module turns a user's AnnData (in memory, or an ``.h5ad`` file that is read and never written)
into such pairs:

* ``population_key`` (an ``.obs`` column) names the population a cell belongs to (patient, well, replicate);
* ``condition_key`` says whether the cell is a control (``control_value``) or treated; the treatment of a
  treated cell is its condition value, or the value of ``treatment_key`` when given;
* ``rep`` picks the representation: ``"X"``, a key of ``.obsm`` (e.g. ``"X_pca"``) or of ``.layers``;
* ``cell_condition_key`` (optional) gives per-cell channels for the population encoder (one-hot of e.g. the
  cell type);
* populations are split into train / validation / test by the column ``split_key`` or, without one, by a
  seeded shuffle of the population names (every treatment of a population lands in the same split).

Offline data goes through the same loader: ``flowzoo.biology.cells.offline_populations`` builds the paper's
synthetic letters experiment and pseudo-patients from scanpy's bundled pbmc68k_reduced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowzoo.core.errors import (ConfigError, DTypeError, EmptyInputError, MissingDependencyError, NonFiniteError,
                                 expected)
from flowzoo.core.validation import check_positive_int

__all__ = ["PopulationPair", "PopulationSet", "SPLITS", "load_populations", "read_adata", "representation",
           "require_dependency"]

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
                  "validation": "validation", "test": "test", "held_out": "test", "heldout": "test",
                  "holdout": "test"}
_INSTALL = "pip install 'flowzoo[biology]'"


def require_dependency(module: str) -> Any:
    """Import the optional dependency ``module`` (anndata, scanpy), or raise MissingDependencyError naming the
    ``flowzoo[biology]`` extra that installs it."""
    try:
        return __import__(module)
    except ImportError as error:
        raise MissingDependencyError(expected(f"the optional dependency {module}", "not installed",
                                              _INSTALL)) from error


@dataclass
class PopulationPair:
    """One population before (``source``, control) and after (``target``) one treatment.

    ``source_rows`` / ``target_rows`` are the cells' row positions in the AnnData they came from;
    ``source_cond`` / ``target_cond`` the optional per-cell condition channels (n, c).
    """

    population: str
    treatment: str
    split: str
    source: torch.Tensor
    target: torch.Tensor
    source_rows: np.ndarray
    target_rows: np.ndarray
    source_cond: torch.Tensor | None = None
    target_cond: torch.Tensor | None = None


@dataclass
class PopulationSet:
    """The pairs of a data set, with the names needed to condition a model on them.

    Attributes:
        pairs: every control -> treated pair, each tagged with its split.
        treatments: sorted treatment names (the index of a name is its one-hot position).
        rep: the representation the features came from.
        dim: number of features per cell.
        cell_conditions: categories of the per-cell condition channels (empty without them).
        feature_names: names of the features (var names for ``"X"`` and layers), or None.
        dropped: population -> why it has no pair (no control cells, no treated cells) or which of its cells
            were left out (condition values that are neither the control nor a treated value). Nothing is left
            out silently: the training entrypoint prints this.
    """

    pairs: list[PopulationPair]
    treatments: list[str]
    rep: str
    dim: int
    cell_conditions: list[str] = field(default_factory=list)
    feature_names: list[str] | None = None
    dropped: dict[str, str] = field(default_factory=dict)

    def split(self, name: str) -> list[PopulationPair]:
        """The pairs of one split: ``"train"``, ``"validation"`` or ``"test"``."""
        if name not in SPLITS:
            raise ConfigError(expected(f"a split in {SPLITS}", repr(name), "pick one of them"))
        return [pair for pair in self.pairs if pair.split == name]

    def populations(self, split: str) -> list[str]:
        """Sorted names of the populations in one split."""
        return sorted({pair.population for pair in self.split(split)})


def read_adata(adata: Any) -> Any:
    """Return an AnnData object: ``adata`` itself, or the ``.h5ad`` file it names read into memory.

    The file is opened read-only and never written.
    """
    anndata = require_dependency("anndata")
    if isinstance(adata, anndata.AnnData):
        return adata
    if isinstance(adata, (str, Path)):
        path = Path(adata)
        if not path.is_file():
            raise ConfigError(expected("an existing .h5ad file", str(path), "check the path"))
        return anndata.read_h5ad(path)
    raise DTypeError(expected("an AnnData object or the path of an .h5ad file", type(adata).__name__,
                              "pass anndata.AnnData or 'file.h5ad'"))


def _check_obs_keys(adata: Any, keys: dict[str, str | None]) -> None:
    missing = {arg: key for arg, key in keys.items() if key is not None and key not in adata.obs.columns}
    if missing:
        named = ", ".join(f"{arg}={key!r}" for arg, key in missing.items())
        raise ConfigError(expected(f"the .obs column(s) {named}", f"the .obs columns {list(adata.obs.columns)}",
                                   "name one of the existing columns"))


def representation(adata: Any, rep: str) -> tuple[np.ndarray, list[str] | None]:
    """The (n_obs, d) float32 matrix of ``rep`` (``"X"``, an ``.obsm`` key or a ``.layers`` key) and its names."""
    if rep == "X":
        matrix, names = adata.X, list(map(str, adata.var_names))
    elif rep in adata.obsm:
        matrix, names = adata.obsm[rep], None
    elif rep in adata.layers:
        matrix, names = adata.layers[rep], list(map(str, adata.var_names))
    else:
        raise ConfigError(expected("rep as 'X', an .obsm key or a .layers key", repr(rep),
                                   f"use one of {['X', *adata.obsm.keys(), *adata.layers.keys()]}"))
    if matrix is None:
        raise EmptyInputError(expected(f"a matrix under rep={rep!r}", "None", "store the expression there first"))
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise DTypeError(expected(f"a numeric 2-D matrix under rep={rep!r}", f"{matrix.dtype} {matrix.shape}",
                                  "pick a cells x features representation"))
    return matrix.astype(np.float32, copy=False), names


def _labels(adata: Any, key: str) -> np.ndarray:
    return adata.obs[key].astype(str).to_numpy()


def _population_splits(names: list[str], adata: Any, population_key: str, split_key: str | None,
                       fractions: tuple[float, float], seed: int) -> dict[str, str]:
    if split_key is not None:
        populations, splits = _labels(adata, population_key), _labels(adata, split_key)
        out: dict[str, str] = {}
        for name in names:
            values = set(splits[populations == name])
            mapped = {_SPLIT_ALIASES.get(v.lower()) for v in values}
            if len(mapped) != 1 or None in mapped:
                raise ConfigError(expected(f"one split value per population in .obs[{split_key!r}] among "
                                           f"{sorted(_SPLIT_ALIASES)}", f"{sorted(values)} for population {name!r}",
                                           "give every cell of a population the same split"))
            out[name] = mapped.pop()
        return out
    val_fraction, test_fraction = fractions
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(expected("validation and test fractions in [0, 1) summing below 1",
                                   f"{val_fraction} and {test_fraction}", "use e.g. 0.15 and 0.15"))
    order = np.random.default_rng(seed).permutation(len(names))
    n_test = int(round(test_fraction * len(names)))
    n_val = int(round(val_fraction * len(names)))
    out = {}
    for rank, index in enumerate(order):
        out[names[index]] = "test" if rank < n_test else "validation" if rank < n_test + n_val else "train"
    return out


def load_populations(adata: Any, *, population_key: str, condition_key: str, control_value: str = "control",
                     treated_value: str | Sequence[str] | None = None, treatment_key: str | None = None,
                     rep: str = "X", cell_condition_key: str | None = None, split_key: str | None = None,
                     val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0,
                     min_cells: int = 11) -> PopulationSet:
    """Pair each population's control cells with its treated cells and split the populations.

    Args:
        adata: an AnnData, or the path of an ``.h5ad`` file (read only).
        population_key: ``.obs`` column naming the population of each cell (patient, well, ...).
        condition_key: ``.obs`` column with the condition of each cell.
        control_value: the condition value of control cells (the source population).
        treated_value: the condition value(s) of treated cells; None: every value other than the control.
        treatment_key: ``.obs`` column naming the treatment of a treated cell; None: its condition value.
        rep: ``"X"``, an ``.obsm`` key or a ``.layers`` key.
        cell_condition_key: optional ``.obs`` column whose one-hot becomes per-cell condition channels.
        split_key: ``.obs`` column with train / validation / test per population; None: a seeded split.
        val_fraction, test_fraction: fractions of populations held out when splitting by seed.
        seed: seed of the split.
        min_cells: fewest cells a control or treated population may have (the kNN encoder needs k + 1).

    Returns:
        A :class:`PopulationSet`; pairs are ordered by population name, then treatment.

    Raises:
        ConfigError: a missing ``.obs`` column (the message lists the existing ones), an unknown ``rep``,
            populations smaller than ``min_cells`` (named, with the k they need), a bad split column.
        NonFiniteError: NaN/Inf in the expression of a population (which one, how many values).
        EmptyInputError: no control -> treated pair found.
    """
    adata = read_adata(adata)
    _check_obs_keys(adata, {"population_key": population_key, "condition_key": condition_key,
                            "treatment_key": treatment_key, "cell_condition_key": cell_condition_key,
                            "split_key": split_key})
    check_positive_int(min_cells, "min_cells", fix="pass e.g. knn_k + 1")
    matrix, feature_names = representation(adata, rep)
    populations, conditions = _labels(adata, population_key), _labels(adata, condition_key)
    control = conditions == str(control_value)
    if treated_value is None:
        treated = ~control
    else:
        wanted = [treated_value] if isinstance(treated_value, str) else list(treated_value)
        treated = np.isin(conditions, [str(v) for v in wanted])
    treatments_of = _labels(adata, treatment_key) if treatment_key is not None else conditions
    cell_conditions: list[str] = []
    onehot = None
    if cell_condition_key is not None:
        cell_labels = _labels(adata, cell_condition_key)
        cell_conditions = sorted(set(cell_labels))
        onehot = np.eye(len(cell_conditions), dtype=np.float32)[np.searchsorted(cell_conditions, cell_labels)]

    dropped = _unpaired_populations(populations, conditions, control, treated, control_value)
    raw: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    for name in sorted(set(populations[control]) & set(populations[treated])):
        source_rows = np.flatnonzero(control & (populations == name))
        in_population = treated & (populations == name)
        for treatment in sorted(set(treatments_of[in_population])):
            raw.append((name, treatment, source_rows, np.flatnonzero(in_population & (treatments_of == treatment))))
    if not raw:
        raise EmptyInputError(expected(
            "at least one population with both control and treated cells",
            f"{int(control.sum())} control cells (condition {control_value!r}) and {int(treated.sum())} treated "
            f"cells; condition values {sorted(set(conditions))[:10]}",
            "check control_value / treated_value and that controls and treated cells share population names"))
    too_small = sorted({f"{name} ({len(rows)} {kind} cells)" for name, _, src, tgt in raw
                        for kind, rows in (("control", src), ("treated", tgt)) if len(rows) < min_cells})
    if too_small:
        raise ConfigError(expected(f"at least min_cells={min_cells} cells per control and treated population "
                                   f"(a kNN graph with k={min_cells - 1} neighbours needs k + 1 cells)",
                                   ", ".join(too_small[:20]) + (" ..." if len(too_small) > 20 else ""),
                                   "drop those populations or lower the encoder's knn_k"))
    for name in sorted({name for name, *_ in raw}):
        rows = np.flatnonzero((control | treated) & (populations == name))
        bad = int((~np.isfinite(matrix[rows])).sum())
        if bad:
            raise NonFiniteError(expected(f"finite values in rep {rep!r}", f"{bad} NaN/Inf values in population "
                                          f"{name!r}", "impute or drop those cells before loading"))

    names = sorted({name for name, *_ in raw})
    split_of = _population_splits(names, adata, population_key, split_key, (val_fraction, test_fraction), seed)
    if split_key is not None:
        _check_held_out_not_dropped(dropped, populations, _labels(adata, split_key), split_key)

    def tensor(rows: np.ndarray, values: np.ndarray | None) -> torch.Tensor | None:
        return None if values is None else torch.from_numpy(np.array(values[rows], dtype=np.float32))

    pairs = [PopulationPair(population=name, treatment=treatment, split=split_of[name],
                            source=tensor(src, matrix), target=tensor(tgt, matrix), source_rows=src,
                            target_rows=tgt, source_cond=tensor(src, onehot), target_cond=tensor(tgt, onehot))
             for name, treatment, src, tgt in raw]
    return PopulationSet(pairs=pairs, treatments=sorted({pair.treatment for pair in pairs}), rep=rep,
                         dim=matrix.shape[1], cell_conditions=cell_conditions, feature_names=feature_names,
                         dropped=dropped)


def _check_held_out_not_dropped(dropped: dict[str, str], populations: np.ndarray, splits: np.ndarray,
                                split_key: str) -> None:
    """A population the split column holds out by name must be evaluable: fail instead of skipping it."""
    for name, reason in dropped.items():
        if not reason.startswith("dropped"):
            continue
        held_out = {_SPLIT_ALIASES.get(v.lower()) for v in set(splits[populations == name])} - {"train", None}
        if held_out:
            raise ConfigError(expected(f"every population that .obs[{split_key!r}] marks {sorted(held_out)} to "
                                       "have control and treated cells", f"population {name!r}: {reason[9:]}",
                                       "give it both kinds of cells, or mark it 'train' / remove it"))


def _unpaired_populations(populations: np.ndarray, conditions: np.ndarray, control: np.ndarray,
                          treated: np.ndarray, control_value: str) -> dict[str, str]:
    """Population -> what keeps it (or some of its cells) out of the pairs, in words a user can act on."""
    out: dict[str, str] = {}
    for name in sorted(set(populations)):
        here = populations == name
        n_control, n_treated = int((control & here).sum()), int((treated & here).sum())
        neither = sorted(set(conditions[here & ~control & ~treated]))
        n_neither = int((here & ~control & ~treated).sum())
        other = (f"{n_neither} cells with condition values {neither[:5]} that are neither the control nor a "
                 "treated value") if n_neither else ""
        if n_control == 0 or n_treated == 0:
            missing = f"no control cells (condition {control_value!r})" if n_control == 0 else "no treated cells"
            out[name] = f"dropped: {missing}" + (f"; {other}" if other else "")
        elif other:
            out[name] = f"kept, without {other}"
    return out
