"""Drawing images from a trained flowzoo.vision model: :func:`generate`, the one sampler behind ``flowzoo vision
sample | evaluate``, the training run's sample grid and the benchmarks.

It integrates a velocity model from Gaussian (or SourceFM) noise at t = 0 to images at t = 1 with any solver of
:func:`flowzoo.core.sampling.integrate`, BOSS's grid or FlowTurbo (:mod:`flowzoo.vision.fewstep`), with
classifier-free or RAAG guidance, and lets a flow map jump; the time convention is the library's, so nothing is
mapped.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.validation import check_number, check_positive_int
from flowzoo.vision.fewstep import boss_grid, guided, is_flowmap, sample_chunk
from flowzoo.vision.metrics import log_image_grid, save_image_grid
from flowzoo.vision.sourcefm import SourceFMSource

__all__ = ["generate", "write_sample_grid"]


def generate(model: nn.Module, n: int, shape: Sequence[int], *, steps: int, method: str = "euler",
             labels: torch.Tensor | None = None, cfg_scale: float = 1.0, null_class: int | None = None,
             generator: torch.Generator | None = None, batch_size: int = 256, progress: bool = False,
             source: SourceFMSource | None = None, guidance: str = "cfg", raag_alpha: float = 1.0,
             boss_fine_steps: int = 100, refiner: nn.Module | None = None,
             refiner_steps: int = 0) -> tuple[torch.Tensor, int]:
    """Draw ``n`` images from noise at t = 0 to t = 1; returns ``(images (n, C, H, W), model evaluations per image)``.

    A velocity model integrates with ``method``: a solver of :func:`~flowzoo.core.sampling.integrate`, ``"boss"``
    (Euler on BOSS's ``steps``-jump grid, computed once from a ``boss_fine_steps``-step reference on the first 64
    noise rows: a setup cost not counted in the returned evaluations) or ``"flowturbo"`` (Heun then
    pseudo-corrector steps, then ``refiner_steps`` steps of FlowTurbo's ``refiner``, which cost no model
    evaluations). A flow map (:func:`~flowzoo.vision.fewstep.is_flowmap`) jumps ``steps`` times
    (``method`` must stay ``"euler"``, the default). With ``labels`` (n,) the model is called with ``y``; a
    ``cfg_scale`` other than 1 (velocity models) wraps it in classifier-free guidance towards ``null_class``, with
    a constant scale (``guidance="cfg"``) or RAAG's ratio-aware one of maximum ``cfg_scale`` (``"raag"``,
    decay ``raag_alpha``). ``source`` (a :class:`~flowzoo.vision.sourcefm.SourceFMSource`) replaces the standard
    Gaussian at t = 0 (SourceFM runs, pruned sampling).

    Example:
        >>> from flowzoo.core.nets import UNet
        >>> net = UNet(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16)
        >>> images, nfe = generate(net, 3, (1, 8, 8), steps=2)
        >>> images.shape, nfe
        (torch.Size([3, 1, 8, 8]), 2)
    """
    n = check_positive_int(n, "n")
    cfg_scale = check_number(cfg_scale, "cfg_scale")
    flowmap = is_flowmap(model)
    if refiner_steps and (method != "flowturbo" or cfg_scale != 1.0 or guidance != "cfg"):
        raise ConfigError(expected("a refiner with --sampler flowturbo and no guidance (it refines the conditional "
                                   "velocity it was trained on)", f"sampler {method!r}, cfg_scale {cfg_scale}",
                                   "pass --sampler flowturbo and drop --cfg_scale / --guidance"))
    if flowmap and (method != "euler" or cfg_scale != 1.0 or guidance != "cfg"):
        raise ConfigError(expected("a flow map sampled by its own jumps (--method euler, no guidance)",
                                   f"method {method!r}, guidance {guidance!r}, cfg_scale {cfg_scale}",
                                   "drop --method / --guidance / --cfg_scale for a flow-map run"))
    velocity: Any = model
    if labels is not None and not flowmap:
        velocity = guided(model, cfg_scale, guidance, null_class, raag_alpha)
    device = next(model.parameters()).device
    noise = torch.randn((n, *shape), generator=generator) if source is None else source.sample(n, generator=generator)
    images, nfe, grid = [], 0, None
    chunks = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm
        chunks = tqdm(chunks, desc="sample", unit="batch", file=sys.stderr, dynamic_ncols=True)
    with torch.no_grad():
        if method == "boss":
            cond = None if labels is None else {"y": labels.to(device)}
            grid = boss_grid(velocity, noise.to(device), steps, cond, fine_steps=boss_fine_steps)
        for start in chunks:
            cond = None if labels is None else {"y": labels[start:start + batch_size].to(device)}
            x, calls = sample_chunk(velocity, noise[start:start + batch_size].to(device), steps=steps, method=method,
                                    flowmap=flowmap, cond=cond, time_grid=grid, refiner=refiner,
                                    refiner_steps=refiner_steps)
            images.append(x.float().cpu())
            nfe += calls * len(x)
    return torch.cat(images), nfe // n


def write_sample_grid(model: nn.Module, image: dict[str, Any], path: str | Path, *, n: int, steps: int,
                      class_cond: bool, seed: int = 0, source: SourceFMSource | None = None, writer: Any = None,
                      step: int = 0) -> dict[str, float]:
    """Draw ``n`` images (classes 0, 1, ... in turn when ``class_cond``) with ``steps`` Euler steps and save them as a
    PNG grid, one row per class when they fit; ``image`` is a run's image record (``shape``, ``num_classes``).
    With a TensorBoard ``writer`` (e.g. :attr:`flowzoo.core.training.Trainer.tensorboard_writer`) the grid is
    also added as the image ``samples`` at ``step``. Returns pixel statistics of the draw (mean, std, share
    outside [-1, 1]) for the training log.

    Example:
        >>> import tempfile
        >>> from flowzoo.core.nets import UNet
        >>> net = UNet(in_channels=1, channels=16, multipliers=(1, 2), res_blocks=1, head_channels=16)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     stats = write_sample_grid(net, {"shape": [1, 8, 8], "num_classes": 0}, Path(folder) / "g.png",
        ...                               n=4, steps=2, class_cond=False)
        >>> sorted(stats)
        ['out_of_range', 'pixel_mean', 'pixel_std']
    """
    classes = int(image["num_classes"])
    labels = torch.arange(n) % max(classes, 1) if class_cond else None
    generator = torch.Generator().manual_seed(seed + 12345)
    images, _ = generate(model, n, image["shape"], steps=steps, labels=labels, generator=generator, source=source)
    rows = classes if class_cond and 1 < classes <= n else None
    scale = max(1, 64 // int(image["shape"][-1]))
    save_image_grid(images.clamp(-1, 1), path, nrow=rows, scale=min(scale, 4))
    if writer is not None:
        log_image_grid(writer, "samples", images.clamp(-1, 1), step, nrow=rows)
    return {"pixel_mean": float(images.mean()), "pixel_std": float(images.std()),
            "out_of_range": float((images.abs() > 1).float().mean())}
