"""The options of a flow policy: :class:`PolicyConfig`, with each method's defaults.

``method`` picks the training objective (``fm``: the multi-step flow-matching policy; ``meanflow``: MeanFlow without
dispersive loss; ``mp1``: MP1, arXiv 2507.10543; ``dm1``: DM1's dispersive variants). The method-dependent fields
stay ``"auto"`` / None until :meth:`PolicyConfig.resolved` fills them from :data:`_METHOD_DEFAULTS`, which is what
:class:`~flowzoo.robotics.policy.FlowPolicy` does when it is built. The command line
(:func:`flowzoo.robotics.train.method_config_class`) starts from its method's resolved values instead, so its
``--help`` and the run's ``config.yaml`` show the values that run.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from flowzoo.core.config import config_from_dict, config_to_dict, option_help, validate_config
from flowzoo.core.fewstep import DISPERSIVE_KINDS
from flowzoo.core.errors import ConfigError, expected

__all__ = ["PolicyConfig", "METHODS", "DISPERSIVE_TARGETS", "MP1_TIME_MEAN"]

MP1_TIME_MEAN = 0.4
"""MP1's logit-normal mean −0.4 (data at 0) read in flowzoo time (data at 1); the default ``time_mean`` of every
MeanFlow-family policy. It lives here, with the other per-method defaults, so that :mod:`flowzoo.robotics.mp1`
can build a :class:`PolicyConfig` without an import cycle."""

METHODS = ("fm", "meanflow", "mp1", "dm1")
DISPERSIVE_TARGETS = ("down", "mid", "embeddings")
_AUTO = "auto"

# Per-method values of the fields left "auto" (strings) or None (numbers); they agree with mp1.MP1_DEFAULTS and
# dm1.DM1_DEFAULTS (tested). ``dispersive`` None is an explicit "no dispersive loss", hence its own "auto".
_METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "fm": dict(dispersive=None, guidance="none", guidance_scale=1.0, dispersive_target="down", sample_steps=10,
               adaptive_p=0.5),
    "meanflow": dict(dispersive=None, guidance="none", guidance_scale=1.0, dispersive_target="down", sample_steps=1,
                     adaptive_p=0.5),
    "mp1": dict(dispersive="mp1", guidance="mp1", guidance_scale=2.0, dispersive_target="down", sample_steps=1,
                adaptive_p=0.5),
    "dm1": dict(dispersive="infonce_l2", guidance="none", guidance_scale=1.0, dispersive_target="embeddings",
                sample_steps=1, adaptive_p=0.0),
}
_UNSET: dict[str, Any] = dict(dispersive=_AUTO, guidance=_AUTO, dispersive_target=_AUTO, guidance_scale=None,
                              sample_steps=None, adaptive_p=None)


@dataclass
class PolicyConfig:
    """Options of a :class:`FlowPolicy`.

    The method-dependent fields (``dispersive``, ``dispersive_target``, ``guidance``: ``"auto"``;
    ``guidance_scale``, ``sample_steps``, ``adaptive_p``: None) stay unresolved in the config, so that changing
    ``method`` later (``dataclasses.replace``, a ``--policy.method`` override) still yields that method's
    defaults. :meth:`resolved` fills them in; a :class:`FlowPolicy` resolves its config when it is built, and its
    ``policy.config`` and its checkpoints hold the resolved values. The config is validated on creation as if
    resolved.
    """

    method: Literal["fm", "meanflow", "mp1", "dm1"] = field(default="fm", metadata=option_help("training method"))
    n_obs_steps: int = field(default=2, metadata=option_help("observation history length"))
    horizon: int = field(default=4, metadata=option_help("actions per predicted chunk"))
    n_action_steps: int = field(default=4, metadata=option_help("actions of each chunk executed before replanning"))
    sample_steps: int | None = field(default=None, metadata=option_help("sampling steps (NFE); none: 10 for fm, 1 otherwise"))
    down_dims: tuple[int, ...] = field(default=(64, 128, 256), metadata=option_help("U-Net channels per level"))
    kernel_size: int = field(default=5, metadata=option_help("U-Net temporal kernel"))
    n_groups: int = field(default=8, metadata=option_help("GroupNorm groups"))
    time_dim: int = field(default=64, metadata=option_help("time embedding size"))
    time_scale: float = field(default=1.0, metadata=option_help("time multiplier of the sinusoidal embedding (MP1: 1)"))
    point_dim: int = field(default=64, metadata=option_help("point-cloud feature size per step"))
    state_dim: int = field(default=64, metadata=option_help("state feature size per key and step"))
    state_hidden: tuple[int, ...] = field(default=(64,), metadata=option_help("hidden widths of the state MLPs"))
    dispersive: str | None = field(default=_AUTO, metadata=option_help(f"dispersive loss kind {DISPERSIVE_KINDS} or none"))
    dispersive_weight: float = field(default=0.5, metadata=option_help("weight of the dispersive loss"))
    dispersive_temperature: float | None = field(default=None, metadata=option_help("tau; none: the kind's default"))
    dispersive_target: str = field(default=_AUTO, metadata=option_help(f"features for the dispersive loss {DISPERSIVE_TARGETS}"))
    guidance: str = field(default=_AUTO, metadata=option_help("none | cfg (condition dropout) | mp1 (MP1's target)"))
    guidance_scale: float | None = field(default=None, metadata=option_help("omega; none: 2 for mp1, else 1"))
    cond_dropout: float = field(default=0.0, metadata=option_help("probability of training with the null condition (cfg)"))
    null_cond: Literal["learned", "zeros"] = field(default="learned", metadata=option_help("null observation features for cfg"))
    time_mean: float = field(default=MP1_TIME_MEAN, metadata=option_help("logit-normal mean of MeanFlow times (flowzoo time)"))
    time_std: float = field(default=1.0, metadata=option_help("logit-normal std of MeanFlow times"))
    distinct_fraction: float = field(default=0.5, metadata=option_help("fraction of MeanFlow pairs with s < t"))
    adaptive_p: float | None = field(default=None, metadata=option_help("MeanFlow adaptive-weight power p (0: plain MSE); "
                                                                "none: 0 for dm1, else 0.5 (MP1)"))
    adaptive_c: float = field(default=1e-3, metadata=option_help("MeanFlow adaptive-weight offset c"))
    derivative: Literal["jvp", "finite_difference"] = field(default="jvp", metadata=option_help("MeanFlow du/ds"))
    clip_sample: bool = field(default=True, metadata=option_help("clamp the normalised chunk to [-1, 1] before un-normalising"))

    def __post_init__(self) -> None:
        if isinstance(self.down_dims, list):
            self.down_dims = tuple(self.down_dims)
        if isinstance(self.state_hidden, list):
            self.state_hidden = tuple(self.state_hidden)
        validate_config(self)
        self.resolved()  # refuse a bad combination now, not when the policy is built

    def resolved(self) -> "PolicyConfig":
        """A copy with every ``"auto"`` / None field replaced by ``method``'s default, checked.

        Raises:
            ConfigError: an unknown method or an invalid combination of options.
        """
        if self.method not in METHODS:
            raise ConfigError(expected(f"method in {list(METHODS)}", repr(self.method), "pick one of them"))
        out = copy.copy(self)  # no __post_init__: a resolved config must not resolve again
        for name, value in _METHOD_DEFAULTS[self.method].items():
            if getattr(out, name) == _UNSET[name]:
                setattr(out, name, value)
        out._check()
        return out

    @property
    def is_resolved(self) -> bool:
        """True when no method-dependent field is left "auto" / None (what :meth:`resolved` returns)."""
        return all(getattr(self, name) != unset for name, unset in _UNSET.items())

    def _check(self) -> None:
        def need(ok: bool, name: str, want: str, fix: str) -> None:
            if not ok:
                raise ConfigError(expected(f"policy option {name} {want}", repr(getattr(self, name)), fix))

        for name in ("n_obs_steps", "horizon", "n_action_steps", "sample_steps"):
            need(getattr(self, name) >= 1, name, "at least 1", f"pass --{name} 1 or more")
        need(self.n_action_steps <= self.horizon, "n_action_steps", f"at most horizon={self.horizon}",
             "execute at most the actions a chunk holds")
        need(self.dispersive is None or self.dispersive in DISPERSIVE_KINDS, "dispersive",
             f"in {list(DISPERSIVE_KINDS)} or none", "pick a listed kind")
        need(self.dispersive_target in DISPERSIVE_TARGETS, "dispersive_target", f"in {list(DISPERSIVE_TARGETS)}",
             "pick a listed target")
        need(self.guidance in ("none", "cfg", "mp1"), "guidance", "in ['none', 'cfg', 'mp1']", "pick one")
        need(not (self.guidance == "mp1" and self.method == "fm"), "guidance",
             "not 'mp1' for method fm (MP1's target is a MeanFlow target)", "use guidance 'cfg' or a MeanFlow method")
        need(0.0 <= self.cond_dropout < 1.0, "cond_dropout", "in [0, 1)", "use e.g. 0.1")
        need(self.cond_dropout == 0.0 or self.guidance == "cfg", "cond_dropout",
             "0 unless guidance is 'cfg' (only CFG trains a null condition)", "pass --guidance cfg or drop it")
        need(not (self.guidance == "cfg" and self.guidance_scale != 1.0 and self.cond_dropout == 0.0), "cond_dropout",
             "> 0 with guidance 'cfg' (the null branch must be trained)", "pass e.g. --cond_dropout 0.1")
        need(math.isfinite(self.guidance_scale), "guidance_scale", "finite", "use e.g. 2.0")
        need(self.dispersive_weight >= 0 and math.isfinite(self.dispersive_weight), "dispersive_weight",
             "finite and >= 0", "use e.g. 0.5")
        need(0.0 <= self.distinct_fraction <= 1.0, "distinct_fraction", "in [0, 1]", "use 0.5 (MP1)")

    @property
    def is_meanflow(self) -> bool:
        return self.method != "fm"

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PolicyConfig":
        return config_from_dict(cls, data)
