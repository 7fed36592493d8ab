r"""MPPI planning over a learned or nominal dynamics model, and a continual-learning dynamics ensemble.

Used by Action Flow Matching (Mallo et al., RSS 2025, arXiv 2504.18471): the robot plans with MPPI on its
(possibly outdated) dynamics model and the flow corrects the planned action.

**MPPI** (Williams et al., "Information-theoretic MPC", 2017; the filtered-noise form of Nagabandi et al.,
"Deep Dynamics Models for Learning Dexterous Manipulation", arXiv 1909.11652, as in mbrl-lib's
``MPPIOptimizer``). Each call shifts the previous mean plan one step (warm start), then per iteration samples
``population`` noisy sequences whose noise is smoothed along the horizon,

.. math::  a^{(k)}_h = \beta\,(\mu_h + \epsilon^{(k)}_h) + (1 - \beta)\, a^{(k)}_{h-1},\qquad
           \epsilon \sim \mathcal N(0, \sigma^2),\quad a^{(k)}_{-1} = \text{previous executed action},

clips them to the bounds, rolls them through the model, and re-weights by the returns :math:`R = -\text{cost}`:
:math:`\mu_h = \sum_k w_k a^{(k)}_h` with :math:`w_k \propto \exp(\gamma (R_k - \max R))` (γ is the inverse
temperature; a larger γ follows the best samples more closely). The first action of μ is executed.

**Dynamics ensemble** (PETS, Chua et al., arXiv 1805.12114; the AFM code's ``gaussian_mlp``): E Gaussian
MLPs predict the mean and log-variance of the state increment from task features; the log-variance is
soft-clamped into [−10, 0.5] and trained by the Gaussian negative log-likelihood
:math:`\tfrac12\big[(y-\mu)^2 e^{-\log\sigma^2} + \log\sigma^2\big]`. The ensemble predicts the mean of its
members' means. ``fast_learn`` takes one Adam step on the latest transition(s) per environment step — the
continual learning the AFM paper compares against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from flowzoo.core.errors import ConfigError, NonFiniteError, ShapeError, expected
from flowzoo.core.validation import check_number, check_positive_int

__all__ = ["MPPIConfig", "MPPIPlanner", "goal_distance_cost", "GaussianEnsemble", "LearnedDynamics",
           "PlannerController", "run_mission"]

Tensor = torch.Tensor
DynamicsFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class MPPIConfig:
    """MPPI settings (AFM paper: horizon 5, population 1000, 1 iteration, γ 0.9, σ 0.4, β 0.6).

    Attributes:
        horizon: planned steps. population: sampled sequences per iteration (256 is affordable on a CPU).
        iterations: re-weighting rounds per call. gamma: inverse temperature on the returns.
        sigma: noise standard deviation (scalar, in action units). beta: noise smoothing (1: none).
    """

    horizon: int = 5
    population: int = 256
    iterations: int = 1
    gamma: float = 0.9
    sigma: float = 0.4
    beta: float = 0.6

    def __post_init__(self) -> None:
        for name in ("horizon", "population", "iterations"):
            value = getattr(self, name)
            check_positive_int(value, name, fix=f"set {name} >= 1")
        for name, high in (("gamma", None), ("sigma", None), ("beta", 1.0)):
            check_number(getattr(self, name), name, low=0.0, high=high, strict_low=True,
                         fix="see the MPPIConfig docstring")


def goal_distance_cost(position: Callable[[Tensor], Tensor],
                       scale: float = 100.0) -> Callable[[Tensor, Tensor], Tensor]:
    """A cost ``cost(states (B, H, S), goal (2,)) -> (B,)``: ``scale`` × distance to the goal summed over H."""
    def cost(states: Tensor, goal: Tensor) -> Tensor:
        return scale * torch.linalg.vector_norm(position(states) - goal, dim=-1).sum(-1)
    return cost


class MPPIPlanner:
    """Model-predictive path integral control over ``dynamics(states (B, S), actions (B, A)) -> (B, S)``.

    Args:
        dynamics: batched model of one step (learned or nominal).
        cost: ``cost(states (B, H, S), goal) -> (B,)``, e.g. :func:`goal_distance_cost`.
        action_low, action_high: bounds of each action dimension.
        config: :class:`MPPIConfig`. seed: noise seed (planning is deterministic given it).

    Example:
        >>> planner = MPPIPlanner(lambda s, a: s + a, goal_distance_cost(lambda s: s), [-1, -1], [1, 1])
        >>> actions = [planner.plan(torch.zeros(2), torch.tensor([3.0, 0.0])) for _ in range(3)]
        >>> actions[-1][0].item() > 0.9                     # the warm-started plan heads for the goal
        True
    """

    def __init__(self, dynamics: DynamicsFn, cost: Callable[[Tensor, Tensor], Tensor], action_low, action_high,
                 config: MPPIConfig | None = None, seed: int = 0):
        self.dynamics, self.cost = dynamics, cost
        self.config = config or MPPIConfig()
        self.low = torch.as_tensor(np.asarray(action_low, dtype=np.float32))
        self.high = torch.as_tensor(np.asarray(action_high, dtype=np.float32))
        if self.low.dim() != 1 or self.low.shape != self.high.shape or not bool((self.low < self.high).all()):
            raise ConfigError(expected("1-d action_low < action_high of equal length",
                                       (self.low.tolist(), self.high.tolist()), "pass per-dimension bounds"))
        self.action_dim = self.low.shape[0]
        self.generator = torch.Generator().manual_seed(seed)
        self.reset()

    def reset(self) -> None:
        """Forget the warm-start plan (start from the middle of the bounds)."""
        middle = (self.low + self.high) / 2
        self.mean = middle.expand(self.config.horizon, self.action_dim).clone()
        self.previous_action = middle.clone()

    @torch.no_grad()
    def plan(self, state, goal) -> Tensor:
        """One MPPI call from ``state`` (S,) towards ``goal``; returns the action to execute (A,)."""
        state = torch.as_tensor(state, dtype=torch.float32)
        goal = torch.as_tensor(goal, dtype=torch.float32)
        if state.dim() != 1:
            raise ShapeError(expected("one state of shape (S,)", tuple(state.shape), "plan for one state at a time"))
        if not bool(torch.isfinite(state).all()) or not bool(torch.isfinite(goal).all()):
            raise NonFiniteError(expected("a finite state and goal", (state.tolist(), goal.tolist()),
                                          "check the simulator or the observation"))
        cfg = self.config
        self.mean = torch.cat([self.mean[1:], self.mean[-1:]])
        for _ in range(cfg.iterations):
            noise = cfg.sigma * torch.randn(cfg.population, cfg.horizon, self.action_dim, generator=self.generator)
            candidates = torch.empty_like(noise)
            previous = self.previous_action.expand(cfg.population, self.action_dim)
            for h in range(cfg.horizon):
                previous = cfg.beta * (self.mean[h] + noise[:, h]) + (1 - cfg.beta) * previous
                candidates[:, h] = previous
            candidates = torch.maximum(torch.minimum(candidates, self.high), self.low)
            returns = -self.cost(self.rollout(state, candidates), goal)
            returns = torch.nan_to_num(returns, nan=-1e10)
            weights = torch.softmax(cfg.gamma * (returns - returns.max()), dim=0)
            self.mean = (weights[:, None, None] * candidates).sum(0)
        self.previous_action = self.mean[0].clone()
        return self.mean[0].clone()

    def rollout(self, state: Tensor, actions: Tensor) -> Tensor:
        """States (B, H, S) visited by each action sequence (B, H, A) from one start state."""
        states = state.expand(actions.shape[0], state.shape[0])
        visited = []
        for h in range(actions.shape[1]):
            states = self.dynamics(states, actions[:, h])
            visited.append(states)
        return torch.stack(visited, dim=1)


class _EnsembleLinear(nn.Module):
    """E independent linear layers applied in one batched matrix product: (E, B, in) -> (E, B, out)."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class GaussianEnsemble(nn.Module):
    """E Gaussian MLPs (LeakyReLU) giving the mean and soft-clamped log-variance of a target.

    Inputs and targets are standardised with statistics set by :meth:`set_normalizer` (frozen afterwards, as
    the AFM code freezes them for online learning).

    Args:
        in_dim, out_dim: feature and target sizes. members: ensemble size. hidden, layers: MLP width and depth.
        min_logvar, max_logvar: soft bounds of the predicted log-variance (standardised units).
    """

    def __init__(self, in_dim: int, out_dim: int, members: int = 2, hidden: int = 200, layers: int = 3,
                 min_logvar: float = -10.0, max_logvar: float = 0.5):
        super().__init__()
        if min(in_dim, out_dim, members, hidden, layers) < 1:
            raise ConfigError(expected("positive sizes", (in_dim, out_dim, members, hidden, layers),
                                       "pass in_dim, out_dim, members, hidden, layers >= 1"))
        sizes = [in_dim] + [hidden] * layers
        self.hidden_layers = nn.ModuleList(_EnsembleLinear(members, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = _EnsembleLinear(members, hidden, 2 * out_dim)
        self.in_dim, self.out_dim, self.members = in_dim, out_dim, members
        self.min_logvar, self.max_logvar = float(min_logvar), float(max_logvar)
        self.register_buffer("in_mean", torch.zeros(in_dim))
        self.register_buffer("in_std", torch.ones(in_dim))
        self.register_buffer("out_mean", torch.zeros(out_dim))
        self.register_buffer("out_std", torch.ones(out_dim))

    def set_normalizer(self, inputs: Tensor, targets: Tensor) -> None:
        self.in_mean.copy_(inputs.mean(0))
        self.in_std.copy_(inputs.std(0).clamp_min(1e-6))
        self.out_mean.copy_(targets.mean(0))
        self.out_std.copy_(targets.std(0).clamp_min(1e-6))

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Standardised mean and log-variance, each (E, B, out_dim), for inputs (B, in_dim) or (E, B, in_dim)."""
        if inputs.shape[-1] != self.in_dim:
            raise ShapeError(expected(f"inputs with {self.in_dim} features", tuple(inputs.shape),
                                      "build the inputs with the task's model_input"))
        h = (inputs - self.in_mean) / self.in_std
        if h.dim() == 2:
            h = h.expand(self.members, *h.shape)
        for layer in self.hidden_layers:
            h = nn.functional.leaky_relu(layer(h))
        mean, raw_logvar = self.head(h).chunk(2, dim=-1)
        logvar = self.max_logvar - nn.functional.softplus(self.max_logvar - raw_logvar)
        logvar = self.min_logvar + nn.functional.softplus(logvar - self.min_logvar)
        return mean, logvar

    def predict(self, inputs: Tensor) -> Tensor:
        """Mean prediction of the target in its own units: the average of the members' means."""
        mean, _ = self(inputs)
        return mean.mean(0) * self.out_std + self.out_mean

    def nll(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """Gaussian negative log-likelihood averaged over members, samples and dimensions."""
        mean, logvar = self(inputs)
        scaled = (targets - self.out_mean) / self.out_std
        return 0.5 * (((mean - scaled) ** 2) * torch.exp(-logvar) + logvar).mean()


class LearnedDynamics:
    """A :class:`GaussianEnsemble` turned into a one-step model ``dynamics(states, actions) -> next states``.

    The task adapters say what the model sees and predicts: ``model_input(states, actions)`` (features),
    ``state_error(states, next_states)`` (the increment it learns; angles wrapped) and
    ``apply_delta(states, delta)``. Both :class:`~flowzoo.robotics.afm.sim.UnicycleTask` and
    :class:`~flowzoo.robotics.afm.sim.PointMassTask` provide them.

    Args:
        ensemble: the network. task: an object with the three adapters. lr: Adam learning rate.
    """

    def __init__(self, ensemble: GaussianEnsemble, task, lr: float = 1e-3):
        self.ensemble, self.task = ensemble, task
        self.optimizer = torch.optim.Adam(ensemble.parameters(), lr=lr)
        self.loss_history: list[float] = []

    @torch.no_grad()
    def __call__(self, states: Tensor, actions: Tensor) -> Tensor:
        delta = self.ensemble.predict(self.task.model_input(states, actions))
        return self.task.apply_delta(states, delta)

    def _batch(self, states, actions, next_states) -> tuple[Tensor, Tensor]:
        states, actions, next_states = (torch.as_tensor(x, dtype=torch.float32) for x in (states, actions, next_states))
        if states.dim() == 1:
            states, actions, next_states = states[None], actions[None], next_states[None]
        if states.shape[0] != actions.shape[0] or states.shape != next_states.shape or actions.dim() != 2:
            raise ShapeError(expected("states (B, S), actions (B, A), next_states (B, S)",
                                      (tuple(states.shape), tuple(actions.shape), tuple(next_states.shape)),
                                      "pass matching batches of transitions"))
        if not all(bool(torch.isfinite(x).all()) for x in (states, actions, next_states)):
            raise NonFiniteError(expected("finite transitions", "NaN or Inf", "drop the broken transitions"))
        return self.task.model_input(states, actions), self.task.state_error(states, next_states)

    def fit(self, states, actions, next_states, *, steps: int = 2000, batch_size: int = 256, seed: int = 0,
            progress: bool = False) -> float:
        """Pre-train on a transition data set (sets the normaliser); returns the last NLL."""
        inputs, targets = self._batch(states, actions, next_states)
        self.ensemble.set_normalizer(inputs, targets)
        generator = torch.Generator().manual_seed(seed)
        loss = torch.tensor(float("nan"))
        for _ in tqdm(range(steps), desc="dynamics pre-training", disable=not progress, leave=False):
            index = torch.randint(0, inputs.shape[0], (self.ensemble.members, batch_size), generator=generator)
            loss = self.ensemble.nll(inputs[index], targets[index])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    def fast_learn(self, states, actions, next_states) -> float:
        """One Adam step on the given (latest) transition(s); the normaliser stays frozen."""
        inputs, targets = self._batch(states, actions, next_states)
        loss = self.ensemble.nll(inputs, targets)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.loss_history.append(float(loss.detach()))
        return self.loss_history[-1]


class PlannerController:
    """The baselines of the AFM paper: MPPI alone, optionally re-fitting its learned model online.

    Args:
        planner: an :class:`MPPIPlanner`. learner: the planner's :class:`LearnedDynamics` to update with
            ``fast_learn`` after every step (None: plan with the model as it is, e.g. misaligned).
        window: how many latest transitions each ``fast_learn`` step uses.
    """

    def __init__(self, planner: MPPIPlanner, learner: LearnedDynamics | None = None, window: int = 16):
        if window < 1:
            raise ConfigError(expected("window >= 1", window, "use e.g. 16 latest transitions"))
        self.planner, self.learner, self.window = planner, learner, int(window)
        self._transitions: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self.planner.reset()
        self._transitions, self._pending = [], None

    def act(self, state, goal) -> np.ndarray:
        action = self.planner.plan(torch.as_tensor(np.asarray(state), dtype=torch.float32), goal).numpy()
        self._pending = (np.asarray(state, dtype=np.float64), action.astype(np.float64))
        return self._pending[1]

    def observe(self, next_state) -> None:
        if self._pending is None:
            raise ConfigError(expected("act() before observe()", "observe() without a pending action",
                                       "call act(state, goal) first"))
        if self.learner is not None:
            self._transitions = (self._transitions + [(*self._pending, np.asarray(next_state, dtype=np.float64))])
            self._transitions = self._transitions[-self.window:]
            states, actions, next_states = (np.stack(x) for x in zip(*self._transitions))
            self.learner.fast_learn(states, actions, next_states)
        self._pending = None


def run_mission(task, controller, *, progress: bool = False, desc: str = "mission"):
    """Drive ``task`` with ``controller`` (``act(state, goal)`` / ``observe(next_state)``) until it is done.

    Returns the task's :class:`~flowzoo.robotics.afm.sim.MissionResult`.
    """
    bar = tqdm(total=task.max_steps, desc=desc, disable=not progress, leave=False)
    state = task.state.copy()
    while not task.done:
        action = controller.act(state, task.goal)
        state = task.step(action)
        controller.observe(state)
        bar.update(1)
    bar.close()
    return task.result()
