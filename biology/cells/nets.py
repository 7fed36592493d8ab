r"""Networks of Meta Flow Matching: population encoders and the population-conditioned velocity field.

Meta Flow Matching (Atanackovic et al., ICLR 2025, arXiv 2408.14608, Eq. 17) conditions the velocity on
an embedding of the whole initial population, :math:`v_\omega(x, t \mid \varphi_\theta(p_0))`. The paper's
encoder (``GlobalGNN`` in its code) is a k-nearest-neighbour graph over the population's cells, graph
convolutions (GCN, Kipf & Welling 2017; 3 layers of 64 for the letters), ReLU between layers, a mean over the
cells and an L2 normalisation; optional per-cell condition channels (e.g. the cell type) are concatenated to
each cell's features. :class:`DeepSetsEncoder` (Zaheer et al. 2017) is a light alternative without
torch-geometric. Both are invariant to the order of the cells.

A population is a tensor (N, d) of cells; a batch of populations is (P, N, d), or a list of (n_i, d) tensors
when sizes differ. The kNN graph is built in plain torch (``cdist`` + ``topk``), so pyg-lib is not needed.

:class:`PopulationFlow` puts a conditioner in front of :class:`ConditionedVelocity`, the MLP on
[x, sinusoidal embedding of t, population embedding, treatment one-hot] and, optionally
(``fourier_features > 0``), random Fourier features [cos 2πBx, sin 2πBx] of x (Tancik et al. 2020), as the
paper's decoder does, to help the MLP fit sharp spatial fields (off by default; the paper's scale 0.01 is
nearly linear on data in [-3, 3]; with scale 1.0 a single letter is denoised markedly better than without
features, which is why ``benchmarks/biology.py`` turns them on). The conditioner is the encoder (Meta FM), an embedding table of the training
populations (the per-population baseline) or nothing (FM).

:class:`CharacteristicEncoder` (our addition) embeds a population as its empirical characteristic function
at fixed random frequencies; with ``readout_frequencies`` the velocity reads that function out at x, i.e.
gets a kernel density estimate of the population around the cell (see the class docs for why).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, MissingDependencyError, ShapeError, expected
from flowzoo.core.nets import SinusoidalTimeEmbedding

__all__ = ["Populations", "knn_edge_index", "fourier_frequencies", "attach_fourier_frequencies", "fourier_encode",
           "GCNPopulationEncoder", "DeepSetsEncoder", "CharacteristicEncoder", "ConditionedVelocity", "PopulationFlow",
           "CONDITIONINGS"]

Populations = torch.Tensor | Sequence[torch.Tensor]
CONDITIONINGS = ("encoder", "population", "none")


def _as_list(populations: Populations, name: str) -> list[torch.Tensor]:
    if isinstance(populations, torch.Tensor):
        if populations.dim() == 2:
            populations = populations[None]
        if populations.dim() != 3:
            raise ShapeError(expected(f"{name} as (P, N, d) or (N, d) cells", f"shape {tuple(populations.shape)}",
                                      "stack populations of equal size, or pass a list of (n_i, d) tensors"))
        return list(populations.unbind(0))
    items = list(populations)
    if not items or any(not isinstance(p, torch.Tensor) or p.dim() != 2 for p in items):
        raise ShapeError(expected(f"{name} as a non-empty list of (n_i, d) tensors",
                                  [tuple(getattr(p, "shape", ())) for p in items],
                                  "pass one (n, d) tensor per population"))
    return items


def _with_fourier(cells: list[torch.Tensor], frequencies: torch.Tensor | None) -> list[torch.Tensor]:
    if frequencies is None:
        return cells
    if any(x.shape[1] != frequencies.shape[0] for x in cells):
        raise ShapeError(expected(f"cells with {frequencies.shape[0]} features", [tuple(x.shape) for x in cells],
                                  "pass cells in the representation the encoder was built for"))
    return [torch.cat([x, fourier_encode(x, frequencies)], dim=1) for x in cells]


def _with_conditions(cells: list[torch.Tensor], cond: Populations | None, cond_dim: int) -> list[torch.Tensor]:
    if cond_dim == 0:
        if cond is not None:
            raise ConfigError(expected("no per-cell conditions (the encoder was built with cond_dim=0)",
                                       "cell conditions", "build the encoder with cond_dim=C"))
        return cells
    if cond is None:
        raise ConfigError(expected(f"per-cell conditions with {cond_dim} channels", "None", "pass cell_cond"))
    conds = _as_list(cond, "cell_cond")
    if len(conds) != len(cells) or any(c.shape != (x.shape[0], cond_dim) for c, x in zip(conds, cells)):
        raise ShapeError(expected(f"cell_cond shaped like the cells with {cond_dim} channels",
                                  [tuple(c.shape) for c in conds], "give one condition row per cell"))
    return [torch.cat([x, c.to(x.dtype)], dim=1) for x, c in zip(cells, conds)]


def fourier_frequencies(dim: int, count: int, scale: float, seed: int = 0) -> torch.Tensor:
    """A fixed (dim, count) matrix of random frequencies B ~ N(0, scale²), drawn from ``seed``.

    Seeded rather than drawn from the global stream, so a model rebuilt from its options gets the same
    features as the one that was trained (they are also saved with the weights as a buffer).
    """
    if count < 0 or not scale > 0:
        raise ConfigError(expected("fourier_features >= 0 and fourier_scale > 0", (count, scale),
                                   "use e.g. 64 and 1.0, or 0 for none"))
    return torch.randn(dim, count, generator=torch.Generator().manual_seed(seed)) * scale


def attach_fourier_frequencies(module: nn.Module, dim: int, count: int, scale: float) -> None:
    """Give an encoder its seeded Fourier frequencies as ``module.frequencies`` (a buffer; None without features).

    Without features no buffer is registered, so checkpoints of encoders without Fourier features keep their keys.
    """
    frequencies = fourier_frequencies(dim, count, scale, seed=1)
    if count:
        module.register_buffer("frequencies", frequencies)
    else:
        module.frequencies = None


def fourier_encode(x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """[cos 2πxB, sin 2πxB] of x (n, dim) with frequencies B (dim, F): (n, 2F) (Tancik et al. 2020)."""
    phase = 2 * torch.pi * x @ frequencies.to(x.dtype)
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)


def knn_edge_index(cells: torch.Tensor, k: int) -> torch.Tensor:
    """Directed kNN edges (neighbour -> cell) of one population (N, d), as a (2, N·k) index tensor.

    A cell is never its own neighbour, also when cells coincide.
    """
    n = cells.shape[0]
    if not 1 <= k < n:
        raise ShapeError(expected(f"more cells than k={k} for the kNN graph", f"{n} cells",
                                  f"lower knn_k below {n} or give the population more cells"))
    distances = torch.cdist(cells, cells)
    distances.fill_diagonal_(float("inf"))
    neighbours = distances.topk(k, dim=1, largest=False).indices
    receivers = torch.arange(n, device=cells.device).repeat_interleave(k)
    return torch.stack([neighbours.reshape(-1), receivers])


class GCNPopulationEncoder(nn.Module):
    """The paper's population encoder: kNN graph, GCN layers with ReLU between, mean over cells, L2 norm.

    Args:
        dim: features per cell.
        cond_dim: per-cell condition channels concatenated to the features (0: none).
        hidden: width of the GCN layers.
        layers: number of GCNConv layers (>= 1).
        embed_dim: size of the embedding (default: ``hidden``).
        knn_k: neighbours per cell in the graph (populations need at least k + 1 cells).
        fourier_features: F > 0 adds 2F random Fourier features of each cell's features to its node input
            (frequencies ~ N(0, fourier_scale²), seed 1); the graph is still built on the raw features.
        fourier_scale: std of those frequencies, per unit of the features.
    """

    def __init__(self, dim: int, cond_dim: int = 0, hidden: int = 64, layers: int = 3,
                 embed_dim: int | None = None, knn_k: int = 10, fourier_features: int = 0,
                 fourier_scale: float = 1.0):
        super().__init__()
        try:
            from torch_geometric.nn import GCNConv
        except ImportError as error:
            raise MissingDependencyError(expected("torch-geometric for the GCN population encoder", "not installed",
                                                  "pip install 'flowzoo[biology]', or use DeepSetsEncoder")) from error
        if layers < 1 or knn_k < 1 or hidden < 1:
            raise ConfigError(expected("layers, knn_k and hidden >= 1", (layers, knn_k, hidden), "use 3, 10, 64"))
        self.dim, self.cond_dim, self.knn_k = dim, cond_dim, knn_k
        self.embed_dim = hidden if embed_dim is None else embed_dim
        attach_fourier_frequencies(self, dim, fourier_features, fourier_scale)
        widths = [dim + 2 * fourier_features + cond_dim] + [hidden] * (layers - 1) + [self.embed_dim]
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, cells: Populations, cell_cond: Populations | None = None) -> torch.Tensor:
        """Embed each population: (P, N, d) or a list of (n_i, d) -> (P, embed_dim), unit norm."""
        raw = _as_list(cells, "cells")
        items = _with_conditions(_with_fourier(raw, self.frequencies), cell_cond, self.cond_dim)
        edges, offset = [], 0
        for population in raw:  # the graph is over the cells' features, not their condition channels
            edges.append(knn_edge_index(population.detach(), self.knn_k) + offset)
            offset += population.shape[0]
        h = torch.cat(items)
        edge_index = torch.cat(edges, dim=1)
        for i, conv in enumerate(self.convs):
            h = conv(h, edge_index)
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        sizes = [p.shape[0] for p in items]
        pooled = torch.stack([chunk.mean(0) for chunk in h.split(sizes)])
        return nn.functional.normalize(pooled, dim=1)


class DeepSetsEncoder(nn.Module):
    """A DeepSets population encoder: ρ(mean_i φ(x_i)), L2-normalised (no torch-geometric needed).

    ``fourier_features`` / ``fourier_scale`` add random Fourier features of each cell to φ's input, as in
    :class:`GCNPopulationEncoder`; their mean over the cells is the population's empirical characteristic
    function at those frequencies, a smooth summary of its density.
    """

    def __init__(self, dim: int, cond_dim: int = 0, hidden: int = 64, layers: int = 3,
                 embed_dim: int | None = None, fourier_features: int = 0, fourier_scale: float = 1.0):
        super().__init__()
        if layers < 1 or hidden < 1:
            raise ConfigError(expected("layers and hidden >= 1", (layers, hidden), "use 3 and 64"))
        self.dim, self.cond_dim = dim, cond_dim
        self.embed_dim = hidden if embed_dim is None else embed_dim
        attach_fourier_frequencies(self, dim, fourier_features, fourier_scale)
        phi: list[nn.Module] = [nn.Linear(dim + 2 * fourier_features + cond_dim, hidden), nn.ReLU()]
        for _ in range(layers - 1):
            phi += [nn.Linear(hidden, hidden), nn.ReLU()]
        self.phi = nn.Sequential(*phi)
        self.rho = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, self.embed_dim))

    def forward(self, cells: Populations, cell_cond: Populations | None = None) -> torch.Tensor:
        """Embed each population: (P, N, d) or a list of (n_i, d) -> (P, embed_dim), unit norm."""
        items = _with_conditions(_with_fourier(_as_list(cells, "cells"), self.frequencies), cell_cond, self.cond_dim)
        pooled = torch.stack([self.phi(population).mean(0) for population in items])
        return nn.functional.normalize(self.rho(pooled), dim=1)


class CharacteristicEncoder(nn.Module):
    """The population's empirical characteristic function at F fixed random frequencies: (P, 2F), no weights.

    The embedding of cells x_1..x_N is [mean_i cos 2πBx_i, mean_i sin 2πBx_i] with B ~ N(0, scale²) (seeded):
    a smooth summary of the population's density that averages, so a large population is embedded whole
    and with less noise than a subsample. Paired with a velocity that reads it out at x
    (``ConditionedVelocity(readout_frequencies=encoder.frequencies)``) the flow sees a kernel estimate of
    the population's density and its gradient around each cell, which is what denoising a population needs.
    """

    def __init__(self, dim: int, features: int = 64, scale: float = 0.5, cond_dim: int = 0):
        super().__init__()
        if features < 1:
            raise ConfigError(expected("at least 1 frequency", features, "pass e.g. features=128 "
                                       "(--model.encoder_fourier_features 128)"))
        if cond_dim:
            raise ConfigError(expected("no per-cell condition channels", f"cond_dim={cond_dim}",
                                       "use the gcn or deepsets encoder for per-cell condition channels"))
        self.dim, self.cond_dim, self.embed_dim = dim, 0, 2 * features
        self.register_buffer("frequencies", fourier_frequencies(dim, features, scale, seed=1))

    def forward(self, cells: Populations, cell_cond: Populations | None = None) -> torch.Tensor:
        """Embed each population: (P, N, d) or a list of (n_i, d) -> (P, 2F)."""
        items = _with_conditions(_as_list(cells, "cells"), cell_cond, 0)
        return torch.stack([fourier_encode(population, self.frequencies).mean(0) for population in items])


class ConditionedVelocity(nn.Module):
    """MLP velocity on [x, sinusoidal t embedding, population embedding, treatment one-hot] (SiLU).

    Called as ``net(x, t, embedding=None, treatment=None)``: x (B, dim), t (B,), embedding (B, embed_dim),
    treatment (B,) integer indices (only when ``num_treatments > 1``). With ``fourier_features`` F > 0 the
    input also holds 2F random Fourier features of x with frequencies B ~ N(0, fourier_scale²) (a fixed,
    seeded buffer saved with the weights).

    With ``readout_frequencies`` C (dim, R) the embedding is read as a characteristic function
    [Re φ, Im φ] (2R values, e.g. from :class:`CharacteristicEncoder`) and the input also holds its terms
    at x, Re(φ_k e^{-2πi c_k·x}) and Im(φ_k e^{-2πi c_k·x}) for every frequency c_k: summed over k they are a
    kernel density estimate of the population at x and (weighted by c_k) its gradient, so the MLP can
    follow the density of whatever population it is given instead of memorising each one.
    """

    def __init__(self, dim: int, embed_dim: int = 0, num_treatments: int = 1, hidden: int = 256,
                 depth: int = 4, time_dim: int = 64, fourier_features: int = 0, fourier_scale: float = 1.0,
                 readout_frequencies: torch.Tensor | None = None):
        super().__init__()
        if dim < 1 or embed_dim < 0 or num_treatments < 1 or hidden < 1 or depth < 1:
            raise ConfigError(expected("dim, num_treatments, hidden, depth >= 1 and embed_dim >= 0",
                                       (dim, embed_dim, num_treatments, hidden, depth), "check the model options"))
        frequencies = fourier_frequencies(dim, fourier_features, fourier_scale)
        self.dim, self.embed_dim, self.num_treatments = dim, embed_dim, num_treatments
        self.fourier_features = fourier_features
        if fourier_features:
            self.register_buffer("frequencies", frequencies)
        self.readout = 0 if readout_frequencies is None else readout_frequencies.shape[1]
        if self.readout:
            if readout_frequencies.shape != (dim, self.readout) or embed_dim != 2 * self.readout:
                raise ConfigError(expected(f"readout_frequencies of shape ({dim}, R) with embed_dim = 2R",
                                           f"{tuple(readout_frequencies.shape)} and embed_dim {embed_dim}",
                                           "pass the CharacteristicEncoder's frequencies and its embed_dim"))
            self.register_buffer("readout_frequencies", readout_frequencies.detach().clone())
        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        width_in = (dim + 2 * fourier_features + time_dim + embed_dim + 2 * self.readout
                    + (num_treatments if num_treatments > 1 else 0))
        layers: list[nn.Module] = [nn.Linear(width_in, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, dim))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, embedding: torch.Tensor | None = None,
                treatment: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ShapeError(expected(f"x of shape (B, {self.dim})", f"shape {tuple(x.shape)}",
                                      "pass cells in the representation the model was trained on"))
        batch = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(batch)
        parts = [x, self.time_embedding(t).to(x.dtype)]
        if self.fourier_features:
            parts.append(fourier_encode(x, self.frequencies))
        if self.embed_dim:
            if embedding is None or embedding.shape != (batch, self.embed_dim):
                raise ShapeError(expected(f"a population embedding of shape ({batch}, {self.embed_dim})",
                                          None if embedding is None else tuple(embedding.shape),
                                          "embed the population with the model's conditioner first"))
            parts.append(embedding.to(x.dtype))
            if self.readout:
                parts.append(_read_out(embedding.to(x.dtype), fourier_encode(x, self.readout_frequencies)))
        if self.num_treatments > 1:
            if treatment is None or treatment.shape != (batch,):
                raise ShapeError(expected(f"treatment indices of shape ({batch},)",
                                          None if treatment is None else tuple(treatment.shape),
                                          "pass the treatment of every cell"))
            parts.append(nn.functional.one_hot(treatment.long(), self.num_treatments).to(x.dtype))
        return self.body(torch.cat(parts, dim=1))


def _read_out(embedding: torch.Tensor, at_x: torch.Tensor) -> torch.Tensor:
    real, imag = embedding.chunk(2, dim=1)
    cos, sin = at_x.chunk(2, dim=1)
    # φ e^{-iθ} with θ = 2πc·x: real part Re φ cos θ + Im φ sin θ, imaginary part Im φ cos θ - Re φ sin θ
    return torch.cat([real * cos + imag * sin, imag * cos - real * sin], dim=1)


class PopulationFlow(nn.Module):
    """A conditioner followed by :class:`ConditionedVelocity`; ``forward`` is the velocity model.

    Args:
        velocity: the flow network.
        conditioning: ``"encoder"`` (Meta FM: ``encoder`` embeds the control population), ``"population"``
            (an embedding table with one row per training population plus a last, null row) or ``"none"``.
        encoder: the population encoder (for ``"encoder"``).
        num_populations: number of training populations (for ``"population"``).

    With a read-out velocity the table rows stand for characteristic functions: they start near zero and are
    scaled by ``table_gain`` = 10, so that they learn 10x faster (see ``__init__``).
    """

    def __init__(self, velocity: ConditionedVelocity, conditioning: str = "encoder", encoder: nn.Module | None = None,
                 num_populations: int = 0):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ConfigError(expected(f"conditioning in {CONDITIONINGS}", repr(conditioning), "use 'encoder'"))
        if (conditioning == "encoder") != (encoder is not None):
            raise ConfigError(expected("an encoder exactly when conditioning='encoder'", conditioning,
                                       "pass encoder=GCNPopulationEncoder(...) with conditioning='encoder'"))
        if conditioning == "population" and num_populations < 1:
            raise ConfigError(expected("num_populations >= 1 for conditioning='population'", num_populations,
                                       "pass the number of training populations"))
        if (conditioning == "none") != (velocity.embed_dim == 0):
            raise ConfigError(expected("embed_dim = 0 exactly when conditioning='none'", velocity.embed_dim,
                                       "build ConditionedVelocity with the conditioner's embedding size"))
        self.velocity, self.conditioning, self.encoder = velocity, conditioning, encoder
        self.num_populations = num_populations
        self.population_table = (nn.Embedding(num_populations + 1, velocity.embed_dim)
                                 if conditioning == "population" else None)
        # Read-out rows are characteristic functions (|φ| <= 1, mostly ~0.1): they start near 0 (all
        # populations alike, as in FM) and are stored divided by a gain, so that Adam, whose step is about lr
        # per parameter, moves them `gain` times faster: each row is in only P / populations of the batches.
        self.table_gain = 10.0 if velocity.readout else 1.0
        if self.population_table is not None and velocity.readout:
            nn.init.normal_(self.population_table.weight, std=0.01 / self.table_gain)

    @property
    def null_population(self) -> int:
        """The table row standing for "no known population" (the per-population baseline's fallback)."""
        return self.num_populations

    def condition(self, cells: Populations | None = None, cell_cond: Populations | None = None,
                  population: torch.Tensor | None = None) -> torch.Tensor | None:
        """The (P, embed_dim) conditioning of P populations (None for ``"none"``)."""
        if self.conditioning == "none":
            return None
        if self.conditioning == "population":
            if population is None:
                raise ConfigError(expected("population indices for the per-population model", "None",
                                           "pass population=tensor of training-population indices"))
            return self.population_table(population.long()) * self.table_gain
        if cells is None:
            raise ConfigError(expected("the control cells to embed", "None", "pass the source population"))
        return self.encoder(cells, cell_cond)

    def forward(self, x: torch.Tensor, t: torch.Tensor, embedding: torch.Tensor | None = None,
                treatment: torch.Tensor | None = None) -> torch.Tensor:
        return self.velocity(x, t, embedding=embedding, treatment=treatment)
