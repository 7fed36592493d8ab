"""Offline population data sets for Meta Flow Matching, built into AnnData for :func:`load_populations`.

* :func:`letters_adata`: the paper's synthetic experiment (Atanackovic et al., ICLR 2025, arXiv 2408.14608,
  §5.1): rotated glyphs as populations, control = clean + Gaussian noise, letters held out;
* :func:`pbmc_pseudo_patients`: pseudo-patients from scanpy's bundled pbmc68k_reduced with a simulated
  treatment whose effect depends on the patient's cell-type mix (the micro-environment premise).

Both need nothing from the network; their randomness comes from their ``seed`` arguments only.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from flowzoo.biology.cells.populations import require_dependency
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int

__all__ = ["letters_adata", "pbmc_pseudo_patients", "pbmc_treatment", "pbmc_monocyte_estimate", "PBMC_RESPONSE_GAIN"]


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


def _glyph_cloud(pixels: np.ndarray, n_points: int, draw: np.random.Generator) -> np.ndarray:
    """n_points uniform over the glyph's ink (sub-pixel jitter), centred and scaled into [-3, 3], plus N(0, 0.05²)."""
    points = pixels[draw.integers(0, len(pixels), n_points)] + draw.uniform(-0.5, 0.5, (n_points, 2))
    lo, hi = pixels.min(0), pixels.max(0)
    points = (points - (lo + hi) / 2) / (np.max(hi - lo) / 2 + 0.5) * 3.0
    return points + draw.normal(0.0, 0.05, points.shape)


def letters_adata(letters: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", *, rotations: int = 10, n_points: int = 500,
                  noise: float = 0.5, validation: str = "X", test: str = "Y", seed: int = 0,
                  font_size: int = 96, cells_seed: int | None = None) -> Any:
    """The paper's synthetic letters as an AnnData: populations are rotated glyphs, the task is denoising.

    Each glyph of Pillow's bundled font is rendered, its ink pixels are sampled uniformly (with sub-pixel
    jitter), centred and scaled into [-3, 3], jittered by N(0, 0.05²) and rotated by a seeded random angle,
    once per rotation. The treated ("clean") population is that point cloud; the control ("noisy") population
    is the same points plus N(0, noise²) (the paper uses noise = 0.5). Letters in ``validation`` / ``test``
    are held out (the paper: X and Y), the others train.

    ``cells_seed`` draws new cells (pixels, jitter, noise) from that seed while every population keeps the
    rotation that ``seed`` gives it: the same populations, fresh cells. A model scored on the cells it was trained
    on can win by memorising them (per-population FM goes below the two-sample W2 floor); fresh cells measure
    how well it learned the population itself.

    Returns:
        AnnData with X (cells x 2), ``.obs`` columns ``population`` (e.g. ``"A/3"``), ``letter``,
        ``condition`` (``"control"`` noisy / ``"treated"`` clean) and ``split``.
    """
    anndata = require_dependency("anndata")
    import pandas as pd

    rng = np.random.default_rng(seed)
    cells_rng = None if cells_seed is None else np.random.default_rng(cells_seed)
    blocks, obs = [], []
    for letter in letters:
        pixels = _glyph_pixels(letter, font_size)
        for rotation in range(rotations):
            points = _glyph_cloud(pixels, n_points, rng)
            angle = rng.uniform(0, 2 * np.pi)
            rotation_matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            offsets = rng.normal(0.0, noise, (n_points, 2))
            if cells_rng is not None:    # `rng` has still drawn the cells, so the rotations stay those of `seed`
                points, offsets = _glyph_cloud(pixels, n_points, cells_rng), cells_rng.normal(0.0, noise, (n_points, 2))
            clean = points @ rotation_matrix.T
            noisy = clean + offsets
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
MONOCYTE = "CD14+ Monocyte"
_DRUG_SEED = 20240814  # the simulated drug (W, d) is the same in every data set


@functools.lru_cache(maxsize=4)
def _pbmc_cells(n_pcs: int) -> tuple[np.ndarray, np.ndarray]:
    """pbmc68k_reduced's first ``n_pcs`` PCs (700, n_pcs) and its ``bulk_labels`` (read-only: cached)."""
    n_pcs = check_int(n_pcs, "n_pcs", low=1, high=50, fix="pbmc68k_reduced stores 50 PCs")
    pbmc = require_dependency("scanpy").datasets.pbmc68k_reduced()
    features = np.asarray(pbmc.obsm["X_pca"][:, :n_pcs], dtype=np.float64)
    cell_types = pbmc.obs["bulk_labels"].astype(str).to_numpy()
    features.setflags(write=False)
    cell_types.setflags(write=False)
    return features, cell_types


@functools.lru_cache(maxsize=4)
def _pbmc_drug(n_pcs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The simulation's fixed parts: per-PC mean μ and std σ of pbmc68k_reduced, the drug's W and unit d."""
    features, _ = _pbmc_cells(n_pcs)
    drug = np.random.default_rng(_DRUG_SEED)
    weights = drug.normal(0.0, 1.0 / np.sqrt(n_pcs), (n_pcs, n_pcs))
    direction = drug.normal(size=n_pcs)
    direction /= np.linalg.norm(direction)
    parts = (features.mean(0), features.std(0), weights, direction)
    for part in parts:
        part.setflags(write=False)
    return parts


def pbmc_treatment(control: np.ndarray, monocyte_fraction: float) -> np.ndarray:
    r"""The simulated treatment of :func:`pbmc_pseudo_patients` (its step 4) applied to control cells.

    Returns ``control + σ ⊙ (0.5 tanh(W z) + g(m) d)`` for the (n, n_pcs) cells ``control`` of a patient whose
    monocyte fraction is ``monocyte_fraction`` = m. With the patient's true m this is exactly its treated
    population; with an estimate of m from the control cells it is the best prediction that a method which
    knows the simulator but not the patient can make (``benchmarks/biology.py`` reports that floor).
    """
    control = np.asarray(control, dtype=np.float64)
    if control.ndim != 2:
        raise ConfigError(expected("control cells as an (n, n_pcs) array", control.shape, "pass one patient's cells"))
    mu, sigma, weights, direction = _pbmc_drug(control.shape[1])
    z = (control - mu) / sigma
    response = 0.5 * np.tanh(z @ weights.T) + PBMC_RESPONSE_GAIN * monocyte_fraction * direction
    return control + sigma * response


def pbmc_monocyte_estimate(cell_types: Any, concentration: float = 1.0) -> float:
    """Posterior mean of a patient's monocyte fraction given its control cells' types.

    Under :func:`pbmc_pseudo_patients`' prior (fractions ~ Dirichlet(concentration · 1) over pbmc68k_reduced's
    K = 10 cell types) and c monocytes among n cells, the posterior of the fraction is Beta(c + a, n − c + (K−1)a)
    with a = ``concentration``: mean (c + a) / (n + K a). This is what n cells can tell about the composition;
    the patient's identity (what a per-population model is given) tells it exactly.
    """
    labels = np.asarray(cell_types).astype(str)
    if labels.ndim != 1 or labels.size == 0:
        raise ConfigError(expected("a non-empty 1-d array of cell-type names", labels.shape, "pass .obs['cell_type']"))
    n_types = len(set(_pbmc_cells(1)[1]))
    return float(((labels == MONOCYTE).sum() + concentration) / (labels.size + n_types * concentration))


def pbmc_pseudo_patients(n_patients: int = 60, seed: int = 0, n_pcs: int = 10, cells_per_condition: int = 300,
                         concentration: float = 1.0, cells_seed: int | None = None) -> Any:
    r"""Pseudo-patients built from scanpy's bundled pbmc68k_reduced, with a simulated treatment.

    The simulation (all randomness from ``seed``; 700 cells, 10 annotated ``bulk_labels`` cell types):

    1. Features: the first ``n_pcs`` columns of ``.obsm["X_pca"]``; μ, σ are their per-PC mean and std.
    2. Patient p has cell-type fractions w_p ~ Dirichlet(concentration · 1); m_p = w_p["CD14+ Monocyte"].
    3. Control cells: ``cells_per_condition`` draws of a type from w_p, then of a cell of that type (with
       replacement), plus jitter N(0, (0.1 σ)²) so that no two cells coincide.
    4. Treated cells: the control cells themselves, each moved (:func:`pbmc_treatment`) by

       .. math::  \Delta x = \sigma \odot \big(0.5 \tanh(W z) + g(m_p)\, d\big), \quad z = (x - \mu) / \sigma,

       where W (n_pcs x n_pcs, entries N(0, 1/n_pcs)) and the unit direction d are drawn once from a fixed
       seed (the same "drug" in every data set), and g(m) = :data:`PBMC_RESPONSE_GAIN` · m. The first term is
       each cell's own response; the second depends on the patient's composition (the micro-environment
       premise of Meta Flow Matching): a cell's shift cannot be told from the cell alone, only from the
       population it lives in. Because the treated cells are the control cells moved, a perfect prediction
       has distance 0 to the observed population (no sampling floor in W1/W2/MMD).

    ``cells_seed`` redraws step 3 (which cells, their jitter) from that seed while every patient keeps the
    composition that ``seed`` gives it: the same patients, fresh cells (as for :func:`letters_adata`).

    Returns:
        AnnData with X (cells x n_pcs, var names PC1..), ``.obs`` columns ``patient``, ``condition``
        (``"control"``/``"treated"``) and ``cell_type``, and ``.uns["pseudo_patients"]`` holding each patient's
        monocyte fraction and this description's parameters.
    """
    anndata = require_dependency("anndata")
    import pandas as pd

    if n_patients < 1 or cells_per_condition < 1 or not concentration > 0:
        raise ConfigError(expected("n_patients >= 1, cells_per_condition >= 1, concentration > 0",
                                   (n_patients, cells_per_condition, concentration), "use the defaults"))
    features, cell_types = _pbmc_cells(n_pcs)
    types = sorted(set(cell_types))
    members = [np.flatnonzero(cell_types == name) for name in types]
    monocyte = types.index(MONOCYTE)
    sigma = _pbmc_drug(n_pcs)[1]

    rng = np.random.default_rng(seed)
    cells_rng = None if cells_seed is None else np.random.default_rng(cells_seed)
    blocks, obs, fractions = [], [], {}
    for p in range(n_patients):
        name = f"P{p:03d}"
        mixture = rng.dirichlet(np.full(len(types), concentration))
        fractions[name] = float(mixture[monocyte])
        for draw in (rng, cells_rng):    # `rng` always draws, so the compositions stay those of `seed`
            if draw is not None:
                drawn_types = draw.choice(len(types), size=cells_per_condition, p=mixture)
                cells = np.array([members[k][draw.integers(len(members[k]))] for k in drawn_types])
                control = features[cells] + draw.normal(0.0, 0.1, (cells_per_condition, n_pcs)) * sigma
        for condition, x in (("control", control), ("treated", pbmc_treatment(control, mixture[monocyte]))):
            blocks.append(x)
            obs += [(name, condition, types[k]) for k in drawn_types]
    frame = pd.DataFrame(obs, columns=["patient", "condition", "cell_type"])
    frame.index = frame.index.astype(str)
    out = anndata.AnnData(X=np.concatenate(blocks).astype(np.float32), obs=frame)
    out.var_names = [f"PC{i + 1}" for i in range(n_pcs)]
    out.uns["pseudo_patients"] = {"monocyte_fraction": fractions, "seed": seed, "concentration": concentration,
                                  "response_gain": PBMC_RESPONSE_GAIN}
    return out
