"""The figure of docs/manifolds.md: flowzoo's Riemannian flow matching on the sphere and on the torus.

Trains ``ManifoldMLP`` with ``RiemannianFlowMatchingLoss`` on the earth-like von Mises–Fisher mixture (S²) and the
Ramachandran-like mixture (T²), samples with ``integrate_manifold`` and plots held-out data beside the samples
(the sphere in a Mollweide projection of latitude and longitude, the torus as the (φ, ψ) square).

Run (about a minute on a CPU; needs matplotlib):

    .venv/bin/python -m benchmarks.figures_manifolds
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from flowzoo.core.manifolds import (FlatTorus, ManifoldMLP, RiemannianFlowMatchingLoss, Sphere, earth_like_mixture,
                                    integrate_manifold, ramachandran_like_mixture)

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "_static" / "manifolds_sphere.png"


def train_and_sample(manifold, data, steps: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(held-out data, model samples), ``n`` of each."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = ManifoldMLP(manifold, hidden=128, depth=3)
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    objective = RiemannianFlowMatchingLoss(manifold)
    for _ in range(steps):
        loss, _ = objective(net, {"x1": data.sample(256, generator=generator)}, generator=generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        samples = integrate_manifold(net, manifold.random_base(n, generator=generator), manifold=manifold,
                                     method="midpoint", steps=32).x
    return data.sample(n, generator=generator), samples


def _lon_lat(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.atan2(x[:, 1], x[:, 0]), torch.asin(x[:, 2].clamp(-1, 1))


def _wrap(angles: torch.Tensor) -> torch.Tensor:
    """Angles in [-pi, pi), the usual range of a Ramachandran plot."""
    return torch.remainder(angles + math.pi, 2 * math.pi) - math.pi


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sphere_data, sphere_samples = train_and_sample(Sphere(2), earth_like_mixture(), args.steps, args.samples, args.seed)
    torus_data, torus_samples = train_and_sample(FlatTorus(2), ramachandran_like_mixture(), args.steps, args.samples,
                                                 args.seed)
    figure = plt.figure(figsize=(10, 6.2))
    for column, (points, label) in enumerate(((sphere_data, "S²: held-out data"), (sphere_samples, "S²: flowzoo"))):
        axis = figure.add_subplot(2, 2, column + 1, projection="mollweide")
        lon, lat = _lon_lat(points)
        axis.scatter(lon.numpy(), lat.numpy(), s=2.5, alpha=0.5, color="C0" if column == 0 else "C1", linewidths=0)
        axis.set_title(label, fontsize=10)
        axis.grid(True, linewidth=0.3)
        axis.set_xticklabels([])
        axis.set_yticklabels([])
    for column, (points, label) in enumerate(((torus_data, "T²: held-out data"), (torus_samples, "T²: flowzoo"))):
        axis = figure.add_subplot(2, 2, column + 3)
        angles = torch.rad2deg(_wrap(points))
        axis.scatter(angles[:, 0].numpy(), angles[:, 1].numpy(), s=2.5, alpha=0.5,
                     color="C0" if column == 0 else "C1", linewidths=0)
        axis.set(xlim=(-180, 180), ylim=(-180, 180), xlabel="φ (degrees)", ylabel="ψ (degrees)", aspect="equal")
        axis.set_title(label, fontsize=10)
    figure.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=72)
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
