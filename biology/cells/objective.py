r"""The training objective of Meta Flow Matching and the batches it is computed on.

Atanackovic et al., "Meta Flow Matching: Integrating Vector Fields on the Wasserstein Manifold", ICLR 2025,
arXiv 2408.14608, Eq. 17: conditional flow matching inside each (control, treated) population pair, with
the velocity conditioned on an embedding of the control population,

.. math::  \mathbb{E}_{i}\, \mathbb{E}_{t,\, (x_0, x_1) \sim \pi(p_0^i, p_1^i)}
           \big\| v_\omega(x_t, t \mid \varphi_\theta(p_0^i), c^i) - (x_1 - x_0) \big\|^2,
           \qquad x_t = (1 - t) x_0 + t x_1

(t = 0 control, t = 1 treated, as everywhere in flowzoo and in the paper's code).
:class:`PopulationBatchSampler` draws P population pairs with N cells from each side;
:class:`MetaFlowMatchingLoss` pairs the cells inside each pair and evaluates the loss for Meta FM and for
the two baselines (see :mod:`flowzoo.biology.cells.meta_fm`). Both are re-exported by that module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from flowzoo.biology.cells.populations import PopulationPair
from flowzoo.core.couplings import ExactOTCoupling
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.objectives import FlowMatchingLoss

__all__ = ["PopulationBatchSampler", "MetaFlowMatchingLoss"]


def _draw(cells: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n row indices: without replacement when the population has enough cells."""
    if cells.shape[0] >= n:
        return torch.randperm(cells.shape[0], generator=generator)[:n]
    return torch.randint(cells.shape[0], (n,), generator=generator)


class PopulationBatchSampler:
    """``sample_batch(generator) -> batch`` for the Trainer: P population pairs, N cells from each side.

    The batch holds ``source`` and ``target`` (P, N, d), ``treatment`` and ``population`` (P,) indices, and
    ``source_cond`` (P, N, c) when the pairs carry per-cell conditions. With ``context_cells`` M > 0 it
    also holds ``context`` (P, M, d) (and ``context_cond``): another draw of M control cells, which the
    encoder embeds instead of the N cells of the loss (an embedding from more cells is less noisy).
    """

    def __init__(self, pairs: Sequence[PopulationPair], treatments: Sequence[str], populations: Sequence[str],
                 populations_per_batch: int, cells_per_population: int, context_cells: int = 0):
        if not pairs:
            raise ConfigError(expected("at least one training pair", "none", "check the split"))
        if context_cells < 0:
            raise ConfigError(expected("context_cells >= 0 (0: embed the loss's cells)", context_cells, "use 0"))
        self.context_cells = context_cells
        self.pairs = list(pairs)
        self.treatment = torch.tensor([list(treatments).index(p.treatment) for p in self.pairs])
        self.population = torch.tensor([list(populations).index(p.population) for p in self.pairs])
        self.per_batch, self.cells = populations_per_batch, cells_per_population

    def __call__(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        count = len(self.pairs)
        chosen = (torch.randperm(count, generator=generator)[:self.per_batch] if count >= self.per_batch
                  else torch.randint(count, (self.per_batch,), generator=generator))
        sources, targets, conds = [], [], []
        for i in chosen.tolist():
            pair = self.pairs[i]
            rows = _draw(pair.source, self.cells, generator)
            sources.append(pair.source[rows])
            targets.append(pair.target[_draw(pair.target, self.cells, generator)])
            if pair.source_cond is not None:
                conds.append(pair.source_cond[rows])
        batch = {"source": torch.stack(sources), "target": torch.stack(targets),
                 "treatment": self.treatment[chosen], "population": self.population[chosen]}
        if conds:
            batch["source_cond"] = torch.stack(conds)
        if self.context_cells:
            rows = [_draw(self.pairs[i].source, self.context_cells, generator) for i in chosen.tolist()]
            batch["context"] = torch.stack([self.pairs[i].source[r] for i, r in zip(chosen.tolist(), rows)])
            if conds:
                batch["context_cond"] = torch.stack([self.pairs[i].source_cond[r]
                                                     for i, r in zip(chosen.tolist(), rows)])
        return batch


class MetaFlowMatchingLoss:
    """The MFM objective (Eq. 17): CFM inside each population pair, conditioned on the pair's embedding.

    Args:
        coupling: ``"independent"`` (the paper's default) or ``"exact_ot"`` (minibatch OT inside each pair).
        alternating: alternate flow-only and encoder-only updates (see the module doc).
        population_dropout: for the per-population model, the probability that a population is replaced by
            the null row.
        time_sampler: distribution of t (default uniform), passed to :class:`FlowMatchingLoss`.

    Called as ``loss(model, batch, generator=None)`` with a :class:`PopulationBatchSampler` batch and a
    :class:`~flowzoo.biology.cells.nets.PopulationFlow`.
    """

    def __init__(self, coupling: str = "independent", alternating: bool = False, population_dropout: float = 0.1,
                 time_sampler=None):
        if coupling not in ("independent", "exact_ot"):
            raise ConfigError(expected("coupling 'independent' or 'exact_ot'", repr(coupling), "use 'independent'"))
        if not 0.0 <= population_dropout < 1.0:
            raise ConfigError(expected("population_dropout in [0, 1)", population_dropout, "use 0.1"))
        self.ot = ExactOTCoupling() if coupling == "exact_ot" else None
        self.alternating, self.population_dropout = alternating, population_dropout
        self.flow_matching = FlowMatchingLoss(time_sampler=time_sampler)
        self.calls = 0

    def __call__(self, model: Any, batch: dict[str, torch.Tensor], *,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        net = getattr(model, "module", model)  # DDP wraps the model
        source, target = batch["source"], batch["target"]
        if source.dim() != 3 or target.shape != source.shape:
            raise ConfigError(expected("batch source and target of equal shape (P, N, d)",
                                       f"{tuple(source.shape)} and {tuple(target.shape)}",
                                       "build batches with PopulationBatchSampler"))
        pops, cells = source.shape[:2]
        encoder_phase = self.alternating and net.conditioning == "encoder" and self.calls % 2 == 1
        self.calls += 1
        population = batch.get("population")
        if net.conditioning == "population" and self.population_dropout > 0:
            dropped = torch.rand(pops, generator=generator, device=source.device) < self.population_dropout
            population = torch.where(dropped, torch.full_like(population, net.null_population), population)
        frozen = list(net.velocity.parameters()) if encoder_phase else []
        for p in frozen:  # the graph is recorded without the flow, so only the encoder receives gradients
            p.requires_grad_(False)
        try:
            flow_phase = self.alternating and net.conditioning == "encoder" and not encoder_phase
            with torch.set_grad_enabled(torch.is_grad_enabled() and not flow_phase):
                if "context" in batch:
                    embedding = net.condition(batch["context"], batch.get("context_cond"), population)
                else:
                    embedding = net.condition(source, batch.get("source_cond"), population)
            if self.ot is not None:
                pairings = [self.ot(s, t) for s, t in zip(source, target)]
                source = torch.stack([pairing.x0 for pairing in pairings])
                target = torch.stack([pairing.x1 for pairing in pairings])
            flat = {"x0": source.reshape(pops * cells, -1), "x1": target.reshape(pops * cells, -1),
                    "treatment": batch["treatment"].repeat_interleave(cells)}
            if embedding is not None:
                flat["embedding"] = embedding.repeat_interleave(cells, dim=0)
            loss, metrics = self.flow_matching(model, flat, generator=generator)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        if self.alternating:
            metrics["encoder_phase"] = float(encoder_phase)
        return loss, metrics
