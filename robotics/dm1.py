r"""DM1: MeanFlow policies with dispersive regularisation (DM1, arXiv 2510.07865; code Guowei-Zou/dm1-release).

DM1 is the MeanFlow action-chunk policy of :mod:`flowzoo.robotics.mp1` (same objective, same time sampler in flowzoo
time: logit-normal(+0.4, 1) pairs, 50 % with s = t) with a **dispersive loss** that keeps the representations of
different observations apart, to fight the representation collapse of few-demonstration training. Variants
(:mod:`flowzoo.core.fewstep.dispersive`, which documents each formula):

* ``"infonce_l2"`` (DM1's recommended default, weight 0.5, τ = 0.5), ``"infonce_cosine"``, ``"hinge"`` (margin 1),
  ``"covariance"`` (VICReg-style);
* ``"infonce_l2_dm1"`` / ``"infonce_cosine_dm1"``: DM1's exact clamped InfoNCE, whose −1e9 diagonal is clamped to
  −10 — nearly flat for collapsed features and saturated once distances exceed 10τ; the unclamped forms are the
  default here. Both are kept so an ablation can show the difference.

**Where the loss is applied** (``dispersive_target`` of :class:`~flowzoo.robotics.policy.PolicyConfig`):

* ``"embeddings"`` (default; DM1's ``MeanFlowDispersive.loss``): separately on the condition embedding (our
  observation features, the encoder output) and on the two time embeddings, evaluated at fresh uniform times
  (DM1 draws t, r ~ U(0, 1) for this extra pass; here s ~ U(0, 1) and the gap t − s ~ U(0, 1 − s)), summed. The
  time embeddings do not depend on the action, so no extra U-Net pass is needed.
* ``"mid"``: the U-Net's mid-block output (the DM1 README's "target layer: mid").
* ``"down"``: the down-block activations, as MP1.

DM1 trains with plain MSE (``use_adaptive_loss: false``), hence ``adaptive_p = 0``, and no guidance. Its
configs sample with 5 flow-map steps although the title says 1-step; ``sample_steps`` defaults to 1 here and
can be raised.

:func:`representation_health` measures the collapse DM1 targets: the effective rank (participation ratio) and the
mean pairwise distance of the observation features over a set of observations.

On small networks DM1's defaults hurt. On the bimodal toy of :mod:`flowzoo.robotics.toy` they succeed less
often and collide more than MP1, and the variant that disperses the down-block features instead succeeds more
often but drops one of the two modes: dispersing the *time* embeddings is DM1's choice, not obviously a good one
at this scale. On Meta-World with a (32, 64) U-Net the summed dispersive term of the defaults sits at its floor,
3·(−log B): all three embeddings (observation features, both time embeddings) are pushed apart until the loss
saturates, the flow error is several times MeanFlow's, and tasks such as drawer-close fail outright. The
ablation ``python -m benchmarks.robotics_dispersive --seeds 0 --rows mf dm1_none dm1_05 dm1_down01`` shows the
defaults far below DM1 without the term, which InfoNCE-L2 at weight 0.1 on the down-block features matches, so
on small networks pass ``dispersive_target="down", dispersive_weight=0.1`` (what ``benchmarks/robotics_metaworld.py``
trains; ``benchmarks/results/robotics_metaworld.json``). The defaults stay DM1's own, tuned for its
(512, 1024, 2048) U-Net.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from flowzoo.core.fewstep import effective_rank, mean_pairwise_distance
from flowzoo.core.errors import ConfigError, expected

__all__ = ["DM1_VARIANTS", "DM1_DEFAULTS", "dm1_config", "representation_health"]

DM1_VARIANTS = ("infonce_l2", "infonce_cosine", "hinge", "covariance", "infonce_l2_dm1", "infonce_cosine_dm1")

DM1_DEFAULTS: dict[str, Any] = {
    "method": "dm1",
    "dispersive": "infonce_l2",
    "dispersive_weight": 0.5,
    "dispersive_target": "embeddings",
    "guidance": "none",
    "guidance_scale": 1.0,
    "sample_steps": 1,
    "adaptive_p": 0.0,
}
"""DM1's Lift settings (``pre_meanflow_dispersive_mlp_img.yaml``); τ is the kind's default (0.5)."""


def dm1_config(variant: str = "infonce_l2", **overrides: Any):
    """A :class:`~flowzoo.robotics.policy.PolicyConfig` for DM1 with the dispersive ``variant``.

    Raises:
        ConfigError: an unknown variant.
    """
    if variant not in DM1_VARIANTS:
        raise ConfigError(expected(f"a DM1 variant in {list(DM1_VARIANTS)}", repr(variant), "pick one of them"))
    from flowzoo.robotics.policy_config import PolicyConfig

    return PolicyConfig(**{**DM1_DEFAULTS, "dispersive": variant, **overrides})


@torch.no_grad()
def representation_health(policy: Any, obs: Mapping[str, Any]) -> dict[str, float]:
    """Effective rank and mean pairwise distance of ``policy``'s observation features.

    Args:
        policy: a :class:`~flowzoo.robotics.policy.FlowPolicy`.
        obs: raw observation histories ``{key: (B, n_obs_steps, ...)}`` (B ≥ 2), e.g. held-out demonstration windows.

    Returns:
        ``{"effective_rank": ..., "mean_pairwise_distance": ..., "feature_dim": ...}``.
    """
    features = policy.obs_encoder(policy.normalize_obs(obs))
    return {"effective_rank": effective_rank(features), "mean_pairwise_distance": mean_pairwise_distance(features),
            "feature_dim": float(features.shape[1])}
