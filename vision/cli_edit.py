"""Commands of ``flowzoo vision ...`` for inversion and editing: FlowOpt on images, flow-guided video editing.

* ``flowzoo vision invert --checkpoint RUN --input img.png --out recon.png`` finds the noise whose sample is the
  image with FlowOpt (:mod:`flowzoo.vision.flowopt`; step size ``--step_size``, 0: 0.9 × the estimated bound) and
  writes the reconstruction and ``<out>.npz`` (``z`` and the error per iteration), with a progress bar over the
  model evaluations on stderr (``--progress false`` hides it; ``edit`` too).
* ``flowzoo vision edit --checkpoint RUN --input img.png --source_class 3 --class 8 --out edited.png`` inverts the
  image under its class and runs FlowOpt's editing iteration under the target class (class-conditional runs).
* ``flowzoo vision video-edit --input clip.mp4 --edit invert|recolour|scale --out edited.mp4`` edits the first
  frame, propagates it along DIS flows to frame 1 with occlusion fill (FlowVid's hard warping;
  :mod:`flowzoo.vision.video_edit`) and, with ``--side_by_side sbs.gif``, writes source | per-frame edit | flow
  edit side by side. With ``--editor RUN`` (an editor trained by ``python -m flowzoo.vision.video_edit --out RUN``)
  FlowVid's flow-conditioned model generates frames 2..T from the warped edit instead, and the side-by-side shows
  source | per-frame | hard warp | flow-conditioned; the frames must have the editor's size (``--size``).

Outputs are never replaced without ``--overwrite``; bad input is one ``error:`` line. The image reading, saving
and evaluation counting are :mod:`flowzoo.vision.cli_restore`'s.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from flowzoo.core.config import option_help, parse_config
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int, check_new_outputs
from flowzoo.vision.cli_restore import class_condition, counting_model, read_image, save_images

__all__ = ["InvertConfig", "VideoEditConfig", "invert_main", "edit_main", "video_edit_main"]

BOUND_ITERATIONS = 10          # power iterations of FlowOpt's step-size bound (each one runs the sampler once)

@dataclass
class InvertConfig:
    """flowzoo vision invert / edit: FlowOpt through the run's Euler sampler."""

    checkpoint: str = field(default="", metadata=option_help("run directory (or checkpoint) of flowzoo.vision.train"))
    input: str = field(default="", metadata=option_help("the image (PNG/JPEG)"))
    out: str = field(default="inverted.png", metadata=option_help("the reconstruction / edit (PNG); z goes to .npz"))
    steps: int = field(default=10, metadata=option_help("Euler steps of the sampler f"))
    iterations: int = field(default=20, metadata=option_help("FlowOpt iterations"))
    step_size: float = field(default=0.0, metadata=option_help("η (0: 0.9 x the estimated bound 2/λ_max)"))
    label: int = field(default=-1, metadata=option_help("edit: the target class (--class)"))
    source_class: int = field(default=-1, metadata=option_help("class of the input (class-conditional runs)"))
    progress: bool = field(default=True, metadata=option_help("progress bar over model evaluations (stderr)"))
    overwrite: bool = field(default=False, metadata=option_help("replace existing outputs"))


def _flowopt(argv: Sequence[str] | None, edit: bool) -> int:
    from tqdm.auto import tqdm

    from flowzoo.vision.flowopt import estimate_step_bound, flowopt_edit, flowopt_invert, reverse_ode
    from flowzoo.vision.train import load_trained

    argv = [("--label" if a == "--class" else a) for a in (argv or [])]
    cfg = parse_config(InvertConfig, argv, prog=f"flowzoo vision {'edit' if edit else 'invert'}")
    check_int(cfg.steps, "--steps", low=1)
    check_int(cfg.iterations, "--iterations", low=1)
    out = Path(cfg.out)
    check_new_outputs([out, out.with_suffix(".npz")], cfg.overwrite)
    run = load_trained(cfg.checkpoint)
    image = read_image(cfg.input, run.shape)
    source = class_condition(run, cfg.source_class, "--source_class")
    target = class_condition(run, cfg.label, "--class") if edit else source
    if edit and not target:
        raise ConfigError(expected("--class (the target) for edit", "none", "pass --class N"))
    # model evaluations: the bound's reversal, base run and power iterations, then FlowOpt's reversal and iterations
    total = cfg.steps * ((0 if cfg.step_size else BOUND_ITERATIONS + 2) + cfg.iterations + 2)
    with tqdm(total=total, desc="flowopt", unit="NFE", file=sys.stderr, dynamic_ncols=True,
              disable=not cfg.progress) as bar:
        model = counting_model(run.model, bar)
        eta = cfg.step_size or 0.9 * estimate_step_bound(model, reverse_ode(model, image, steps=cfg.steps, cond=source),
                                                         steps=cfg.steps, cond=target, iterations=BOUND_ITERATIONS)[1]
        if edit:
            result = flowopt_edit(model, image, source_cond=source, target_cond=target, steps=cfg.steps,
                                  iterations=cfg.iterations, step_size=eta)
        else:
            result = flowopt_invert(model, image, steps=cfg.steps, iterations=cfg.iterations, step_size=eta,
                                    cond=source)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_images(torch.cat([image, result.x]), out, nrow=2)
    errors = result.extras["errors"][:, 0].tolist()
    np.savez(out.with_suffix(".npz"), z=result.extras["z"].numpy(), errors=np.asarray(errors))
    print(f"step size {eta:.4g}; ‖f(z) − y*‖: {errors[0]:.4g} -> {errors[-1]:.4g} in {len(errors) - 1} iterations "
          f"({result.nfe} model evaluations) -> {out} (input | result), {out.with_suffix('.npz')}")
    return 0


def invert_main(argv: Sequence[str] | None = None) -> int:
    """invert --checkpoint RUN --input img.png --out recon.png: FlowOpt inversion."""
    return _flowopt(argv, edit=False)


def edit_main(argv: Sequence[str] | None = None) -> int:
    """edit --checkpoint RUN --input img.png --source_class 3 --class 8 --out edited.png: FlowOpt editing."""
    return _flowopt(argv, edit=True)


@dataclass
class VideoEditConfig:
    """flowzoo vision video-edit: edit the first frame, propagate it along the flow."""

    input: str = field(default="", metadata=option_help("a video (mp4/avi/gif) or a folder of frames"))
    edit: str = field(default="invert", metadata=option_help("invert, recolour or scale"))
    out: str = field(default="edited.mp4", metadata=option_help("the edited video (mp4/avi/gif or a folder)"))
    side_by_side: str = field(default="", metadata=option_help("also write source | per-frame | flow edit here"))
    editor: str = field(default="", metadata=option_help("a flow-conditioned editor (python -m "
                                                         "flowzoo.vision.video_edit --out RUN); empty: hard warping"))
    steps: int = field(default=20, metadata=option_help("--editor: Euler steps of the conditional model"))
    seed: int = field(default=0, metadata=option_help("--editor: seed of the shared noise"))
    size: int = field(default=0, metadata=option_help("resize frames to size x size first (0: keep)"))
    fps: float = field(default=8.0, metadata=option_help("frames per second of the outputs"))
    overwrite: bool = field(default=False, metadata=option_help("replace existing outputs"))


def _editor_frames(frames: torch.Tensor, editor, path: str) -> torch.Tensor:
    """``frames`` in the editor's channels (grey from RGB by the mean), checked against its frame size."""
    if editor.channels == 1 and frames.shape[1] != 1:
        frames = frames.mean(1, keepdim=True)
    elif editor.channels != frames.shape[1]:
        frames = frames.expand(-1, editor.channels, -1, -1)
    if editor.size and tuple(frames.shape[-2:]) != (editor.size, editor.size):
        h, w = frames.shape[-2:]
        raise ConfigError(expected(f"frames of {editor.size}x{editor.size}, the size the editor {path} was trained on",
                                   f"{h}x{w} frames", f"pass --size {editor.size} to resize them, or train an editor "
                                   f"at this size (python -m flowzoo.vision.video_edit --size {h})"))
    return frames


def video_edit_main(argv: Sequence[str] | None = None) -> int:
    """video-edit --input clip.mp4 --edit invert --out edited.mp4 [--side_by_side sbs.gif] [--editor RUN]"""
    from flowzoo.vision.video import read_video, resize_frames, write_video
    from flowzoo.vision.video_edit import EDITS, flows_to_first, hard_warp_edit, load_editor, per_frame_edit

    argv = [a.replace("--side-by-side", "--side_by_side") for a in (argv or [])]
    cfg = parse_config(VideoEditConfig, argv, prog="flowzoo vision video-edit")
    if cfg.edit not in EDITS:
        raise ConfigError(expected(f"--edit in {EDITS}", repr(cfg.edit), "pass --edit invert"))
    check_int(cfg.steps, "--steps", low=1)
    outputs = [Path(cfg.out), *([Path(cfg.side_by_side)] if cfg.side_by_side else [])]
    check_new_outputs(outputs, cfg.overwrite)
    editor = load_editor(cfg.editor) if cfg.editor else None
    raw = read_video(cfg.input)
    if raw.shape[0] < 2:
        raise ConfigError(expected("a video of at least 2 frames", f"{cfg.input} ({raw.shape[0]} frame)",
                                   "pass a longer clip"))
    frames = resize_frames(raw, cfg.size) if cfg.size else raw.float() / 127.5 - 1
    if editor is not None:
        frames = _editor_frames(frames, editor, cfg.editor)
    to_first, occluded = flows_to_first(frames)
    warped = hard_warp_edit(frames, cfg.edit, flows=to_first[1:], occluded=occluded[1:])
    shown = [frames, per_frame_edit(frames, cfg.edit), warped.frames]
    if editor is not None:
        edited = editor.edit(frames, cfg.edit, to_first[1:], occluded[1:], steps=cfg.steps, seed=cfg.seed)
        shown.append(edited)
    else:
        edited = warped.frames
    write_video(edited, cfg.out, fps=cfg.fps, overwrite=cfg.overwrite)
    if cfg.side_by_side:
        strip = torch.cat(shown, dim=-1)
        write_video(strip, cfg.side_by_side, fps=cfg.fps, overwrite=cfg.overwrite)
    share = float(warped.occluded.float().mean())
    how = (f"frames 2..{frames.shape[0]} generated by the editor {cfg.editor} from the warped edit"
           if editor is not None else "occluded pixels filled by the per-frame edit")
    print(f"{frames.shape[0]} frames edited ({cfg.edit}); {share:.1%} of pixels occluded from frame 1; {how} -> "
          f"{', '.join(map(str, outputs))}")
    return 0
