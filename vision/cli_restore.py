"""Commands of ``flowzoo vision ...`` for restoration, inversion and editing with a trained image flow.

* ``flowzoo vision restore --checkpoint RUN --task inpaint|inpaint_box|sr2|sr4|deblur|motion --input img.png
  --out out.png`` degrades the input image with the task's operator (``--noise`` σ_y), restores it with
  ``--method flair|dps|projection|pinv`` (:mod:`flowzoo.vision.restoration`) and writes the restoration, plus a
  panel ``<out>_panel.png`` (input, measurement, every method, ground truth) with ``--panel true``. FLAIR's calibrated
  weights come from ``--crw TABLE`` when given.
* ``flowzoo vision measure-crw --checkpoint RUN --out crw.json`` measures the run's velocity error per time on
  held-out images of its data set (``--split test``; :func:`~flowzoo.vision.restoration.measure_velocity_error`)
  and saves the table that ``restore --crw`` reuses (FLAIR's calibrated regularisation weight).
* ``flowzoo vision invert --checkpoint RUN --input img.png --out recon.png`` finds the noise whose sample is the
  image with FlowOpt (:mod:`flowzoo.vision.flowopt`; step size ``--step_size``, 0: 0.9 × the estimated bound) and
  writes the reconstruction and ``<out>.npz`` (``z`` and the error per iteration).
* ``flowzoo vision edit --checkpoint RUN --input img.png --source_class 3 --class 8 --out edited.png`` inverts the
  image under its class and runs FlowOpt's editing iteration under the target class (class-conditional runs).
* ``flowzoo vision video-edit --input clip.mp4 --edit invert|recolour|scale --out edited.mp4`` edits the first
  frame, propagates it along DIS flows to frame 1 with occlusion fill (FlowVid's hard warping;
  :mod:`flowzoo.vision.video_edit`) and, with ``--side_by_side sbs.gif``, writes source | per-frame edit | flow
  edit side by side. With ``--editor RUN`` (an editor trained by ``python -m flowzoo.vision.video_edit --out RUN``)
  FlowVid's flow-conditioned model generates frames 2..T from the warped edit instead, and the side-by-side shows
  source | per-frame | hard warp | flow-conditioned; the frames must have the editor's size (``--size``).

Outputs are never replaced without ``--overwrite``; bad input is one ``error:`` line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from flowzoo.core.config import option_help, parse_config
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int, check_new_outputs, check_nonnegative

__all__ = ["RestoreConfig", "CRWConfig", "InvertConfig", "VideoEditConfig", "read_image", "restore_main",
           "measure_crw_main", "invert_main", "edit_main", "video_edit_main"]

METHODS = ("flair", "dps", "projection", "pinv")


def read_image(path: str | Path, shape: Sequence[int]) -> torch.Tensor:
    """An image file as (1, C, H, W) in [−1, 1], converted to the run's channels and resized to its size."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(expected("an image file for --input", f"{path} (not a file)", "check the path"))
    try:
        image = Image.open(path).convert("L" if shape[0] == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ConfigError(expected("a PNG or JPEG image", f"{path} ({error})", "re-save it as PNG")) from None
    image = image.resize((shape[2], shape[1]), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).reshape(image.size[1], image.size[0], -1)
    return (pixels.permute(2, 0, 1)[None] / 127.5 - 1).contiguous()


def _save(images: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    from flowzoo.vision.metrics import save_image_grid

    save_image_grid(images.clamp(-1, 1), path, nrow=nrow, scale=max(1, 128 // images.shape[-1]))


@dataclass
class RestoreConfig:
    """flowzoo vision restore: degrade an image, restore it with the run as the prior."""

    checkpoint: str = field(default="", metadata=option_help("run directory (or checkpoint) of flowzoo.vision.train"))
    task: str = field(default="inpaint", metadata=option_help("inpaint, inpaint_box, sr2, sr4, deblur or motion"))
    input: str = field(default="", metadata=option_help("the clean image (PNG/JPEG) to degrade and restore"))
    out: str = field(default="restored.png", metadata=option_help("the restored image (PNG)"))
    method: str = field(default="flair", metadata=option_help("flair, dps, projection or pinv"))
    steps: int = field(default=50, metadata=option_help("model evaluations (NFE) of the solver"))
    noise: float = field(default=0.01, metadata=option_help("measurement noise std σ_y (images in [-1, 1])"))
    crw: str = field(default="", metadata=option_help("FLAIR: velocity-error table for the calibrated weights "
                                                      "(written by flowzoo vision measure-crw)"))
    label: int = field(default=-1, metadata=option_help("class-conditional runs: the image's class (--class; -1: the "
                                                        "null class, i.e. unconditional)"))
    panel: bool = field(default=False, metadata=option_help("also write <out>_panel.png with every method"))
    seed: int = field(default=0, metadata=option_help("seed of the measurement noise and the solvers"))
    overwrite: bool = field(default=False, metadata=option_help("replace existing outputs"))


def _restore_with(method: str, run, y, op, cfg: RestoreConfig) -> torch.Tensor:
    from flowzoo.vision import restoration as r

    gen = torch.Generator().manual_seed(cfg.seed)
    cond = _class_cond(run, cfg.label, "--class") if cfg.label >= 0 else (
        {"y": torch.tensor([run.num_classes])} if run.class_cond else {})
    if method == "pinv":
        return r.pseudo_inverse_restore(y, op).x
    if method == "dps":
        return r.dps_restore(run.model, y, op, shape=run.shape, steps=cfg.steps, cond=cond, generator=gen).x
    if method == "projection":
        return r.projection_restore(run.model, y, op, shape=run.shape, steps=cfg.steps, cond=cond, generator=gen).x
    weights = None
    if cfg.crw:
        weights = r.calibrated_weights(r.flair_schedule(cfg.steps), *r.load_error_table(cfg.crw))
    return r.flair_restore(run.model, y, op, shape=run.shape, steps=cfg.steps, weights=weights, cond=cond,
                           generator=gen).x


def restore_main(argv: Sequence[str] | None = None) -> int:
    """restore --checkpoint RUN --task sr4 --input img.png --out out.png [--method flair] [--panel true]"""
    from flowzoo.vision.operators import build_operator
    from flowzoo.vision.restoration import load_error_table
    from flowzoo.vision.train import load_trained

    argv = [("--label" if a == "--class" else a) for a in (argv or [])]
    cfg = parse_config(RestoreConfig, argv, prog="flowzoo vision restore")
    if cfg.method not in METHODS:
        raise ConfigError(expected(f"--method in {METHODS}", repr(cfg.method), "pass --method flair"))
    check_int(cfg.steps, "--steps", low=1)
    check_nonnegative(cfg.noise, "--noise")
    out = Path(cfg.out)
    panel = out.with_name(out.stem + "_panel.png")
    check_new_outputs([out, *([panel] if cfg.panel else [])], cfg.overwrite)
    if cfg.crw:
        load_error_table(cfg.crw)                       # a missing or broken table fails before any work
    run = load_trained(cfg.checkpoint)
    image = read_image(cfg.input, run.shape)
    op = build_operator(cfg.task, run.shape[-2:], noise_std=cfg.noise, seed=cfg.seed)
    y = op.measure(image, generator=torch.Generator().manual_seed(cfg.seed))
    restored = _restore_with(cfg.method, run, y, op, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(restored, out)
    if cfg.panel:
        shown = [image, op.pinv(y)] + [_restore_with(m, run, y, op, cfg) for m in METHODS] + [image]
        _save(torch.cat(shown), panel, nrow=len(shown))
        print(f"panel: input, measurement (A^+ y), {', '.join(METHODS)}, ground truth -> {panel}")
    print(f"{cfg.task} restored with {cfg.method} in {cfg.steps} steps -> {out}")
    return 0


@dataclass
class CRWConfig:
    """flowzoo vision measure-crw: the run's velocity error per time on held-out images, for FLAIR's CRW."""

    checkpoint: str = field(default="", metadata=option_help("run directory (or checkpoint) of flowzoo.vision.train"))
    out: str = field(default="crw.json", metadata=option_help("the table (JSON) that restore --crw reads"))
    split: str = field(default="test", metadata=option_help("held-out split of the run's data set"))
    images: int = field(default=256, metadata=option_help("held-out images to measure on (at most)"))
    times: int = field(default=20, metadata=option_help("times s in (0, 1) at which the error is measured"))
    repeats: int = field(default=2, metadata=option_help("noise draws per image and time"))
    seed: int = field(default=0, metadata=option_help("seed of the noise draws"))
    overwrite: bool = field(default=False, metadata=option_help("replace an existing table"))


def measure_crw_main(argv: Sequence[str] | None = None) -> int:
    """measure-crw --checkpoint RUN --out crw.json [--images 256] [--times 20]: the table restore --crw reuses.

    A class-conditional run is measured under its null class, the condition ``restore`` uses without ``--class``.
    """
    from flowzoo.vision.restoration import measure_velocity_error, save_error_table
    from flowzoo.vision.train import load_data, load_trained

    cfg = parse_config(CRWConfig, argv or [], prog="flowzoo vision measure-crw")
    check_int(cfg.images, "--images", low=1)
    check_int(cfg.times, "--times", low=2)
    check_int(cfg.repeats, "--repeats", low=1)
    out = Path(cfg.out)
    check_new_outputs([out], cfg.overwrite)
    run = load_trained(cfg.checkpoint)
    images = load_data(run.config, cfg.split).images[:cfg.images]
    if tuple(images.shape[1:]) != tuple(run.shape):
        raise ConfigError(expected(f"held-out images shaped like the run's {run.shape}", f"{tuple(images.shape[1:])}",
                                   "pass the run directory this data set trained"))
    times = torch.linspace(0.0, 1.0, cfg.times + 2)[1:-1]        # FLAIR's schedule lies strictly inside (0, 1)
    cond = {"y": torch.full((images.shape[0],), run.num_classes)} if run.class_cond else {}
    errors = measure_velocity_error(run.model, images, times, cond=cond, repeats=cfg.repeats, seed=cfg.seed,
                                    progress=True)
    save_error_table(out, times, errors)
    print(f"velocity error of {cfg.checkpoint} on {images.shape[0]} {cfg.split} images at {cfg.times} times "
          f"(MSE {float(errors.min()):.4g} to {float(errors.max()):.4g}) -> {out}; use it with restore --crw {out}")
    return 0


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
    overwrite: bool = field(default=False, metadata=option_help("replace existing outputs"))


def _class_cond(run, label: int, what: str) -> dict:
    if label < 0:
        if run.class_cond:
            raise ConfigError(expected(f"{what} for a class-conditional run", "none", f"pass {what} N"))
        return {}
    if not run.class_cond or label >= run.num_classes:
        raise ConfigError(expected(f"{what} in [0, {run.num_classes}) of a class-conditional run", label,
                                   f"drop {what}, or use a run trained with --class_cond true"))
    return {"y": torch.tensor([label])}


def _flowopt(argv: Sequence[str] | None, edit: bool) -> int:
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
    source = _class_cond(run, cfg.source_class, "--source_class")
    target = _class_cond(run, cfg.label, "--class") if edit else source
    if edit and not target:
        raise ConfigError(expected("--class (the target) for edit", "none", "pass --class N"))
    eta = cfg.step_size or 0.9 * estimate_step_bound(run.model, reverse_ode(run.model, image, steps=cfg.steps,
                                                                            cond=source),
                                                     steps=cfg.steps, cond=target)[1]
    if edit:
        result = flowopt_edit(run.model, image, source_cond=source, target_cond=target, steps=cfg.steps,
                              iterations=cfg.iterations, step_size=eta)
    else:
        result = flowopt_invert(run.model, image, steps=cfg.steps, iterations=cfg.iterations, step_size=eta,
                                cond=source)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(torch.cat([image, result.x]), out, nrow=2)
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
