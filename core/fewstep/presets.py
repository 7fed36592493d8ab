"""Measured settings of the flow-map objectives: keyword arguments that made each method work in flowzoo's benchmark.

The objectives' own defaults are their papers' (:class:`~flowzoo.core.fewstep.meanflow.MeanFlowLoss`,
:class:`~flowzoo.core.fewstep.splitmeanflow.SplitMeanFlowLoss`). These presets are what ``benchmarks/few_step.py`` trains
with, each function holding the evidence for its choices in its docstring: use them as the starting point for
low-dimensional data (they were tuned on 2-D toys, N(0, I) / 8 Gaussians -> checkerboard / moons, and checked on
the 64-D digits). Each returns fresh keyword arguments for the objective, e.g.::

    from flowzoo.core.fewstep.presets import splitmeanflow_settings
    from flowzoo.core.fewstep.splitmeanflow import SplitMeanFlowLoss

    loss_fn = SplitMeanFlowLoss(**splitmeanflow_settings(dim=2))  # N(0, I) -> moons, MLP 3x256: 1-NFE 1.21x FM-100

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
    adaptive weight p = 0.5 (the paper ablates p in {0, 0.5, 1}). One-seed checks on checkerboard:
    at 2000 steps 1-NFE W2 0.55 with p = 0.5, 0.81 with p = 1, 1.71 with mean -0.4; at 6000 steps
    0.392 with 75 % distinct pairs against 0.506 with the ImageNet default of 25 %.

    On 8 Gaussians -> moons (1-NFE W2 0.815 at 6000 steps, FM-100 0.287) nothing here reaches 1.3x: std 2
    0.860, mean 0 / std 2 0.817, time_scale 10 0.851, uniform-gap intervals 1.63 (2000 steps), py-meanflow's
    CIFAR pair (s ~ LN(0.6, 1.6), t ~ LN(4, 1.6)) 1.67 (2000 steps), 18000 steps 0.686. The target
    v + (t - s) du/ds carries the conditional velocity's noise times (t - s) and the map's Jacobian, which
    is large for a map that splits 8 blobs onto 2 thin moons: batch 1024 gave 0.531 after 2000 steps against
    0.811 at batch 512. In the moons table's current setting (3x512, 12000 steps) 0.612 against FM-100 0.266
    (2.30x); iMF 0.566, iMF + OT 0.393. Over full runs the noise is not the limit
    (``benchmarks/meanflow_moons_ablation.py``, 12000 steps): batch 2048 0.590, Adam beta2 0.95 0.589, an EMA
    of the weights 0.628, p = 0 0.769, and the batch-posterior *marginal* velocity in place of x1 - x0 (nearly
    noise-free) 0.59-0.69; minibatch-OT pairs (straighter paths) 0.408 with this formulation. Longer training
    does not help: over 36000 steps (cosine decay over the whole run) the 1-NFE W2 went 0.659 / 0.795 / 1.068 at
    steps 4000 / 12000 / 32000 while the 2-NFE W2 improved 0.596 / 0.464 / 0.385; stopped at step 10000, uniform-gap
    intervals gave 1.03 (1 NFE) / 0.74 (2 NFE) and logit-normal(0, 2) 0.91 / 0.76. With OT pairs and uniform-gap
    intervals (:func:`meanflow_ot_settings`) it reaches 1.1-1.2x FM-100."""
    return {"time_sampler": TwoTimeSampler(mean=0.4, std=1.0, distinct_fraction=0.75), "adaptive_p": 0.5}


def splitmeanflow_settings(dim: int = 2) -> dict:
    """Half of the samples on the flow-matching boundary (the ports' flow_ratio = 0.5), drawn at uniform times
    like flow matching (``boundary_time_sampler=UniformTime()``: with the pair's start time, whose density under
    uniform-gap intervals is -log s, the velocity near the data is rarely trained); the other half on intervals
    whose length is uniform on (0, 1) (``TwoTimeSampler(interval="uniform_gap")``), so that the long jumps of 1-
    and 2-step sampling are trained often, with MeanFlow's adaptive weight p = 0.5 on those split samples only.
    1-NFE W2 at 6000 steps, seeds 0 / 1: moons 0.430 / 0.456 (FM-100 0.287 / 0.234; 1.50x / 1.95x),
    checkerboard 0.415 / 0.390 (FM-100 0.322 / 0.351; 1.29x / 1.11x). Before (no boundary sampler, p = 0):
    moons 0.557 / 0.533, checkerboard 0.491 / diverged. Moons is still short of 1.3x. Ablations on moons seed 0
    (with uniform boundary times): p = 0 0.478, 0.25 0.440, 0.75 0.661, 1 1.19; p on the boundary too 0.780;
    boundary_fraction 0.25 0.554, 0.75 0.430; EMA target network 2.10. What closes the gap is capacity and
    steps: 3x512 at 6000 steps 0.380, 3x512 at 12000 steps 0.313 (means over 3 evaluation draws; FM-100 3x512
    0.253; an EMA of the weights for sampling did not help: 0.392 against 0.370), so moons now trains every
    method on 3x512 for 12000 steps, where the table gives 1-NFE 0.297 against FM-100 0.266 (1.12x). Batch 2048
    at 3000 steps (the same samples seen) was worse: 0.482.

    Digits (64-D, seed 0, 3000 steps, FD; FM-100 19.5): the uniform boundary times help there too (1-NFE 42.4 ->
    34.6, 2-NFE 33.4 -> 26.1) but the adaptive weight does not transfer: p = 0.5 gives FD 138 at 1 and 2 NFE
    (with or without the boundary sampler), so above 2-D the split samples keep p = 0."""
    return {"boundary_fraction": 0.5,
            "time_sampler": TwoTimeSampler(distinct_fraction=1.0, interval="uniform_gap"),
            "boundary_time_sampler": UniformTime(), "adaptive_p": 0.5 if dim <= 2 else 0.0}

def imf_settings() -> dict:
    """MeanFlow-iMF (``formulation="imf"``: the JVP tangent is the model's own velocity u(x, s, s), so the
    conditional velocity's noise is no longer multiplied by the map's Jacobian) with MeanFlow's settings above.

    One-seed checks at 6000 steps, batch 512 (1-NFE / 2-NFE W2; FM Euler-100: moons 0.287, checkerboard 0.322):
    moons 0.640 / 1.019 against MeanFlow's 0.815; checkerboard 0.502 / 0.938 against 0.392. Alternatives on
    moons: iMF's own defaults (50 % s != t, p = 1, c = 0.005 for the per-coordinate mean: the paper's 0.01 on a
    sum over 2 coordinates) 0.673 / 0.806; uniform-gap intervals 0.962 / 0.768; batch 1024 for 3000 steps
    (same wall time) 0.753 / 1.147; an EMA of the weights (decay 0.999) for sampling 0.584 / 0.955 (not used:
    the table samples every method from its raw weights). None reaches 1.3x FM-100 on moons with independent
    pairs. Minibatch-OT pairs (exact OT on each batch of 512, ``MeanFlowLoss(coupling=ExactOTCoupling())``)
    were the separate "MeanFlow-iMF + OT" row: moons 0.440 / 0.376 in the same one-seed check (now
    :func:`meanflow_ot_settings`)."""
    return {**meanflow_settings(), "formulation": "imf"}


def meanflow_ot_settings() -> dict:
    """MeanFlow on minibatch-OT pairs (exact OT on each batch) with uniform-gap intervals: the "MeanFlow + OT" row.

    With independent pairs uniform-gap intervals hurt MeanFlow (moons 1-NFE W2 1.63 against 0.81 at 2000 steps):
    the long jumps they train most start near the source, where the conditional velocity x1 - x0 is nearly
    independent of x_s and the JVP target is at its noisiest. On OT pairs x1 - x0 is close to the marginal
    velocity, so the long jumps of 1- and 2-step sampling can be trained often. Full runs (12000 steps moons,
    6000 checkerboard; 1-NFE / 2-NFE W2, FM Euler-100 0.266 and 0.322): moons seed 0 0.327 / 0.264, seed 1
    0.284 / 0.272, seed 2 0.352 / 0.363 (1.32x: the seeds' mean is 1.21x); checkerboard seed 0 0.368 / 0.383,
    seed 1 0.328 / 0.308. The same OT pairs with MeanFlow's logit-normal intervals:
    moons 0.408 (iMF 0.393). The 1-NFE W2 swings during training (0.35-0.89 between evaluations at steps
    4500-9000, seed 0) and settles as the cosine learning rate decays. A 2-D setting: on digits (64-D, batch 256)
    exact OT pairs the batch poorly and the row gives FD 188 (1 NFE) / 173 (2 NFE) against MeanFlow's 52 / 16.
    These numbers are at the table's learning rate 1e-3; the row now trains at :data:`MEANFLOW_OT_LR_FACTOR` x it."""
    return {"time_sampler": TwoTimeSampler(distinct_fraction=0.75, interval="uniform_gap"), "adaptive_p": 0.5}


MEANFLOW_OT_LR_FACTOR = 0.5
"""The "MeanFlow + OT" row trains at half the table's learning rate (5e-4 instead of 1e-3).

At 1e-3 the row trained in spikes (1-NFE W2 8.2 at step 3000 of moons seed 2) and its seeds spread from 1.07x to
1.32x FM-100. ``benchmarks/meanflow_moons_ablation.py``'s loop (checkerboard: the same loop, a scratch run), 1-NFE W2,
lr 1e-3 -> 5e-4: moons seed 0 0.327 -> 0.289, seed 2 0.352 -> 0.264 (worst evaluation during training 8.19 -> 0.87);
checkerboard seed 0 0.368 -> 0.382, seed 1 0.328 -> 0.348. The worst seed goes from 1.32x to 1.19x FM-100. The
table at 5e-4 (``few_step.py --methods meanflow --datasets moons checkerboard --threads 1``, seed 0, 32 min):
moons 0.279 (1.05x) / 0.246 at 1 / 2 NFE, checkerboard 0.375 (1.16x) / 0.380."""
