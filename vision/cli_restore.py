"""Commands of ``flowzoo vision ...`` for restoration with a trained image flow (``restore``, ``measure-crw``).

* ``flowzoo vision restore --checkpoint RUN --task inpaint|inpaint_box|sr2|sr4|deblur|motion --input img.png
  --out out.png`` degrades the clean input image (resized to the run's size) with the task's operator (``--noise``
  σ_y), restores it with ``--method flair|dps|projection|pinv`` (:mod:`flowzoo.vision.restoration`), prints the
  restoration's PSNR against the input and writes the restoration, plus a labelled panel ``<out>_panel.png``
  (input, measurement, every method with its PSNR, ground truth) with ``--panel true``. FLAIR's calibrated weights
  come from ``--crw TABLE`` when given; a progress bar over the model evaluations goes to stderr (``--progress``).
* ``restore --measurement y.png`` (instead of ``--input``) restores an image that is already degraded: the file is
  the measurement y itself, not resized, so it must have the operator's output size: for ``sr2`` / ``sr4`` the
  small image, the run's height and width divided by 2 / 4 (a 32x32 run takes an 8x8 image for ``sr4``); for
  ``deblur`` / ``motion`` the blurred image at the run's size; for ``inpaint`` / ``inpaint_box`` the image at the
  run's size, whose missing pixels (their values are ignored) are the black pixels of ``--mask mask.png`` (white:
  known; at the run's size), or without ``--mask`` the task's own mask (``inpaint``: 70 % random pixels drawn with
  ``--seed``; ``inpaint_box``: the centred box of half the height and width). No ground truth exists, so no PSNR
  is printed and the panel shows the measurement and the methods only. ``--noise`` is then the noise level the
  file already carries (nothing is added): it sets the deblurring pseudo-inverse's truncation
  (:class:`~flowzoo.vision.operators.CircularBlur`), which divides by the blur's weak frequencies only above it.
* ``flowzoo vision measure-crw --checkpoint RUN --out crw.json`` measures the run's velocity error per time on
  held-out images of its data set (``--split test``; :func:`~flowzoo.vision.restoration.measure_velocity_error`)
  and saves the table that ``restore --crw`` reuses (FLAIR's calibrated regularisation weight).

Inversion and editing (``invert``, ``edit``, ``video-edit``) are :mod:`flowzoo.vision.cli_edit`'s. Outputs are never
replaced without ``--overwrite``; bad input is one ``error:`` line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flowzoo.core.config import option_help, parse_config
from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_int, check_new_outputs, check_nonnegative

__all__ = ["RestoreConfig", "CRWConfig", "read_image", "read_measurement", "save_images", "counting_model",
           "class_condition", "restore_main", "measure_crw_main"]


def _open_image(path: str | Path, channels: int, option: str):
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(expected(f"an image file for {option}", f"{path} (not a file)", "check the path"))
    try:
        return Image.open(path).convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ConfigError(expected("a PNG or JPEG image", f"{path} ({error})", "re-save it as PNG")) from None


def _to_tensor(image) -> torch.Tensor:
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).reshape(image.size[1], image.size[0], -1)
    return (pixels.permute(2, 0, 1)[None] / 127.5 - 1).contiguous()


def read_image(path: str | Path, shape: Sequence[int], option: str = "--input") -> torch.Tensor:
    """An image file as (1, C, H, W) in [−1, 1], converted to the run's channels and resized to its size."""
    from PIL import Image

    return _to_tensor(_open_image(path, shape[0], option).resize((shape[2], shape[1]), Image.BILINEAR))


def read_measurement(path: str | Path, shape: Sequence[int], option: str = "--measurement", why: str = "",
                     fix: str = "resize it") -> torch.Tensor:
    """An image file taken as it is (no resizing) as (1, C, H, W) in [−1, 1]; its height and width must be those of
    ``shape`` (C, H, W), else one :class:`ConfigError` names the file, the size received and the size expected
    (``why`` says where that size comes from).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     Image.fromarray(np.full((3, 3), 255, dtype=np.uint8)).save(Path(folder) / "y.png")
        ...     y = read_measurement(Path(folder) / "y.png", (1, 3, 3))
        >>> tuple(y.shape), float(y.min())
        ((1, 1, 3, 3), 1.0)
    """
    image = _open_image(path, shape[0], option)
    if (image.size[1], image.size[0]) != tuple(shape[1:]):
        raise ConfigError(expected(f"{option} of {shape[1]}x{shape[2]} pixels (height x width){why}",
                                   f"{path} of {image.size[1]}x{image.size[0]} pixels", fix))
    return _to_tensor(image)


def save_images(images: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    from flowzoo.vision.metrics import save_image_grid

    save_image_grid(images.clamp(-1, 1), path, nrow=nrow, scale=max(1, 128 // images.shape[-1]))


def _save_labelled(tiles: Sequence[torch.Tensor], labels: Sequence[str], path: Path) -> None:
    """One row of (1, C, H, W) tiles, each enlarged to about 128 pixels wide under its label (PIL's own font)."""
    from PIL import Image, ImageDraw, ImageFont

    from flowzoo.vision.metrics import image_grid

    h, w = tiles[0].shape[-2:]
    scale, pad, header = max(1, 128 // w), 4, 34
    canvas = Image.new("RGB", (len(tiles) * (w * scale + pad) + pad, header + h * scale + pad), "white")
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:                                  # Pillow < 10.1: the fixed bitmap font only
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(canvas)
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        pixels = image_grid(tile.clamp(-1, 1), nrow=1, padding=0).repeat_interleave(scale, 1)
        pixels = pixels.repeat_interleave(scale, 2).permute(1, 2, 0).numpy()
        left = pad + i * (w * scale + pad)
        canvas.paste(Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB"),
                     (left, header))
        draw.multiline_text((left + 2, 2), label, fill="black", font=font, spacing=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


@dataclass
class RestoreConfig:
    """flowzoo vision restore: restore a degraded image (or degrade a clean one first) with the run as the prior."""

    checkpoint: str = field(default="", metadata=option_help("run directory (or checkpoint) of flowzoo.vision.train"))
    task: str = field(default="inpaint", metadata=option_help("inpaint, inpaint_box, sr2, sr4, deblur or motion"))
    input: str = field(default="", metadata=option_help("a clean image (PNG/JPEG; resized to the run's size) to "
                                                        "degrade with the task, restore and score (PSNR)"))
    measurement: str = field(default="", metadata=option_help(
        "instead of --input: an image that is already degraded, used as it is: sr2/sr4 at the run's size / 2 or / 4, "
        "other tasks at the run's size (no ground truth: no PSNR)"))
    mask: str = field(default="", metadata=option_help("inpaint/inpaint_box: a PNG at the run's size, white = known, "
                                                       "black = missing (default: the task's mask)"))
    out: str = field(default="restored.png", metadata=option_help("the restored image (PNG)"))
    method: str = field(default="flair", metadata=option_help("flair, dps, projection or pinv"))
    steps: int = field(default=50, metadata=option_help("model evaluations (NFE) of the solver"))
    noise: float = field(default=0.01, metadata=option_help("measurement noise std σ_y (images in [-1, 1]): added to "
                                                            "--input; with --measurement, the level the file has"))
    crw: str = field(default="", metadata=option_help("FLAIR: velocity-error table for the calibrated weights "
                                                      "(written by flowzoo vision measure-crw)"))
    label: int = field(default=-1, metadata=option_help("class-conditional runs: the image's class (--class; -1: the "
                                                        "null class, i.e. unconditional)"))
    panel: bool = field(default=False, metadata=option_help("also write <out>_panel.png with every method, labelled"))
    progress: bool = field(default=True, metadata=option_help("progress bar over model evaluations (stderr)"))
    seed: int = field(default=0, metadata=option_help("seed of the measurement noise, the inpaint mask and the "
                                                      "solvers"))
    overwrite: bool = field(default=False, metadata=option_help("replace existing outputs"))


def class_condition(run, label: int, what: str) -> dict:
    """``{"y": label}`` for a class-conditional run (``label`` < 0: none, which such a run refuses), checked
    against the run's classes; ``what`` names the option in the error."""
    if label < 0:
        if run.class_cond:
            raise ConfigError(expected(f"{what} for a class-conditional run", "none", f"pass {what} N"))
        return {}
    if not run.class_cond or label >= run.num_classes:
        raise ConfigError(expected(f"{what} in [0, {run.num_classes}) of a class-conditional run", label,
                                   f"drop {what}, or use a run trained with --class_cond true"))
    return {"y": torch.tensor([label])}


def counting_model(model, bar):
    """``model`` that advances the progress ``bar`` by one per evaluation (the unit every solver's NFE counts)."""
    def velocity(x, t, **cond):
        bar.update(1)
        return model(x, t, **cond)
    return velocity


def _restore_with(method: str, model, run, y, op, cfg: RestoreConfig) -> torch.Tensor:
    from flowzoo.vision import restoration as r

    gen = torch.Generator().manual_seed(cfg.seed)
    cond = class_condition(run, cfg.label, "--class") if cfg.label >= 0 else (
        {"y": torch.tensor([run.num_classes])} if run.class_cond else {})
    if method == "pinv":
        return r.pseudo_inverse_restore(y, op).x
    if method == "dps":
        return r.dps_restore(model, y, op, shape=run.shape, steps=cfg.steps, cond=cond, generator=gen).x
    if method == "projection":
        return r.projection_restore(model, y, op, shape=run.shape, steps=cfg.steps, cond=cond, generator=gen).x
    weights = None
    if cfg.crw:
        weights = r.calibrated_weights(r.flair_schedule(cfg.steps), *r.load_error_table(cfg.crw))
    return r.flair_restore(model, y, op, shape=run.shape, steps=cfg.steps, weights=weights, cond=cond,
                           generator=gen).x


def _check_restore_options(cfg: RestoreConfig) -> None:
    from flowzoo.vision.operators import OPERATORS
    from flowzoo.vision.restoration import RESTORE_METHODS, load_error_table

    if cfg.method not in RESTORE_METHODS:
        raise ConfigError(expected(f"--method in {RESTORE_METHODS}", repr(cfg.method), "pass --method flair"))
    if cfg.task not in OPERATORS:
        raise ConfigError(expected(f"a task in {OPERATORS}", repr(cfg.task), "pass e.g. --task sr4"))
    check_int(cfg.steps, "--steps", low=1)
    check_nonnegative(cfg.noise, "--noise")
    if bool(cfg.input) == bool(cfg.measurement):
        raise ConfigError(expected("exactly one of --input (a clean image) and --measurement (a degraded one)",
                                   "both" if cfg.input else "neither", "pass --input img.png or --measurement y.png"))
    if cfg.mask and not cfg.task.startswith("inpaint"):
        raise ConfigError(expected("--mask only with --task inpaint or inpaint_box", f"--task {cfg.task}",
                                   "drop --mask, or pass --task inpaint"))
    if cfg.crw:
        load_error_table(cfg.crw)                       # a missing or broken table fails before any work


def _measurement(cfg: RestoreConfig, run) -> tuple:
    """``(operator, y, ground truth or None)`` from --input (degraded here) or --measurement (taken as it is)."""
    from flowzoo.vision.operators import Inpainting, build_operator

    op = build_operator(cfg.task, run.shape[-2:], noise_std=cfg.noise, seed=cfg.seed)
    if cfg.mask:
        known = read_measurement(cfg.mask, (1, *run.shape[-2:]), "--mask", ", the run's image size",
                                 "pass a mask of the run's size (white = known, black = missing)")
        op = Inpainting((known[0, 0] > 0).float(), op.noise_std)
    if cfg.input:
        image = read_image(cfg.input, run.shape)
        return op, op.measure(image, generator=torch.Generator().manual_seed(cfg.seed)), image
    size = op.measurement_shape(run.shape)
    small = cfg.task.startswith("sr")
    why = (f", the size of --task {cfg.task} on the run's {run.shape[1]}x{run.shape[2]} images" if small
           else f", the run's image size (--task {cfg.task})")
    fix = f"{'downscale' if small else 'resize'} it to {size[1]}x{size[2]}, or pass the clean image as --input"
    y = read_measurement(cfg.measurement, size, why=why, fix=fix)
    return op, (op.forward(y) if isinstance(op, Inpainting) else y), None   # inpainting: missing pixels -> 0


def _shown_measurement(y: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The measurement as an image of the run's size (a small SR measurement enlarged by repetition)."""
    return y if tuple(y.shape[1:]) == tuple(shape) else F.interpolate(y, size=tuple(shape[1:]), mode="nearest")


def restore_main(argv: Sequence[str] | None = None) -> int:
    """restore --checkpoint RUN --task sr4 --input img.png | --measurement y.png --out out.png [--panel true]"""
    from tqdm.auto import tqdm

    from flowzoo.vision.metrics import psnr
    from flowzoo.vision.restoration import RESTORE_METHODS, supported_methods
    from flowzoo.vision.train import load_trained

    argv = [("--label" if a == "--class" else a) for a in (argv or [])]
    cfg = parse_config(RestoreConfig, argv, prog="flowzoo vision restore")
    _check_restore_options(cfg)
    out = Path(cfg.out)
    panel = out.with_name(out.stem + "_panel.png")
    check_new_outputs([out, *([panel] if cfg.panel else [])], cfg.overwrite)
    run = load_trained(cfg.checkpoint)
    op, y, truth = _measurement(cfg, run)
    if cfg.method not in supported_methods(op):
        raise ConfigError(expected(f"a method that works for --task {cfg.task}: {supported_methods(op)}",
                                   repr(cfg.method), f"pass --method {supported_methods(op)[0]}"))
    others = [m for m in supported_methods(op) if m != cfg.method] if cfg.panel else []
    methods = [cfg.method, *others]
    restored = {}
    with tqdm(total=sum(cfg.steps for m in methods if m != "pinv"), unit="NFE", file=sys.stderr,
              dynamic_ncols=True, disable=not cfg.progress) as bar:
        for method in methods:
            bar.set_description(method)
            restored[method] = _restore_with(method, counting_model(run.model, bar), run, y, op, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_images(restored[cfg.method], out)
    score = {m: float(psnr(x.clamp(-1, 1), truth)[0]) if truth is not None else None for m, x in restored.items()}
    if cfg.panel:
        order = [m for m in RESTORE_METHODS if m in restored]
        tiles = [_shown_measurement(y, run.shape)] + [restored[m] for m in order]
        labels = ["measurement"] + [f"{m}\n{score[m]:.1f} dB" if truth is not None else m for m in order]
        if truth is not None:
            tiles, labels = [truth, *tiles, truth], ["input", *labels, "ground truth"]
        _save_labelled(tiles, labels, panel)
        print(f"panel: {', '.join(label.replace(chr(10), ' ') for label in labels)} -> {panel}")
    where = f"PSNR {score[cfg.method]:.2f} dB against --input" if truth is not None else "no ground truth, no PSNR"
    print(f"{cfg.task} restored with {cfg.method} in {cfg.steps} steps ({where}) -> {out}")
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
