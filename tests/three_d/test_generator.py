"""Tests of the two-stage 3D generator (flowzoo.three_d.voxels / generator / shape_features) and its MDT-dist
students: watertight meshes, the VAE round trip, a tiny teacher that overfits, distillation beating the naive
one-step teacher, the shape classifier, and bad input."""

import numpy as np
import pytest
import torch

from flowzoo.core.errors import ConfigError, FlowzooError
from flowzoo.core.fewstep import one_step_sample
from flowzoo.core.sampling import integrate
from flowzoo.three_d.data import sample_surface
from flowzoo.three_d.generator import (AttributeFlow, GeneratorConfig, batch_sampler,
                                       distill_student, fit, train_teacher)
from flowzoo.three_d.shape_features import coverage_mmd, frechet_distance, train_shape_classifier
from flowzoo.three_d.voxels import (OccupancyVAE, OccupancyVAELoss, check_grid_size, devoxelize, is_watertight,
                                    make_shape_voxels, occupancy_iou, occupancy_to_mesh, voxelize)

TINY = GeneratorConfig(classes=("sphere", "box"), grid_size=8, latent_channels=2, vae_width=8, width=32,
                       attribute_hidden=32, guidance=(1.0, 1.0), cond_dropout=0.0, vae_steps=150,
                       structure_steps=250, attribute_steps=300, batch_size=8, lr=3e-3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions run fastest, and kindest to a shared machine, on one thread
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(one_thread):
    data = make_shape_voxels(1, TINY.classes, TINY.grid_size, seed=0, points=1500, surface_points=64)
    return data, train_teacher(data, TINY, seed=0)


def test_sphere_occupancy_gives_a_watertight_mesh():
    occupancy, _ = voxelize(sample_surface("sphere", 4000, np.random.default_rng(0)) * 0.8, 16)
    vertices, faces = occupancy_to_mesh(occupancy)
    assert len(faces) > 100 and is_watertight(faces)
    assert np.abs(vertices).max() <= 1.0
    # the mesh hugs the surface: vertices lie within two voxels of radius 0.8
    radius = np.linalg.norm(vertices, axis=1)
    assert np.abs(radius - 0.8).max() < 2 * 2.0 / 16
    assert not is_watertight(faces[:-1])  # remove one face and an edge is left with one neighbour


def test_voxelize_and_devoxelize_invert_each_other():
    points = torch.tensor([[0.1, 0.2, -0.3], [0.11, 0.21, -0.31], [-0.9, 0.9, 0.0]])
    occupancy, offsets = voxelize(points, 8)
    assert int(occupancy.sum()) == 2
    clouds = devoxelize(occupancy[None], offsets[None])[0]
    expected = torch.stack([points[:2].mean(0), points[2]])
    assert torch.allclose(clouds[clouds[:, 0].argsort()], expected[expected[:, 0].argsort()], atol=1e-6)


def test_vae_round_trip_beats_the_best_constant_grid():
    torch.manual_seed(0)
    data = make_shape_voxels(3, ("sphere", "box", "torus"), 8, seed=1, points=1500, surface_points=8)
    vae = OccupancyVAE(8, latent_channels=2, width=8)
    fit(vae, OccupancyVAELoss(), batch_sampler(data, "vae", 8), steps=150, lr=3e-3)
    with torch.no_grad():
        recon = (vae.decode(vae.encode(data.occupancy)[0]) > 0).float()
    constant = (data.occupancy.mean(0, keepdim=True) > 0.5).float().expand_as(data.occupancy)
    vae_iou, constant_iou = occupancy_iou(recon, data.occupancy).mean(), occupancy_iou(constant, data.occupancy).mean()
    assert vae_iou > constant_iou + 0.15, (vae_iou, constant_iou)


def test_tiny_teacher_overfits_two_shapes(tiny):
    data, teacher = tiny
    shapes = teacher.sample(torch.tensor([0, 1, 0, 1]), steps=25, generator=torch.Generator().manual_seed(3))
    target = data.occupancy[[0, 1, 0, 1]]
    iou = occupancy_iou(shapes.occupancy, target)
    assert iou.min() > 0.6, iou
    # offsets of correctly placed voxels match the data's within a fraction of a voxel
    both = (shapes.occupancy * target)[:, 0] > 0.5
    truth = data.offsets[[0, 1, 0, 1]].permute(0, 2, 3, 4, 1)[both]
    error = (shapes.offsets.permute(0, 2, 3, 4, 1)[both] - truth).abs().mean()
    assert error < 0.75 * truth.abs().mean(), (error, truth.abs().mean())  # zero offsets would score 1.0 here
    assert shapes.nfe == 50 and len(shapes.points()) == 4


def test_distilled_students_beat_the_naive_few_step_teacher(tiny):
    data, teacher = tiny
    latents = teacher.vae.encode(data.occupancy)[0] / teacher.latent_scale
    sampler = batch_sampler(data, "structure", 16, latents)
    g = torch.Generator().manual_seed(7)
    z = torch.randn((64,) + tuple(teacher.vae.latent_shape), generator=g)  # the same noise for every sampler
    cond = {"y": torch.arange(64) % 2}

    def error(model, steps):
        with torch.no_grad():
            return (integrate(model, z, steps=steps, cond=cond).x - reference).pow(2).mean().item()

    with torch.no_grad():
        reference = integrate(teacher.structure, z, steps=25, cond=cond).x
    naive = {k: error(teacher.structure, k) for k in (1, 2)}
    mdt = distill_student(teacher.structure, "vm_vd", 1.0, sampler, steps=150, lr=1e-3)
    cd = distill_student(teacher.structure, "cd", 1.0, sampler, steps=150, lr=1e-3)
    with torch.no_grad():  # a student's 1-step Euler sample is the core's one-step sample
        assert torch.allclose(integrate(mdt, z, steps=1, cond=cond).x, one_step_sample(mdt, z, cond=cond).x)
    assert error(mdt, 1) < 0.9 * naive[1] and error(mdt, 2) < naive[2], (error(mdt, 1), error(mdt, 2), naive)
    assert error(cd, 1) < 0.6 * naive[1], (error(cd, 1), naive)


def test_attribute_flow_is_exact_on_empty_voxels():
    net = AttributeFlow(2, hidden=8)
    z, t = torch.randn(2, 3, 8, 8, 8), torch.tensor([0.3, 0.7])
    occupancy = torch.zeros(2, 1, 8, 8, 8)
    occupancy[0, 0, 1, 2, 3] = 1
    x_t = (1 - t)[:, None, None, None, None] * z  # data is 0 in empty voxels
    v = net(x_t, t, torch.tensor([0, 1]), occupancy)
    empty = occupancy.expand_as(z) < 0.5
    assert torch.allclose(v[empty], -z[empty], atol=1e-5)  # the flow-matching target x1 - x0 = -z


def test_shape_classifier_beats_chance_and_set_metrics():
    net, accuracy = train_shape_classifier(("sphere", "box", "torus"), 8, n_per_class=8, points=128, steps=120)
    assert accuracy > 0.6  # chance is 1/3
    cov, mmd = coverage_mmd(torch.tensor([[1.0, 0.0, 5.0], [0.0, 2.0, 5.0]]))
    assert cov == pytest.approx(2 / 3) and mmd == pytest.approx(5 / 3)
    features = torch.randn(100, 3, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(features, features + torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("size", [4, 12, 6.5, "16"])
def test_bad_grid_size(size):
    with pytest.raises(FlowzooError, match="grid_size"):
        check_grid_size(size)


def test_bad_class_and_points(tiny):
    _, teacher = tiny
    with pytest.raises(ConfigError, match=r"class labels in \[0, 2\)"):
        teacher.sample(torch.tensor([0, 2]), steps=1)
    with pytest.raises(ConfigError):
        teacher.sample(torch.tensor([-1]), steps=1)
    with pytest.raises(ConfigError, match="inside"):
        voxelize(torch.full((4, 3), 1.5), 8)
    with pytest.raises(ConfigError, match="classes"):
        make_shape_voxels(1, ("teapot",), 8, seed=0)


def test_generate_command_writes_clouds_and_meshes_and_never_overwrites(tiny, tmp_path):
    from flowzoo.three_d.cli_generate import generate_main, load_generator, save_generator
    from flowzoo.three_d.io import read_ply

    _, teacher = tiny
    run = tmp_path / "run"
    save_generator(teacher, run, TINY)
    loaded, config = load_generator(run)
    assert config.classes == TINY.classes and float(loaded.latent_scale) == pytest.approx(float(teacher.latent_scale))
    out = tmp_path / "shapes"
    assert generate_main(["--checkpoint", str(run), "--steps", "2", "--out", str(out), "--n", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["box_0.obj", "box_0.ply", "sphere_0.obj", "sphere_0.ply"]
    assert len(read_ply(out / "sphere_0.ply").points) > 10
    faces = [line for line in (out / "box_0.obj").read_text().splitlines() if line.startswith("f ")]
    assert is_watertight(np.array([[int(v) for v in f.split()[1:]] for f in faces]))
    with pytest.raises(ConfigError, match="overwrite"):
        generate_main(["--checkpoint", str(run), "--out", str(out)])
    with pytest.raises(ConfigError, match="classes"):
        generate_main(["--checkpoint", str(run), "--out", str(tmp_path / "x"), "--classes", "teapot"])
    assert generate_main(["--checkpoint", str(run), "--out", str(out), "--overwrite", "--classes", "box"]) == 0
    assert len(list(out.iterdir())) == 4  # 2 box shapes, the old sphere files gone
