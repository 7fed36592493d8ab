"""PUFM / PUFM++ (flowzoo.three_d.pufm, flowzoo.three_d.point_nets): hand-checked pieces, a learning test and bad
input."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, EmptyInputError, NonFiniteError, ShapeError
from flowzoo.three_d.data import sample_surface
from flowzoo.three_d.metrics import chamfer_distance
from flowzoo.three_d.ops import farthest_point_sample, gather_points, knn, normalize_unit_sphere
from flowzoo.three_d.point_nets import PointNetConfig, PUFMBackbone
from flowzoo.three_d.pufm import (CosineTime, EndpointChamferLoss, PUFMLoss, align_to_source, loss_curve,
                                  midpoint_interpolate, pufm_source)
from flowzoo.three_d import pufm_sampling
from flowzoo.three_d.pufm_sampling import adaptive_time_grid, project_on_manifold, sample_pufm, upsample

TINY = PointNetConfig(dim=32, latents=8, blocks=1, compute_layers=1, heads=2, k=8)


pytestmark = pytest.mark.usefixtures("one_thread")


def _cloud(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(sample_surface("torus", n, np.random.default_rng(seed)))[None]


@pytest.mark.parametrize("ratio", [2, 4])
def test_midpoints_count_and_lie_between_neighbours(ratio):
    pts = _cloud(40)
    out = midpoint_interpolate(pts, ratio)
    assert out.shape == (1, ratio * 40, 3)
    _, idx = knn(pts, pts, 2 * ratio)
    candidates = (0.5 * (pts[:, :, None] + gather_points(pts, idx))).reshape(1, -1, 3)
    nearest = torch.cdist(out[0], candidates[0], compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1)
    assert float(nearest.max()) < 1e-6  # every output is the midpoint of a point and one of its 2R neighbours
    assert torch.unique(out[0], dim=0).shape[0] > 0.95 * ratio * 40  # FPS keeps distinct points


def test_alignment_is_a_permutation_that_does_not_increase_transport_cost():
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.rand(3, 50, 3, generator=gen), torch.rand(3, 50, 3, generator=gen)
    aligned = align_to_source(x0, x1)
    for b in range(3):  # the same multiset of points, reordered
        assert torch.equal(aligned[b][torch.argsort(aligned[b][:, 0])], x1[b][torch.argsort(x1[b][:, 0])])
    assert float((aligned - x0).norm(dim=-1).sum()) < float((x1 - x0).norm(dim=-1).sum())


def test_cosine_time_follows_its_skewed_distribution():
    t = CosineTime().sample(40000, generator=torch.Generator().manual_seed(0))
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):  # empirical CDF against F(t) = (2/π) arccos(1 − t)
        assert abs(float((t <= q).float().mean()) - 2 / math.pi * math.acos(1 - q)) < 0.01
    assert float((t < 0.5).float().mean()) > 0.6  # two thirds below 1/2: skewed toward the source


def test_cdf_inversion_on_known_curves():
    t = torch.linspace(0, 1, 2001)
    assert torch.allclose(adaptive_time_grid(t, torch.ones_like(t), 4), torch.linspace(0, 1, 5), atol=1e-6)
    assert torch.allclose(adaptive_time_grid(t, t, 4), torch.tensor([0, .5, .5 ** .5, .75 ** .5, 1]), atol=1e-3)
    step = torch.where(t <= 0.5, 1.0, 3.0)  # F = t/2 up to 1/2, then 1/4 + 3(t − 1/2)/2
    assert torch.allclose(adaptive_time_grid(t, step, 4), torch.tensor([0, .5, 2 / 3, 5 / 6, 1]), atol=2e-3)
    with pytest.raises(ConfigError):
        adaptive_time_grid(t, -t, 4)
    with pytest.raises(ShapeError):
        adaptive_time_grid(t, t[:-1], 4)


def test_sampler_integrates_a_known_velocity_and_projection_pulls_toward_the_input():
    v = lambda x, t, sparse: torch.full_like(x, 2.0)  # noqa: E731
    out = sample_pufm(v, torch.zeros(2, 6, 3), sparse=torch.zeros(2, 3, 3), time_grid=[0.0, 0.3, 1.0],
                      return_trajectory=True)
    assert torch.allclose(out.x, torch.full((2, 6, 3), 2.0)) and out.nfe == 2 and out.trajectory.shape[0] == 3
    x, ref = torch.tensor([[[0.5, 0.2, 0.0], [0.001, 0.0, 0.0]]]), torch.zeros(1, 1, 3)
    moved = project_on_manifold(x, ref, step=0.05)
    assert float(moved[0, 0].norm()) < float(x[0, 0].norm())
    assert torch.allclose(moved[0, 1], torch.zeros(3))  # no overshoot past the reference point


@pytest.mark.parametrize("ratio", [4, 16])
def test_upsample_returns_exactly_ratio_times_n_points(ratio):
    pts = _cloud(70)[0]
    assert upsample(None, pts, ratio, patch_size=32).shape == (ratio * 70, 3)
    net = PUFMBackbone(TINY, ratio=4).eval()
    out = upsample(net, pts[None], ratio, steps=2, patch_size=32, project=0.01)
    assert out.shape == (1, ratio * 70, 3) and bool(torch.isfinite(out).all())


def test_inference_starts_from_the_plain_midpoints_and_projects_toward_them():
    """The official evaluation: no source noise at inference, the interpolated input as the projection's
    reference (so a zero velocity leaves the midpoints where they are), input points join the FPS merge."""
    pts = _cloud(40)[0]
    still = lambda x, t, sparse: torch.zeros_like(x)  # noqa: E731
    still.ratio = 4
    out = [upsample(still, pts, 4, patch_size=20, project=0.05, generator=torch.Generator().manual_seed(i))
           for i in range(2)]
    assert torch.equal(out[0], out[1])  # no noise: the generator does not matter
    assert torch.allclose(out[0], upsample(None, pts, 4, patch_size=20))  # = the midpoints, not pulled to the input
    noisy = upsample(still, pts, 4, patch_size=20, noise=0.02, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(noisy, out[0])
    away = lambda x, t, sparse: torch.full_like(x, 5.0)  # noqa: E731  every flow point leaves the cloud
    away.ratio = 4
    kept = upsample(away, pts, 4, patch_size=20)
    inputs_in_output = (torch.cdist(pts, kept).min(dim=1).values < 1e-6).sum()
    assert int(inputs_in_output) >= 20  # FPS keeps the input points, far from the displaced ones
    assert (torch.cdist(pts, upsample(away, pts, 4, patch_size=20, keep_input=False)).min() > 1.0)


class _Bar:
    def __init__(self, total, enabled, desc):
        self.total, self.desc, self.n, self.closed = total, desc, 0, False

    def update(self, n):
        self.n += n

    def close(self):
        self.closed = True


def test_patch_batches_and_the_progress_bar_do_not_change_the_result(monkeypatch, capsys):
    pts = _cloud(50)[0]
    net = PUFMBackbone(TINY, ratio=4).eval()
    plain = upsample(net, pts, 16, steps=2, patch_size=16)
    assert capsys.readouterr().err == ""  # off by default
    upsample(None, pts, 4, patch_size=16, progress=True)
    assert "upsample 4x" in capsys.readouterr().err  # a real tqdm bar on stderr
    bars, steps = [], []
    monkeypatch.setattr(pufm_sampling, "progress_bar", lambda *a: bars.append(_Bar(*a)) or bars[-1])
    chunked = upsample(net, pts, 16, steps=2, patch_size=16, patch_batch=5, progress=True, callback=steps.append)
    assert torch.allclose(plain, chunked, atol=1e-5)
    # 16x = two 4x passes of ceil(2 * 50 / 16) = 7 and ceil(2 * 200 / 16) = 25 patches, in chunks of 5 (2 + 5
    # chunks), each 2 Euler steps: the bar counts (7 + 25) x 2 patch steps; the user's callback sees every step.
    assert len(steps) == (2 + 5) * 2
    assert bars[0].total == bars[0].n == 64 and bars[0].closed and bars[0].desc == "upsample 16x"
    midpoints = upsample(None, pts, 4, patch_size=16, progress=True)
    assert torch.equal(midpoints, upsample(None, pts, 4, patch_size=16)) and bars[1].n == bars[1].total == 7
    with pytest.raises(ConfigError):
        upsample(None, pts, 4, patch_batch=0)


def _patch() -> tuple[torch.Tensor, torch.Tensor]:
    dense = normalize_unit_sphere(torch.from_numpy(sample_surface("torus", 64, np.random.default_rng(0), even=True))
                                  [None])[0]
    sparse = gather_points(dense, farthest_point_sample(dense, 16, random_start=True,
                                                        generator=torch.Generator().manual_seed(3)))
    return sparse, dense


def _fit(net, objective, batch, steps, lr):
    opt = torch.optim.Adam(net.parameters(), lr)
    for _ in range(steps):
        loss, _ = objective(net, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def fitted():
    """A tiny model trained by stage 1 on one torus patch (the learning tests share it)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sparse, dense = _patch()
    batch = {"x1": dense.expand(4, -1, -1), "sparse": sparse.expand(4, -1, -1)}
    return _fit(PUFMBackbone(TINY), PUFMLoss(noise=0.0, self_condition=0.5), batch, 250, 3e-3), batch


def _cd(net, batch, steps):
    sparse, dense = batch["sparse"][:1], batch["x1"][:1]
    return float(chamfer_distance(sample_pufm(net, midpoint_interpolate(sparse, 4), sparse=sparse, steps=steps).x,
                                  dense))


def test_tiny_model_overfits_one_patch_beyond_midpoints(fitted):
    net, batch = fitted
    cd_mid = float(chamfer_distance(midpoint_interpolate(batch["sparse"][:1], 4), batch["x1"][:1]))
    assert _cd(net, batch, 1) < 0.6 * cd_mid and _cd(net, batch, 2) < 0.6 * cd_mid
    times, losses = loss_curve(net, [batch], points=6)
    assert losses.shape == (6,) and bool((losses >= 0).all()) and float(losses.max()) < 0.02


def test_stage2_chamfer_lowers_the_one_step_endpoint_distance(fitted):
    net, batch = fitted
    before = _cd(net, batch, 1)
    tuned = _fit(copy.deepcopy(net).train(), EndpointChamferLoss(noise=0.0, fm_weight=0.0), batch, 30, 1e-3)
    assert _cd(tuned, batch, 1) < 0.7 * before


def test_gaussian_source_is_unaligned_noise():
    x0 = pufm_source(torch.rand(2, 8, 3), 4, source="gaussian", generator=torch.Generator().manual_seed(0))
    assert x0.shape == (2, 32, 3) and 0.7 < float(x0.std()) < 1.3
    assert PUFMLoss(source="gaussian").align is False and PUFMLoss().align is True


@pytest.mark.parametrize("ratio", [1, 0, 2.5, "4", True])
def test_bad_ratio_is_a_clear_error(ratio):
    with pytest.raises(ConfigError, match="ratio"):
        upsample(None, _cloud(20)[0], ratio)


def test_bad_points_are_clear_errors():
    bad = _cloud(20)[0].clone()
    bad[3, 1] = float("nan")
    with pytest.raises(NonFiniteError):
        upsample(None, bad, 4)
    with pytest.raises(EmptyInputError):
        upsample(None, torch.zeros(0, 3), 4)
    with pytest.raises(ShapeError):
        upsample(None, torch.zeros(20, 2), 4)
    with pytest.raises(ConfigError, match="power"):
        upsample(PUFMBackbone(TINY, ratio=4), _cloud(20)[0], 8)
    with pytest.raises(ConfigError, match="sparse"):
        PUFMLoss()(PUFMBackbone(TINY), {"x1": torch.rand(1, 8, 3)})
    with pytest.raises(ConfigError):
        pufm_source(torch.rand(1, 4, 3), 4, source="uniform")
