"""Degradation operators: adjoints, pseudo-inverses, projections and bad input."""

import pytest
import torch

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.vision.operators import (OPERATORS, AveragePoolDownsample, CircularBlur, Inpainting, Operator,
                                      box_inpainting, build_operator, check_adjoint, check_pseudo_inverse,
                                      gaussian_kernel, has_pseudo_inverse, motion_kernel, random_inpainting)


# the blurs' pseudo-inverse drops frequencies with |k| <= max(1e-3, noise_std), so the range is matched only to that level
TOLERANCE = {"deblur": 2e-2, "motion": 2e-2}


def _images(shape=(2, 3, 16, 16), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("task", OPERATORS)
def test_adjoint_identity_holds_for_every_task(task):
    op = build_operator(task, 16)
    check_adjoint(op, (3, 16, 16))
    x, y = _images(), torch.randn_like(op(_images()))
    assert torch.allclose((op(x) * y).sum(), (x * op.adjoint(y)).sum(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("task", OPERATORS)
def test_pseudo_inverse_is_a_right_inverse_on_the_range(task):
    op = build_operator(task, 16)
    y = op(_images())
    assert torch.allclose(op(op.pinv(y)), y, atol=TOLERANCE.get(task, 1e-4))


@pytest.mark.parametrize("task", OPERATORS)
def test_projection_explains_the_measurement_and_is_idempotent(task):
    op = build_operator(task, 16)
    clean, guess = _images(seed=1), _images(seed=2)
    y = op(clean)
    projected = op.project(guess, y)
    assert torch.allclose(op(projected), y, atol=TOLERANCE.get(task, 1e-4))
    assert torch.allclose(op.project(projected, y), projected, atol=TOLERANCE.get(task, 1e-4))


def test_average_pool_known_values_and_adjoint_scaling():
    op = AveragePoolDownsample(2)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert op(x).squeeze().tolist() == [[2.5, 4.5], [10.5, 12.5]]
    y = torch.ones(1, 1, 2, 2)
    assert torch.allclose(op.adjoint(y), torch.full((1, 1, 4, 4), 0.25))
    assert torch.allclose(op.pinv(y), torch.ones(1, 1, 4, 4))


def test_inpainting_masks_share_and_box_position():
    op = random_inpainting(32, missing=0.7, seed=3)
    assert 0.6 < 1 - float(op.mask.mean()) < 0.8
    box = box_inpainting(8, box=0.5)
    assert box.mask[0, 2:6, 2:6].sum() == 0 and box.mask.sum() == 64 - 16
    x = torch.ones(1, 1, 8, 8)
    assert float(box(x).sum()) == 48


def test_blur_kernels_normalised_and_blur_matches_direct_circular_convolution():
    for k in (gaussian_kernel(1.0), motion_kernel(5, 30.0), motion_kernel(4)):
        assert abs(float(k.sum()) - 1) < 1e-5 and k.shape[0] % 2 == 1
    kernel = torch.rand(3, 3)
    op = CircularBlur(kernel)
    x = _images((1, 1, 8, 8))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular")
    direct = torch.nn.functional.conv2d(padded, kernel[None, None])   # correlation = conv with the flipped kernel
    flipped = CircularBlur(torch.flip(kernel, (0, 1)))
    assert torch.allclose(flipped(x), direct, atol=1e-5)
    assert torch.allclose(op.adjoint(x), direct, atol=1e-5)


def test_measure_adds_noise_of_the_stated_std():
    op = AveragePoolDownsample(2, noise_std=0.1)
    x = torch.zeros(64, 1, 16, 16)
    y = op.measure(x, generator=torch.Generator().manual_seed(0))
    assert abs(float(y.std()) - 0.1) < 0.01


def test_blur_pseudo_inverse_truncates_at_the_noise_level_and_keeps_noisy_restorations_bounded():
    kernel = gaussian_kernel(1.5)
    noiseless, noisy = CircularBlur(kernel), CircularBlur(kernel, noise_std=0.01)
    assert noiseless.eps == 1e-3 and noisy.eps == 0.01
    assert CircularBlur(kernel, noise_std=0.01, eps=1e-3).eps == 1e-3   # an explicit eps wins
    # the untruncated inverse divides 0.01 noise by |k| ~ 1e-3; the noise-level cut keeps it near the signal's scale
    assert noisy.noise_gain(16, 16) * 0.01 < 0.5 < CircularBlur(kernel, eps=1e-3).noise_gain(16, 16) * 0.01
    x = torch.tanh(3 * CircularBlur(gaussian_kernel(1.0)).forward(_images((8, 1, 16, 16))))   # smooth, like images
    y = noisy.measure(x, generator=torch.Generator().manual_seed(1))
    error = {eps: float((CircularBlur(kernel, eps=eps).pinv(y) - x).pow(2).mean()) for eps in (1e-3, 0.01)}
    assert error[0.01] < 0.1 * error[1e-3]
    # white noise through the pseudo-inverse has the std noise_gain states
    noise = torch.randn(256, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    assert abs(float(noisy.pinv(noise).std()) / noisy.noise_gain(16, 16) - 1) < 0.05


class WrongAdjoint(Operator):
    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 2)

    def adjoint(self, y):
        return torch.nn.functional.interpolate(y, scale_factor=2)   # missing the 1/4

    def pinv(self, y):
        return self.adjoint(y)


def test_a_wrong_adjoint_is_caught_with_the_mismatch():
    with pytest.raises(ConfigError, match="<A x, y>"):
        check_adjoint(WrongAdjoint(), (1, 8, 8))


def test_bad_input_is_reported():
    with pytest.raises(ShapeError, match="mask's size"):
        random_inpainting(16)(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ShapeError, match="divide"):
        AveragePoolDownsample(4)(torch.zeros(1, 1, 10, 10))
    with pytest.raises(ConfigError, match="zeros and ones"):
        Inpainting(torch.full((4, 4), 0.5))
    with pytest.raises(ShapeError, match="odd"):
        CircularBlur(torch.ones(2, 2))
    with pytest.raises(ConfigError, match="task"):
        build_operator("colourise", 16)
    with pytest.raises(ShapeError, match="dimension"):
        AveragePoolDownsample(2)(torch.zeros(1, 8, 8))


class NoPseudoInverse(Operator):
    """A user's ×2 average pooling that implements only A and A^T."""

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 2)

    def adjoint(self, y):
        return torch.nn.functional.interpolate(y, scale_factor=2) / 4


class UnscaledPseudoInverse(NoPseudoInverse):
    """Its "pinv" is the adjoint: A A^+ = I / 4 on the range, so a projection would not land on {x : Ax = y}."""

    def pinv(self, y):
        return self.adjoint(y)


@pytest.mark.parametrize("task", OPERATORS)
def test_every_task_has_a_pseudo_inverse_that_passes_the_check(task):
    op = build_operator(task, 12)
    assert has_pseudo_inverse(op)
    check_pseudo_inverse(op, (3, 12, 12))


def test_an_operator_without_pinv_says_so_instead_of_failing_deep_inside():
    op = NoPseudoInverse()
    assert not has_pseudo_inverse(op)
    with pytest.raises(ConfigError, match="pseudo-inverse.*dps"):
        op.pinv(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ConfigError, match="pseudo-inverse"):
        op.project(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ConfigError, match="pseudo-inverse"):
        check_pseudo_inverse(op, (1, 8, 8))
    check_adjoint(op, (1, 8, 8))                                       # A and A^T alone are fine


def test_a_pseudo_inverse_that_is_not_a_right_inverse_is_caught():
    with pytest.raises(ConfigError, match="right inverse.*relative error 0.75"):
        check_pseudo_inverse(UnscaledPseudoInverse(), (1, 8, 8))


@pytest.mark.parametrize("task, shape", [("sr4", (3, 3, 3)), ("sr2", (3, 6, 6)), ("inpaint", (3, 12, 12)),
                                         ("inpaint_box", (3, 12, 12)), ("deblur", (3, 12, 12)),
                                         ("motion", (3, 12, 12))])
def test_measurement_shape_is_the_size_a_degraded_image_must_have(task, shape):
    assert build_operator(task, 12).measurement_shape((3, 12, 12)) == shape
