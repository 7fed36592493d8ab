"""benchmarks/robotics_metaworld.py: the row selection and the dispersive verdicts (training faked)."""

from __future__ import annotations

import argparse

from benchmarks import robotics_metaworld as bench


def _args(**overrides) -> argparse.Namespace:
    base = dict(quick=False, seeds=1, tasks=["reach-v3", "button-press-v3"], no_cloud=False, no_state=False,
                all_dm1=False, methods=None, steps=0, eval_episodes=0, cloud_down_dims=None)
    return argparse.Namespace(**{**base, **overrides})


def test_methods_picks_a_subset_of_rows_for_both_observations():
    _, runs, _, _ = bench._runs(_args())
    assert {m for _, obs, _, m in runs if obs == "state"} == set(bench.STATE_METHODS)
    _, runs, _, _ = bench._runs(_args(methods=[bench.DM1_PLAIN]))
    assert runs == [(t, "state", 0, bench.DM1_PLAIN) for t in ("reach-v3", "button-press-v3")]
    _, runs, _, _ = bench._runs(_args(methods=[bench.MP1]))
    assert {obs for _, obs, _, _ in runs} == {"state", "pointcloud"}
    _, runs, _, _ = bench._runs(_args(no_state=True))
    assert runs and {obs for _, obs, _, _ in runs} == {"pointcloud"}


def test_point_cloud_rows_train_the_wider_unet_and_state_rows_the_small_one():
    for quick in (False, True):
        budget, _, _, _ = bench._runs(_args(quick=quick))
        assert budget.for_obs("state").down_dims == (32, 64)
        cloud = budget.for_obs("pointcloud")
        assert cloud.down_dims == bench.CLOUD_DOWN_DIMS == (128, 256)
        assert cloud.for_obs("pointcloud").down_dims == bench.CLOUD_DOWN_DIMS  # idempotent
    budget, _, _, _ = bench._runs(_args(cloud_down_dims=[32, 64]))
    assert budget.for_obs("pointcloud").down_dims == (32, 64)


def test_quick_mode_keeps_the_rows_its_targets_read():
    _, runs, _, tasks = bench._runs(_args(quick=True, seeds=None, tasks=None))
    state = {m for _, obs, _, m in runs if obs == "state"}
    assert state == {bench.FM, bench.MEANFLOW, bench.MEANFLOW_DISPERSIVE, bench.MP1}  # MP1 vs FM, term vs none
    assert {(t, m) for t, obs, _, m in runs if obs == "pointcloud"} == {(tasks[0], bench.FM), (tasks[0], bench.MP1)}
    assert len(runs) == 2 * 4 + 2

def test_every_dispersive_row_is_judged_against_its_own_objective_without_the_term(capsys):
    def rows(success):
        return [{"last": success, "episodes": 10, "ms_chunk": 1.0}]

    results = {("state", bench.FM): rows(0.8), ("state", bench.MEANFLOW): rows(0.8),
               ("state", bench.MEANFLOW_DISPERSIVE): rows(0.8), ("state", bench.MP1): rows(0.9),
               ("state", bench.DM1_PLAIN): rows(0.6), ("state", bench.DM1): rows(0.7)}
    bench._print_targets(results)
    out = capsys.readouterr().out
    # DM1 (0.7) is below MeanFlow (0.8) but above its own plain-MSE counterpart (0.6): the term did not hurt
    assert "2 rows" in out and "mean difference +0.050" in out and "+0.00, +0.10" in out
    assert "PASS" in out.splitlines()[-2]
    results["state", bench.DM1] = rows(0.6 - 1 / 180)  # a tie in episodes, whatever the rounding: not lower
    results["state", bench.MEANFLOW_DISPERSIVE] = rows(0.8 + 1 / 180)
    bench._print_targets(results)
    assert "PASS" in capsys.readouterr().out.splitlines()[-2]
    results["state", bench.DM1] = rows(0.4)
    results["state", bench.MEANFLOW_DISPERSIVE] = rows(0.8)
    bench._print_targets(results)
    assert "mean difference -0.100" in capsys.readouterr().out
    assert bench.WITHOUT_DISPERSIVE[bench.DM1] == bench.DM1_PLAIN and bench.MP1 not in bench.WITHOUT_DISPERSIVE
    assert all(bench.METHODS[name]["dispersive_weight"] == 0.1 for name in bench.DISPERSIVE_ROWS)
