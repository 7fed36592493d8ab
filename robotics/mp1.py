r"""MP1: a one-step MeanFlow policy with a dispersive loss (MP1, AAAI 2026, arXiv 2507.10543; code LogSSim/MP1).

MP1 trains the action-chunk generator of a DP3-style policy (point-cloud + state encoder → 1-D conditional
U-Net, :mod:`flowzoo.robotics.nets`) with the **MeanFlow** objective (Geng et al., arXiv 2505.13447, Eq. 6/9;
:class:`flowzoo.core.fewstep.meanflow.MeanFlowLoss`) and samples an action chunk with **one** network evaluation:
:math:`a = \varepsilon + u_\theta(\varepsilon, 0, 1 \mid c)` in flowzoo time (MP1: :math:`a = \varepsilon -
u(\varepsilon, r=0, t=1)`, data at 0, noise at 1). What this module pins down, in flowzoo time (0 = noise,
1 = data):

* **Time pairs.** MP1 draws two logit-normal times LN(μ = −0.4, σ = 1) in its own time, takes t = max, r = min and
  sets r = t for a random 50 % of the batch (``flow_ratio = 0.5``, plain flow matching on those samples). With
  :math:`s = 1 - t_{MP1}`, :math:`t = 1 - r_{MP1}`, a logit-normal(μ) time becomes logit-normal(−μ); max/min
  ordering becomes min/max, and "r = t" keeps the state time. Hence ``TwoTimeSampler(mean=+0.4, std=1,
  distinct_fraction=0.5)`` (:func:`mp1_time_sampler`).
* **Adaptive weight.** :math:`w = 1/(\|\Delta\|^2 + c)^p` with p = 1 − γ = 0.5, c = 1e−3, ‖Δ‖² the mean over
  coordinates (MP1's "adaptive L2"); ``adaptive_p = 0.5``.
* **Guidance, two forms** (``guidance`` of :class:`~flowzoo.robotics.policy.PolicyConfig`):

  - ``"mp1"`` — what MP1's released code does: the regression target uses
    :math:`\hat v = \omega v + (1 - \omega)\,u_\theta(x_s, s, s \mid c)` with the *same, conditional* input (no
    unconditional branch, no condition dropout; ω = 2). In MeanFlowLoss terms: ``guidance_scale = ω``,
    ``guidance_kappa = 1 − ω``. It extrapolates the data velocity away from the model's own current estimate;
    it is not classifier-free guidance, and it does **not change what the model converges to**: for s = t the
    L2 minimiser satisfies :math:`u = \omega\,\bar v + (1 - \omega)\,u` with :math:`\bar v = E[v \mid x_s, s, c]`
    (the model's own term is under stop-gradient), i.e. :math:`u = \bar v`, plain MeanFlow's answer; for s < t the
    JVP term is linear in the tangent's velocity, so its expectation is unchanged too. What ω changes is the
    training: the mean error contracts ω times faster in gradient flow, and the target's sampling noise
    :math:`v - \bar v` is multiplied by ω (variance × ω² = 4). With few updates it is a noisier target, which is
    why MP1's row needs more updates than plain MeanFlow (with the adaptive weight, p = 0.5, the minimiser is an
    M-estimate rather than the mean, so the equivalence is approximate).
  - ``"cfg"`` — standard CFG baked into the MeanFlow target (MeanFlow §4.2):
    :math:`\hat v = \omega v + (1 - \omega)\,u_\theta(x_s, s, s \mid \varnothing)`, trained with condition
    dropout. The null condition replaces the **observation features** (the encoder output, the U-Net's global
    condition) by a learned null embedding (``null_cond = "learned"``, default: a parameter vector trained through the
    dropped samples) or by zeros (``"zeros"``; zero is a valid feature value, hence not the default). Sampling
    stays 1-NFE: the guided field is learned, not formed at inference.

* **Dispersive loss.** ``"mp1"`` of :mod:`flowzoo.core.fewstep.dispersive` on every down-block activation but the
  deepest (``net.last_features``), weight 0.5, τ = 1: :math:`L = L_{MF} + 0.5\sum_\ell L_{disp}^{(\ell)}`.
  The features are those of the gradient pass (the last network call of the objective; tested). The term is
  bounded (≥ log(1/B + (1 − 1/B)/e) ≈ −0.97 at batch 64) and its gradient does not fade as the flow loss falls,
  so on a small network and a short budget it competes with the regression: on a (32, 64) U-Net with 10
  demonstrations weight 0.5 raises the MeanFlow training error and the held-out error of the 1-NFE chunk, while
  weight 0.1 barely changes them but spreads the features less. The default stays MP1's 0.5 (what the paper
  trains with, on a (512, 1024, 2048) U-Net for 3000 epochs). In success on six Meta-World state tasks
  (``python -m benchmarks.robotics_dispersive``, paired over (task, seed) cells;
  ``benchmarks/results/robotics_dispersive.json``, on the robotics docs page) weight 0.5 costs success, mostly on
  reach, while 0.1 costs nothing and MP1 at 0.1 matches the 10-step FM policy: use ``dispersive_weight=0.1`` on
  small networks (what ``benchmarks/robotics_metaworld.py`` trains).

:func:`mp1_config` returns a :class:`~flowzoo.robotics.policy.PolicyConfig` with these defaults;
:func:`meanflow_objective` builds the objective the policy uses for ``method`` "meanflow", "mp1" and "dm1".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.fewstep import TwoTimeSampler
from flowzoo.core.fewstep import MeanFlowLoss
from flowzoo.robotics.policy_config import MP1_TIME_MEAN, PolicyConfig

__all__ = ["MP1_DEFAULTS", "mp1_time_sampler", "meanflow_objective", "mp1_config", "meanflow_config",
           "GUIDANCE_FORMS"]

GUIDANCE_FORMS = ("none", "cfg", "mp1")

MP1_DEFAULTS: dict[str, Any] = {
    "method": "mp1",
    "n_obs_steps": 2,
    "horizon": 4,
    "n_action_steps": 4,
    "sample_steps": 1,
    "dispersive": "mp1",
    "dispersive_weight": 0.5,
    "dispersive_target": "down",
    "guidance": "mp1",
    "guidance_scale": 2.0,
    "time_mean": MP1_TIME_MEAN,
    "time_std": 1.0,
    "distinct_fraction": 0.5,
    "adaptive_p": 0.5,
    "adaptive_c": 1e-3,
}
"""MP1's released settings (``config/mp1.yaml``, ``meanpolicy_dis.py``), translated to flowzoo time."""


def mp1_time_sampler(mean: float = MP1_TIME_MEAN, std: float = 1.0, distinct_fraction: float = 0.5) -> TwoTimeSampler:
    """MP1's (t, r) sampler in flowzoo time: LN(+0.4, 1) pairs sorted to s ≤ t, 50 % with s = t."""
    return TwoTimeSampler(mean=mean, std=std, distinct_fraction=distinct_fraction)


def meanflow_objective(*, guidance: str = "none", guidance_scale: float = 1.0, cond_dropout: float = 0.0,
                       null_value: Any = 0.0, time_mean: float = MP1_TIME_MEAN, time_std: float = 1.0,
                       distinct_fraction: float = 0.5, adaptive_p: float = 0.5, adaptive_c: float = 1e-3,
                       derivative: str = "jvp") -> MeanFlowLoss:
    """The MeanFlow objective on batches ``{"x1": action chunk, "cond": observation features}``.

    Args:
        guidance: ``"none"``, ``"mp1"`` (conditional-only target, κ = 1 − ω) or ``"cfg"`` (null branch with
            condition dropout).
        guidance_scale: ω.
        cond_dropout: probability of replacing a sample's features by ``null_value`` (``"cfg"`` needs > 0).
        null_value: the null features: a number or a (D,) tensor, e.g. a learned parameter.
        time_mean, time_std, distinct_fraction: the two-time sampler (flowzoo time).
        adaptive_p, adaptive_c: MeanFlow's adaptive weight.
        derivative: ``"jvp"`` or ``"finite_difference"``.

    Raises:
        ConfigError: an unknown guidance form, or ``"cfg"`` with ω ≠ 1 and no condition dropout.
    """
    if guidance not in GUIDANCE_FORMS:
        raise ConfigError(expected(f"guidance in {list(GUIDANCE_FORMS)}", repr(guidance),
                                   "use 'mp1' (MP1's code), 'cfg' (with cond_dropout) or 'none'"))
    sampler = mp1_time_sampler(time_mean, time_std, distinct_fraction)
    common: dict[str, Any] = dict(time_sampler=sampler, adaptive_p=adaptive_p, adaptive_c=adaptive_c,
                                  derivative=derivative)
    if guidance == "mp1":
        # MP1 trains no null branch; condition dropout would only blur the conditional target.
        return MeanFlowLoss(guidance_scale=guidance_scale, guidance_kappa=1.0 - guidance_scale, **common)
    if guidance == "cfg":
        if guidance_scale != 1.0 and cond_dropout <= 0:
            raise ConfigError(expected("cond_dropout > 0 with guidance 'cfg'", f"cond_dropout={cond_dropout}",
                                       "pass e.g. cond_dropout=0.1, or use guidance 'mp1'"))
        dropout = dict(cond_dropout=cond_dropout, null_cond={"cond": null_value}) if cond_dropout > 0 else {}
        return MeanFlowLoss(guidance_scale=guidance_scale, **dropout, **common)
    return MeanFlowLoss(**common)


def mp1_config(**overrides: Any):
    """A :class:`~flowzoo.robotics.policy.PolicyConfig` with MP1's defaults (:data:`MP1_DEFAULTS`) and ``overrides``."""
    return PolicyConfig(**{**MP1_DEFAULTS, **overrides})


def meanflow_config(**overrides: Any):
    """The "MP" ablation of MP1: the same MeanFlow policy without dispersive loss and without guidance."""
    values: Mapping[str, Any] = {**MP1_DEFAULTS, "method": "meanflow", "dispersive": None, "guidance": "none",
                                 "guidance_scale": 1.0}
    return PolicyConfig(**{**values, **overrides})
