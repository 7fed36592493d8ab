r"""Meta Flow Matching: predict how an unseen population of cells responds to a treatment.

Atanackovic, Zhang, Amos, Blanchette, Lee, Bengio, Tong, Neklyudov, "Meta Flow Matching: Integrating Vector
Fields on the Wasserstein Manifold", ICLR 2025, arXiv 2408.14608.

Given pairs of populations (p0^i, p1^i) -- a patient's control cells and the same patient's treated cells --
MFM learns a velocity field conditioned on an embedding of the whole initial population (the paper's Eq. 17;
plain FM is its Eq. 6, the per-population CGFM its Eq. 9):

.. math::  \min_{\omega, \theta}\; \mathbb{E}_{i}\, \mathbb{E}_{t,\, (x_0, x_1) \sim \pi(p_0^i, p_1^i)}
           \big\| v_\omega(x_t, t \mid \varphi_\theta(p_0^i), c^i) - (x_1 - x_0) \big\|^2,
           \qquad x_t = (1 - t) x_0 + t x_1,

with π the independent coupling inside each pair (the default; exact minibatch OT optional), φ_θ the
population encoder (:mod:`flowzoo.biology.cells.nets`) and c the treatment. The paper writes the loss as
‖v‖² − 2⟨v, x1 − x0⟩, which differs from the squared error by a constant. Time runs as everywhere in
flowzoo and in the paper's code: t = 0 is the control population, t = 1 the treated one. Prediction integrates
dx/dt = v(x, t | φ(p0)) from the control cells of a new population.

The objective and its batches live in :mod:`flowzoo.biology.cells.objective`.

Encoders (``encoder``): the paper's kNN-graph GCN (the default), DeepSets, or ``"characteristic"``: the
population's empirical characteristic function at fixed random frequencies, with ``readout=True`` read out
at each cell x by the flow (:class:`~flowzoo.biology.cells.nets.CharacteristicEncoder`). The last is our
addition, not the paper's: on the letters at a CPU budget (1000-2000 updates instead of the paper's 24,000
epochs) the GCN embedding of 128-cell subsamples is too noisy and the MLP too slow to turn a global code
into a letter-specific field (held-out W2 no better than FM), while the read-out density of the control
population, embedded from all its cells (``context_cells``), generalises to held-out letters
(``benchmarks/biology.py`` has the numbers).

Training is joint by default (encoder and flow updated together). ``alternating=True`` follows the paper's
code: odd updates train the flow on detached embeddings, even updates train the encoder (counted per call of
the objective, so a resumed run restarts the alternation at the flow).

Baselines, in the same model class with another conditioner (``method``):

* ``"fm"``: flow matching on the pooled pairs, conditioned on the treatment only;
* ``"per_population_fm"``: one learned embedding per training population (the paper's CGFM; with
  ``readout`` the rows are read out like characteristic functions and learn 10x faster, see
  :class:`~flowzoo.biology.cells.nets.PopulationFlow`). It cannot
  represent a population it was not trained on: :func:`predict_population` raises for an unseen population
  unless ``allow_unseen=True``, which maps it to the null row. That row is trained on a random
  ``population_dropout`` fraction of the batches' populations, so an unseen population gets the pooled
  (FM-like) prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from flowzoo.biology.cells.objective import MetaFlowMatchingLoss, PopulationBatchSampler
from flowzoo.biology.cells.metrics import population_distances
from flowzoo.biology.cells.nets import (CharacteristicEncoder, ConditionedVelocity, DeepSetsEncoder, GCNPopulationEncoder,
                                  PopulationFlow)
from flowzoo.biology.cells.populations import PopulationPair, PopulationSet, read_adata, representation
import flowzoo.core
from flowzoo.core.config import option_help
from flowzoo.core.errors import ConfigError, NonFiniteError, expected
from flowzoo.core.validation import check_int
from flowzoo.core.analysis import plot_samples_2d
from flowzoo.core.sampling import integrate
from flowzoo.core.training import Trainer, TrainerConfig, TrainResult

__all__ = ["METHODS", "MetaFMOptions", "build_model", "fit", "predict_population", "evaluate_pairs", "model_method",
           "predict", "plot_prediction"]

METHODS = ("meta_fm", "fm", "per_population_fm")
_CONDITIONING = {"meta_fm": "encoder", "fm": "none", "per_population_fm": "population"}




@dataclass
class MetaFMOptions:
    """Model and batch options of Meta Flow Matching and its baselines (``--model.<name>``)."""

    method: Literal["meta_fm", "fm", "per_population_fm"] = field(
        default="meta_fm", metadata=option_help("meta_fm, or a baseline: fm (no population) / per_population_fm (CGFM)"))
    encoder: Literal["gcn", "deepsets", "characteristic"] = field(
        default="gcn", metadata=option_help("population encoder of meta_fm (characteristic: no weights, see readout)"))
    knn_k: int = field(default=10, metadata=option_help("neighbours per cell in the encoder's kNN graph"))
    encoder_hidden: int = field(default=64, metadata=option_help("width of the encoder layers"))
    encoder_layers: int = field(default=3, metadata=option_help("GCN (or DeepSets) layers"))
    embed_dim: int = field(default=64, metadata=option_help(
        "size of the population embedding (characteristic: 2 x encoder_fourier_features)"))
    hidden: int = field(default=256, metadata=option_help("width of the flow MLP"))
    depth: int = field(default=4, metadata=option_help("hidden layers of the flow MLP"))
    time_dim: int = field(default=64, metadata=option_help("size of the sinusoidal time embedding"))
    fourier_features: int = field(default=0, metadata=option_help("random Fourier features of x in the flow MLP (0: none)"))
    fourier_scale: float = field(default=1.0, metadata=option_help("std of the Fourier frequencies (per unit of x)"))
    encoder_fourier_features: int = field(default=0, metadata=option_help(
        "random Fourier features of each cell in the encoder input; frequencies of the characteristic encoder"))
    encoder_fourier_scale: float = field(default=1.0, metadata=option_help("std of the encoder's Fourier frequencies"))
    readout: bool = field(default=False, metadata=option_help(
        "read the characteristic-function embedding out at x (encoder characteristic)"))
    context_cells: int = field(default=0, metadata=option_help(
        "control cells the encoder embeds per update (0: the loss's cells)"))
    populations_per_batch: int = field(default=8, metadata=option_help("population pairs per update"))
    cells_per_population: int = field(default=128, metadata=option_help("cells drawn from each population per update"))
    coupling: Literal["independent", "exact_ot"] = field(default="independent",
                                                         metadata=option_help("pairing of cells inside a population pair"))
    alternating: bool = field(default=False, metadata=option_help("alternate flow / encoder updates as the paper's code"))
    population_dropout: float = field(default=0.1, metadata=option_help("per_population_fm: share trained as the null row"))


def build_model(options: MetaFMOptions, *, dim: int, treatments: Sequence[str], train_populations: Sequence[str],
                cond_dim: int = 0) -> PopulationFlow:
    """The network of ``options.method`` for cells with ``dim`` features.

    The returned model carries ``treatments`` and ``train_populations`` (names, in index order) for prediction.
    """
    if options.method not in METHODS:
        raise ConfigError(expected(f"method in {METHODS}", repr(options.method), "use meta_fm"))
    conditioning = _CONDITIONING[options.method]
    if options.readout and options.encoder != "characteristic":
        raise ConfigError(expected("readout only with encoder='characteristic'", f"encoder={options.encoder!r}",
                                   "set encoder to characteristic, or readout to false"))
    encoder, readout = None, None
    embed_dim = options.embed_dim
    if options.encoder == "characteristic":
        characteristic = CharacteristicEncoder(dim, options.encoder_fourier_features, options.encoder_fourier_scale,
                                               cond_dim if conditioning == "encoder" else 0)
        embed_dim = characteristic.embed_dim
        readout = characteristic.frequencies if options.readout and conditioning != "none" else None
        encoder = characteristic if conditioning == "encoder" else None
    elif conditioning == "encoder":
        kind = GCNPopulationEncoder if options.encoder == "gcn" else DeepSetsEncoder
        extra = {"knn_k": options.knn_k} if options.encoder == "gcn" else {}
        extra.update(fourier_features=options.encoder_fourier_features, fourier_scale=options.encoder_fourier_scale)
        encoder = kind(dim, cond_dim, options.encoder_hidden, options.encoder_layers, embed_dim, **extra)
    velocity = ConditionedVelocity(dim, 0 if conditioning == "none" else embed_dim, max(len(treatments), 1),
                                   options.hidden, options.depth, options.time_dim, options.fourier_features,
                                   options.fourier_scale, readout)
    model = PopulationFlow(velocity, conditioning, encoder, len(train_populations))
    model.treatments, model.train_populations = list(treatments), list(train_populations)
    # the encoder is trained on populations of exactly this many cells; prediction embeds subsets of this size
    model.context_cells = (0 if options.encoder == "characteristic"
                           else int(options.context_cells or options.cells_per_population))
    return model


def fit(popset: PopulationSet, options: MetaFMOptions, trainer: TrainerConfig, *, run_config: Any = None,
        eval_split: str = "validation", eval_steps: int = 50,
        eval_pairs: int = 8) -> tuple[PopulationFlow, TrainResult]:
    """Train ``options.method`` on the training pairs of ``popset`` through the core Trainer.

    Evaluation (every ``trainer.eval_every`` updates and at the end, EMA weights) predicts up to ``eval_pairs``
    pairs of ``eval_split`` (0: no evaluation) with ``eval_steps`` Euler steps and logs their mean W1, W2,
    MMD, mean-marker MSE and r2; a PNG of the first pair goes to the evaluation folder. Returns the model
    (EMA weights loaded when EMA is on) and the Trainer's result.
    """
    train_pairs = popset.split("train")
    train_populations = sorted({pair.population for pair in train_pairs})
    cond_dim = len(popset.cell_conditions)
    torch.manual_seed(trainer.seed)
    model = build_model(options, dim=popset.dim, treatments=popset.treatments, train_populations=train_populations,
                        cond_dim=cond_dim)
    model.cell_conditions = list(popset.cell_conditions)
    sampler = PopulationBatchSampler(train_pairs, popset.treatments, train_populations,
                                     options.populations_per_batch, options.cells_per_population,
                                     options.context_cells if options.method == "meta_fm" else 0)
    objective = MetaFlowMatchingLoss(options.coupling, options.alternating, options.population_dropout)
    held = (popset.split(eval_split) or train_pairs)[:max(eval_pairs, 0)]

    def evaluate(eval_model: torch.nn.Module, step: int, eval_dir: Path) -> dict[str, float]:
        metrics = evaluate_pairs(eval_model, held, steps=eval_steps, allow_unseen=True)
        pair = held[0]
        predicted = predict_population(eval_model, pair.source, treatment=pair.treatment, source_cond=pair.source_cond,
                                       population=pair.population, steps=eval_steps, allow_unseen=True)
        plot_prediction(pair.source, predicted, pair.target, Path(eval_dir) / "prediction.png",
                        title=f"{options.method}: {pair.population} ({pair.treatment}), step {step}")
        return {k: v for k, v in metrics.items() if np.isfinite(v)}

    result = Trainer(model, objective, sampler, trainer, evaluate=evaluate if held else None,
                     run_config=run_config).fit()
    if result.checkpoint is not None:
        from flowzoo.core.training import read_checkpoint

        saved = read_checkpoint(result.checkpoint)
        model.load_state_dict(saved.inference_weights)
    return model.eval(), result


def _index(names: Sequence[str], name: str | int, what: str, fix: str) -> int:
    if isinstance(name, int) and not isinstance(name, bool):
        if not 0 <= name < max(len(names), 1):
            raise ConfigError(expected(f"a {what} index in [0, {len(names)})", name, fix))
        return name
    if name not in names:
        raise ConfigError(expected(f"a {what} the model was trained on, one of {list(names)[:20]}", repr(name), fix))
    return list(names).index(name)


@torch.no_grad()
def predict_population(model: PopulationFlow, source: torch.Tensor, *, treatment: str | int | None = None,
                       source_cond: torch.Tensor | None = None, population: str | int | None = None,
                       steps: int = 100, method: str = "euler", allow_unseen: bool = False,
                       context_cells: int | None = None) -> torch.Tensor:
    """Integrate the control cells ``source`` (n, d) to their predicted treated state (n, d).

    Args:
        treatment: name or index (default: the only treatment the model knows).
        source_cond: per-cell conditions (n, c) when the encoder uses them.
        population: the population's name, needed by the per-population baseline; a name it was not trained
            on raises ConfigError unless ``allow_unseen`` maps it to the null row.
        steps, method: the ODE solver (:func:`flowzoo.core.sampling.ode.integrate`).
        context_cells: how many cells the population encoder sees at once. A kNN graph over more cells than
            in training is denser, so its embedding drifts from the ones the flow was trained on; a larger
            population is therefore embedded as the mean (re-normalised) of ``ceil(n / context_cells)`` seeded
            random subsets of ``context_cells`` cells. None: the training value (``model.context_cells``,
            set by :func:`build_model`); 0: embed all cells at once.
    """
    if not isinstance(source, torch.Tensor) or source.dim() != 2:
        raise ConfigError(expected("source cells as an (n, d) tensor", getattr(source, "shape", type(source)),
                                   "pass one population's control cells"))
    if not bool(torch.isfinite(source).all()):
        raise NonFiniteError(expected("finite control cells", f"{int((~torch.isfinite(source)).sum())} NaN/Inf",
                                      "impute or drop those cells"))
    treatments = getattr(model, "treatments", [])
    if treatment is None:
        if len(treatments) > 1:
            raise ConfigError(expected("a treatment name", "None", f"pass one of {treatments}"))
        treatment = 0
    tindex = _index(treatments, treatment, "treatment", f"pass one of {treatments}")
    device = next(model.parameters()).device
    source = source.to(device, torch.float32)
    population_index = None
    if model.conditioning == "population":
        known = getattr(model, "train_populations", [])
        if population in known or (isinstance(population, int) and not isinstance(population, bool)):
            population_index = _index(known, population, "training population", "")
        elif allow_unseen:
            population_index = model.null_population
        else:
            raise ConfigError(expected("a population seen in training (the per-population baseline cannot "
                                       "represent a new one)", repr(population),
                                       "use method meta_fm for new populations, or allow_unseen=True for the "
                                       "null-population fallback"))
        population_index = torch.tensor([population_index], device=device)
    cond = None if source_cond is None else source_cond.to(device, torch.float32)
    context = getattr(model, "context_cells", 0) if context_cells is None else context_cells
    context = check_int(context, "context_cells (0: all cells)", low=0,
                        fix="pass e.g. the training cells_per_population")
    embedding = _embed(model, source, cond, population_index, context)
    n = source.shape[0]
    flow_cond = {"treatment": torch.full((n,), tindex, device=device, dtype=torch.long)}
    if embedding is not None:
        flow_cond["embedding"] = embedding.expand(n, -1)
    return integrate(model, source, method=method, steps=steps, cond=flow_cond).x


def _embed(model: PopulationFlow, source: torch.Tensor, cond: torch.Tensor | None,
           population_index: torch.Tensor | None, context: int) -> torch.Tensor | None:
    n = source.shape[0]
    if model.conditioning != "encoder" or context == 0 or n <= context:
        return model.condition(source[None], None if cond is None else cond[None], population_index)
    generator = torch.Generator().manual_seed(0)  # the same subsets every call: predictions are reproducible
    subsets = torch.stack([torch.randperm(n, generator=generator)[:context] for _ in range(-(-n // context))])
    subsets = subsets.to(source.device)
    embedded = model.condition(source[subsets], None if cond is None else cond[subsets], None)
    mean = embedded.mean(0, keepdim=True)
    # a characteristic function averages over cells as it is; the learned encoders' outputs are unit vectors
    return mean if isinstance(model.encoder, CharacteristicEncoder) else torch.nn.functional.normalize(mean, dim=1)


def evaluate_pairs(model: PopulationFlow, pairs: Sequence[PopulationPair], *, steps: int = 100,
                   allow_unseen: bool = True) -> dict[str, float]:
    """Mean of :func:`~flowzoo.biology.cells.metrics.population_distances` over pairs (prediction vs observed)."""
    rows = []
    for pair in pairs:
        predicted = predict_population(model, pair.source, treatment=pair.treatment, source_cond=pair.source_cond,
                                       population=pair.population, steps=steps, allow_unseen=allow_unseen)
        rows.append(population_distances(predicted.cpu(), pair.target))
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]} if rows else {}


def model_method(model: PopulationFlow) -> str:
    """Which of :data:`METHODS` a model was built as (read from its conditioning)."""
    return next(method for method, conditioning in _CONDITIONING.items() if conditioning == model.conditioning)


def predict(model: PopulationFlow, adata: Any, *, population_key: str, condition_key: str,
            control_value: str = "control", rep: str = "X", treatment: str | None = None,
            cell_condition_key: str | None = None, key_added: str | None = None, steps: int = 100,
            method: str = "euler", allow_unseen: bool = False, provenance: dict[str, Any] | None = None,
            progress: bool = False) -> Any:
    """Predict every control population of ``adata`` under ``treatment``; return an annotated COPY.

    The input (an AnnData or an ``.h5ad`` path, read only) is never modified. In the copy, each control
    cell's predicted treated state is stored in ``.obsm[key_added]`` (n_obs, d) when ``rep`` is an ``.obsm``
    key, or in ``.layers[key_added]`` (n_obs, n_vars) when ``rep`` is ``"X"`` or a layer; rows of other cells
    are NaN. ``key_added`` defaults to ``"X_" + the model's method`` (``X_meta_fm``, ``X_fm``,
    ``X_per_population_fm``), so baselines never land under Meta FM's name. ``.uns[key_added]`` records what
    produced the prediction: the model's ``method``, the ODE ``solver`` and ``steps``, the treatment, the
    representation, the populations predicted, the flowzoo version, plus ``provenance`` (e.g. the checkpoint
    path and weights hash, as ``flowzoo biology predict`` passes them). ``progress`` shows a bar over populations.
    """
    original = read_adata(adata)
    copy = original.copy()
    for key in (population_key, condition_key, cell_condition_key):
        if key is not None and key not in copy.obs.columns:
            raise ConfigError(expected(f"the .obs column {key!r}", f"columns {list(copy.obs.columns)}",
                                       "name an existing column"))
    matrix, _ = representation(copy, rep)
    if matrix.shape[1] != model.velocity.dim:
        raise ConfigError(expected(f"{model.velocity.dim} features in rep {rep!r} (as in training)",
                                   f"{matrix.shape[1]}", "pass the representation the model was trained on"))
    populations = copy.obs[population_key].astype(str).to_numpy()
    control = copy.obs[condition_key].astype(str).to_numpy() == str(control_value)
    if not control.any():
        raise ConfigError(expected(f"control cells ({condition_key} == {control_value!r})", "none",
                                   "check condition_key and control_value"))
    onehot = None
    if cell_condition_key is not None:
        categories = getattr(model, "cell_conditions", None) or sorted(set(copy.obs[cell_condition_key].astype(str)))
        labels = copy.obs[cell_condition_key].astype(str).to_numpy()
        onehot = np.stack([labels == c for c in categories], axis=1).astype(np.float32)
    out = np.full(matrix.shape, np.nan, dtype=np.float32)
    names = sorted(set(populations[control]))
    _check_population_sizes(model, {name: int((control & (populations == name)).sum()) for name in names})
    for name in tqdm(names, desc=f"predict ({len(names)} populations)", unit="population", disable=not progress):
        rows = np.flatnonzero(control & (populations == name))
        bad = int((~np.isfinite(matrix[rows])).sum())
        if bad:
            raise NonFiniteError(expected(f"finite values in rep {rep!r}", f"{bad} NaN/Inf in population {name!r}",
                                          "impute or drop those cells"))
        cond = None if onehot is None else torch.from_numpy(onehot[rows])
        out[rows] = predict_population(model, torch.from_numpy(matrix[rows]), treatment=treatment, source_cond=cond,
                                       population=name, steps=steps, method=method,
                                       allow_unseen=allow_unseen).cpu().numpy()
    key_added = key_added or f"X_{model_method(model)}"
    if rep in copy.obsm:
        copy.obsm[key_added] = out
    else:
        copy.layers[key_added] = out
    treatments = getattr(model, "treatments", [])
    copy.uns[key_added] = {"method": model_method(model), "solver": method, "steps": steps,
                           "treatment": str(treatment if treatment is not None else (treatments or [""])[0]),
                           "rep": rep, "populations": names, "flowzoo_version": flowzoo.core.__version__,
                           **(provenance or {})}
    return copy


def _check_population_sizes(model: PopulationFlow, control_cells: dict[str, int]) -> None:
    """The kNN encoder of a trained model needs k + 1 control cells: name the populations that have fewer."""
    k = getattr(model.encoder, "knn_k", None) if model.conditioning == "encoder" else None
    small = {name: n for name, n in control_cells.items() if k is not None and n < k + 1}
    if small:
        listed = ", ".join(f"{name!r} ({n} control cells)" for name, n in list(small.items())[:10])
        raise ConfigError(expected(f"at least {k + 1} control cells per population (the model's kNN encoder was "
                                   f"trained with k = {k})", listed,
                                   "leave those populations out of the file, or give them more control cells"))


def _project(reference: torch.Tensor, *sets: torch.Tensor) -> list[torch.Tensor]:
    if reference.shape[1] == 2:
        return [s.float() for s in sets]
    mean = reference.float().mean(0)
    _, _, v = torch.pca_lowrank(reference.float() - mean, q=2, center=False)
    return [(s.float() - mean) @ v[:, :2] for s in sets]


def plot_prediction(source: torch.Tensor, predicted: torch.Tensor, observed: torch.Tensor, path: str | Path, *,
                    title: str | None = None) -> Path:
    """PNG with three panels (control, predicted, observed treated) on the observed cells' first 2 PCs."""
    src, pred, obs = _project(observed.detach().cpu(), source.detach().cpu(), predicted.detach().cpu(),
                              observed.detach().cpu())
    return plot_samples_2d({"control": src, "predicted": pred, "observed treated": obs}, path, reference=obs,
                           title=title)
