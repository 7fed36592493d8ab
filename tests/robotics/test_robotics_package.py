"""flowzoo.robotics: the package exists, imports without its optional dependencies and declares its API."""

import importlib


def test_robotics_imports_and_declares_all():
    module = importlib.import_module("flowzoo.robotics")
    assert isinstance(module.__all__, list)



def test_every_declared_module_imports_without_loading_simulators():
    import subprocess
    import sys

    code = ("import importlib, sys, flowzoo.robotics as r\n"
            "[importlib.import_module('flowzoo.robotics.' + m) for m in r.__all__]\n"
            "print(sorted(m for m in ('metaworld', 'mujoco', 'gymnasium') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# Where each name moved when the large modules were split by responsibility; the old path must keep working.
MOVED = {
    "envs": ("spec", ["OBS_MODES", "EnvSpec", "env_spec"]),
    "data": ("normalizer", ["Normalizer", "NORMALIZED_KEYS"]),
    "controller": ("chunking", ["ChunkPolicy", "ObservationHistory", "ActionPlan", "batch_observations"]),
    "evaluate": ("tracking", ["BestKRecorder", "SuccessTracker", "write_video"]),
    "afm": ("afm_regimes", ["Regime", "REGIME_KEYS", "PAPER_GAINS", "unicycle_afm_batch", "point_mass_regime_maps",
                            "point_mass_afm_batch"]),
    "afm_sim": ("afm_waypoints", ["DriftSchedule", "MissionResult", "WaypointTask", "circle_waypoints",
                                  "figure8_waypoints", "wrap_angle"]),
}
MOVED_ELSEWHERE = {("evaluate", "EpisodeRecord"): "rollout", ("evaluate", "EvalResult"): "rollout",
                   ("afm", "AFMController"): "afm_controller", ("afm_sim", "PointMassTask"): "afm_point_mass"}


def test_moved_names_are_the_same_objects_at_their_old_paths():
    pairs = [(old, new, name) for old, (new, names) in MOVED.items() for name in names]
    pairs += [(old, new, name) for (old, name), new in MOVED_ELSEWHERE.items()]
    for old, new, name in pairs:
        old_module = importlib.import_module(f"flowzoo.robotics.{old}")
        new_module = importlib.import_module(f"flowzoo.robotics.{new}")
        assert name in old_module.__all__, (old, name)
        assert name in new_module.__all__, (new, name)
        assert getattr(old_module, name) is getattr(new_module, name), (old, new, name)


def test_every_module_has_a_docstring_and_an_all_of_existing_names():
    package = importlib.import_module("flowzoo.robotics")
    for name in package.__all__:
        module = importlib.import_module(f"flowzoo.robotics.{name}")
        assert (module.__doc__ or "").strip(), name
        assert isinstance(module.__all__, list), name
        assert [n for n in module.__all__ if not hasattr(module, n)] == [], name
