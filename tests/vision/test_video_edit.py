"""Video editing by flow: propagation from the first frame, shape-calibrated flows, the conditional editor."""

import pytest
import torch

from flowzoo.core.errors import ConfigError, ShapeError
from flowzoo.vision.optical_flow import warp
from flowzoo.vision.video_edit import (FlowConditionedEditor, apply_edit, corrupt_flow, hard_warp_edit,
                                       random_appearance, scale_about_centroid, shape_calibrated_flow)

pytestmark = pytest.mark.usefixtures("one_thread")


def _square_video(frames=4, size=24, side=6, step=2):
    """A bright square moving right by ``step`` px a frame; returns the video and its exact flows to frame 1."""
    video = torch.full((frames, 1, size, size), -1.0)
    flows = torch.zeros(frames - 1, 2, size, size)
    occluded = torch.zeros(frames - 1, 1, size, size, dtype=torch.bool)
    for k in range(frames):
        x = 4 + step * k
        video[k, :, 8:8 + side, x:x + side] = 1.0
        if k:
            flows[k - 1, 0, 8:8 + side, x:x + side] = -step * k
            occluded[k - 1, 0, 8:8 + side, 4:4 + step * k] = True     # background in frame 1 under the square
    return video, flows, occluded


def _recall(found, truth):
    return float((found & truth).sum() / truth.sum())


def test_hard_warp_with_exact_flows_reproduces_the_edit():
    video, flows, occluded = _square_video()
    for edit in ("invert", "recolour"):
        edited = hard_warp_edit(video, edit, flows=flows, occluded=occluded)
        assert torch.allclose(edited.frames, apply_edit(video, edit), atol=1e-5)


def test_hard_warp_with_estimated_flows_is_close():
    video, _, _ = _square_video(size=32)
    edited = hard_warp_edit(video, "invert")
    assert float((edited.frames - apply_edit(video, "invert")).abs().mean()) < 0.05


def test_shape_calibrated_flow_follows_a_scaled_object_where_the_source_flow_does_not():
    video, flows, _ = _square_video(frames=4, size=32, side=8, step=3)
    scaled_first = scale_about_centroid(video[0], 1.3)[None]
    truth = torch.stack([scale_about_centroid(f, 1.3) for f in video[1:]]) > 0
    plain = warp(scaled_first.expand(3, -1, -1, -1), flows) > 0
    calibrated = warp(scaled_first.expand(3, -1, -1, -1), shape_calibrated_flow(flows, video, 1.3)) > 0
    # every pixel of the scaled object is fetched from the scaled first frame (the source flow misses its rim);
    # background the object uncovers samples frame 1's object under both flows: occlusion masks handle that
    assert _recall(calibrated, truth) > 0.97 and _recall(calibrated, truth) > _recall(plain, truth) + 0.1


def test_corruption_and_appearance_augmentation():
    flow = torch.zeros(2, 2, 16, 16)
    assert torch.equal(corrupt_flow(flow, 0.0), flow)
    assert float(corrupt_flow(flow, 2.0, torch.Generator().manual_seed(0)).abs().mean()) > 0.5
    videos = torch.rand(64, 2, 1, 4, 4) * 2 - 1
    out = random_appearance(videos, torch.Generator().manual_seed(0))
    assert out.shape == videos.shape and float(out.abs().max()) <= 1.0
    signs = torch.sign((out[:, 0] * videos[:, 0]).sum(dim=(1, 2, 3)))
    assert (signs > 0).any() and (signs < 0).any()                  # both tone directions are drawn


def test_conditional_editor_learns_to_copy_the_warped_appearance():
    torch.manual_seed(0)
    clips = torch.stack([_square_video()[0] for _ in range(4)])
    _, flows, occluded = _square_video()
    flows, occluded = flows.expand(4, -1, -1, -1, -1), occluded.expand(4, -1, -1, -1, -1)
    editor = FlowConditionedEditor(1, width=16, flow_noise=0.0)
    optimiser = torch.optim.Adam(editor.net.parameters(), lr=3e-3)
    losses = []
    for step in range(150):
        loss = editor.loss(clips, flows, occluded, generator=torch.Generator().manual_seed(step))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) < 0.3 * sum(losses[:10])
    video, f, o = _square_video()
    out = editor.edit(video, "invert", f, o, steps=10)
    assert out.shape == video.shape
    assert float((out - apply_edit(video, "invert")).abs().mean()) < float((out - video).abs().mean())


def test_bad_input():
    video, flows, _ = _square_video()
    with pytest.raises(ConfigError, match="edit"):
        apply_edit(video, "blur")
    with pytest.raises(ShapeError, match="flows"):
        hard_warp_edit(video, "invert", flows=flows[:1])
    with pytest.raises(ShapeError, match="video"):
        hard_warp_edit(video[:1], "invert")
