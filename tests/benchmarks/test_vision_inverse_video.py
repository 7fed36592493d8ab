"""The inverse-problem and video benchmarks run end to end on tiny settings and write their tables."""

import json
import os
from pathlib import Path

import pytest

from benchmarks import vision_inverse, vision_video

pytestmark = pytest.mark.usefixtures("one_thread")


def _table(name):
    return json.loads((Path(os.environ["FLOWZOO_RESULTS_DIR"]) / f"{name}.quick.json").read_text())


def test_vision_inverse_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWZOO_CACHE", str(tmp_path / "cache"))     # the feature classifier is trained afresh
    vision_inverse.main(["--quick", "--train_steps", "8", "--n_images", "4", "--data", "mnist", "--size", "12",
                         "--width", "8", "--tasks", "inpaint", "--flowopt_images", "2", "--flowopt_iterations", "2",
                         "--ae_steps", "4",
                         "--work", str(tmp_path / "work"), "--figures", str(tmp_path / "figures")])
    rows = _table("vision_inverse")["rows"]
    assert {r["method"] for r in rows} >= {"FLAIR", "DPS", "projection", "pseudo-inverse", "FLAIR without DTA",
                                          "FLAIR, latent prior", "latent prior sample (ignores y)"}
    assert all(r["nfe"] == 20 for r in rows if r["method"] != "pseudo-inverse")
    figure = tmp_path / "figures" / "restore_mnist_inpaint.quick.png"              # never docs/ from a test
    assert figure.exists() and figure.stat().st_size < 200_000
    assert (tmp_path / "figures" / "flowopt_convergence.png").exists()
    flowopt = _table("vision_flowopt")["rows"]
    assert flowopt[0]["method"] == "naive ODE reversal" and len(flowopt) == 6
    equal = next(r for r in flowopt if r["method"] == "naive ODE reversal at equal NFE")
    assert equal["nfe"] == max(r["nfe"] for r in flowopt if r["method"].startswith("FlowOpt"))


def test_vision_video_tiny(tmp_path):
    vision_video.main(["--quick", "--clips", "4", "--edit_steps", "2", "--test_clips", "1", "--flow_clips", "1",
                       "--target_clips", "12", "--cnn_steps", "2", "--starflow_steps", "1", "--frame_list", "2",
                       "--figures", str(tmp_path)])
    gif = tmp_path / "video_edit.quick.gif"
    assert gif.exists() and gif.stat().st_size < 1_000_000
    edit = _table("vision_video_edit")["rows"]
    assert {r["method"] for r in edit} >= {"per-frame (SDEdit)", "hard warp", "flow-conditioned",
                                          "hard warp, calibrated flow"}
    assert len(_table("vision_video_flow")["rows"]) == 16 and len(_table("vision_video_target")["rows"]) == 6
    assert any("passes" in r["measure"] for r in _table("vision_video_starflow")["rows"])
