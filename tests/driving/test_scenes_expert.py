"""Synthetic scenes and the expert: deterministic under a seed, and every expert plan is safe, in the drivable
area, comfortable and multimodal across scenes."""

import numpy as np
import pytest

pytest.importorskip("shapely")

from flowzoo.core.errors import ConfigError, EmptyInputError  # noqa: E402
from flowzoo.driving.data import generate_scenes  # noqa: E402
from flowzoo.driving.expert import choose_plan, plan_routes, speed_profile  # noqa: E402
from flowzoo.driving.geometry import polygon_from_vertices  # noqa: E402
from flowzoo.driving.metrics import comfort, drivable_area_compliance, no_collision, time_to_collision  # noqa: E402
from flowzoo.driving.scenes import SCENE_KINDS, sample_scene  # noqa: E402


@pytest.fixture(scope="module")
def scenes():
    return [sample_scene(np.random.default_rng(seed)) for seed in range(90)]


def test_scene_generation_is_deterministic_under_a_seed():
    a, b = generate_scenes(6, seed=3), generate_scenes(6, seed=3)
    c = generate_scenes(6, seed=4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["trajectory"], c["trajectory"])


def test_every_kind_is_generated_with_a_valid_polygon_containing_the_ego(scenes):
    assert {s.kind for s in scenes} == set(SCENE_KINDS)
    for scene in scenes:
        assert scene.drivable.is_valid and scene.drivable.contains(polygon_from_vertices(
            np.array([[-2.6, -1.2], [2.6, -1.2], [2.6, 1.2], [-2.6, 1.2]])))
        assert scene.agent_futures.shape == (len(scene.agent_boxes), 8, 3)


def test_expert_plans_are_in_the_drivable_area_collision_free_and_comfortable(scenes):
    checked = 0
    for scene in scenes:
        for plan in plan_routes(scene):
            poses = plan.poses[None]
            sizes = scene.agent_boxes[:, 3:5]
            assert drivable_area_compliance(poses, scene.drivable)[0] == 1
            assert no_collision(poses, scene.agent_futures, sizes, initial_speed=scene.ego_speed)[0] == 1
            assert time_to_collision(poses, scene.agent_futures, sizes, initial_speed=scene.ego_speed)[0] == 1
            assert comfort(poses, initial_speed=scene.ego_speed, initial_yaw_rate=scene.ego_yaw_rate)[0] == 1
            assert np.all(np.linalg.norm(np.diff(plan.poses[:, :2], axis=0), axis=1) < 10.0)  # <= 20 m/s
            checked += 1
    assert checked > 150


def test_most_scenes_have_several_feasible_goals_and_junctions_turn_both_ways(scenes):
    counts = [len(plan_routes(s)) for s in scenes]
    assert np.mean(np.array(counts) >= 2) > 0.8
    junction_routes = {s.routes[p.route].name for s in scenes if s.kind == "junction" for p in plan_routes(s)}
    assert {"turn_left", "turn_right", "straight"} <= junction_routes


def test_junction_scenes_yield_distinct_goals_across_seeds():
    goals = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng, "junction")
        plans = plan_routes(scene)
        if plans:
            goals.append(plans[choose_plan(plans, rng)].poses[-1])
    sides = np.sign(np.round(np.array(goals)[:, 1]))  # left of, on or right of the ego's lane line
    assert len(set(sides.tolist())) >= 2  # some go straight or turn one way, others another


def test_expert_slows_behind_a_parked_vehicle_in_its_lane():
    rng = np.random.default_rng(0)
    scene = sample_scene(rng, "straight")
    scene.routes = scene.routes[:1]  # keep the lane only
    free = plan_routes(scene)[0]
    scene.agent_boxes = np.array([[25.0, 0.0, 0.0, 4.5, 2.0]])
    scene.agent_futures = np.tile([25.0, 0.0, 0.0], (1, 8, 1))
    blocked = plan_routes(scene)
    assert blocked and blocked[0].progress < free.progress and blocked[0].poses[-1, 0] < 25.0 - 4.5
    steps = np.diff(np.concatenate([[0.0], blocked[0].poses[:, 0]]))
    assert steps[-1] < 0.6 * steps[0]  # braking


def test_speed_profile_hand_computed():
    # Constant speed: 10 m/s for 2 s; a ramp to v_end covers v0·T + (v_end − v0)·T/2 after T.
    assert speed_profile(10.0, 10.0, 1.0, np.array([2.0])).tolist() == [20.0]
    assert speed_profile(4.0, 8.0, 2.0, np.array([2.0])).tolist() == [12.0]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="scene kind"):
        sample_scene(np.random.default_rng(0), kind="roundabout")
    with pytest.raises(EmptyInputError, match="feasible"):
        choose_plan([], np.random.default_rng(0))
