"""flowzoo.three_d.ops against brute-force references."""

import pytest
import torch

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.three_d.ops import (ball_query, denormalize, extract_patches, farthest_point_sample, gather_points, knn,
                                 merge_patches, normalize_unit_sphere)


def _cloud(b=2, n=200, seed=0):
    return torch.randn(b, n, 3, generator=torch.Generator().manual_seed(seed))


def _fps_reference(points, n):
    chosen = [0]
    for _ in range(n - 1):
        d = torch.stack([((points - points[i]) ** 2).sum(-1) for i in chosen]).amin(0)
        chosen.append(int(d.argmax()))
    return chosen


def test_fps_matches_brute_force_and_is_distinct():
    pts = _cloud()
    idx = farthest_point_sample(pts, 32)
    for b in range(2):
        assert idx[b].tolist() == _fps_reference(pts[b], 32)
        assert len(set(idx[b].tolist())) == 32


def test_fps_random_start_follows_generator():
    pts = _cloud()
    a = farthest_point_sample(pts, 8, random_start=True, generator=torch.Generator().manual_seed(3))
    b = farthest_point_sample(pts, 8, random_start=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_fps_covers_better_than_random():
    pts = _cloud(1, 500)
    sub = gather_points(pts, farthest_point_sample(pts, 50))
    rand = pts[:, torch.randperm(500, generator=torch.Generator().manual_seed(0))[:50]]
    cover = lambda s: torch.cdist(pts, s).amin(-1).amax()  # noqa: E731
    assert cover(sub) < cover(rand)


def test_knn_matches_sorted_distances_with_chunks():
    q, p = _cloud(2, 37, 1), _cloud(2, 90, 2)
    d, i = knn(q, p, 5, chunk=8)
    ref = torch.cdist(q, p).sort(dim=-1)
    assert torch.allclose(d, ref.values[..., :5], atol=1e-5)
    assert torch.equal(i, ref.indices[..., :5])


def test_knn_exclude_self_drops_own_index():
    p = _cloud(1, 50)
    d, i = knn(p, p, 3, exclude_self=True, chunk=7)
    assert not (i == torch.arange(50)[None, :, None]).any()
    ref = torch.cdist(p, p).sort(dim=-1)
    assert torch.allclose(d, ref.values[..., 1:4], atol=1e-5)


def test_ball_query_matches_brute_force():
    pts = _cloud(2, 120, 4)
    centres = pts[:, :10]
    idx, counts = ball_query(pts, centres, 0.8, 6)
    for b in range(2):
        for m in range(10):
            inside = (torch.cdist(centres[b, m][None], pts[b])[0] <= 0.8).nonzero()[:, 0].tolist()
            expect = inside[:6] + [inside[0]] * (6 - len(inside[:6]))
            assert idx[b, m].tolist() == expect and counts[b, m] == min(len(inside), 6)


def test_ball_query_empty_ball_falls_back_to_nearest():
    pts = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]])
    idx, counts = ball_query(pts, torch.tensor([[[0.9, 5.0, 0]]]), 0.1, 3)
    assert counts.tolist() == [[0]] and idx.tolist() == [[[1, 1, 1]]]


def test_patches_round_trip_and_merge():
    pts = _cloud(2, 256)
    patches, idx = extract_patches(pts, 16, 32)
    assert patches.shape == (2, 16, 32, 3)
    assert torch.equal(patches, gather_points(pts, idx))
    merged = merge_patches(patches, 128)
    assert merged.shape == (2, 128, 3)
    # every merged point is a point of the original cloud
    assert torch.cdist(merged, pts, compute_mode="donot_use_mm_for_euclid_dist").amin(-1).max() < 1e-6


def test_normalise_round_trip():
    pts = _cloud() * 7 + 3
    unit, c, s = normalize_unit_sphere(pts)
    assert torch.allclose(unit.norm(dim=-1).amax(1), torch.ones(2))
    assert torch.allclose(unit.mean(1), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(denormalize(unit, c, s), pts, atol=1e-5)


@pytest.mark.parametrize("bad", [torch.zeros(5, 3), torch.zeros(1, 5, 2), torch.zeros(1, 0, 3)])
def test_bad_shapes_raise(bad):
    with pytest.raises((ShapeError, ValueError)):
        farthest_point_sample(bad, 1)


def test_bad_counts_raise():
    pts = _cloud()
    with pytest.raises(ConfigError):
        farthest_point_sample(pts, 201)
    with pytest.raises(ConfigError):
        knn(pts, pts, 0)
    with pytest.raises(ConfigError):
        ball_query(pts, pts, -1.0, 4)
    with pytest.raises(ShapeError):
        knn(pts, pts[:1], 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    from flowzoo.three_d.metrics import chamfer_distance
    pts = _cloud(2, 300)
    gpu = pts.cuda()
    assert torch.equal(farthest_point_sample(gpu, 40).cpu(), farthest_point_sample(pts, 40))
    assert torch.equal(knn(gpu, gpu, 8)[1].cpu(), knn(pts, pts, 8)[1])
    assert torch.equal(ball_query(gpu, gpu[:, :5], 0.7, 8)[0].cpu(), ball_query(pts, pts[:, :5], 0.7, 8)[0])
    assert torch.allclose(chamfer_distance(gpu, gpu.flip(1) + 0.1).cpu(), chamfer_distance(pts, pts.flip(1) + 0.1),
                          atol=1e-5)
