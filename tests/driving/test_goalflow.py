"""GoalFlow: the scorers and the fallback on hand-made cases, the loss, and two small learning tests."""

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.driving.baselines import ConstantVelocityPlanner
from flowzoo.driving.data import generate_scenes
from flowzoo.driving.goalflow import (GoalFlowConfig, GoalFlowLoss, GoalFlowModel, GoalFlowPlanner, planner_inputs,
                                      select_goals, shadow_fallback, trajectory_scores)
from flowzoo.driving.vocabulary import build_vocabulary, dac_targets
from flowzoo.driving.geometry import polygon_from_vertices

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes(24, seed=3)


def straight(length: float, lateral: float = 0.0) -> torch.Tensor:
    poses = torch.zeros(8, 3)
    poses[:, 0] = torch.linspace(length / 8, length, 8)
    poses[:, 1] = lateral
    return poses


def test_trajectory_scores_hand_computed():
    # Three samples, goal at (20, 0): ends 20 (on goal, length 20), 30 (10 m off, length 30), (20, 4) (4 m off).
    samples = torch.stack([straight(20.0), straight(30.0), straight(20.0, lateral=4.0)])[None]
    goal = torch.tensor([[20.0, 0.0, 0.0]])
    length = torch.tensor([20.0, 30.0, 20.0 + float(np.hypot(2.5, 4.0)) - 2.5])
    distance = torch.tensor([0.0, 10.0, 4.0])
    phi = lambda v: (v - v.min()) / (v.max() - v.min())  # noqa: E731
    expected = -1.0 * phi(distance) + 0.5 * phi(length)
    scores = trajectory_scores(samples, goal, lambda_dis=1.0, lambda_progress=0.5)
    assert torch.allclose(scores[0], expected, atol=1e-5)
    assert scores[0].argmax() == 0  # on the goal beats farther but off-goal
    # Progress alone prefers the longest plan; equal samples score 0 (min-max of a constant).
    assert trajectory_scores(samples, goal, lambda_dis=0.0, lambda_progress=1.0)[0].argmax() == 1
    assert torch.equal(trajectory_scores(samples[:, :1].repeat(1, 3, 1, 1), goal), torch.zeros(1, 3))


def test_select_goals_weights():
    distance = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    dac = torch.logit(torch.tensor([[0.05, 0.99, 0.99]]))
    assert select_goals(distance, dac, w_dis=1.0, w_dac=0.0)[0].item() == 0  # distance only: M1
    assert select_goals(distance, dac, w_dis=0.1, w_dac=3.0)[0].item() == 1  # the code's weights: DAC dominates
    index, scores = select_goals(distance, dac, w_dis=1.0, w_dac=1.0)
    assert torch.allclose(scores, torch.log(torch.tensor([[0.6 * 0.05, 0.3 * 0.99, 0.1 * 0.99]])), atol=1e-5)
    assert index.item() == 1


def test_shadow_fallback_uses_shadow_only_for_unreliable_goals():
    chosen = torch.stack([straight(30.0), straight(30.0)])
    shadow = torch.stack([straight(30.0), straight(30.0, lateral=0.3)])[None].repeat(2, 1, 1, 1)
    goals = torch.tensor([[30.0, 0.5, 0.0], [30.0, 20.0, 0.0]])  # near a shadow end; 20 m off every shadow end
    plans, used = shadow_fallback(chosen + 1.0, shadow, goals, threshold=0.2)
    assert used.tolist() == [False, True]
    assert torch.equal(plans[0], chosen[0] + 1.0)
    assert torch.allclose(plans[1], shadow[1].mean(0))
    # The ratio uses the closest shadow sample: 20 m / 30 m ≈ 0.67 is below a threshold of 0.7.
    assert shadow_fallback(chosen, shadow, goals, threshold=0.7)[1].tolist() == [False, False]


def test_planner_inputs_accept_scene_arrays_and_dataset_batches(scenes):
    from flowzoo.driving.data import SceneDataset, scene_arrays

    one = planner_inputs(scene_arrays(scenes, 0))
    assert one["bev"].shape == (1, 4, 64, 64) and one["bev"].max() <= 1.0 and one["truth"].shape == (1, 8, 3)
    batch = torch.utils.data.default_collate([SceneDataset(scenes)[i] for i in range(3)])
    inputs = planner_inputs(batch)
    assert torch.allclose(inputs["bev"][0], one["bev"][0]) and inputs["command"].dtype == torch.long
    with pytest.raises(ConfigError, match="bev"):
        planner_inputs({"x1": torch.zeros(1, 8, 3)})


def tiny_model(vocabulary, **overrides):
    cfg = GoalFlowConfig(**{"dim": 32, "scorer_dim": 16, "heads": 2, "scorer_layers": 1, "flow_layers": 2,
                            "vocab_size": len(vocabulary), **overrides})
    return GoalFlowModel(cfg, horizon=8, channels=4, size=64, vocabulary=vocabulary)


def batch_of(scenes, index, vocabulary):
    polygons = [polygon_from_vertices(ring[~np.isnan(ring).any(-1)]) for ring in scenes["drivable"][index]]
    x1 = torch.as_tensor(scenes["trajectory"][index])
    return {"x1": x1, "bev": torch.as_tensor(scenes["bev"][index]).float() / 255,
            "ego_state": torch.as_tensor(scenes["ego_state"][index]),
            "command": torch.as_tensor(scenes["command"][index].astype(np.int64)), "goal": x1[:, -1],
            "dac_target": dac_targets(vocabulary, polygons)}


def fit(model, batch, steps, lr=3e-3):
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn, metrics = GoalFlowLoss(), {}
    for _ in range(steps):
        loss, metrics = loss_fn(model, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return metrics


def test_loss_returns_finite_parts_and_rejects_bad_shapes(scenes):
    vocabulary = build_vocabulary(scenes["trajectory"][:, -1], 8)
    model = tiny_model(vocabulary)
    loss, metrics = GoalFlowLoss()(model, batch_of(scenes, np.arange(4), vocabulary))
    assert torch.isfinite(loss) and set(metrics) >= {"flow_l1", "goal_ce", "dac_bce", "top1_goal_m"}
    with pytest.raises(ShapeError):
        GoalFlowModel(GoalFlowConfig(), horizon=8, channels=4, size=64, vocabulary=torch.zeros(0, 3))
    with pytest.raises(ShapeError, match="bev"):
        GoalFlowPlanner(model).plan({"bev": np.zeros((1, 3, 64, 64), np.uint8), "ego_state": np.zeros((1, 3))})
    with pytest.raises(ConfigError, match="variant"):
        GoalFlowPlanner(model).plan(scenes, variant="M9")
    with pytest.raises(ConfigError, match="gt_goal"):
        GoalFlowPlanner(model).plan({k: scenes[k] for k in ("bev", "ego_state", "command")}, variant="gt_goal")
    with pytest.raises(ConfigError):
        GoalFlowConfig(sigma=0.0)


def test_tiny_goalflow_overfits_one_scene(scenes):
    """Trained on one scene, the goal-conditioned flow's 1-step plan lands on the expert's (a model with the
    wrong velocity target or ignoring its goal cannot: the untrained plan is metres away)."""
    vocabulary = torch.as_tensor(scenes["trajectory"][:4, -1])
    model = tiny_model(vocabulary, p_drop_goal=0.0, p_drop_scene=0.0)
    batch = batch_of(scenes, np.zeros(16, dtype=int), vocabulary)
    planner = GoalFlowPlanner(model, n_samples=8, shadow_threshold=None)
    truth = torch.as_tensor(scenes["trajectory"][0])
    before = (planner.plan(batch, variant="gt_goal").trajectory[0] - truth)[:, :2].norm(dim=-1).mean()
    fit(model, batch, 200)
    for steps in (1, 5):
        plan = planner.plan({k: v[:1] for k, v in batch.items()}, variant="gt_goal", steps=steps,
                            generator=torch.Generator().manual_seed(0))
        error = (plan.samples[0] - truth)[..., :2].norm(dim=-1)  # (samples, poses), metres
        assert error.mean(1).max() < 0.6, (steps, error)  # every sample, not only their mean
    assert before > 3.0


def test_goal_scorer_learns_top1_goal_near_truth(scenes):
    """After a short fit on 24 scenes the scorer's top-1 goal lies within a few metres of the expert's end pose
    (a random pick from the vocabulary is about 15 m off)."""
    vocabulary = build_vocabulary(scenes["trajectory"][:, -1], 16)
    model = tiny_model(vocabulary)
    batch = batch_of(scenes, np.arange(len(scenes["bev"])), vocabulary)
    random_pick = (vocabulary[:, None, :2] - batch["goal"][None, :, :2]).norm(dim=-1).mean()
    metrics = fit(model, batch, 200)
    plan = GoalFlowPlanner(model, n_samples=4).plan(batch, variant="M1")
    top1 = (plan.goal[:, :2] - batch["goal"][:, :2]).norm(dim=-1)
    assert top1.mean() < 0.3 * random_pick and top1.mean() < 4.0, (top1.mean(), random_pick, metrics)


def test_constant_velocity_hand_computed():
    plan = ConstantVelocityPlanner().plan({"bev": np.zeros((1, 4, 64, 64), np.uint8),
                                           "ego_state": np.array([[10.0, 0.0, 0.0]])})
    assert torch.allclose(plan.trajectory[0, :, 0], 5.0 * torch.arange(1, 9, dtype=torch.float32))
    assert plan.trajectory[0, :, 1:].abs().max() == 0 and plan.samples.shape == (1, 1, 8, 3)


@pytest.mark.parametrize("kind", ["ego_mlp", "regressor"])
def test_regression_baselines_learn(scenes, kind):
    """A short fit on 24 scenes brings the baselines' plans within a few metres of the expert's (the untrained
    networks are off by the whole plan length)."""
    from flowzoo.driving.baselines import EgoMLP, RegressionLoss, RegressionPlanner, TrajectoryRegressor

    torch.manual_seed(0)
    model = EgoMLP(dim=64) if kind == "ego_mlp" else TrajectoryRegressor(channels=4, size=64, dim=16, heads=2)
    batch = {k: v for k, v in batch_of(scenes, np.arange(24), torch.zeros(1, 3)).items()
             if k in ("x1", "bev", "ego_state", "command")}
    def error():
        return (RegressionPlanner(model).plan(batch).trajectory - batch["x1"])[..., :2].norm(dim=-1).mean()

    before = error()
    optimiser = torch.optim.Adam(model.train().parameters(), lr=3e-3)
    for _ in range(150):
        loss, _ = RegressionLoss()(model, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = error()
    assert after < 0.25 * before and after < 3.0, (before, after)
