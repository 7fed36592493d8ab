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

Offline data built here goes through the same loader: :func:`letters_adata` (the paper's synthetic letters
experiment) and :func:`pbmc_pseudo_patients` (pseudo-patients from scanpy's bundled pbmc68k_reduced).
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

__all__ = ["PopulationPair", "PopulationSet", "SPLITS", "load_populations", "read_adata", "representation",
           "letters_adata", "pbmc_pseudo_patients", "PBMC_RESPONSE_GAIN"]

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
                  "validation": "validation", "test": "test", "held_out": "test", "heldout": "test",
                  "holdout": "test"}
_INSTALL = "pip install 'flowzoo[biology]'"


def _require(module: str) -> Any:
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
    """

    pairs: list[PopulationPair]
    treatments: list[str]
    rep: str
    dim: int
    cell_conditions: list[str] = field(default_factory=list)
    feature_names: list[str] | None = None

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
    anndata = _require("anndata")
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
    if isinstance(min_cells, bool) or not isinstance(min_cells, int) or min_cells < 1:
        raise ConfigError(expected("min_cells as an int >= 1", repr(min_cells), "pass e.g. knn_k + 1"))
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

    def tensor(rows: np.ndarray, values: np.ndarray | None) -> torch.Tensor | None:
        return None if values is None else torch.from_numpy(np.array(values[rows], dtype=np.float32))

    pairs = [PopulationPair(population=name, treatment=treatment, split=split_of[name],
                            source=tensor(src, matrix), target=tensor(tgt, matrix), source_rows=src,
                            target_rows=tgt, source_cond=tensor(src, onehot), target_cond=tensor(tgt, onehot))
             for name, treatment, src, tgt in raw]
    return PopulationSet(pairs=pairs, treatments=sorted({pair.treatment for pair in pairs}), rep=rep,
                         dim=matrix.shape[1], cell_conditions=cell_conditions, feature_names=feature_names)


# ----------------------------------------------------------------------------------- offline data: letters
def _glyph_pixels(char: str, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    canvas = Image.new("L", (2 * size, 2 * size), 0)
    ImageDraw.Draw(canvas).text((size, size), char, fill=255, font=font, anchor="mm")
    rows, cols = np.nonzero(np.asarray(canvas) > 127)
    if len(rows) == 0:
        raise ConfigError(expected("a printable glyph", repr(char), "use letters or digits"))
    return np.stack([cols, -rows], axis=1).astype(np.float64)


def letters_adata(letters: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", *, rotations: int = 10, n_points: int = 500,
                  noise: float = 0.5, validation: str = "X", test: str = "Y", seed: int = 0,
                  font_size: int = 96) -> Any:
    """The paper's synthetic letters as an AnnData: populations are rotated glyphs, the task is denoising.

    Each glyph of Pillow's bundled font is rendered, its ink pixels are sampled uniformly (with sub-pixel
    jitter), centred and scaled into [-3, 3], jittered by N(0, 0.05²) and rotated by a seeded random angle,
    once per rotation. The treated ("clean") population is that point cloud; the control ("noisy") population
    is the same points plus N(0, noise²) (the paper uses noise = 0.5). Letters in ``validation`` / ``test``
    are held out (the paper: X and Y), the others train.

    Returns:
        AnnData with X (cells x 2), ``.obs`` columns ``population`` (e.g. ``"A/3"``), ``letter``,
        ``condition`` (``"control"`` noisy / ``"treated"`` clean) and ``split``.
    """
    anndata = _require("anndata")
    import pandas as pd

    rng = np.random.default_rng(seed)
    blocks, obs = [], []
    for letter in letters:
        pixels = _glyph_pixels(letter, font_size)
        for rotation in range(rotations):
            points = pixels[rng.integers(0, len(pixels), n_points)] + rng.uniform(-0.5, 0.5, (n_points, 2))
            lo, hi = pixels.min(0), pixels.max(0)
            points = (points - (lo + hi) / 2) / (np.max(hi - lo) / 2 + 0.5) * 3.0
            points += rng.normal(0.0, 0.05, points.shape)
            angle = rng.uniform(0, 2 * np.pi)
            rotation_matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            clean = points @ rotation_matrix.T
            noisy = clean + rng.normal(0.0, noise, clean.shape)
            split = "validation" if letter in validation else "test" if letter in test else "train"
            for condition, cloud in (("control", noisy), ("treated", clean)):
                blocks.append(cloud)
                obs += [(f"{letter}/{rotation}", letter, condition, split)] * n_points
    frame = pd.DataFrame(obs, columns=["population", "letter", "condition", "split"])
    frame.index = frame.index.astype(str)
    return anndata.AnnData(X=np.concatenate(blocks).astype(np.float32), obs=frame)


# -------------------------------------------------------------------------- offline data: pbmc pseudo-patients
PBMC_RESPONSE_GAIN = 10.0
"""g(m) = PBMC_RESPONSE_GAIN · m: the shift, in per-PC standard deviations, of a patient with monocyte fraction m."""


def pbmc_pseudo_patients(n_patients: int = 60, seed: int = 0, n_pcs: int = 10, cells_per_condition: int = 300,
                         concentration: float = 1.0) -> Any:
    r"""Pseudo-patients built from scanpy's bundled pbmc68k_reduced, with a simulated treatment.

    The simulation (all randomness from ``seed``; 700 cells, 10 annotated ``bulk_labels`` cell types):

    1. Features: the first ``n_pcs`` columns of ``.obsm["X_pca"]``; μ, σ are their per-PC mean and std.
    2. Patient p has cell-type fractions w_p ~ Dirichlet(concentration · 1); m_p = w_p["CD14+ Monocyte"].
    3. Control cells: ``cells_per_condition`` draws of a type from w_p, then of a cell of that type (with
       replacement), plus jitter N(0, (0.1 σ)²) so that no two cells coincide.
    4. Treated cells: the control cells themselves, each moved by

       .. math::  \Delta x = \sigma \odot \big(0.5 \tanh(W z) + g(m_p)\, d\big), \quad z = (x - \mu) / \sigma,

       where W (n_pcs x n_pcs, entries N(0, 1/n_pcs)) and the unit direction d are drawn once from a fixed
       seed (the same "drug" in every data set), and g(m) = :data:`PBMC_RESPONSE_GAIN` · m. The first term is
       each cell's own response; the second depends on the patient's composition (the micro-environment
       premise of Meta Flow Matching): a cell's shift cannot be told from the cell alone, only from the
       population it lives in. Because the treated cells are the control cells moved, a perfect prediction
       has distance 0 to the observed population (no sampling floor in W1/W2/MMD).

    Returns:
        AnnData with X (cells x n_pcs, var names PC1..), ``.obs`` columns ``patient``, ``condition``
        (``"control"``/``"treated"``) and ``cell_type``, and ``.uns["pseudo_patients"]`` holding each patient's
        monocyte fraction and this description's parameters.
    """
    scanpy = _require("scanpy")
    anndata = _require("anndata")
    import pandas as pd

    if not 1 <= n_pcs <= 50:
        raise ConfigError(expected("n_pcs in [1, 50]", n_pcs, "pbmc68k_reduced stores 50 PCs"))
    if n_patients < 1 or cells_per_condition < 1 or not concentration > 0:
        raise ConfigError(expected("n_patients >= 1, cells_per_condition >= 1, concentration > 0",
                                   (n_patients, cells_per_condition, concentration), "use the defaults"))
    pbmc = scanpy.datasets.pbmc68k_reduced()
    features = np.asarray(pbmc.obsm["X_pca"][:, :n_pcs], dtype=np.float64)
    cell_types = pbmc.obs["bulk_labels"].astype(str).to_numpy()
    types = sorted(set(cell_types))
    members = [np.flatnonzero(cell_types == name) for name in types]
    monocyte = types.index("CD14+ Monocyte")
    mu, sigma = features.mean(0), features.std(0)
    drug = np.random.default_rng(20240814)
    weights = drug.normal(0.0, 1.0 / np.sqrt(n_pcs), (n_pcs, n_pcs))
    direction = drug.normal(size=n_pcs)
    direction /= np.linalg.norm(direction)

    rng = np.random.default_rng(seed)
    blocks, obs, fractions = [], [], {}
    for p in range(n_patients):
        name = f"P{p:03d}"
        mixture = rng.dirichlet(np.full(len(types), concentration))
        fractions[name] = float(mixture[monocyte])
        drawn_types = rng.choice(len(types), size=cells_per_condition, p=mixture)
        cells = np.array([members[k][rng.integers(len(members[k]))] for k in drawn_types])
        control = features[cells] + rng.normal(0.0, 0.1, (cells_per_condition, n_pcs)) * sigma
        z = (control - mu) / sigma
        response = 0.5 * np.tanh(z @ weights.T) + PBMC_RESPONSE_GAIN * mixture[monocyte] * direction
        for condition, x in (("control", control), ("treated", control + sigma * response)):
            blocks.append(x)
            obs += [(name, condition, types[k]) for k in drawn_types]
    frame = pd.DataFrame(obs, columns=["patient", "condition", "cell_type"])
    frame.index = frame.index.astype(str)
    out = anndata.AnnData(X=np.concatenate(blocks).astype(np.float32), obs=frame)
    out.var_names = [f"PC{i + 1}" for i in range(n_pcs)]
    out.uns["pseudo_patients"] = {"monocyte_fraction": fractions, "seed": seed, "concentration": concentration,
                                  "response_gain": PBMC_RESPONSE_GAIN}
    return out
