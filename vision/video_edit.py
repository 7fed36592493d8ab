r"""Consistent video editing by flow: edit the first frame, propagate it along the source video's motion (FlowVid),
calibrate the flow when the edit changes an object's shape (FlowV2V), and let a conditional flow model repair
what warping gets wrong.

* **Propagation from the first frame** (FlowVid, Liang et al., arXiv 2312.17681, §3.1): frame k of the edit is
  the edited first frame warped by the flow from frame k to frame 1 *of the source video*, estimated directly
  (never chained, whose errors accumulate), with forward–backward occlusion masks
  (:func:`~flowzoo.vision.optical_flow.occlusion_mask`). :func:`hard_warp_edit` fills occluded pixels with the
  per-frame edit (the "hard warping" baseline).
* **Flow-conditioned generation** (FlowVid §3.2): :class:`FlowConditionedEditor` is a conditional flow-matching
  model of a frame given ``[warped first frame, occlusion mask, edge map]``, trained on *source* videos with
  corrupted flows (random offsets and smooth noise: FlowVid's remedy for a model that over-trusts the flow) and a
  random tone map per clip (:func:`random_appearance`: the small stand-in for the variety of FlowVid's training
  videos, without which the model copies the data set's appearance instead of the warped frame's). At
  edit time the condition holds the *edited* first frame warped; all frames share one noise draw, so the model's
  choices agree across frames. Time runs from noise (t = 0) to the frame (t = 1), flowzoo's convention, as in the
  I-CFM loss it uses (Lipman et al., arXiv 2210.02747).
* **Shape-consistent flow calibration** (FlowV2V, Wang et al., arXiv 2506.07713, SCFC): when the edit scales the
  object by s about its centroid, a pixel q of edited frame k maps back through the edit of frame k
  (:math:`A_k^{-1}`), along the source flow to frame 1, and forward through the edit of frame 1 (:math:`A_1`):
  :math:`F'_{k\to1}(q) = A_1(A_k^{-1}q + F_{k\to1}(A_k^{-1}q)) - q` (:func:`shape_calibrated_flow`), with
  :math:`A_k` the scaling about the object's centroid in frame k, measured from the source mask.

**Training and reuse**: :func:`train_editor` fits an editor on Moving MNIST clips with their exact flows to frame 1
(:func:`exact_flows_to_first`); :func:`save_editor` / :func:`load_editor` keep it with the frame size it was
trained at, and ``python -m flowzoo.vision.video_edit --out runs/editor`` trains and saves one for
``flowzoo vision video-edit --editor runs/editor``.

Edits (:data:`EDITS`): ``invert`` (x → −x), ``recolour`` (a fixed monotone tone curve; a channel roll for RGB) and
``scale`` (the foreground scaled by 1.3 about its centroid: a shape change).

Example:
    >>> import torch
    >>> video = torch.full((3, 1, 8, 8), -1.0); video[:, :, 2:5, 2:5] = 1.0
    >>> edited = hard_warp_edit(video, "invert", flows=torch.zeros(2, 2, 8, 8))
    >>> bool(torch.equal(edited.frames, -video))
    True
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flowzoo.core.config import option_help, parse_config
from flowzoo.core.errors import CheckpointError, ConfigError, ShapeError, expected
from flowzoo.core.validation import check_int, check_new_outputs, check_nonnegative, check_positive
from flowzoo.vision.optical_flow import dis_flow, occlusion_mask, pixel_grid, warp
from flowzoo.vision.video import moving_digits

__all__ = ["EDITS", "apply_edit", "scale_about_centroid", "foreground_centroid", "sobel_edges", "flows_to_first",
           "PropagatedEdit", "hard_warp_edit", "per_frame_edit", "shape_calibrated_flow", "corrupt_flow",
           "random_appearance", "FrameConditionNet", "FlowConditionedEditor", "exact_flows_to_first", "train_editor",
           "save_editor", "load_editor", "EditorTrainConfig", "main"]

Tensor = torch.Tensor
EDITS = ("invert", "recolour", "scale")
SCALE = 1.3


def foreground_centroid(frame: Tensor, threshold: float = -0.5) -> Tensor:
    """(x, y) centroid of the pixels brighter than ``threshold`` in one frame (C, H, W); the centre if none."""
    weight = (frame.mean(0) > threshold).float()
    h, w = weight.shape
    grid = pixel_grid(h, w)[0]
    if float(weight.sum()) == 0:
        return torch.tensor([(w - 1) / 2, (h - 1) / 2])
    return (grid * weight).flatten(1).sum(1) / weight.sum()


def scale_about_centroid(frame: Tensor, scale: float = SCALE, centre: Tensor | None = None) -> Tensor:
    """Frame (C, H, W) scaled by ``scale`` about ``centre`` (default its foreground centroid); background −1."""
    c, h, w = frame.shape
    centre = foreground_centroid(frame) if centre is None else centre
    grid = pixel_grid(h, w)[0]
    source = centre[:, None, None] + (grid - centre[:, None, None]) / check_positive(scale, "scale")
    flow = (source - grid)[None]
    return warp(frame[None] + 1.0, flow, padding="zeros")[0] - 1.0


def apply_edit(frames: Tensor, edit: str) -> Tensor:
    """Apply a named edit to each frame of (T, C, H, W) independently."""
    if edit not in EDITS:
        raise ConfigError(expected(f"an edit in {EDITS}", repr(edit), "pass --edit invert"))
    if edit == "invert":
        return -frames
    if edit == "recolour":
        if frames.shape[1] == 3:
            return torch.roll(frames, 1, dims=1)
        return 2 * ((frames + 1) / 2).clamp(0, 1) ** 0.4 - 1          # a gamma curve: a global tone change
    return torch.stack([scale_about_centroid(f) for f in frames])


def sobel_edges(frames: Tensor) -> Tensor:
    """Gradient magnitude (B, 1, H, W) of grey frames: the spatial control FlowVid adds beside the flow."""
    grey = frames.mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=grey.dtype)[None, None] / 8
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    return torch.sqrt(F.conv2d(padded, kx) ** 2 + F.conv2d(padded, kx.transpose(-1, -2)) ** 2 + 1e-12)


def flows_to_first(frames: Tensor, estimator: Callable[[Tensor, Tensor], Tensor] = dis_flow) -> tuple[Tensor, Tensor]:
    """``(F_{k→1}, occluded_k)`` for every frame k of (T, C, H, W), estimated directly against frame 1."""
    first = frames[:1].expand_as(frames)
    to_first = estimator(frames, first)
    from_first = estimator(first, frames)
    return to_first, occlusion_mask(to_first, from_first)


@dataclass
class PropagatedEdit:
    """An edited video: frames (T, C, H, W), the flows to frame 1 used, and the occluded pixels (T, 1, H, W)."""

    frames: Tensor
    flows: Tensor
    occluded: Tensor


def per_frame_edit(frames: Tensor, edit: str | Callable[[Tensor], Tensor]) -> Tensor:
    """The baseline that edits every frame on its own (a callable edits a batch of frames)."""
    return edit(frames) if callable(edit) else apply_edit(frames, edit)


def hard_warp_edit(frames: Tensor, edit: str | Callable[[Tensor], Tensor], *, flows: Tensor | None = None,
                   occluded: Tensor | None = None, estimator: Callable = dis_flow) -> PropagatedEdit:
    """Edit frame 1, warp it to every frame along the flows to frame 1 (``flows`` (T − 1, 2, H, W) for frames
    2..T, estimated when None), and fill occluded pixels from the per-frame edit."""
    if frames.dim() != 4 or frames.shape[0] < 2:
        raise ShapeError(expected("a video (T >= 2, C, H, W)", f"shape {tuple(frames.shape)}", "pass one clip"))
    if flows is None:
        to_first, occ = flows_to_first(frames, estimator)
        flows, occluded = to_first[1:], occ[1:]
    if flows.shape[0] != frames.shape[0] - 1:
        raise ShapeError(expected(f"{frames.shape[0] - 1} flows (frames 2..T to frame 1)", f"{flows.shape[0]}",
                                  "pass one flow per frame after the first"))
    edited_first = per_frame_edit(frames[:1], edit)
    warped = warp(edited_first.expand(flows.shape[0], -1, -1, -1), flows)
    if occluded is not None:
        fill = per_frame_edit(frames[1:], edit)
        warped = torch.where(occluded.expand_as(warped), fill, warped)
    else:
        occluded = torch.zeros(flows.shape[0], 1, *frames.shape[-2:], dtype=torch.bool)
    return PropagatedEdit(torch.cat([edited_first, warped]), flows, occluded)


def shape_calibrated_flow(flows: Tensor, source: Tensor, scale: float = SCALE) -> Tensor:
    """FlowV2V's calibrated flows (module doc) for an edit that scales the object by ``scale``: ``flows``
    (T − 1, 2, H, W) from frames 2..T of ``source`` (T, C, H, W) to frame 1."""
    h, w = source.shape[-2:]
    grid = pixel_grid(h, w)[0]
    c1 = foreground_centroid(source[0])[:, None, None]
    out = []
    for k in range(1, source.shape[0]):
        ck = foreground_centroid(source[k])[:, None, None]
        back = ck + (grid - ck) / scale                               # A_k^{-1} q: the source pixel
        along = back + warp(flows[k - 1:k], (back - grid)[None])[0]   # + F_{k->1} sampled there
        out.append(c1 + (along - c1) * scale - grid)                  # A_1(...) - q
    return torch.stack(out)


def corrupt_flow(flow: Tensor, strength: float, generator: torch.Generator | None = None) -> Tensor:
    """A flow with a random global offset and smooth noise of about ``strength`` pixels (training-time corruption
    and the benchmark's flow-noise levels)."""
    check_nonnegative(strength, "strength")
    b, _, h, w = flow.shape
    offset = strength * torch.randn(b, 2, 1, 1, generator=generator)
    coarse = torch.randn(b, 2, max(h // 8, 1), max(w // 8, 1), generator=generator)
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return flow + offset + strength * smooth


def random_appearance(videos: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each clip (B, T, C, H, W) under a random tone map (sign ±1 and gamma in [0.5, 2]): the same for all its
    frames, so the model must take appearance from the warped first frame, not from a prior of the data set."""
    b = videos.shape[0]
    sign = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)[:, None, None, None, None]
    gamma = torch.exp((torch.rand(b, generator=generator) * 2 - 1) * math.log(2.0))[:, None, None, None, None]
    return sign * (2 * ((videos + 1) / 2).clamp(0, 1) ** gamma - 1)


class FrameConditionNet(nn.Module):
    """A small conv velocity net for one frame given condition channels: ``net(x, t, cond=...)``."""

    def __init__(self, channels: int, cond_channels: int, width: int = 32):
        super().__init__()
        self.inp = nn.Conv2d(channels + cond_channels, width, 3, padding=1)
        self.time = nn.Sequential(nn.Linear(32, width), nn.SiLU(), nn.Linear(width, 2 * width))
        self.body = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d) for d in (1, 2, 4, 1))
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        freqs = torch.exp(torch.arange(16, device=x.device) * (-math.log(1000.0) / 16))
        emb = torch.cat([torch.sin(t[:, None] * 1000 * freqs), torch.cos(t[:, None] * 1000 * freqs)], 1)
        scale, shift = self.time(emb)[:, :, None, None].chunk(2, 1)
        h = F.silu(self.inp(torch.cat([x, cond], 1)) * (1 + scale) + shift)
        for layer in self.body:
            h = h + F.silu(layer(h))
        return self.out(h)


class FlowConditionedEditor:
    """FlowVid's conditional generator at CPU scale (module doc): train on source clips, then edit."""

    def __init__(self, channels: int = 1, width: int = 32, flow_noise: float = 1.0, size: int | None = None):
        self.net = FrameConditionNet(channels, channels + 2, width)
        self.flow_noise = check_nonnegative(flow_noise, "flow_noise")
        self.channels, self.width, self.size = channels, width, size      # size: the frames it was trained on

    def condition(self, first: Tensor, frames: Tensor, flows: Tensor, occluded: Tensor) -> Tensor:
        """``[first warped by flows, occlusion mask, edges of frames]`` for a batch of frames."""
        warped = warp(first, flows)
        return torch.cat([torch.where(occluded, torch.zeros_like(warped), warped), occluded.float(),
                          sobel_edges(frames)], dim=1)

    def loss(self, videos: Tensor, flows: Tensor, occluded: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """I-CFM loss on frames 2..T of source ``videos`` (B, T, C, H, W) given their true flows to frame 1
        (B, T − 1, 2, H, W), corrupted by ``flow_noise``."""
        b, t = videos.shape[:2]
        videos = random_appearance(videos, generator)
        target = videos[:, 1:].flatten(0, 1)
        first = videos[:, :1].expand(-1, t - 1, -1, -1, -1).flatten(0, 1)
        noisy_flows = corrupt_flow(flows.flatten(0, 1), self.flow_noise, generator)
        cond = self.condition(first, target, noisy_flows, occluded.flatten(0, 1))
        x0 = torch.randn(target.shape, generator=generator)
        tau = torch.rand(target.shape[0], generator=generator)
        x_t = (1 - tau)[:, None, None, None] * x0 + tau[:, None, None, None] * target
        return ((self.net(x_t, tau, cond) - (target - x0)) ** 2).mean()

    @torch.no_grad()
    def edit(self, frames: Tensor, edit: str | Callable[[Tensor], Tensor], flows: Tensor, occluded: Tensor,
             *, steps: int = 20, seed: int = 0) -> Tensor:
        """Edited video (T, C, H, W): frame 1 edited, frames 2..T generated from the warped edit (shared noise)."""
        edited_first = per_frame_edit(frames[:1], edit)
        n = frames.shape[0] - 1
        cond = self.condition(edited_first.expand(n, -1, -1, -1), frames[1:], flows, occluded)
        noise = torch.randn(1, *frames.shape[1:], generator=torch.Generator().manual_seed(seed)).expand(n, -1, -1, -1)
        x = noise.clone()
        for i in range(steps):
            tau = torch.full((n,), i / steps)
            x = x + self.net(x, tau, cond) / steps
        return torch.cat([edited_first, x])


EDITOR_FILE = "editor.pt"


def exact_flows_to_first(step_flows: Tensor, masks: Tensor) -> Tensor:
    """Exact flows (T − 1, 2, H, W) from frames 2..T to frame 1 of a one-object video (``step_flows`` (T − 1, 2,
    H, W) and ``masks`` (T, 1, H, W) of :func:`~flowzoo.vision.video.moving_digits`): minus the object's summed
    displacements, on its pixels of frame k, zero on the still background."""
    steps = torch.stack([step_flows[j][:, masks[j, 0]].mean(1) for j in range(step_flows.shape[0])])
    out = torch.zeros(masks.shape[0] - 1, 2, *masks.shape[-2:])
    for k in range(1, masks.shape[0]):
        out[k - 1] = -steps[:k].sum(0)[:, None, None] * masks[k, 0]
    return out


def train_editor(*, size: int = 32, clips: int = 48, frames: int = 6, steps: int = 400, width: int = 32,
                 flow_noise: float = 1.0, batch: int = 8, lr: float = 2e-3, seed: int = 0,
                 progress: bool = True) -> FlowConditionedEditor:
    """A :class:`FlowConditionedEditor` trained on ``clips`` one-digit Moving MNIST clips of ``size`` px with their
    exact flows to frame 1 and the background the digit covered in frame 1 marked occluded.

    Example:
        >>> editor = train_editor(size=16, clips=2, frames=3, steps=1, width=4, progress=False)
        >>> editor.size, editor.channels
        (16, 1)
    """
    check_int(size, "size", low=8)
    data = moving_digits(check_int(clips, "clips", low=1), frames=check_int(frames, "frames", low=2), size=size,
                         digits=1, digit_size=size // 2, seed=seed)
    flows = torch.stack([exact_flows_to_first(data.flows[v], data.masks[v]) for v in range(len(data))])
    occluded = (~data.masks[:, 1:, :1]) & data.masks[:, :1, :1]
    torch.manual_seed(seed)
    editor = FlowConditionedEditor(1, width=width, flow_noise=flow_noise, size=size)
    optimiser = torch.optim.Adam(editor.net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    updates = range(check_int(steps, "steps", low=1))
    if progress:
        from tqdm.auto import tqdm
        updates = tqdm(updates, desc="train editor", file=sys.stderr, dynamic_ncols=True)
    for _ in updates:
        pick = torch.randint(0, len(data), (batch,), generator=gen)
        loss = editor.loss(data.frames[pick], flows[pick], occluded[pick], generator=gen)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    editor.net.eval()
    return editor


def save_editor(editor: FlowConditionedEditor, out: str | Path) -> Path:
    """Write the editor's weights and architecture to ``out/editor.pt``; returns that file."""
    path = Path(out) / EDITOR_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"channels": editor.channels, "width": editor.width, "flow_noise": editor.flow_noise,
              "size": editor.size}
    torch.save({"record": record, "state": editor.net.state_dict()}, path)
    return path


def load_editor(path: str | Path) -> FlowConditionedEditor:
    """The editor saved by :func:`save_editor` (its folder or the ``editor.pt`` file), in eval mode."""
    path = Path(path)
    file = path / EDITOR_FILE if path.is_dir() else path
    fix = "train one with: python -m flowzoo.vision.video_edit --out runs/editor"
    if not file.is_file():
        raise CheckpointError(expected(f"a folder holding {EDITOR_FILE} (or the file)", f"{path} (none)", fix))
    try:
        saved = torch.load(file, map_location="cpu", weights_only=True)
        editor = FlowConditionedEditor(**saved["record"])
        editor.net.load_state_dict(saved["state"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(expected("an editor written by save_editor", f"{file} ({error})", fix)) from None
    editor.net.eval()
    return editor


@dataclass
class EditorTrainConfig:
    """python -m flowzoo.vision.video_edit: train the flow-conditioned editor on Moving MNIST."""

    out: str = field(default="runs/video_editor", metadata=option_help("folder of the editor (editor.pt)"))
    size: int = field(default=32, metadata=option_help("frame side in pixels (edited videos are resized to it)"))
    clips: int = field(default=48, metadata=option_help("training clips (one moving digit each)"))
    frames: int = field(default=6, metadata=option_help("frames per clip"))
    steps: int = field(default=400, metadata=option_help("training updates of 8 clips"))
    width: int = field(default=32, metadata=option_help("channels of the conv net"))
    flow_noise: float = field(default=1.0, metadata=option_help("flow corruption in px during training"))
    seed: int = field(default=0, metadata=option_help("seed of the data and the weights"))
    overwrite: bool = field(default=False, metadata=option_help("replace an existing editor.pt"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowzoo.vision.video_edit --out runs/editor [--size 32 --steps 400]``: train and save an editor."""
    cfg = parse_config(EditorTrainConfig, list(sys.argv[1:] if argv is None else argv),
                       prog="python -m flowzoo.vision.video_edit")
    check_nonnegative(cfg.flow_noise, "--flow_noise")
    for name in ("size", "clips", "frames", "steps", "width"):
        check_int(getattr(cfg, name), f"--{name}", low={"size": 8, "frames": 2}.get(name, 1))
    check_new_outputs([Path(cfg.out) / EDITOR_FILE], cfg.overwrite)
    editor = train_editor(size=cfg.size, clips=cfg.clips, frames=cfg.frames, steps=cfg.steps, width=cfg.width,
                          flow_noise=cfg.flow_noise, seed=cfg.seed)
    path = save_editor(editor, cfg.out)
    print(f"editor for {cfg.size}x{cfg.size} frames ({cfg.steps} updates) -> {path}; use it with "
          f"flowzoo vision video-edit --editor {cfg.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from flowzoo.core.cli import run_main

    raise SystemExit(run_main(main, prog="python -m flowzoo.vision.video_edit"))
