"""benchmarks/robotics_latency.py: every row present, times positive and finite, speed-up within its Amdahl bound.

Behaviour, not speed: the networks are tiny and the repeats few, so only what holds on any machine is checked.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from benchmarks import robotics_latency as bench
from flowzoo.core.errors import ConfigError

torch.set_num_threads(1)

TINY = bench.NetworkSize("tiny", (8, 16), 16, time_dim=16)


@pytest.fixture(scope="module")
def rows() -> list[bench.LatencyRow]:
    return bench.run_latency([TINY], bench.OBS_MODES, repeats=5)


def test_every_row_is_measured_and_tabulated(rows):
    assert [(r.size.name, r.obs) for r in rows] == [("tiny", "state"), ("tiny", "pointcloud")]
    table = bench.format_table(rows).splitlines()
    assert len(table) == 2 + len(rows)
    columns = table[0].count("|")
    assert all(line.count("|") == columns for line in table)
    assert table[2].startswith("| state | tiny (8, 16) |")
    assert table[3].startswith("| pointcloud | tiny (8, 16), 16 pts |")


def test_times_are_positive_and_finite(rows):
    for r in rows:
        for name in ("encoder_ms", "unet_ms", "flowmap_ms", "fm_chunk_ms", "mp1_chunk_ms", "fm_chunk_inference_ms",
                     "mp1_chunk_inference_ms", "fm_chunk_cold_ms", "mp1_chunk_cold_ms"):
            value = getattr(r, name)
            assert math.isfinite(value) and value > 0, (r.obs, name, value)
        assert r.params_m > 0 and r.n_action_steps == 4 and r.repeats == 5


def test_amdahl_bound_is_computed_from_the_encoder_and_unet_times(rows):
    # Only what holds under any load: the bound's formula and range. How close the measured speed-up comes to the
    # bound is a timing, and on a shared machine (CI) the fastest repeat of one row can be far off.
    for r in rows:
        e, u = r.encoder_ms, r.unet_ms
        assert r.amdahl_bound == pytest.approx((e + bench.FM_STEPS * u) / (e + u))
        assert 1 < r.amdahl_bound <= bench.FM_STEPS


def test_policies_sample_with_the_compared_number_of_passes():
    fm, mp1 = bench.build_policy("fm", TINY, "pointcloud"), bench.build_policy("mp1", TINY, "pointcloud")
    assert (fm.nfe, mp1.nfe) == (bench.FM_STEPS, 1)
    assert fm.spec.obs_shapes == {"point_cloud": (16, 3), "agent_pos": (bench.AGENT_POS_DIM,)}
    assert not fm.training and not mp1.training


def test_time_interleaved_separates_cold_and_warm_calls():
    calls: list[str] = []

    def function(name: str):
        def run() -> None:
            if calls and calls[-1] != name:
                time.sleep(0.003)  # "cold": another function ran just before
            calls.append(name)
        return run

    timings = bench.time_interleaved({"a": function("a"), "b": function("b")}, repeats=3, calls_per_round=2,
                                     warmup=1)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3  # one warm-up each, then per round a, a, b, b
    for name in ("a", "b"):
        assert 0 < timings.warm[name] < 2.0 < timings.cold[name]
    single = bench.time_interleaved({"a": function("a")}, repeats=2, calls_per_round=1, warmup=0)
    assert single.warm == single.cold


def test_main_prints_one_table_and_the_targets(capsys):
    assert bench.main(["--sizes", "benchmark", "--obs", "state", "--repeats", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| state | benchmark (32, 64) |" in out
    assert "Target (state, benchmark): MP1 >= 8x faster per action than FM-10" in out
    assert "inference_mode vs no_grad" in out


def test_unknown_observation_mode_is_refused():
    with pytest.raises(ConfigError, match="pointcloud"):
        bench.meta_world_spec("rgb", 16)


def test_benchmark_sizes_are_the_meta_world_benchmarks_networks():
    from benchmarks import robotics_metaworld

    assert bench.SIZES["benchmark"].down_dims == robotics_metaworld.FULL.down_dims
    assert bench.SIZES["benchmark-cloud"].down_dims == robotics_metaworld.CLOUD_DOWN_DIMS
    assert bench.SIZES["benchmark-cloud"].num_points == robotics_metaworld.FULL.num_points
    assert {"benchmark", "benchmark-cloud"} <= set(bench.QUICK_SIZES)
