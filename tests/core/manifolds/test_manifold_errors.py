"""Bad input to the manifold API fails at the boundary with a flowzoo error that says what to do."""

from __future__ import annotations

import pytest
import torch

from flowzoo.core.errors import ConfigError, DTypeError, EmptyInputError, FlowzooError, ShapeError
from flowzoo.core.manifolds import (SO3, FlatTorus, GeodesicOTCoupling, GeodesicPath, ManifoldMLP, OffManifoldError,
                                    Product, RiemannianFlowMatchingLoss, Sphere, VonMisesFisherMixture,
                                    integrate_manifold, manifold_log_likelihood)

zero = lambda x, t: torch.zeros_like(x)


def test_points_off_the_manifold_are_refused_with_their_distance():
    sphere = Sphere()
    x = sphere.random_base(4)
    x[2] *= 1.5
    with pytest.raises(OffManifoldError, match=r"up to 0\.5 off the manifold.*manifold\.projx\(x\)"):
        integrate_manifold(zero, x, manifold=sphere, steps=2)
    with pytest.raises(OffManifoldError, match='batch\\["x1"\\] on the 2-sphere'):
        RiemannianFlowMatchingLoss(sphere)(zero, {"x1": x})
    with pytest.raises(OffManifoldError, match="x1"):
        manifold_log_likelihood(zero, x, manifold=sphere, steps=2)
    rotation = SO3().random_base(2)
    with pytest.raises(OffManifoldError, match="rotation group"):
        SO3().check_on(rotation * 2.0)
    with pytest.raises(OffManifoldError, match=r"torus.*up to 1 off"):
        FlatTorus(1).check_on(torch.tensor([[-1.0]]))
    assert issubclass(OffManifoldError, (FlowzooError, ValueError))
    RiemannianFlowMatchingLoss(sphere, check_points=False)(zero, {"x1": x})      # the check can be skipped


def test_wrong_shapes_and_types_are_refused():
    sphere = Sphere()
    with pytest.raises(ShapeError, match=r"shape \(B, 3\) for the 2-sphere"):
        integrate_manifold(zero, torch.ones(4, 4), manifold=sphere, steps=2)
    with pytest.raises(ShapeError, match="at least 3 dimension"):
        SO3().check_on(torch.eye(3))
    with pytest.raises(ShapeError):
        GeodesicPath(sphere).sample(sphere.random_base(3), sphere.random_base(4), torch.rand(3))
    with pytest.raises(ShapeError, match="shaped like x"):
        integrate_manifold(lambda x, t: x[:, :2], sphere.random_base(3), manifold=sphere, steps=2)
    with pytest.raises(DTypeError):
        integrate_manifold(zero, [[1.0, 0.0, 0.0]], manifold=sphere, steps=2)
    with pytest.raises(ConfigError, match="a flowzoo.core.manifolds.Manifold"):
        integrate_manifold(zero, sphere.random_base(2), manifold="sphere", steps=2)
    with pytest.raises(ConfigError):
        Product()
    with pytest.raises(ShapeError):
        GeodesicOTCoupling(sphere)(FlatTorus(2).random_base(3), FlatTorus(2).random_base(3))


def test_bad_steps_methods_and_settings_are_refused():
    sphere = Sphere()
    x = sphere.random_base(2)
    for steps in (0, -1, 2.5):
        with pytest.raises(ConfigError, match="steps"):
            integrate_manifold(zero, x, manifold=sphere, steps=steps)
        with pytest.raises(ConfigError, match="steps"):
            manifold_log_likelihood(zero, x, manifold=sphere, steps=steps)
    with pytest.raises(ConfigError, match="steps or time_grid"):
        integrate_manifold(zero, x, manifold=sphere)
    with pytest.raises(ConfigError, match="method in"):
        integrate_manifold(zero, x, manifold=sphere, steps=2, method="dopri5")
    with pytest.raises(ConfigError, match="update in"):
        integrate_manifold(zero, x, manifold=sphere, steps=2, update="exp")
    with pytest.raises(ConfigError, match="estimator"):
        manifold_log_likelihood(zero, x, manifold=sphere, steps=2, estimator="skilling")
    with pytest.raises(ConfigError, match="dim"):
        Sphere(0)
    with pytest.raises(ConfigError, match="hidden"):
        ManifoldMLP(sphere, hidden=0)
    with pytest.raises(EmptyInputError):
        sphere.random_base(0)
    with pytest.raises(ConfigError, match="kappas"):
        VonMisesFisherMixture([[0.0, 0.0, 1.0]], -1.0)
    with pytest.raises(ConfigError, match="t in \\[0, 1\\]"):
        GeodesicPath(sphere).sample(x, x, torch.tensor([0.5, 2.0]))
