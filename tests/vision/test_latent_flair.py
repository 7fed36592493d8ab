"""FLAIR in a latent space: with a decoder the point mass lives in the latent, and the measurement pulls it to the
latent that explains y, where the latent prior's own sample is a draw that ignores y."""

import pytest
import torch
import torch.nn.functional as F

from flowzoo.core.errors import ShapeError
from flowzoo.core.sampling import integrate
from flowzoo.vision.metrics import psnr
from flowzoo.vision.operators import build_operator
from flowzoo.vision.restoration import flair_restore

pytestmark = pytest.mark.usefixtures("one_thread")


class PointPrior(torch.nn.Module):
    r"""The exact I-CFM velocity of a prior that is uniform over K latents: :math:`(E[z_1\mid z_t] - z_t)/(1-t)`
    with posterior weights :math:`\propto \exp(-\|z_t - t z_k\|^2 / 2(1-t)^2)`."""

    def __init__(self, points: torch.Tensor):
        super().__init__()
        self.points = points

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.clamp(max=0.999)[:, None]
        flat, points = z.flatten(1), self.points.flatten(1)
        distance = ((flat[:, None] - t[:, :, None] * points[None]) ** 2).sum(-1)
        weights = torch.softmax(-distance / (2 * (1 - t) ** 2), dim=1)
        return ((weights @ points - flat) / (1 - t)).reshape(z.shape)


def decode(z: torch.Tensor) -> torch.Tensor:
    """A nonlinear decoder from latents (2, 4, 4) to images (1, 8, 8): mix the channels, upsample, squash."""
    mixed = torch.stack([z[:, 0] + 0.5 * z[:, 1], z[:, 1] - 0.5 * z[:, 0]], 1)
    return torch.tanh(F.pixel_shuffle(torch.cat([mixed, mixed.flip(1)], 1), 2))


@pytest.fixture(scope="module")
def latent_case():
    points = torch.randn(6, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    truth = torch.arange(12) % 6                                   # which latent each measured image comes from
    return decode, PointPrior(points), points, truth, decode(points[truth])


def test_latent_flair_beats_the_latent_priors_unconditioned_sample(latent_case):
    decode, prior, points, truth, images = latent_case
    op = build_operator("sr2", 8, noise_std=0.01)
    y = op.measure(images, generator=torch.Generator().manual_seed(0))
    out = flair_restore(prior, y, op, shape=(2, 4, 4), steps=20, decoder=decode, data_steps=30,
                        generator=torch.Generator().manual_seed(1))
    noise = torch.randn(len(images), 2, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        sample = decode(integrate(prior, noise, steps=20).x)
    flair_psnr, sample_psnr = (float(psnr(x, images).clamp(max=60).mean()) for x in (out.x, sample))
    assert out.x.shape == images.shape and out.extras["mu"].shape == (12, 2, 4, 4) and out.nfe == 20
    assert flair_psnr > sample_psnr + 3.0, (flair_psnr, sample_psnr)
    nearest = ((out.extras["mu"].flatten(1)[:, None] - points.flatten(1)[None]) ** 2).sum(-1).argmin(1)
    assert float((nearest == truth).float().mean()) >= 0.75      # the prior's point that explains y, mostly


def test_latent_flair_checks_the_encoders_shape(latent_case):
    decode, prior, *_ = latent_case
    op = build_operator("sr2", 8)
    with pytest.raises(ShapeError, match="latent"):
        flair_restore(prior, torch.zeros(1, 1, 4, 4), op, shape=(2, 4, 4), steps=2, decoder=decode,
                      encoder=lambda x: x)
