"""SymmFlow and the segmentation data: map codes, mIoU, the shapes set, the symmetric loss, the samplers' time
directions, a learning test on real MNIST digits and the bad-input errors."""

import pytest
import torch

from flowzoo.core.errors import ConfigError, DTypeError, ShapeError
from flowzoo.vision.segmentation import (MapCodec, SegmentationData, load_segmentation, make_shapes, mean_iou,
                                         mnist_masks, pixel_accuracy)
from flowzoo.vision.symmflow import (ClassifierLoss, PooledClassifier, SymmFlowLoss, SymmFlowNet, classify, fit,
                                     generate, segment, segmentation_batch)

SIGMA = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------- data and codes

@pytest.mark.parametrize("encoding", ["colour", "onehot"])
@pytest.mark.parametrize("num_classes", [2, 5, 11, 30])
def test_codec_round_trip_and_noise_tolerance(encoding, num_classes):
    codec = MapCodec(num_classes, encoding=encoding)
    maps = torch.randint(0, num_classes, (3, 6, 7), generator=torch.Generator().manual_seed(0))
    encoded = codec.encode(maps)
    assert encoded.shape == (3, codec.channels, 6, 7)
    assert torch.equal(codec.decode(encoded), maps)
    noisy = codec.encode(maps, dequantize=0.99 * codec.min_distance / 3 ** 0.5,
                         generator=torch.Generator().manual_seed(1))  # every coordinate within a third
    assert torch.equal(codec.decode(noisy), maps)
    assert codec.channels == (3 if encoding == "colour" else num_classes)


def test_colour_codes_are_distinct_and_in_range():
    codec = MapCodec(11)
    assert codec.codes.abs().max() <= 1.0 and len({tuple(c) for c in codec.codes.tolist()}) == 11
    assert codec.min_distance == pytest.approx(1.0)


def test_mean_iou_hand_cases():
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 2, 2]]])
    assert mean_iou(target, target, 3) == 1.0 and pixel_accuracy(target, target, 3) == 1.0
    assert mean_iou((target + 1) % 3, target, 3) == 0.0
    pred = torch.tensor([[[0, 1, 1, 1], [2, 2, 2, 0]]])
    # class 0: tp 1, union 3; class 1: tp 2, union 3; class 2: tp 3, union 4
    assert mean_iou(pred, target, 3) == pytest.approx((1 / 3 + 2 / 3 + 3 / 4) / 3)
    assert pixel_accuracy(pred, target, 3) == pytest.approx(6 / 8)
    # a class absent from both maps does not count
    assert mean_iou(target, target, 7) == 1.0


def test_shapes_are_seeded_and_masks_match_the_pixels():
    a, b, c = make_shapes(16, size=24, seed=3), make_shapes(16, size=24, seed=3), make_shapes(16, size=24, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.maps, b.maps)
    assert not torch.equal(a.images, c.images)
    # shapes are saturated colours, the background is grey (R = G = B): colour marks the mask exactly
    saturation = a.images.amax(1) - a.images.amin(1)
    assert torch.equal(saturation > 0.5, a.maps > 0)
    assert bool((saturation[a.maps == 0] == 0).all())
    assert a.images.min() >= -1 and a.images.max() <= 1
    present = torch.stack([(a.maps == k).flatten(1).any(1) for k in range(1, 5)], 1)
    assert torch.equal(present, a.multilabels)
    counts = torch.stack([(a.maps == k).flatten(1).sum(1) for k in range(1, 5)], 1)
    assert torch.equal(counts.gather(1, a.labels[:, None])[:, 0], counts.max(1).values)
    assert len({tuple(row) for row in a.multilabels.int().tolist()}) > 3  # several classes per image occur


def test_mnist_masks_follow_the_digits():
    data = mnist_masks("test", size=16)
    foreground = data.images[:, 0] > 0.0
    assert torch.equal(data.maps > 0, foreground)
    assert torch.equal(data.maps[foreground], (data.labels[:, None, None] + 1).expand_as(data.maps)[foreground])
    assert data.num_classes == 11 and data.as_image_data().num_classes == 10
    assert len(load_segmentation("shapes", split="test", count=5, size=16)) == 5


# ----------------------------------------------------------------------------------------------- loss and samplers

def _batch(n=4, size=8, classes=3, channels=1, codec=None):
    gen = torch.Generator().manual_seed(0)
    codec = codec or MapCodec(classes)
    batch = {"x1": torch.rand(n, channels, size, size, generator=gen) * 2 - 1,
             "map": torch.randint(0, classes, (n, size, size), generator=gen),
             "x0": torch.randn(n, channels, size, size, generator=gen),
             "map0": torch.randn(n, codec.channels, size, size, generator=gen)}
    return batch, codec


@pytest.mark.parametrize("direction", ["symmetric", "generate", "segment"])
def test_loss_is_zero_at_the_exact_target(direction):
    batch, codec = _batch()
    x, m, ex, em = batch["x1"], codec.encode(batch["map"]), batch["x0"], batch["map0"]
    target = torch.cat([x - (1 - SIGMA) * ex, em - (1 - SIGMA) * m], 1)
    seen = {}

    def oracle(z, t):
        seen["z"], seen["t"] = z, t
        return target

    loss, metrics = SymmFlowLoss(codec, dequantize=0.0, direction=direction, sigma_min=SIGMA)(oracle, batch)
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    tb = seen["t"][:, None, None, None]
    x_t = x if direction == "segment" else (1 - (1 - SIGMA) * tb) * ex + tb * x
    m_t = m if direction == "generate" else (1 - (1 - SIGMA) * tb) * m + tb * em
    assert torch.allclose(seen["z"], torch.cat([x_t, m_t], 1))


def test_loss_of_a_zero_model_is_the_weighted_target_energy():
    batch, codec = _batch()
    x, m, ex, em = batch["x1"], codec.encode(batch["map"]), batch["x0"], batch["map0"]
    image_term = (x - (1 - SIGMA) * ex).square().mean()
    map_term = (em - (1 - SIGMA) * m).square().mean()
    loss, metrics = SymmFlowLoss(codec, image_weight=0.3, dequantize=0.0)(lambda z, t: torch.zeros_like(z), batch)
    assert loss.item() == pytest.approx(0.3 * image_term.item() + 0.7 * map_term.item(), rel=1e-5)
    assert metrics["loss_image"] == pytest.approx(image_term.item(), rel=1e-5)


class _Oracle(torch.nn.Module):
    """The exact joint velocity of the paths when the data is one (image, map) pair."""

    def __init__(self, image, code, codec):
        super().__init__()
        self.image, self.code, self.codec, self.image_channels = image, code, codec, image.shape[1]
        self.times = []

    def forward(self, z, t):
        self.times.append(float(t[0]))
        tb, c = t[:, None, None, None], self.image_channels
        eps_x = (z[:, :c] - tb * self.image) / (1 - (1 - SIGMA) * tb)
        eps_m = (z[:, c:] - (1 - (1 - SIGMA) * tb) * self.code) / tb.clamp_min(1e-6)
        return torch.cat([self.image - (1 - SIGMA) * eps_x, eps_m - (1 - SIGMA) * self.code], 1)


def test_samplers_run_the_right_directions_and_recover_the_data():
    codec = MapCodec(4, encoding="onehot")
    maps = torch.randint(0, 4, (1, 8, 8), generator=torch.Generator().manual_seed(0))
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    oracle = _Oracle(image, codec.encode(maps), codec)
    seg = segment(oracle, image.expand(3, -1, -1, -1), steps=1, generator=torch.Generator().manual_seed(2))
    assert oracle.times == [1.0] and seg.nfe == 1
    assert torch.equal(seg.extras["labels"], maps.expand(3, -1, -1))
    assert torch.allclose(seg.x, codec.encode(maps).expand(3, -1, -1, -1), atol=1e-4)
    oracle.times.clear()
    gen = generate(oracle, maps.expand(2, -1, -1), steps=4, generator=torch.Generator().manual_seed(3))
    assert oracle.times == [0.0, 0.25, 0.5, 0.75] and gen.x.shape == (2, 1, 8, 8)
    assert torch.allclose(gen.x, image.expand(2, -1, -1, -1), atol=1e-3)
    majority = int(torch.bincount(maps[maps > 0]).argmax()) - 1
    assert torch.equal(classify(oracle, image, steps=1), torch.tensor([majority]))


def test_classify_reads_a_constant_class_map_as_the_paper_encodes_classes():
    codec = MapCodec(10, encoding="colour")
    labels = torch.tensor([7])
    constant = labels[:, None, None].expand(1, 8, 8)
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    oracle = _Oracle(image, codec.encode(constant), codec)
    assert torch.equal(classify(oracle, image, steps=1, background=False), labels)
    assert classify(oracle, image, steps=1, background=False, multilabel=True).nonzero().tolist() == [[0, 7]]


def test_single_direction_nets_hold_the_other_modality():
    codec = MapCodec(3)
    z = torch.randn(2, 1 + codec.channels, 8, 8)
    gen_net = SymmFlowNet(1, codec, direction="generate", channels=8, head_channels=8)
    seg_net = SymmFlowNet(1, codec, direction="segment", channels=8, head_channels=8)
    assert gen_net(z, torch.rand(2))[:, 1:].abs().max() == 0 and seg_net(z, torch.rand(2))[:, :1].abs().max() == 0
    maps = torch.randint(0, 3, (2, 8, 8))
    out = generate(gen_net, maps, steps=3)
    assert torch.equal(out.extras["state"][:, 1:], codec.encode(maps))  # the map stayed clean


def test_classifier_baseline_shapes_and_loss():
    net = PooledClassifier(3, 4, channels=8, head_channels=8)
    data = make_shapes(6, size=8)
    batch = segmentation_batch(data, torch.arange(6))
    assert net(batch["x1"]).shape == (6, 4)
    loss, _ = ClassifierLoss(multilabel=True)(net, batch)
    assert loss.item() > 0


# ----------------------------------------------------------------------------------------------- learning

def test_tiny_symmflow_learns_both_directions_on_real_digits():
    """Six real digits with their foreground masks (the research notes' CPU experiment): one network segments
    them in one Euler step and draws digits that fill the masks it is given. A sign or direction error in
    either path, or the map and image channels swapped, leaves one of the two near chance."""
    torch.manual_seed(0)
    digits = mnist_masks("train", size=16).subset(slice(0, 6))
    data = SegmentationData(digits.images, (digits.maps > 0).long(), digits.labels, digits.multilabels, 2,
                            ("background", "digit"), "mnist-foreground")
    codec = MapCodec(2, encoding="onehot")
    net = SymmFlowNet(1, codec, channels=16)
    losses = fit(net, SymmFlowLoss(codec), data, steps=120, batch_size=6, lr=3e-3, seed=0)
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    net.eval()
    with torch.no_grad():
        seg = segment(net, data.images, steps=1, generator=torch.Generator().manual_seed(0))
        images = generate(net, data.maps, steps=10, generator=torch.Generator().manual_seed(0)).x
    miou = mean_iou(seg.extras["labels"], data.maps, 2)
    fake, real = images[:, 0] > 0, data.maps > 0
    mask_iou = float((fake & real).sum() / (fake | real).sum())
    assert miou > 0.8, miou            # all-background scores about 0.4
    assert mask_iou > 0.7, mask_iou    # a digit drawn ignoring its mask overlaps it far less


# ----------------------------------------------------------------------------------------------- bad input

def test_bad_inputs_raise_clear_errors():
    batch, codec = _batch()
    loss = SymmFlowLoss(codec)
    model = lambda z, t: torch.zeros_like(z)  # noqa: E731
    with pytest.raises(ShapeError, match="size 8x8"):
        loss(model, {**batch, "map": batch["map"][:, :6]})
    with pytest.raises(ConfigError, match=r"classes in \[0, 3\)"):
        loss(model, {**batch, "map": batch["map"] + 3})
    with pytest.raises(DTypeError, match="integer class"):
        loss(model, {**batch, "map": batch["map"].float()})
    with pytest.raises(ConfigError, match="'x1'"):
        loss(model, {"x1": batch["x1"]})
    with pytest.raises(ShapeError, match="velocity shaped like z"):
        loss(lambda z, t: z[:, :1], batch)
    with pytest.raises(ConfigError, match="direction"):
        SymmFlowLoss(codec, direction="sideways")
    with pytest.raises(ConfigError, match="dequantize"):
        SymmFlowLoss(codec, dequantize=5.0)
    with pytest.raises(ConfigError, match="encoding"):
        MapCodec(3, encoding="rgb")
    with pytest.raises(ConfigError, match="segmentation set"):
        load_segmentation("coco")
    with pytest.raises(ShapeError, match="same shape|size"):
        mean_iou(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long), 2)
    net = SymmFlowNet(1, codec, channels=8, head_channels=8)
    with pytest.raises(ShapeError, match=r"\(B, 1, H, W\)"):
        segment(net, torch.zeros(2, 3, 8, 8))
    with pytest.raises(ConfigError, match="classes in"):
        generate(net, torch.full((2, 8, 8), 7))
    with pytest.raises(ConfigError, match="SymmFlow model"):
        segment(model, batch["x1"])
