"""PDM-style metrics on hand-made cases: the score formula, DAC and the shadow-vehicle test, NC (with NAVSIM's
stopped-vehicle and static-object rules), TTC, comfort, EP, scoring of LQR-tracked states and minADE / FDE."""

import numpy as np
import pytest

pytest.importorskip("shapely")

from flowzoo.core.errors import ShapeError  # noqa: E402
from flowzoo.driving.geometry import EGO_LENGTH, EGO_WIDTH, boxes_overlap, polygon_from_vertices  # noqa: E402
from flowzoo.driving.lqr_tracking import simulate_plans  # noqa: E402
from flowzoo.driving.metrics import (comfort, drivable_area_compliance, ego_progress, evaluate_plans,  # noqa: E402
                                     min_ade_fde, no_collision, pdm_score, shadow_dac, state_comfort,
                                     time_to_collision, upsample_agents)

ROAD = polygon_from_vertices(np.array([[-20.0, -2.0], [100.0, -2.0], [100.0, 2.0], [-20.0, 2.0]]))
STRAIGHT = np.column_stack([np.arange(1, 9) * 5.0, np.zeros(8), np.zeros(8)])  # 10 m/s along x


def test_score_formula_on_hand_computed_cases():
    assert pdm_score(1, 1, 1, 1, 1) == 1.0
    assert pdm_score(0, 1, 1, 1, 1) == 0.0 and pdm_score(1, 0, 1, 1, 1) == 0.0
    assert pdm_score(1, 1, 0, 1, 1) == pytest.approx(7 / 12)
    assert pdm_score(1, 1, 1, 0, 0.5) == pytest.approx(7.5 / 12)
    np.testing.assert_allclose(pdm_score([1, 1], [1, 1], [1, 0], [1, 1], [0.2, 1.0]), [8 / 12, 7 / 12])


def test_shadow_dac_inside_one_corner_out_and_rotated():
    square = polygon_from_vertices(np.array([[0.0, 0], [20, 0], [20, 20], [0, 20]]))
    half_l, half_w = EGO_LENGTH / 2, EGO_WIDTH / 2
    goals = np.array([
        [10.0, 10.0, 0.0],                      # well inside
        [20.0 - half_l + 0.05, 10.0, 0.0],      # front corners 5 cm outside
        [20.0 - half_l - 0.05, 10.0, 0.0],      # 5 cm inside
        [10.0, half_w + 0.05, 0.0],             # right corners just inside
        [20.0 - half_l - 0.05, 10.0, 0.3],      # rotated: a front corner pokes out
        [10.0, 10.0, np.pi / 2],                # rotated by 90 degrees, inside
    ])
    assert shadow_dac(goals, square).tolist() == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    # An L-shaped area: only the corner of the foot fits the vehicle across it.
    ell = polygon_from_vertices(np.array([[0.0, 0], [30, 0], [30, 4], [4, 4], [4, 30], [0, 30]]))
    assert shadow_dac(np.array([[15.0, 2.0, 0.0], [2.0, 15.0, np.pi / 2], [15.0, 2.0, np.pi / 2]]), ell).tolist() == [
        1.0, 1.0, 0.0]


def test_dac_of_plans():
    off_road = STRAIGHT.copy()
    off_road[5:, 1] = 1.5  # drifts so the left corners leave the 4 m road
    assert drivable_area_compliance(np.stack([STRAIGHT, off_road]), ROAD).tolist() == [1.0, 0.0]


def test_no_collision_on_hand_made_boxes():
    assert boxes_overlap(np.array([0, 0, 0, 4, 2.0]), np.array([3.9, 1.9, 0.0, 4, 2])).item()
    assert not boxes_overlap(np.array([0, 0, 0, 4, 2.0]), np.array([0, 2.1, 0.0, 4, 2])).item()
    assert not boxes_overlap(np.array([0, 0, 0.0, 4, 2]), np.array([3.5, 2.5, np.pi / 4, 4, 2])).item()
    size = np.array([[4.5, 2.0]])
    parked_ahead = np.tile([22.0, 0.0, 0.0], (1, 8, 1))
    beside = np.tile([22.0, 3.5, 0.0], (1, 8, 1))
    assert no_collision(STRAIGHT, parked_ahead, size).tolist() == [0.0]
    assert no_collision(STRAIGHT, beside, size).tolist() == [1.0]
    # Standing still and being run into from behind is not the ego's fault.
    stopped = np.zeros((8, 3))
    rear_ender = np.stack([np.column_stack([-10 + 2.0 * np.arange(1, 9), np.zeros(8), np.zeros(8)])])
    assert no_collision(stopped, rear_ender, size, initial_speed=0.0).tolist() == [1.0]
    assert no_collision(STRAIGHT, np.zeros((0, 8, 3)), np.zeros((0, 2))).tolist() == [1.0]


def test_ttc_flags_a_vehicle_just_ahead_but_not_one_far_away():
    size = np.array([[4.5, 2.0]])
    near = np.tile([STRAIGHT[3, 0] + EGO_LENGTH / 2 + 2.25 + 3.0, 0.0, 0.0], (1, 8, 1))  # 3 m ahead at step 4
    near[0, 4:, 0] = 200.0  # then it vanishes far ahead: no collision, only a near miss
    far = np.tile([300.0, 0.0, 0.0], (1, 8, 1))
    assert no_collision(STRAIGHT, near, size).tolist() == [1.0]
    assert time_to_collision(STRAIGHT, near, size).tolist() == [0.0]
    assert time_to_collision(STRAIGHT, far, size).tolist() == [1.0]


def test_comfort_on_a_smooth_and_a_jerky_trajectory():
    jerky = STRAIGHT.copy()
    jerky[3, 0] += 2.0  # one pose two metres ahead of a steady 10 m/s drive
    swerve = STRAIGHT.copy()
    swerve[:, 2] = 0.6 * np.sin(np.arange(8))  # heading oscillates: yaw rate far beyond 0.95 rad/s
    braking_hard = np.column_stack([np.cumsum(np.maximum(10 - 3 * np.arange(1, 9), 0) * 0.5), np.zeros(8), np.zeros(8)])
    result = comfort(np.stack([STRAIGHT, jerky, swerve, braking_hard]), initial_speed=10.0)
    assert result.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert comfort(STRAIGHT, initial_speed=0.0).tolist() == [0.0]  # 0 -> 10 m/s at once is not comfortable


def test_ego_progress_and_evaluate_plans():
    route = np.array([[0.0, 0.0], [200.0, 0.0]])
    half = STRAIGHT.copy()
    half[:, 0] /= 2
    np.testing.assert_allclose(ego_progress(np.stack([STRAIGHT, half]), [route], 40.0), [1.0, 0.5])
    assert ego_progress(half, [route], 3.0).tolist() == [1.0]  # under 5 m of reference: nothing to gain
    out = evaluate_plans(np.stack([STRAIGHT, half]), drivable=ROAD, agent_futures=np.zeros((0, 8, 3)),
                         agent_sizes=np.zeros((0, 2)), routes=[route], reference_progress=40.0, initial_speed=10.0)
    np.testing.assert_allclose(out["score"], [1.0, pdm_score(1, 1, 1, 0, 0.5)])  # half speed at once: not comfortable


def test_min_ade_fde_and_bad_shapes():
    truth = STRAIGHT
    samples = np.stack([truth + [0.0, 2.0, 0.0], truth + [0.0, 1.0, 0.0]])
    assert min_ade_fde(samples, truth) == (1.0, 1.0)
    with pytest.raises(ShapeError, match="same T"):
        min_ade_fde(samples[:, :4], truth)
    with pytest.raises(ShapeError, match=r"\(P, T, 3\)"):
        comfort(np.zeros((2, 8, 2)))


def test_nc_navsim_rules_stopped_vehicle_and_static_object():
    size = np.array([[4.5, 2.0]])
    # the ego passes a parked car and swerves into it when the car's centre is already behind the ego's
    parked = np.tile([22.0, 2.2, 0.0], (1, 8, 1))
    swerve = STRAIGHT.copy()
    swerve[4:, 1] = 0.5
    assert no_collision(STRAIGHT, parked, size, stopped_at_fault=True).tolist() == [1.0]  # passes clear
    assert no_collision(swerve, parked, size).tolist() == [1.0]  # the default rule: only vehicles ahead count
    assert no_collision(swerve, parked, size, stopped_at_fault=True).tolist() == [0.0]  # NAVSIM: always at fault
    # a moving car that runs into the ego from behind is never the ego's fault
    rear_ender = np.stack([np.column_stack([STRAIGHT[:, 0] - 4.0, np.zeros(8), np.zeros(8)])])
    assert no_collision(STRAIGHT, rear_ender, size, stopped_at_fault=True).tolist() == [1.0]
    # a static (non-agent) obstacle costs half; a vehicle hit as well brings NC to 0
    cone = np.tile([22.0, 0.0, 0.0], (1, 8, 1))
    both = np.concatenate([cone, np.tile([32.0, 0.0, 0.0], (1, 8, 1))])
    sizes = np.array([[1.0, 1.0], [4.5, 2.0]])
    assert no_collision(STRAIGHT, cone, size[:1] * 0 + 1.0, static_objects=np.array([True])).tolist() == [0.5]
    assert no_collision(STRAIGHT, both, sizes, static_objects=np.array([True, False])).tolist() == [0.0]
    with pytest.raises(ShapeError, match="static_objects"):
        no_collision(STRAIGHT, cone, size, static_objects=np.array([True, False]))


def test_upsample_agents_by_hand():
    futures = np.array([[[5.0, 1.0, 0.0], [10.0, 2.0, 0.2]]])
    out = upsample_agents(futures, np.array([[0.0, 0.0, 0.0]]))
    assert out.shape == (1, 10, 3)
    np.testing.assert_allclose(out[0, [0, 4, 9]], [[1.0, 0.2, 0.0], [5.0, 1.0, 0.0], [10.0, 2.0, 0.2]], atol=1e-12)
    np.testing.assert_allclose(upsample_agents(futures)[0, 4], [5.0, 1.0, 0.0])  # current pose extrapolated back
    np.testing.assert_allclose(upsample_agents(futures)[0, 0], [1.0, 0.2, -0.16], atol=1e-12)  # θ(0) = -0.2


def test_state_comfort_of_simulated_plans():
    braking = np.column_stack([np.cumsum(np.maximum(10 - 6 * np.arange(1, 9), 0) * 0.5), np.zeros(8), np.zeros(8)])
    angle = np.arange(1, 9) * 0.5 * 10.0 / 12.0  # a 12 m radius at 10 m/s: 8.3 m/s² sideways, 0.83 rad/s
    sharp_turn = np.column_stack([12.0 * np.sin(angle), 12.0 * (1 - np.cos(angle)), angle])
    states = simulate_plans(np.stack([STRAIGHT, braking, sharp_turn]), speed=10.0)
    assert state_comfort(states).tolist() == [1.0, 0.0, 0.0]
    assert state_comfort(states, limits={"min_lon_accel": -50.0, "max_abs_lon_jerk": 1e3,
                                         "max_abs_mag_jerk": 1e3}).tolist()[:2] == [1.0, 1.0]


def test_tracked_scores_on_hand_made_cases():
    route = np.array([[0.0, 0.0], [200.0, 0.0]])
    free = {"drivable": ROAD, "routes": [route], "reference_progress": 40.0, "initial_speed": 10.0}
    none = {"agent_futures": np.zeros((0, 8, 3)), "agent_sizes": np.zeros((0, 2))}
    half = STRAIGHT * [0.5, 1, 1]
    out = evaluate_plans(np.stack([STRAIGHT, half]), tracked=True, **free, **none)
    assert out["nc"].tolist() == [1.0, 1.0] and out["dac"].tolist() == [1.0, 1.0] and out["ttc"].tolist() == [1, 1]
    # the straight drive is followed exactly: full progress, comfortable; score 1
    assert out["ep"][0] == pytest.approx(1.0) and out["comfort"][0] == 1.0 and out["score"][0] == pytest.approx(1.0)
    # the raw plan jumps from 10 to 5 m/s (uncomfortable); the tracked car brakes within bounds and overshoots
    assert out["raw_comfort"].tolist() == [1.0, 0.0] and out["comfort"][1] == 1.0
    assert out["ep"][1] > 0.5 and out["score"][1] == pytest.approx(pdm_score(1, 1, 1, 1, out["ep"][1]))
    assert out["raw_score"][1] == pytest.approx(pdm_score(1, 1, 1, 0, 0.5))
    # a traffic cone (static object) on the lane: NC 0.5, so the score halves
    cone = {"agent_futures": np.tile([22.0, 0.0, 0.0], (1, 8, 1)), "agent_sizes": np.array([[0.5, 0.5]]),
            "agent_now": np.array([[22.0, 0.0, 0.0]]), "static_objects": np.array([True])}
    out = evaluate_plans(STRAIGHT, tracked=True, **free, **cone)
    assert out["nc"].tolist() == [0.5] and out["score"][0] == pytest.approx(0.5 * pdm_score(1, 1, out["ttc"][0], 1, 1))
    # a car parked across the lane is hit: NC 0 and score 0, tracked or not
    parked = {**cone, "agent_sizes": np.array([[4.5, 2.0]]), "static_objects": None}
    assert evaluate_plans(STRAIGHT, tracked=True, **free, **parked)["score"].tolist() == [0.0]
    # leaving the road: the tracked car follows a plan that drifts off the 4 m road
    off = STRAIGHT.copy()
    off[4:, 1] = [1.0, 2.0, 3.0, 4.0]
    assert evaluate_plans(off, tracked=True, **free, **none)["dac"].tolist() == [0.0]
