"""Video data with exact flows, optical-flow tools, ReynoldsFlow and video files."""

import pytest
import torch

from flowzoo.core.errors import ConfigError, EmptyInputError, ShapeError
from flowzoo.vision.optical_flow import (dis_flow, endpoint_error, farneback_flow, horn_schunck, occlusion_mask,
                                         reynolds_encoding, reynolds_flow, warp, warping_error)
from flowzoo.vision.video import (VideoClips, moving_digits, moving_textures, read_video, resize_frames,
                                  write_video)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits_video():
    return moving_digits(2, frames=6, size=48, digits=2, digit_size=20, seed=3)


def _blob(cx, cy, size=32, width=4.0):
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * width ** 2))[None, None]


def test_warping_a_known_translation_is_exact():
    frame = torch.rand(1, 3, 10, 10)
    shifted = torch.roll(frame, shifts=(1, 3), dims=(-2, -1))       # content moves 3 right, 1 down
    flow = torch.zeros(1, 2, 10, 10)
    flow[:, 0], flow[:, 1] = 3.0, 1.0
    assert torch.allclose(warp(shifted, flow)[..., :9, :7], frame[..., :9, :7], atol=1e-5)


def test_generated_flows_masks_and_occlusions_are_exact(digits_video):
    video = digits_video
    for v in range(len(video)):
        frames, flows, occluded = video.frames[v], video.flows[v], video.occluded[v]
        error = (warp(frames[1:], flows) - frames[:-1]).abs()
        assert float((error * (~occluded)).max()) < 1e-4
        assert warping_error(frames, flows, occluded) < 1e-5
    assert video.masks.shape[2] == 2 and video.labels.shape == (2, 2)
    assert not (video.masks[:, :, 0] & video.masks[:, :, 1]).any()          # one visible owner per pixel


def test_occlusion_mask_on_a_known_occluder():
    """A square moving right by 2 over a static background: the background it covers next is occluded."""
    h = w = 16
    forward, backward = torch.zeros(1, 2, h, w), torch.zeros(1, 2, h, w)
    forward[:, 0, 4:8, 4:8] = 2.0                # the square at columns 4..7 in frame 1
    backward[:, 0, 4:8, 6:10] = -2.0             # ...at columns 6..9 in frame 2
    occluded = occlusion_mask(forward, backward)[0, 0]
    assert occluded[4:8, 8:10].all()             # background columns 8, 9 disappear under the square
    assert not occluded[4:8, 4:8].any() and not occluded[:4].any() and not occluded[4:8, 10:].any()


@pytest.mark.parametrize("estimator", [dis_flow, farneback_flow,
                                       lambda a, b: horn_schunck(a, b, alpha=0.1, iterations=400)])
def test_flow_estimators_recover_a_translating_blob(estimator):
    first, second = _blob(14, 15), _blob(16, 16)
    truth = torch.zeros(1, 2, 32, 32)
    truth[:, 0], truth[:, 1] = 2.0, 1.0
    assert endpoint_error(estimator(first, second), truth, first > 0.2) < 0.3


def test_reynolds_correction_vanishes_without_and_grows_with_illumination_change():
    pattern = lambda shift: 0.5 + 0.3 * torch.sin(2 * torch.pi * (torch.arange(32.0) - shift) / 16)
    first = (pattern(0)[None, :] * torch.ones(32, 1))[None, None]
    second = (pattern(1)[None, :] * torch.ones(32, 1))[None, None]
    exact = torch.zeros(1, 2, 32, 32)
    exact[:, 0] = 1.0
    _, still = reynolds_flow(first, second, base=exact)
    _, lit = reynolds_flow(first, 1.3 * second, base=exact)
    assert float(lit.norm(dim=1).mean()) > 5 * float(still.norm(dim=1).mean())
    encoded = reynolds_encoding(second, exact, lit)
    assert encoded.shape == (1, 3, 32, 32) and 0 <= float(encoded.min()) and float(encoded.max()) <= 1


def test_moving_textures_brightness_ramp_and_clips():
    video = moving_textures(1, frames=5, size=40, sprite_size=15, brightness=0.5, seed=0)
    means = [float(f.mean()) for f in video.frames[0]]
    assert means[-1] > means[0]
    clips = VideoClips(video, length=3, stride=2)
    assert len(clips) == 2 and clips[1]["frames"].shape == (3, 1, 40, 40) and clips[1]["flows"].shape[0] == 2


def test_clips_of_real_video_files(digits_video, tmp_path):
    """Files of different lengths and sizes -> resized frames -> fixed-length clips that are the files' frames."""
    long = write_video(digits_video.frames[0], tmp_path / "long.gif")                     # 6 frames, 48 x 48
    short = write_video(digits_video.frames[1, :3, :, :40, :40], tmp_path / "short")       # 3 PNGs, 40 x 40
    videos = [resize_frames(read_video(path), 32) for path in (long, short)]
    clips = VideoClips(videos, length=3)
    assert len(clips) == 4 + 1 and set(clips[0]) == {"frames"} and clips[4]["frames"].shape == (3, 3, 32, 32)
    assert torch.equal(clips[1]["frames"], videos[0][1:4])
    with pytest.raises(ShapeError, match="one size"):
        VideoClips([videos[0], videos[1][..., :16]], length=2)
    with pytest.raises(EmptyInputError, match="at least 7 frames"):
        VideoClips(videos, length=7)
    with pytest.raises(EmptyInputError):
        VideoClips([], length=2)


@pytest.mark.parametrize("suffix", [".gif", ".avi", ".mp4", ""])
def test_video_file_round_trip(digits_video, tmp_path, suffix):
    frames = digits_video.frames[0]
    path = write_video(frames, tmp_path / f"clip{suffix}")
    back = read_video(path)
    assert back.shape[0] == frames.shape[0] and tuple(back.shape[-2:]) == (48, 48)
    if suffix in ("", ".gif"):                       # lossless
        assert torch.allclose(back[:, :1].float() / 127.5 - 1, frames, atol=1 / 127)
    with pytest.raises(ConfigError, match="exists"):
        write_video(frames, path)


def test_bad_video_input(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(ConfigError, match="decode"):
        read_video(tmp_path / "broken.mp4")
    folder = tmp_path / "frames"
    folder.mkdir()
    with pytest.raises(EmptyInputError):
        read_video(folder)
    write_video(torch.zeros(1, 1, 8, 8), folder / "a")
    write_video(torch.zeros(1, 1, 9, 9), folder / "b")
    for file in sorted((folder / "b").iterdir()):
        file.rename(folder / "a" / "frame_99999.png")
    with pytest.raises(ShapeError, match="one size"):
        read_video(folder / "a")
    with pytest.raises(ShapeError, match="flow of shape"):
        warp(torch.zeros(1, 1, 8, 8), torch.zeros(1, 2, 9, 9))
    with pytest.raises(ConfigError, match="smaller than the canvas"):
        moving_digits(1, size=20, digit_size=28)
