"""BOSS (arXiv 2312.16414): cost matrix, Bellman DP, step sizes on a trained 2-D model, redress fine-tune.

Calibration (seed 0, 8gaussians -> moons, MLPVelocity(2, 64, 3), 1500 Adam steps; MSE to the 100-step RK4
endpoint on 1000 fixed source points): MSE BOSS vs uniform 2.52 / 4.65 (K=2), 1.27 / 1.78 (K=3),
0.68 / 1.33 (K=4); W2 1.42 / 1.72, 1.01 / 1.24, 0.79 / 1.03; the reversed grid (the t = 1 -> noise
convention mistake) 6.00, 4.50, 1.38. Redress at K = 2 (150 steps): MSE to the fine solve 2.43 -> 0.10.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from flowzoo.core.fewstep import (BossStraighteningLoss, bellman_steps, boss_cost_matrix, boss_redress_states,
                               boss_time_grid)
from flowzoo.core.data import sample_toy
from flowzoo.core.errors import FlowzooError
from flowzoo.core.analysis import wasserstein2
from flowzoo.core.sampling import integrate
from toy_training import train_fm_moons


def _brute_force(cost: torch.Tensor, num_steps: int) -> float:
    last = cost.shape[0] - 1
    best = float("inf")
    for interior in itertools.combinations(range(1, last), num_steps - 1):
        path = (0, *interior, last)
        best = min(best, sum(float(cost[a, b]) for a, b in zip(path[:-1], path[1:])))
    return best


def _path_cost(cost: torch.Tensor, path: list[int]) -> float:
    return sum(float(cost[a, b]) for a, b in zip(path[:-1], path[1:]))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("num_steps", [1, 2, 3])
def test_dp_equals_brute_force_on_random_costs(seed, num_steps):
    gen = torch.Generator().manual_seed(seed)
    cost = torch.triu(torch.rand(9, 9, generator=gen, dtype=torch.float64), 1)
    cost = cost + torch.tril(torch.full_like(cost, float("inf")))
    path = bellman_steps(cost, num_steps)
    assert path[0] == 0 and path[-1] == 8 and len(path) == num_steps + 1
    assert all(a < b for a, b in zip(path[:-1], path[1:]))
    assert _path_cost(cost, path) == pytest.approx(_brute_force(cost, num_steps), abs=1e-12)


def test_cost_matrix_matches_hand_computation_for_linear_field():
    a, steps = -0.7, 10
    x0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    cost, grid = boss_cost_matrix(lambda x, t: a * x, x0, fine_steps=steps)
    h = 1.0 / steps
    energy = float(x0.square().sum(1).mean())
    assert torch.allclose(grid, torch.linspace(0, 1, steps + 1, dtype=torch.float64))
    for i in range(steps + 1):
        for j in range(steps + 1):
            if j <= i:
                assert cost[i, j] == float("inf")
                continue
            jump = (1 + a * h) ** i * (1 + a * (j - i) * h) - (1 + a * h) ** j  # Euler reference is geometric
            assert float(cost[i, j]) == pytest.approx(jump ** 2 * energy, rel=1e-9, abs=1e-14)
    assert float(cost[0, 1]) == pytest.approx(0.0, abs=1e-14)  # one fine step is the reference itself


def test_bad_inputs_raise():
    good = torch.triu(torch.ones(5, 5), 1)
    with pytest.raises(FlowzooError):
        bellman_steps(good, 5)                          # more jumps than fine steps
    with pytest.raises(FlowzooError):
        bellman_steps(good, 0)
    with pytest.raises(FlowzooError):
        bellman_steps(torch.ones(4, 5), 2)
    bad = good.clone()
    bad[0, 2] = float("nan")
    with pytest.raises(FlowzooError):
        bellman_steps(bad, 2)
    with pytest.raises(FlowzooError):
        boss_cost_matrix(lambda x, t: x, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(FlowzooError):
        boss_cost_matrix(lambda x, t: x, torch.zeros(0, 2))
    with pytest.raises(FlowzooError):
        boss_cost_matrix(lambda x, t: x, torch.zeros(3, 2), fine_steps=0)
    with pytest.raises(FlowzooError):
        boss_cost_matrix(lambda x, t: x[:, :1], torch.zeros(3, 2))
    with pytest.raises(FlowzooError):
        BossStraighteningLoss(lambda x, t: x, torch.tensor([0.0, 0.6, 0.4, 1.0]))
    with pytest.raises(FlowzooError):
        boss_redress_states(lambda x, t: x, torch.zeros(3, 2), [0.0, 1.0], method="dopri5")


# ----------------------------------------------------------------------------------------- trained model

def _train(steps: int = 1500, seed: int = 0) -> torch.nn.Module:
    return train_fm_moons(steps, seed).requires_grad_(False)


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model = _train()
    x0 = sample_toy("8gaussians", 1000, seed=11)
    reference = integrate(model, x0, method="rk4", steps=100).x
    cost, grid = boss_cost_matrix(model, sample_toy("8gaussians", 500, seed=3), fine_steps=100)
    return {"model": model, "x0": x0, "x1": sample_toy("moons", 1000, seed=12), "reference": reference,
            "cost": cost, "grid": grid}


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).square().sum(1).mean())


def test_dp_equals_brute_force_on_a_real_cost_matrix(setup):
    cost, _ = boss_cost_matrix(setup["model"], setup["x0"][:200], fine_steps=24)
    for num_steps in (2, 3):
        assert _path_cost(cost, bellman_steps(cost, num_steps)) == pytest.approx(_brute_force(cost, num_steps),
                                                                                 rel=1e-12)


@pytest.mark.parametrize("num_steps", [2, 3, 4])
def test_boss_steps_beat_uniform_steps(setup, num_steps):
    model, x0, ref = setup["model"], setup["x0"], setup["reference"]
    grid = setup["grid"][bellman_steps(setup["cost"], num_steps)]
    boss = integrate(model, x0, time_grid=grid)
    uniform = integrate(model, x0, steps=num_steps)
    assert boss.nfe == uniform.nfe == num_steps
    mse_boss, mse_uniform = _mse(boss.x, ref), _mse(uniform.x, ref)
    w2_boss, w2_uniform = wasserstein2(boss.x, setup["x1"]), wasserstein2(uniform.x, setup["x1"])
    print(f"K={num_steps} grid={[round(v, 2) for v in grid.tolist()]} mse boss {mse_boss:.4f} uniform "
          f"{mse_uniform:.4f}  W2 boss {w2_boss:.3f} uniform {w2_uniform:.3f}")
    assert mse_boss < 0.8 * mse_uniform
    assert w2_boss < w2_uniform


@pytest.mark.parametrize("num_steps", [2, 3, 4])
def test_flipped_grid_loses(setup, num_steps):
    """The known bug: steps chosen in the t = 1 -> noise convention and used as-is (grid reversed, 1 − t)."""
    model, x0, ref = setup["model"], setup["x0"], setup["reference"]
    grid = setup["grid"][bellman_steps(setup["cost"], num_steps)]
    flipped = 1.0 - grid.flip(0)
    mse_boss = _mse(integrate(model, x0, time_grid=grid).x, ref)
    mse_flipped = _mse(integrate(model, x0, time_grid=flipped).x, ref)
    print(f"K={num_steps} mse boss {mse_boss:.4f} flipped {mse_flipped:.4f}")
    assert mse_flipped > 1.5 * mse_boss


def test_boss_time_grid_is_ready_for_integrate(setup):
    grid = boss_time_grid(setup["model"], setup["x0"][:100], num_steps=3, fine_steps=50)
    assert grid.shape == (4,) and float(grid[0]) == 0.0 and float(grid[-1]) == 1.0
    assert integrate(setup["model"], setup["x0"][:10], time_grid=grid).nfe == 3


def test_redress_states_reproduce_the_reference(setup):
    idx = bellman_steps(setup["cost"], 3)
    x0 = setup["x0"][:50]
    states = boss_redress_states(setup["model"], x0, setup["grid"][idx], fine_steps=100)
    fine = integrate(setup["model"], x0, steps=100, return_trajectory=True).trajectory
    assert torch.allclose(states, fine[idx], atol=1e-5)


def test_redress_finetune_straightens_the_boss_steps(setup):
    teacher = setup["model"]
    grid = setup["grid"][bellman_steps(setup["cost"], 2)]
    x0 = setup["x0"]
    target = integrate(teacher, x0, steps=100).x                      # the teacher's fine solve
    before = _mse(integrate(teacher, x0, time_grid=grid).x, target)
    student = copy.deepcopy(teacher).requires_grad_(True).train()
    objective = BossStraighteningLoss(teacher, grid, fine_steps=100)
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(5)
    for _ in range(150):
        batch = {"x0": sample_toy("8gaussians", 128, generator=gen), "x1": torch.zeros(128, 2)}
        loss, metrics = objective(student, batch, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.eval()
    with torch.no_grad():
        after = _mse(integrate(student, x0, time_grid=grid).x, target)
    print(f"redress K=2: mse to the fine solve {before:.4f} -> {after:.4f}")
    assert after < 0.5 * before


def test_precomputed_trajectory_batch_gives_the_same_loss_without_calling_the_teacher(setup):
    """A redress bank (paper Alg. 2: redress data generated once) must give exactly the on-the-fly loss."""
    teacher = setup["model"]
    grid = setup["grid"][bellman_steps(setup["cost"], 3)]
    x0 = setup["x0"][:64]
    objective = BossStraighteningLoss(teacher, grid, fine_steps=100)
    on_the_fly, _ = objective(teacher, {"x0": x0, "x1": torch.zeros_like(x0)},
                              generator=torch.Generator().manual_seed(3))
    bank = boss_redress_states(teacher, x0, grid, fine_steps=100).movedim(0, 1)
    calls = []

    def counting_teacher(x, t):
        calls.append(1)
        return teacher(x, t)

    banked = BossStraighteningLoss(counting_teacher, grid, fine_steps=100)
    from_bank, _ = banked(teacher, {"trajectory": bank}, generator=torch.Generator().manual_seed(3))
    assert float(from_bank) == pytest.approx(float(on_the_fly), rel=1e-6)
    assert not calls


def test_trajectory_batch_with_the_wrong_number_of_times_raises():
    objective = BossStraighteningLoss(lambda x, t: x, [0.0, 0.5, 1.0])
    with pytest.raises(FlowzooError, match="trajectory"):
        objective(lambda x, t: x, {"trajectory": torch.zeros(4, 2, 2)})       # 2 times for a 3-time grid
    with pytest.raises(FlowzooError):
        objective(lambda x, t: x, {"trajectory": torch.zeros(4, 3)})          # no feature dimension
