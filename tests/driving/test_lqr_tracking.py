"""The NAVSIM-style LQR tracker on a kinematic bicycle: exact on a straight constant-speed plan, close on a gentle
curve, clamped to the steering limit, the one-step equations by hand, the profile fit, bad input."""

import numpy as np
import pytest

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.driving.lqr_tracking import (MAX_STEERING, SIM_DT, WHEEL_BASE, LQRTracker, fit_speed_curvature,
                                          interpolate_plans, simulate_plans)

T = 0.5 * np.arange(1, 9)
STRAIGHT = np.column_stack([10.0 * T, np.zeros(8), np.zeros(8)])


def arc(radius: float, speed: float) -> np.ndarray:
    angle = speed * T / radius
    return np.column_stack([radius * np.sin(angle), radius * (1 - np.cos(angle)), angle])


def test_straight_constant_speed_plan_is_followed_exactly():
    states = simulate_plans(STRAIGHT, speed=10.0)
    np.testing.assert_allclose(states["poses"][0], interpolate_plans(STRAIGHT)[0], atol=1e-9)
    np.testing.assert_allclose(states["speed"], 10.0, atol=1e-9)
    assert np.abs(states["steering"]).max() < 1e-9 and states["times"][-1] == pytest.approx(4.0)
    assert states["poses"].shape == (1, 41, 3)


def test_gentle_curve_is_followed_within_a_small_error():
    radius = 100.0
    plan = arc(radius, 10.0)
    states = simulate_plans(plan, speed=10.0, yaw_rate=10.0 / radius)
    error = np.linalg.norm(states["poses"][0, :, :2] - interpolate_plans(plan)[0, :, :2], axis=-1)
    assert error.max() < 0.15
    assert abs(states["poses"][0, -1, 2] - plan[-1, 2]) < 0.02
    assert np.tan(states["steering"][0, -1]) == pytest.approx(WHEEL_BASE / radius, rel=0.1)


def test_steering_is_clamped_to_the_bicycle_limit():
    plan = arc(3.0, 5.0)
    plan[:, 2] *= 3.0  # headings turning three times faster than the 3 m arc: more than any steering angle gives
    states = simulate_plans(plan, speed=5.0)
    assert np.abs(states["steering"]).max() == pytest.approx(MAX_STEERING)
    limit = np.abs(states["speed"]) * np.tan(MAX_STEERING) / WHEEL_BASE
    assert (np.abs(states["yaw_rate"]) <= limit + 1e-9).all()


def test_one_step_equations_by_hand():
    tracker = LQRTracker()
    state = {"x": np.zeros(1), "y": np.zeros(1), "heading": np.zeros(1), "speed": np.array([10.0]),
             "accel": np.zeros(1), "steering": np.zeros(1), "yaw_rate": np.zeros(1)}
    nxt = tracker.propagate(state, np.array([2.0]), np.array([0.0]), SIM_DT)
    lagged = SIM_DT / (SIM_DT + 0.2) * 2.0  # first-order lag of the commanded acceleration
    assert nxt["accel"][0] == pytest.approx(lagged) and nxt["speed"][0] == pytest.approx(10.0 + SIM_DT * lagged)
    assert nxt["x"][0] == pytest.approx(1.0) and nxt["y"][0] == 0.0
    # longitudinal one-step LQR towards 12 m/s one second ahead: a = q·N·dt·Δv / (q·(N·dt)² + r) = 10·2 / 11
    reference = np.zeros((1, 41, 3))
    accel, rate = tracker.commands(state, reference, np.full((1, 40), 12.0), np.zeros((1, 40)), 0, SIM_DT)
    assert accel[0] == pytest.approx(20.0 / 11.0) and rate[0] == pytest.approx(0.0)
    # a lateral offset to the left of the reference asks for a right (negative) steering rate
    _, rate = tracker.commands({**state, "y": np.array([0.5])}, reference, np.full((1, 40), 10.0),
                               np.zeros((1, 40)), 0, SIM_DT)
    assert rate[0] < 0


def test_stopped_plan_from_rest_stays_put_and_batches_match_single_plans():
    states = simulate_plans(np.zeros((8, 3)), speed=0.0)
    assert np.abs(states["poses"]).max() < 1e-9 and np.abs(states["speed"]).max() < 1e-9
    plans = np.stack([STRAIGHT, arc(60.0, 10.0), STRAIGHT * [0.8, 1, 1]])
    batch = simulate_plans(plans, speed=10.0)["poses"]
    for i, plan in enumerate(plans):
        np.testing.assert_allclose(batch[i], simulate_plans(plan, speed=10.0)["poses"][0], atol=1e-9)


def test_fit_speed_curvature_of_a_circle():
    speed, curvature = fit_speed_curvature(interpolate_plans(arc(50.0, 8.0)))
    np.testing.assert_allclose(speed, 8.0, rtol=0.01)
    np.testing.assert_allclose(curvature[:, 5:-5], 1 / 50.0, rtol=0.05)


def test_bad_input():
    with pytest.raises(ShapeError, match="NaN"):
        simulate_plans(np.full((8, 3), np.nan), speed=1.0)
    with pytest.raises(ShapeError, match=r"\(P, T, 3\)"):
        simulate_plans(np.zeros((8, 2)), speed=1.0)
    with pytest.raises(ConfigError, match="speed"):
        simulate_plans(STRAIGHT, speed=-1.0)
    with pytest.raises(ConfigError, match="sim_dt"):
        simulate_plans(STRAIGHT, speed=1.0, sim_dt=0.0)
