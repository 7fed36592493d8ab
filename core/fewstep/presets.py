"""Measured settings of the flow-map objectives: keyword arguments that made each method work in flowzoo's benchmark.

The objectives' own defaults are their papers' (:class:`~flowzoo.core.fewstep.meanflow.MeanFlowLoss`,
:class:`~flowzoo.core.fewstep.splitmeanflow.SplitMeanFlowLoss`). These presets are what ``benchmarks/few_step.py`` trains
with, each function saying why it chose what it chose: use them as the starting point for low-dimensional data
(they were tuned on 2-D toys, N(0, I) / 8 Gaussians -> checkerboard / moons, and checked on the 64-D digits).
``python -m benchmarks.few_step`` measures them against flow matching; the numbers are in
``benchmarks/results/few_step.json``, rendered on the core docs page. Each returns fresh keyword arguments for the
objective, e.g.::

    from flowzoo.core.fewstep.presets import splitmeanflow_settings
    from flowzoo.core.fewstep.splitmeanflow import SplitMeanFlowLoss

    loss_fn = SplitMeanFlowLoss(**splitmeanflow_settings(dim=2))  # the benchmark's SplitMeanFlow row

:func:`meanflow_ot_settings` is meant with minibatch-OT pairs: ``MeanFlowLoss(coupling=ExactOTCoupling(),
**meanflow_ot_settings())``, at :data:`MEANFLOW_OT_LR_FACTOR` times the learning rate.
"""

from __future__ import annotations

from flowzoo.core.fewstep.flowmap import TwoTimeSampler
from flowzoo.core.paths import UniformTime

__all__ = ["meanflow_settings", "imf_settings", "meanflow_ot_settings", "MEANFLOW_OT_LR_FACTOR",
           "splitmeanflow_settings"]


def meanflow_settings() -> dict:
    """MeanFlow's time sampler logit-normal(-0.4, 1) in its own time, translated to flowzoo time
    (t = 1 - t_MF, so the mean reads +0.4), with 75 % of pairs s != t (py-meanflow's CIFAR ratio) and
    adaptive weight p = 0.5 (the paper ablates p in {0, 0.5, 1}; arXiv 2505.13447, §4.3). Each of these three
    choices was the best of its alternatives on checkerboard in ``python -m benchmarks.few_step``'s setting (p = 1,
    the paper's mean -0.4 left untranslated, the ImageNet default of 25 % distinct pairs); the 25 % default did
    better on the 64-D digits, so the fraction trades 2-D one-step quality for 64-D (the notes of
    ``benchmarks/results/few_step.json``).

    With independent pairs these settings leave MeanFlow well short of flow matching's 100-step quality on
    8 Gaussians -> moons. The target v + (t - s) du/ds carries the conditional velocity's noise times (t - s) and
    the map's Jacobian, which is large for a map that splits 8 blobs onto 2 thin moons, yet over a full run that
    noise is not the limit: ``python -m benchmarks.meanflow_moons_ablation`` (one change per variant: batch size,
    Adam beta2, an EMA of the weights, p = 0, the nearly noise-free batch-posterior marginal velocity) moves the
    1-NFE error little, and longer training even makes it worse while the 2-NFE error keeps improving. Straighter paths are what helps: with minibatch-OT pairs and uniform-gap intervals
    (:func:`meanflow_ot_settings`) MeanFlow comes close to flow matching."""
    return {"time_sampler": TwoTimeSampler(mean=0.4, std=1.0, distinct_fraction=0.75), "adaptive_p": 0.5}


def splitmeanflow_settings(dim: int = 2) -> dict:
    """Half of the samples on the flow-matching boundary (the ports' flow_ratio = 0.5), drawn at uniform times
    like flow matching (``boundary_time_sampler=UniformTime()``: with the pair's start time, whose density under
    uniform-gap intervals is -log s, the velocity near the data is rarely trained); the other half on intervals
    whose length is uniform on (0, 1) (``TwoTimeSampler(interval="uniform_gap")``), so that the long jumps of 1-
    and 2-step sampling are trained often, with MeanFlow's adaptive weight p = 0.5 on those split samples only.
    Together the boundary sampler and the weight clearly improve the 1-NFE error on moons and checkerboard
    over the ports' setting (no boundary sampler, p = 0), which diverged on one checkerboard seed; p = 0.5 was the
    best of p in {0, 0.25, 0.5, 0.75, 1}, and applying it to the boundary samples too, other boundary fractions or
    an EMA target network did not help. On moons the remaining gap to flow matching is closed by capacity and
    steps, not by these settings, which is why the benchmark trains every method on moons with a 3x512 MLP for
    12000 steps (``python -m benchmarks.few_step --methods splitmeanflow``; ``benchmarks/results/few_step.json``).

    On the 64-D digits the uniform boundary times help too, but the adaptive weight does not transfer (it makes the
    one- and two-step samples far worse, with or without the boundary sampler), so above 2-D the split samples keep
    p = 0."""
    return {"boundary_fraction": 0.5,
            "time_sampler": TwoTimeSampler(distinct_fraction=1.0, interval="uniform_gap"),
            "boundary_time_sampler": UniformTime(), "adaptive_p": 0.5 if dim <= 2 else 0.0}

def imf_settings() -> dict:
    """MeanFlow-iMF (``formulation="imf"``: the JVP tangent is the model's own velocity u(x, s, s), so the
    conditional velocity's noise is no longer multiplied by the map's Jacobian) with MeanFlow's settings above
    (Geng et al., "Improved Mean Flows", arXiv 2512.02012, §4).

    In ``python -m benchmarks.few_step --methods meanflow`` iMF improves on MeanFlow on moons but not on
    checkerboard (``benchmarks/results/few_step.json``). MeanFlow's settings are kept because iMF's own defaults
    (50 % s != t, p = 1, c = 0.005 for the per-coordinate mean: the paper's 0.01 on a sum over 2 coordinates),
    uniform-gap intervals and a larger batch at the same wall time did no better on moons; an EMA of the weights
    for sampling helped one step a little but is not used, since the table samples every method from its raw
    weights. With independent pairs iMF stays short of flow matching on moons; minibatch-OT pairs
    (``MeanFlowLoss(coupling=ExactOTCoupling())``, now :func:`meanflow_ot_settings`) close most of the gap."""
    return {**meanflow_settings(), "formulation": "imf"}


def meanflow_ot_settings() -> dict:
    """MeanFlow on minibatch-OT pairs (exact OT on each batch) with uniform-gap intervals: the "MeanFlow + OT" row.

    With independent pairs uniform-gap intervals hurt MeanFlow (about twice the 1-NFE error on moons): the long
    jumps they train most start near the source, where the conditional velocity x1 - x0 is nearly independent of
    x_s and the JVP target is at its noisiest. On OT pairs (Tong et al., arXiv 2302.00482) x1 - x0 is close to
    the marginal velocity, so the long jumps of 1- and 2-step sampling can be trained often; they beat
    MeanFlow's logit-normal intervals on the same pairs. The 1-NFE error swings during training and settles as
    the cosine learning rate decays. A 2-D setting: on digits (64-D, batch 256) exact OT pairs the batch poorly and
    the row is far worse than MeanFlow. ``python -m benchmarks.few_step --methods meanflow`` measures the row
    (``benchmarks/results/few_step.json``); it trains at :data:`MEANFLOW_OT_LR_FACTOR` times the table's
    learning rate."""
    return {"time_sampler": TwoTimeSampler(distinct_fraction=0.75, interval="uniform_gap"), "adaptive_p": 0.5}


MEANFLOW_OT_LR_FACTOR = 0.5
"""The "MeanFlow + OT" row trains at half the table's learning rate (5e-4 instead of 1e-3).

At 1e-3 the row trained in spikes and its seeds spread widely; at half the rate the spikes are gone and the worst
seed improves, at a small cost on checkerboard (``python -m benchmarks.meanflow_moons_ablation --variants
ot_ugap_lr --seed N`` against ``ot_ugap``; the row itself: ``python -m benchmarks.few_step --methods meanflow``,
``benchmarks/results/few_step.json``)."""
