"""flowzoo.three_d.plotting writes PNGs and rejects bad clouds."""

import numpy as np
import pytest

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.three_d.data import sample_surface
from flowzoo.three_d.scene_pairs import make_scene_flow_pair
from flowzoo.three_d.plotting import plot_point_clouds, plot_scene_flow


def test_writes_cloud_and_flow_figures(tmp_path):
    rng = np.random.default_rng(0)
    path = plot_point_clouds({"torus": sample_surface("torus", 200, rng), "box": sample_surface("box", 200, rng)},
                             tmp_path / "shapes.png", title="shapes")
    assert path.read_bytes()[:4] == b"\x89PNG"
    pair = make_scene_flow_pair(rng, n_points=256)
    path = plot_scene_flow(pair.pc1, pair.pc2, tmp_path / "flow.png", flows={"true": pair.flow}, max_arrows=50)
    assert path.stat().st_size > 0


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError):
        plot_point_clouds({}, tmp_path / "x.png")
    with pytest.raises(ShapeError):
        plot_point_clouds({"flat": np.zeros((5, 2))}, tmp_path / "x.png")
    with pytest.raises(ShapeError):
        plot_scene_flow(np.zeros((5, 3)), np.zeros((5, 3)), tmp_path / "x.png", flows={"f": np.zeros((4, 3))})
