"""SCOOP (arXiv 2211.14020): Sinkhorn marginals by hand, convex soft correspondences, refinement, learning on
generated scenes, the scene-flow command and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowzoo.core.cli import run_main
from flowzoo.core.errors import ConfigError, EmptyInputError, NonFiniteError, ShapeError
from flowzoo.core.training import TrainerConfig
from flowzoo.three_d.cli_scene_flow import scene_flow_main
from flowzoo.three_d.io import write_point_cloud
from flowzoo.three_d.metrics import scene_flow_metrics
from flowzoo.three_d.scoop import (SCOOPLoss, check_scan_pair, estimate_flow, flow_smoothness, load_scoop,
                                   make_scene_set, refine_flow, train_scoop)
from flowzoo.three_d.scoop_model import SCOOPModel, sinkhorn_step, soft_correspondences

pytestmark = pytest.mark.usefixtures("one_thread")

SCENE = {"n_points": 192, "extent": 3.0, "n_objects": 2}


def _hand_sinkhorn(cost: np.ndarray, eps: float, power: float) -> np.ndarray:
    """One unbalanced Sinkhorn iteration written out entry by entry."""
    n, m = cost.shape
    kernel = [[math.exp(-cost[i, j] / eps) for j in range(m)] for i in range(n)]
    a = [1.0 / n] * n
    b = [((1.0 / m) / (sum(kernel[i][j] * a[i] for i in range(n)) + 1e-8)) ** power for j in range(m)]
    a = [((1.0 / n) / (sum(kernel[i][j] * b[j] for j in range(m)) + 1e-8)) ** power for i in range(n)]
    return np.array([[a[i] * kernel[i][j] * b[j] for j in range(m)] for i in range(n)])


def test_one_sinkhorn_iteration_matches_hand_computation_and_its_row_marginals():
    cost = np.array([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0]])
    plan = sinkhorn_step(torch.tensor(cost)[None], epsilon=0.5)[0].numpy()
    np.testing.assert_allclose(plan, _hand_sinkhorn(cost, 0.5, 1.0), rtol=1e-6)
    np.testing.assert_allclose(plan.sum(1), [0.5, 0.5], rtol=1e-6)  # balanced: rows are exactly μ = 1/N
    assert not np.allclose(plan.sum(0), 1 / 3)  # one iteration does not fix the column marginals


def test_mass_regularisation_relaxes_the_row_marginals_as_derived():
    cost = np.array([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0]])
    eps, gamma = 0.5, 1.0
    power = gamma / (gamma + eps)
    plan = sinkhorn_step(torch.tensor(cost)[None], epsilon=eps, gamma=gamma)[0].numpy()
    np.testing.assert_allclose(plan, _hand_sinkhorn(cost, eps, power), rtol=1e-6)
    # rows sum to μ^λ (K b)^(1−λ), not to μ
    kernel = np.exp(-cost / eps)
    b = ((1 / 3) / (kernel.T @ np.full(2, 0.5))) ** power
    np.testing.assert_allclose(plan.sum(1), 0.5 ** power * (kernel @ b) ** (1 - power), rtol=1e-5)
    assert not np.allclose(plan.sum(1), 0.5)
    huge = sinkhorn_step(torch.tensor(cost)[None], epsilon=eps, gamma=1e9)[0].numpy()  # γ → ∞: balanced
    np.testing.assert_allclose(huge.sum(1), [0.5, 0.5], rtol=1e-5)


def test_support_mask_removes_transport_between_far_points():
    cost = torch.zeros(1, 2, 2)
    support = torch.tensor([[[True, False], [True, True]]])
    plan = sinkhorn_step(cost, 1.0, support=support)
    assert plan[0, 0, 1] == 0 and plan[0, 0, 0] > 0


def test_soft_correspondences_are_convex_combinations_of_target_points():
    gen = torch.Generator().manual_seed(0)
    source, target = torch.rand(2, 40, 3, generator=gen), torch.rand(2, 50, 3, generator=gen) * 3
    model = SCOOPModel(channels=4, neighbors=6, top_k=5)
    plan, *_ = model.transport(source, target)
    matched, weights, index = soft_correspondences(plan, target, 5)
    assert (weights >= 0).all() and torch.allclose(weights.sum(-1), torch.ones(2, 40), atol=1e-5)
    rows = torch.arange(2)[:, None, None]
    torch.testing.assert_close(matched, (weights[..., None] * target[rows, index]).sum(-2))
    low, high = target.amin(1, keepdim=True), target.amax(1, keepdim=True)
    assert ((matched >= low - 1e-5) & (matched <= high + 1e-5)).all()
    estimate = model(source, target)
    torch.testing.assert_close(estimate.flow, estimate.matched - source)
    assert ((estimate.confidence >= 0) & (estimate.confidence <= 1 + 1e-5)).all()


def test_loss_trains_the_sinkhorn_parameters_and_weights_scenes():
    model = SCOOPModel(channels=4, neighbors=6, top_k=4)
    batch = {"x0": torch.rand(2, 24, 3), "x1": torch.rand(2, 24, 3)}
    loss, logs = SCOOPLoss(smoothness_neighbors=5)(model, batch)
    loss.backward()
    assert model.epsilon_param.grad is not None and model.gamma_param.grad is not None
    assert set(logs) == {"chamfer", "confidence", "smoothness"}
    only_first, _ = SCOOPLoss(smoothness_neighbors=5)(model, {**batch, "weight": torch.tensor([1.0, 0.0])})
    single, _ = SCOOPLoss(smoothness_neighbors=5)(model, {"x0": batch["x0"][:1], "x1": batch["x1"][:1]})
    torch.testing.assert_close(only_first, single, rtol=1e-4, atol=1e-6)


def test_smoothness_is_zero_for_a_rigid_translation():
    points = torch.rand(1, 30, 3)
    graph = torch.arange(30).repeat(1, 30, 1)[..., :5]
    assert flow_smoothness(torch.ones(1, 30, 3) * 0.3, graph).item() == pytest.approx(0.0)


def test_refinement_decreases_its_loss_and_recovers_a_rigid_translation():
    scenes = make_scene_set(1, seed=3, **SCENE)
    a = scenes.source
    shift = torch.tensor([0.4, -0.25, 0.05])
    out = refine_flow(a, a + shift, steps=200, lr=0.03, neighbors=8)
    losses = np.array(out.losses)
    assert losses[-1] < 0.1 * losses[0]
    blocks = losses.reshape(8, 25).mean(1)  # monotone-ish: Adam on an L1 term jitters step to step, not block to block
    assert (blocks[1:] <= 1.05 * blocks[:-1]).all(), blocks
    error = (out.flow - shift).norm(dim=-1)
    assert error.mean() < 0.02, error.mean()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()  # module scope runs before the one_thread fixture: set it here too
    torch.set_num_threads(1)
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("scoop_run")
    train, test = make_scene_set(12, seed=0, **SCENE), make_scene_set(4, seed=1, **SCENE)
    cfg = TrainerConfig(steps=50, batch_size=2, lr=1e-2, ema_decay=0, out_dir=str(run), progress=False,
                        tensorboard=False)
    model, _ = train_scoop(train, cfg, model=SCOOPModel(8, 8, 4, max_distance=3.0),
                           loss=SCOOPLoss(smoothness_neighbors=8))
    torch.set_num_threads(threads)
    return model, run, test


def _epe(flow, scenes):
    return float(scene_flow_metrics(flow, scenes.flow, scenes.valid)["EPE3D"].mean())


def test_briefly_trained_model_beats_zero_and_untrained_flow(trained):
    model, run, test = trained
    torch.manual_seed(1)
    untrained = SCOOPModel(8, 8, 4, max_distance=3.0)
    with torch.no_grad():
        raw, before = model(test.source, test.target).flow, untrained(test.source, test.target).flow
    zero = _epe(torch.zeros_like(test.flow), test)
    assert _epe(raw, test) < 0.75 * zero and _epe(raw, test) < _epe(before, test)
    reloaded = load_scoop(run)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(test.source, test.target).flow, raw)
    refined = estimate_flow(model, test.source, test.target, refine_steps=100, neighbors=8)
    assert _epe(refined, test) < 0.8 * _epe(raw, test)


def test_bad_scans_raise_clear_errors():
    good = torch.rand(1, 20, 3) * 5
    with pytest.raises(ConfigError, match=r"spans .*ratio"):
        check_scan_pair(good, good * 1000)
    with pytest.raises(EmptyInputError):
        check_scan_pair(torch.zeros(1, 0, 3), good)
    nan = good.clone()
    nan[0, 3, 1] = float("nan")
    with pytest.raises(NonFiniteError):
        refine_flow(nan, good, steps=1)
    with pytest.raises(ShapeError):
        check_scan_pair(torch.rand(1, 20, 2), good)
    with pytest.raises(ShapeError):
        refine_flow(good, good, torch.zeros(1, 19, 3), steps=1)
    with pytest.raises(ConfigError):
        estimate_flow(None, good, good)
    with pytest.raises(ConfigError):
        SCOOPLoss()(SCOOPModel(4, 4, 4), {"x1": good})


def _write_pair(tmp_path, scale_b=1.0):
    scenes = make_scene_set(1, seed=5, **SCENE)
    a, b = tmp_path / "a.ply", tmp_path / "b.ply"
    write_point_cloud(a, scenes.source[0].numpy())
    write_point_cloud(b, scenes.target[0].numpy() * scale_b)
    return a, b, scenes


def test_scene_flow_command_writes_the_flow_and_refuses_to_overwrite(tmp_path, trained, capsys):
    a, b, scenes = _write_pair(tmp_path)
    out = tmp_path / "flow.npy"
    args = [str(a), str(b), "--out", str(out), "--refine", "--steps", "30", "--neighbors", "8", "--no-progress"]
    assert run_main(scene_flow_main, args, prog="flowzoo three_d scene-flow") == 0
    flow = np.load(out)
    assert flow.shape == (SCENE["n_points"], 3) and flow.dtype == np.float32
    assert run_main(scene_flow_main, args, prog="flowzoo three_d scene-flow") == 2
    assert "exists" in capsys.readouterr().err
    _, run, _ = trained
    with_model = [str(a), str(b), "--out", str(tmp_path / "raw.npy"), "--checkpoint", str(run)]
    assert run_main(scene_flow_main, with_model, prog="flowzoo three_d scene-flow") == 0
    assert np.load(tmp_path / "raw.npy").shape == (SCENE["n_points"], 3)


@pytest.mark.parametrize("problem", ["scale", "neither", "suffix", "empty"])
def test_scene_flow_command_bad_input_is_one_error_line(tmp_path, capsys, problem):
    a, b, _ = _write_pair(tmp_path, scale_b=1000.0 if problem == "scale" else 1.0)
    if problem == "empty":
        b.write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                     "property float z\nend_header\n")
    extra = {"neither": [], "suffix": ["--refine"], "scale": ["--refine"], "empty": ["--refine"]}[problem]
    out = tmp_path / ("flow.txt" if problem == "suffix" else "flow.npy")
    code = run_main(scene_flow_main, [str(a), str(b), "--out", str(out), "--no-progress", *extra],
                    prog="flowzoo three_d scene-flow")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
    if problem == "scale":
        assert "a.ply" in err and "b.ply" in err
    assert not out.exists()
