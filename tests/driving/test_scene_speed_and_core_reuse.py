"""Speed-ups that must not change a bit: scene generation in a process pool, the windowed box raster, GoalFlow's
loss through the core's affine path, and goal guidance at scale 1."""

import contextlib
import io

import numpy as np
import pytest
import torch

pytest.importorskip("shapely")

from flowzoo.core.cli import run_main  # noqa: E402
from flowzoo.core.errors import ConfigError  # noqa: E402
from flowzoo.core.paths import AffinePath, LinearScheduler  # noqa: E402
from flowzoo.core.sampling import ClassifierFreeGuidance  # noqa: E402
from flowzoo.driving.cli import make_scenes_main  # noqa: E402
from flowzoo.driving.data import generate_scenes, load_scenes  # noqa: E402
from flowzoo.driving.geometry import points_in_boxes, polygon_from_vertices, poses_along  # noqa: E402
from flowzoo.driving.goalflow import GoalFlowConfig, GoalFlowLoss, GoalFlowModel, GoalFlowPlanner  # noqa: E402
from flowzoo.driving.nets import MIN_REMAINING  # noqa: E402
from flowzoo.driving.raster import RasterSpec, pixel_centres, rasterize  # noqa: E402
from flowzoo.driving.vocabulary import dac_targets, normalize_trajectory  # noqa: E402

torch.set_num_threads(1)


def assert_same_arrays(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), key


def _cli(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = run_main(make_scenes_main, argv, prog="flowzoo driving make-scenes")
    return code, err.getvalue()


def test_workers_give_the_scenes_of_one_process_bit_for_bit(tmp_path):
    """Each attempt is seeded on its own, so a pool keeping the first n successes in attempt order reproduces
    workers=1 exactly (checked through the command, which also writes and reloads them)."""
    # 40 scenes of seed 2: chunks of five attempts, of which attempts 5 and 18 find no feasible route
    assert_same_arrays(generate_scenes(40, seed=2, workers=2), generate_scenes(40, seed=2))
    assert_same_arrays(generate_scenes(6, seed=5, kinds=("junction",), workers=3),
                       generate_scenes(6, seed=5, kinds=("junction",)))
    out = tmp_path / "scenes"
    code, err = _cli(["--n", "9", "--seed", "11", "--workers", "2", "--out", str(out), "--progress", "false"])
    assert code == 0, err
    assert_same_arrays(load_scenes(out)[0], generate_scenes(9, seed=11))


def test_bad_worker_counts_are_refused():
    for bad in (0, -1, 1.5):
        with pytest.raises(ConfigError, match="workers"):
            generate_scenes(2, seed=0, workers=bad)


def test_make_scenes_refuses_bad_workers_with_one_line(tmp_path):
    code, err = _cli(["--n", "2", "--workers", "0", "--out", str(tmp_path / "x"), "--progress", "false"])
    assert code == 2 and err.count("error:") == 1 and "--workers" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def full_box_image(spec, boxes, values):
    """The raster's box channel by brute force: every pixel centre against every box (the former code)."""
    centres = pixel_centres(spec).reshape(-1, 2)
    inside = points_in_boxes(centres, boxes)
    return (inside * values).max(1).reshape(spec.size, spec.size).astype(np.uint8)


@pytest.mark.parametrize("spec", [RasterSpec(), RasterSpec(size=37, x_range=(-5.0, 30.0), y_range=(-9.0, 12.0))])
def test_windowed_box_raster_equals_the_all_pixel_test(spec):
    rng = np.random.default_rng(0)
    count = 60
    boxes = np.column_stack([rng.uniform(-30, 60, count), rng.uniform(-40, 40, count), rng.uniform(-4, 4, count),
                             rng.uniform(0.2, 20, count), rng.uniform(0.2, 6, count)])
    # boxes exactly on pixel centres and edges, where a window one pixel too narrow would drop a pixel
    centre = pixel_centres(spec)[10, 12]
    rx, ry = spec.resolution
    boxes[:4] = [[*centre, 0.0, 2 * rx, 2 * ry], [*centre, 0.0, rx, ry], [*centre, np.pi / 2, 3 * rx, ry],
                 [centre[0] + rx / 2, centre[1], 0.0, rx, ry]]
    futures = boxes[:, None, :3] + np.arange(8)[None, :, None] * np.array([1.5, -0.7, 0.05])
    road = polygon_from_vertices(np.array([[-20.0, -5], [50, -5], [50, 5], [-20, 5]]))
    bev = rasterize(road, [], boxes, futures, spec)
    assert bev[2].any() and bev[3].any()
    np.testing.assert_array_equal(bev[2], full_box_image(spec, boxes, np.full((1, count), 255)))
    future_boxes = np.concatenate([futures, np.broadcast_to(boxes[:, None, 3:5], (count, 8, 2))], -1)
    brightness = np.round(255 * (1 - np.arange(8) / 8)).astype(np.uint8)
    np.testing.assert_array_equal(bev[3], full_box_image(spec, future_boxes.reshape(-1, 5),
                                                         np.tile(brightness, count)[None]))


def test_nan_agent_boxes_paint_nothing():
    spec = RasterSpec(size=16)
    road = polygon_from_vertices(np.array([[-20.0, -5], [50, -5], [50, 5], [-20, 5]]))
    bev = rasterize(road, [], np.full((1, 5), np.nan), np.full((1, 8, 3), np.nan), spec)
    assert not bev[2].any() and not bev[3].any()


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes(4, seed=3)


def tiny_model(scenes):
    vocabulary = torch.as_tensor(scenes["trajectory"][:, -1])
    cfg = GoalFlowConfig(dim=16, scorer_dim=8, heads=2, scorer_layers=1, flow_layers=1, vocab_size=len(vocabulary))
    torch.manual_seed(0)
    return GoalFlowModel(cfg, horizon=8, channels=4, size=64, vocabulary=vocabulary)


def test_the_core_linear_path_is_goalflows_interpolation_bit_for_bit():
    """Eq. 7-8: x_t = (1 - t) x0 + t x1 and target x1 - x0, exactly as written (no rounding difference)."""
    x0, x1, t = torch.randn(64, 8, 30), torch.randn(64, 8, 30) * 40, torch.rand(64)
    sample = AffinePath(LinearScheduler()).sample_unchecked(x0, x1, t)
    assert torch.equal(sample.x_t, (1 - t[:, None, None]) * x0 + t[:, None, None] * x1)
    assert torch.equal(sample.dx_t, x1 - x0)


def test_loss_flow_term_equals_the_hand_written_formula(scenes):
    model = tiny_model(scenes)
    polygons = [polygon_from_vertices(r[~np.isnan(r).any(-1)]) for r in scenes["drivable"]]
    x1 = torch.as_tensor(scenes["trajectory"])
    batch = {"x1": x1, "bev": torch.as_tensor(scenes["bev"]).float() / 255,
             "ego_state": torch.as_tensor(scenes["ego_state"]),
             "command": torch.as_tensor(scenes["command"].astype(np.int64)), "goal": x1[:, -1],
             "dac_target": dac_targets(model.vocabulary, polygons)}
    _, metrics = GoalFlowLoss()(model, batch, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the loss's draws, in its order: x0, t, goal and scene dropout
    target = normalize_trajectory(x1)
    x0 = model.config.sigma * torch.randn(target.shape, generator=g)
    t = torch.rand(4, generator=g)
    keep_goal, keep_scene = torch.rand(4, generator=g) >= 0.2, torch.rand(4, generator=g) >= 0.1
    with torch.no_grad():
        tokens, ego = model.encoder(batch["bev"], batch["ego_state"], batch["command"])
        x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * target
        v = model.velocity(x_t, t, model.velocity.environment(tokens, ego), ego, batch["goal"], keep_goal,
                           keep_scene)
    flow = ((v - (target - x0)) * (1 - t).clamp(min=MIN_REMAINING)[:, None, None]).abs().mean()
    assert metrics["flow_l1"] == pytest.approx(flow.item(), rel=1e-6)


def test_goal_guidance_scale_one_is_the_plain_plan_and_other_scales_mix_as_cfg(scenes):
    model = tiny_model(scenes)
    plain = GoalFlowPlanner(model, n_samples=3).plan(scenes, variant="M2", generator=torch.Generator().manual_seed(1))
    same = GoalFlowPlanner(model, n_samples=3, goal_scale=1.0).plan(scenes, variant="M2",
                                                                   generator=torch.Generator().manual_seed(1))
    assert torch.equal(plain.samples, same.samples) and torch.equal(plain.trajectory, same.trajectory)
    guided = GoalFlowPlanner(model, n_samples=3, goal_scale=2.5).plan(scenes, variant="M2",
                                                                     generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(guided.samples, plain.samples)
    # the guided velocity is v_u + w (v_g - v_u), v_u the goal-masked velocity
    with torch.no_grad():
        tokens, ego = model.encoder(torch.as_tensor(scenes["bev"]).float() / 255,
                                    torch.as_tensor(scenes["ego_state"]),
                                    torch.as_tensor(scenes["command"].astype(np.int64)))
        cond = {"env": model.velocity.environment(tokens, ego), "ego": ego, "goal": plain.goal,
                "keep_goal": torch.ones(4, dtype=torch.bool), "keep_scene": torch.ones(4, dtype=torch.bool)}
        x, t = 0.1 * torch.randn(4, 8, 30), torch.full((4,), 0.3)
        v_goal = model.velocity(x, t, **cond)
        v_free = model.velocity(x, t, **{**cond, "keep_goal": torch.zeros(4, dtype=torch.bool)})
        wrapped = ClassifierFreeGuidance(model.velocity, 2.5, null_cond={"keep_goal": False})(x, t, **cond)
    torch.testing.assert_close(wrapped, v_free + 2.5 * (v_goal - v_free), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="goal_scale"):
        GoalFlowPlanner(model, goal_scale=-1.0)


def test_poses_along_a_batch_of_profiles_equals_one_call_per_profile():
    rng = np.random.default_rng(2)
    path = np.cumsum(rng.normal(size=(40, 2)) + [1.0, 0.0], axis=0)
    distance = np.sort(rng.uniform(-5, 60, size=(7, 8)), axis=1)  # beyond both ends too
    batched = poses_along(path, distance)
    assert batched.shape == (7, 8, 3)
    assert np.array_equal(batched, np.stack([poses_along(path, d) for d in distance]))
    np.testing.assert_allclose(poses_along(np.array([[0.0, 0.0], [10.0, 0.0]]), np.array([[2.0], [12.0]])),
                               [[[2.0, 0.0, 0.0]], [[12.0, 0.0, 0.0]]])
