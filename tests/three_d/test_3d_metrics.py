"""flowzoo.three_d.metrics on hand cases and brute-force references."""

import itertools

import pytest
import torch

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.three_d.metrics import (chamfer_distance, earth_movers_distance, emd_assignment, hausdorff_distance,
                                     nn_uniformity, point_to_mesh_distance, scene_flow_metrics)


def _cloud(b=2, n=64, seed=0):
    return torch.randn(b, n, 3, generator=torch.Generator().manual_seed(seed))


def test_identical_sets_are_at_zero():
    x = _cloud()
    assert torch.allclose(chamfer_distance(x, x), torch.zeros(2))
    assert torch.allclose(hausdorff_distance(x, x), torch.zeros(2))
    assert torch.allclose(earth_movers_distance(x, x), torch.zeros(2), atol=1e-6)


def test_shifted_singletons_and_grids():
    x = torch.zeros(1, 1, 3)
    y = torch.tensor([[[3.0, 4.0, 0.0]]])
    assert chamfer_distance(x, y).item() == pytest.approx(50.0)
    assert chamfer_distance(x, y, squared=False).item() == pytest.approx(10.0)
    assert hausdorff_distance(x, y).item() == pytest.approx(5.0)
    # a far shift of a set: EMD equals the shift length, Chamfer twice its square
    pts = torch.rand(1, 20, 3, generator=torch.Generator().manual_seed(1)) * 0.01
    shift = torch.tensor([10.0, 0.0, 0.0])
    assert earth_movers_distance(pts, pts + shift).item() == pytest.approx(10.0, rel=1e-5)


def test_chamfer_matches_brute_force():
    x, y = _cloud(2, 30, 1), _cloud(2, 45, 2)
    d = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    ref = d.amin(2).mean(1) + d.amin(1).mean(1)
    assert torch.allclose(chamfer_distance(x, y), ref, atol=1e-5)


def test_emd_assignment_is_an_optimal_permutation():
    x, y = _cloud(1, 6, 3), _cloud(1, 6, 4)
    sigma = emd_assignment(x, y)[0]
    assert sorted(sigma.tolist()) == list(range(6))
    cost = torch.cdist(x[0], y[0])
    best = min(sum(cost[i, p[i]].item() for i in range(6)) for p in itertools.permutations(range(6)))
    assert cost[torch.arange(6), sigma].sum().item() == pytest.approx(best, rel=1e-5)
    assert earth_movers_distance(x, y).item() == pytest.approx(best / 6, rel=1e-5)


def test_sinkhorn_emd_approaches_exact(one_thread):
    x, y = _cloud(1, 64, 5), _cloud(1, 64, 6)
    exact = earth_movers_distance(x, y, method="exact").item()
    approx = earth_movers_distance(x, y, method="sinkhorn", reg=0.005, max_iter=1000).item()
    assert exact <= approx + 1e-6 and approx == pytest.approx(exact, rel=0.05)


def test_uniformity_prefers_even_spacing():
    grid = torch.stack(torch.meshgrid(torch.linspace(0, 1, 10), torch.linspace(0, 1, 10), indexing="ij"), -1)
    even = torch.cat([grid.reshape(1, 100, 2), torch.zeros(1, 100, 1)], -1)
    clumped = torch.rand(1, 100, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 1.0, 0.0])
    assert nn_uniformity(even).item() < 1e-5 < nn_uniformity(clumped).item()


def test_point_to_mesh_distance_on_a_unit_cube():
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
    faces = []
    for axis in range(3):
        for side in (0.0, 1.0):
            ids = [i for i, c in enumerate(corners.tolist()) if c[axis] == side]
            a, b, c, d = ids  # ids in lexicographic order: a square as (a, b, d, c)
            faces += [[a, b, d], [a, d, c]]
    faces = torch.tensor(faces)
    pts = torch.tensor([[[0.5, 0.5, 0.5], [2.0, 0.5, 0.5], [2.0, 2.0, 2.0], [0.5, -1.0, 2.0], [0.5, 0.5, 1.0]]])
    expect = [0.5, 1.0, 3 ** 0.5, 2 ** 0.5, 0.0]
    got = point_to_mesh_distance(pts, corners, faces, chunk=2)[0]
    assert torch.allclose(got, torch.tensor(expect), atol=1e-6)
    # random points against the box's analytic distance
    p = torch.randn(1, 300, 3, generator=torch.Generator().manual_seed(0)) * 2
    outside = (p - p.clamp(0, 1)).norm(dim=-1)
    inside = torch.minimum(p, 1 - p).amin(-1).clamp(min=0)
    assert torch.allclose(point_to_mesh_distance(p, corners, faces), outside + inside, atol=1e-5)


def test_scene_flow_metrics_hand_case_and_mask():
    gt = torch.tensor([[[1.0, 0, 0], [1.0, 0, 0], [0.0, 0, 2.0], [1.0, 0, 0]]])
    pred = gt + torch.tensor([[[0.0, 0, 0], [0.04, 0, 0], [0.15, 0, 0], [0.5, 0, 0]]])
    m = scene_flow_metrics(pred, gt)
    assert m["EPE3D"].item() == pytest.approx((0.04 + 0.15 + 0.5) / 4)
    assert m["Acc3DS"].item() == pytest.approx(0.5)  # 0, 0.04
    assert m["Acc3DR"].item() == pytest.approx(0.75)  # 0.15 m on a 2 m flow is 7.5 %
    assert m["Outliers"].item() == pytest.approx(0.25)
    masked = scene_flow_metrics(pred, gt, torch.tensor([[True, True, False, False]]))
    assert masked["EPE3D"].item() == pytest.approx(0.02) and masked["Outliers"].item() == 0.0


def test_bad_inputs_raise():
    x = _cloud()
    with pytest.raises(ShapeError):
        earth_movers_distance(x, x[:, :10])
    with pytest.raises(ShapeError):
        chamfer_distance(x, x[:1])
    with pytest.raises(ConfigError):
        earth_movers_distance(x, x, method="fast")
    with pytest.raises(ShapeError):
        point_to_mesh_distance(x, torch.zeros(3, 3), torch.tensor([[0, 1, 5]]))
    with pytest.raises(ShapeError):
        scene_flow_metrics(x, x, torch.ones(2, 64))
