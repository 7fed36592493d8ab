"""benchmarks/robotics_dispersive.py: paired differences, tables and the job pipeline (training faked)."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import robotics_dispersive as bench


def _cells():
    success = {("reach-v3", 0): {"fm10": 0.6, "mp1_01": 0.5, "mf": 0.4, "mf_disp01": 0.4},
               ("reach-v3", 1): {"fm10": 0.5, "mp1_01": 0.8, "mf": 0.7, "mf_disp01": 0.6},
               ("push-v3", 0): {"fm10": 0.8, "mp1_01": 1.0, "mf": 0.9, "mf_disp01": 1.0}}
    return [{"task": t, "seed": s, "row": r, "success": v, "episodes": 30}
            for (t, s), rows in success.items() for r, v in rows.items()]


def test_paired_difference_is_mean_and_standard_error_over_cells():
    mean, se, n = bench.paired_difference(_cells(), "mp1_01", "fm10")
    diffs = [-0.1, 0.3, 0.2]
    assert n == 3 and mean == pytest.approx(sum(diffs) / 3)
    assert se == pytest.approx(math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2) / math.sqrt(3))
    assert bench.paired_difference(_cells(), "mp1_05", "fm10")[2] == 0  # a row that did not run


def test_tables_name_every_row_task_and_comparison():
    table = bench.format_tables(_cells(), ["reach-v3", "push-v3"], ["fm10", "mf", "mf_disp01", "mp1_01"])
    assert "| mp1_01 | 0.65 | 1.00 | **0.767** |" in table
    assert "| mp1_01 − fm10 | +0.133 ±" in table and "| mf_disp01 − mf |" in table
    assert "mp1_05 − fm10" not in table


def test_main_runs_every_job_and_writes_cells(tmp_path, monkeypatch, capsys):
    collected, trained = [], []
    monkeypatch.setattr(bench.metaworld, "demos_for", lambda task, obs, seed, budget: collected.append((task, seed)))

    def fake_run_one(task, obs, seed, row, budget, workdir):
        trained.append((task, seed, row, budget.eval_episodes, budget.eval_every == budget.steps))
        return {"last": 0.5 if row == "fm10" else 0.75}

    monkeypatch.setattr(bench.metaworld, "run_one", fake_run_one)
    out = tmp_path / "cells.json"
    assert bench.main(["--tasks", "reach-v3", "push-v3", "--seeds", "3", "--rows", "fm10", "mp1_01",
                       "--episodes", "7", "--jobs", "1", "--json", str(out)]) == 0
    assert sorted(collected) == [("push-v3", 3), ("reach-v3", 3)]
    assert len(trained) == 4 and all(t[3] == 7 and t[4] for t in trained)
    assert len(json.loads(out.read_text())) == 4
    assert "| mp1_01 − fm10 | +0.250 ± 0.000 | 2 |" in capsys.readouterr().out


def test_reach_rows_are_valid_policies_and_on_request_only(monkeypatch):
    from flowzoo.robotics.policy_config import PolicyConfig

    extra = ("mp1_01_2nfe", "mp1_01_distinct075", "mp1_01_timestd2")
    configs = {r: PolicyConfig(**bench.ROWS[r]).resolved() for r in ("mp1_01", *extra)}
    assert configs["mp1_01_2nfe"].sample_steps == 2 and configs["mp1_01"].sample_steps == 1
    assert configs["mp1_01_distinct075"].distinct_fraction == 0.75 and configs["mp1_01_timestd2"].time_std == 2.0
    assert {(a, b) for a, b in bench.COMPARISONS if a in extra} == {(r, "mp1_01") for r in extra}
    seen = []
    monkeypatch.setattr(bench.metaworld, "demos_for", lambda *a: None)
    monkeypatch.setattr(bench, "run_cell", lambda job: seen.append(job[2]) or
                        {"task": job[0], "seed": job[1], "row": job[2], "success": 0.5, "episodes": job[3]})
    bench.main(["--tasks", "reach-v3", "--seeds", "0", "--jobs", "1"])
    assert seen and not set(seen) & set(extra) and not any(r.startswith("dm1") for r in seen)
