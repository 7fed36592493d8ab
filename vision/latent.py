r"""Latent flow matching (LFM: Dao, Phung, Nguyen, Tran, "Flow Matching in Latent Space", arXiv 2307.08698).

A pretrained autoencoder (:mod:`flowzoo.vision.autoencoder`) maps images to latents; I-CFM is trained on the
scaled latents :math:`z = s\,E(x)` and samples are decoded as :math:`D(z / s)`. The scale :math:`s` is LFM's
``scale_factor`` (0.18215 for Stable Diffusion's VAE): here it is computed as :math:`1/\operatorname{std}(E(x))`
over the encoded training images, so that the latents have unit variance like the Gaussian source, and stored
with the run (:meth:`LatentCodec.record`); the same number must scale at training and undo it at decoding.

**Objective** (LFM §3, Eq. 4, I-CFM form): :math:`z_t = (1-t) z_0 + t z_1`, :math:`z_0 \sim N(0, I)`,
:math:`z_1 = s E(x)`, loss :math:`\|v_\theta(z_t, t, y) - (z_1 - z_0)\|^2`, class-conditional with label
dropout for classifier-free guidance. **Time**: LFM's code puts data at 0 and noise at 1 with the offset
:math:`\sigma_{min} = 10^{-5}` and integrates from 1 to 0; flowzoo's :math:`t = 1 - t_{LFM}` puts noise at 0 and
data at 1 and drops the :math:`10^{-5}` offset (σ = 0 I-CFM), a change of at most :math:`10^{-5}` in the path.

LFM's bound on the decoded samples' W2 is :mod:`flowzoo.vision.latent_bound`'s.
Rationale: the latent is several times smaller than the image, so each step and each ODE evaluation is cheaper.

**Few-step objectives in the latent** (``train_latent_fm(objective=...)``): ``"meanflow"`` / ``"meanflow_fd"``
train a two-time flow map :math:`u_\theta(z_s, s, t)` from scratch on MeanFlow's identity (Geng et al., arXiv
2505.13447, Eq. 6, JVP or finite-difference target); ``"mfrae"`` is MF-RAE's path (Hu, Lai, Wu, Mitsufuji,
Ermon, arXiv 2511.13019, §3) on the latents of an autoencoder run, meant for RAE's representation autoencoder
(:mod:`flowzoo.vision.representation`): consistency mid-training on chords
:math:`(z_{t_j} - z_{t_i})/(t_j - t_i)` of a latent FM teacher's Euler trajectories, then MeanFlow distillation
:math:`u_{tgt} = v_\phi(z_s, s) + (t - s)\,du_\theta/ds` with the teacher's velocity and a central finite
difference (:class:`flowzoo.vision.fewstep.MidTrainingThenDistillation`). The teacher is an ``"fm"`` latent run on
the same autoencoder with the same scale (:func:`check_latent_teacher`). Flow-map runs sample by jumps
:math:`z_{t_{k+1}} = z_{t_k} + (t_{k+1} - t_k)\,u_\theta(z_{t_k}, t_k, t_{k+1})` (:func:`generate_latent`).
**Time**: MF-RAE's code puts noise at :math:`\tau = 1` and data at 0 and jumps :math:`z_r = z_\tau - (\tau - r)u`;
flowzoo's :math:`t = 1 - \tau` puts noise at 0, so their :math:`u(z_\tau, r, \tau)` is our
:math:`-u_\theta(z_s, s, t)` with :math:`s = 1 - \tau`, :math:`t = 1 - r`.

Example:
    >>> from flowzoo.vision.autoencoder import ConvAutoencoder
    >>> ae = ConvAutoencoder((1, 8, 8), latent_channels=2, downsample=1, channels=4)
    >>> codec = LatentCodec.fit(ae, torch.randn(32, 1, 8, 8))
    >>> round(float(codec.encode(torch.randn(32, 1, 8, 8)).std()), 1) > 0, codec.latent_shape
    (True, (2, 4, 4))
    >>> net = build_latent_net(codec.latent_shape, width=8)
    >>> out = generate_latent(net, codec, 3, steps=2)
    >>> out.images.shape, out.latents.shape, out.nfe
    (torch.Size([3, 1, 8, 8]), torch.Size([3, 2, 4, 4]), 2)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from flowzoo.core.config import config_to_dict
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.fewstep import flowmap_sample
from flowzoo.core.nets import FlowMapUNet, UNet
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import ClassifierFreeGuidance, integrate
from flowzoo.core.training import Trainer, TrainerConfig, read_checkpoint_record
from flowzoo.core.validation import check_number, check_positive, check_positive_int, check_probability, check_tensor
from flowzoo.vision.autoencoder import load_autoencoder, shape_text
from flowzoo.vision.datasets import ImageBatchSampler, ImageData
from flowzoo.vision.fewstep import FrozenTeacher, MidTrainingThenDistillation, flowmap_objective, is_flowmap
from flowzoo.vision.nets import DiT, FlowMapDiT

__all__ = ["LatentCodec", "load_codec", "encode_dataset", "build_latent_net", "TrainedLatentModel",
           "train_latent_fm", "load_latent_fm", "LatentSamples", "generate_latent",
           "LATENT_KEY", "LATENT_OBJECTIVES", "check_latent_teacher"]

LATENT_KEY = "latent"  # where config.yaml records the codec (autoencoder path, scale) and the latent network
LATENT_OBJECTIVES = ("fm", "meanflow", "meanflow_fd", "mfrae")
"""``fm``: I-CFM (a velocity); the others train a flow map (module docstring); ``mfrae`` needs a teacher."""


class LatentCodec:
    """An autoencoder plus LFM's latent scale: ``encode(x) = scale · E(x)``, ``decode(z) = D(z / scale)``.

    Args:
        autoencoder: a module with ``encode``, ``decode``, ``shape`` and ``latent_shape``
            (a :class:`~flowzoo.vision.autoencoder.ConvAutoencoder`).
        scale: the latent scale (build it with :meth:`fit`, or from a stored :meth:`record`).
        source: the autoencoder's run directory (recorded so that a latent run can reload it).
    """

    def __init__(self, autoencoder: nn.Module, scale: float, source: str = "") -> None:
        self.autoencoder = autoencoder.eval()
        self.scale = check_positive(scale, "scale")
        self.source = str(source)

    @classmethod
    def fit(cls, autoencoder: nn.Module, images: torch.Tensor, *, source: str = "",
            batch_size: int = 512) -> "LatentCodec":
        """The codec whose scale is 1 / std of ``autoencoder``'s latents of ``images`` (the training split)."""
        unscaled = cls(autoencoder, 1.0, source).encode(images, batch_size=batch_size)
        std = float(unscaled.double().std())
        if not math.isfinite(std) or std <= 0:
            raise ConfigError(expected("latents with a positive, finite spread", f"std {std}",
                                       "check the autoencoder (an untrained or collapsed encoder)"))
        return cls(autoencoder, 1.0 / std, source)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images."""
        return tuple(self.autoencoder.shape)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(c, h, w) of the latents."""
        return tuple(self.autoencoder.latent_shape)

    @property
    def device(self) -> torch.device:
        """Where the autoencoder's weights are."""
        return next(self.autoencoder.parameters(), torch.empty(0)).device

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Scaled latents (N, c, h, w) on the CPU of images (N, C, H, W): the deterministic (posterior-mean) code."""
        images = check_tensor(images, "images", min_dim=4)
        return torch.cat([self.autoencoder.encode(images[s:s + batch_size].to(self.device)).cpu()
                          for s in range(0, len(images), batch_size)]) * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images decoded from scaled latents, on the autoencoder's device; differentiable (wrap it in
        ``torch.no_grad()`` to sample)."""
        return self.autoencoder.decode(latents.to(self.device) / self.scale)

    def record(self) -> dict[str, Any]:
        """The values a latent run stores: the autoencoder's run directory, the scale and both shapes."""
        return {"autoencoder": self.source, "scale": self.scale, "shape": list(self.shape),
                "latent_shape": list(self.latent_shape)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "LatentCodec":
        """Reload the autoencoder a :meth:`record` names, with the stored scale (never recomputed)."""
        autoencoder = load_autoencoder(record["autoencoder"], shape=record["shape"])
        return cls(autoencoder, float(record["scale"]), record["autoencoder"])


def load_codec(path: str | Path, data: ImageData) -> LatentCodec:
    """The autoencoder run at ``path`` (checked against ``data``'s image shape) with its scale fitted on ``data``."""
    autoencoder = load_autoencoder(path, shape=data.shape)
    return LatentCodec.fit(autoencoder, data.images, source=str(path))


def encode_dataset(codec: LatentCodec, data: ImageData) -> ImageData:
    """``data`` with its images replaced by their scaled latents (labels kept), for an ImageBatchSampler."""
    if tuple(data.shape) != codec.shape:
        raise ShapeError(expected(f"images of shape {shape_text(codec.shape)} for the autoencoder "
                                  f"{codec.source or '(in memory)'}", f"{data.name} of shape {shape_text(data.shape)}",
                                  "load the data with the shape the autoencoder was trained on"))
    return dataclasses.replace(data, images=codec.encode(data.images), name=f"{data.name}/latent")


def build_latent_net(latent_shape: Sequence[int], *, net: str = "unet", width: int = 64, res_blocks: int = 2,
                     num_classes: int = 0, flowmap: bool = False) -> nn.Module:
    """A velocity network sized for latents (c, h, w): a two-level U-Net with ``res_blocks`` residual blocks per
    level (one level when a side is odd, e.g. the 7×7 latent of 28-px images) or a four-block DiT with patch 1
    (``net="dit"``) of token width ``width``; ``num_classes`` 0 for unconditional; ``flowmap``: the same network as
    a two-time flow map (:class:`~flowzoo.core.nets.FlowMapUNet`, :class:`~flowzoo.vision.nets.FlowMapDiT`)."""
    channels, height, width_px = (int(v) for v in latent_shape)
    width = check_positive_int(width, "width")
    if net == "dit":
        return (FlowMapDiT if flowmap else DiT).preset("dit_tiny", in_channels=channels, patch=1, hidden=width,
                                                       num_classes=num_classes)
    if net != "unet":
        raise ConfigError(expected("net 'unet' or 'dit'", repr(net), "pass net='unet'"))
    multipliers = (1, 2) if height % 2 == 0 and width_px % 2 == 0 else (1,)
    return (FlowMapUNet if flowmap else UNet)(channels, width, multipliers,
                                              check_positive_int(res_blocks, "res_blocks"), (), width,
                                              num_classes=num_classes)


@dataclass
class TrainedLatentModel:
    """A latent velocity model or flow map (EMA weights when present, eval mode) with its codec."""

    model: nn.Module
    codec: LatentCodec
    num_classes: int
    class_cond: bool
    run_dir: Path
    step: int
    objective: str = "fm"

    @property
    def flowmap(self) -> bool:
        """Whether the model is a two-time flow map (sampled by jumps)."""
        return is_flowmap(self.model)


def _same_autoencoder(a: LatentCodec, b: LatentCodec) -> bool:
    """The same network object, or the same kind, shapes and weights (a run copied elsewhere is the same)."""
    if a.autoencoder is b.autoencoder:
        return True
    if type(a.autoencoder) is not type(b.autoencoder) or a.latent_shape != b.latent_shape or a.shape != b.shape:
        return False
    mine, theirs = a.autoencoder.state_dict(), b.autoencoder.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k].cpu(), theirs[k].cpu()) for k in mine)


def check_latent_teacher(teacher: TrainedLatentModel, codec: LatentCodec, *, class_cond: bool, num_classes: int,
                         where: str = "the teacher") -> None:
    """Refuse a teacher that cannot teach a latent flow map on ``codec``: a flow map, another autoencoder (weights
    compared), another latent scale, or another conditioning; ``where`` names the teacher run in the message."""
    fix = "pass --teacher RUN of an lfm run (objective fm) on the same --autoencoder, --data and --class_cond"
    if teacher.flowmap:
        raise ConfigError(expected("a velocity teacher (an lfm run with objective fm)",
                                   f"{where}: a {teacher.objective} flow map", fix))
    if not _same_autoencoder(teacher.codec, codec):
        raise ConfigError(expected(f"a teacher on the autoencoder {codec.source or '(in memory)'}",
                                   f"{where}, trained on the autoencoder {teacher.codec.source or '(in memory)'} "
                                   "(other weights)", fix))
    if abs(teacher.codec.scale - codec.scale) > 1e-5 * codec.scale:
        raise ConfigError(expected(f"a teacher with this run's latent scale {codec.scale:.6g}",
                                   f"{where}: scale {teacher.codec.scale:.6g} (fitted on other images)", fix))
    if teacher.class_cond != bool(class_cond) or (class_cond and teacher.num_classes != num_classes):
        raise ConfigError(expected(f"a teacher with class_cond={bool(class_cond)} over {num_classes} classes",
                                   f"{where}: class_cond={teacher.class_cond}, {teacher.num_classes} classes", fix))


def _latent_objective(objective: str, *, class_cond: bool, cond_dropout: float, classes: int,
                      teacher: TrainedLatentModel | None, mid_steps: int, teacher_steps: int) -> Callable:
    null = {"y": classes} if class_cond else None
    dropout = cond_dropout if class_cond else 0.0
    if objective == "fm":
        return FlowMatchingLoss(cond_dropout=dropout, null_cond=null)
    if objective == "mfrae":
        return MidTrainingThenDistillation(FrozenTeacher(teacher.model), mid_steps, teacher_steps=teacher_steps,
                                           cond_dropout=dropout, null_cond=null)
    return flowmap_objective(objective)(SimpleNamespace(class_cond=class_cond, cond_dropout=cond_dropout), classes)


def _default_trainer(out_dir: str) -> TrainerConfig:
    return TrainerConfig(steps=5000, batch_size=128, lr=1e-3, warmup_steps=100, ema_decay=0.999,
                         checkpoint_every=1000, out_dir=out_dir)


def train_latent_fm(data: ImageData, autoencoder: str | Path | LatentCodec, out_dir: str | Path, *,
                    net: str = "unet", width: int = 64, res_blocks: int = 2, class_cond: bool = True,
                    cond_dropout: float = 0.1,
                    trainer: TrainerConfig | None = None,
                    evaluate: Callable[[nn.Module, int, Path], Mapping[str, float]] | None = None,
                    callbacks: Sequence[Callable] = (), objective: str = "fm",
                    teacher: str | Path | TrainedLatentModel | None = None, teacher_steps: int = 16,
                    mid_fraction: float = 0.3) -> TrainedLatentModel:
    """Train I-CFM (or a few-step flow map, ``objective``) on the scaled latents of ``data`` (module docstring)
    with the core Trainer.

    Args:
        data: the training images (labelled for ``class_cond``).
        autoencoder: a :func:`~flowzoo.vision.autoencoder.train_autoencoder` run directory (its scale is then
            fitted on ``data``) or a ready :class:`LatentCodec`.
        out_dir: the run directory; ``config.yaml`` records the codec under ``latent``.
        net, width, res_blocks: the latent backbone (:func:`build_latent_net`).
        class_cond, cond_dropout: condition on ``y`` and replace this share of labels by the null class.
        trainer: steps, batch size, ... (its ``out_dir`` is replaced by ``out_dir``).
        evaluate, callbacks: passed to the Trainer (``evaluate`` receives the latent model; decode with
            :func:`generate_latent`).
        objective: one of :data:`LATENT_OBJECTIVES` (``"fm"``: I-CFM; the others train a flow map).
        teacher: ``"mfrae"``: the latent FM run (or :class:`TrainedLatentModel`) to distil, on the same codec.
        teacher_steps, mid_fraction: ``"mfrae"``: Euler steps of the teacher's trajectories and the share of the
            steps spent on consistency mid-training.
    """
    if objective not in LATENT_OBJECTIVES:
        raise ConfigError(expected(f"objective in {LATENT_OBJECTIVES}", repr(objective), "pass objective='fm'"))
    if (objective == "mfrae") != (teacher is not None and teacher != ""):
        raise ConfigError(expected("a teacher (a latent FM run) with objective mfrae, and only with it",
                                   f"objective {objective!r}, teacher {str(teacher) or None!r}",
                                   "train an lfm run first and pass --teacher RUN with --objective mfrae"))
    teacher_steps = check_positive_int(teacher_steps, "teacher_steps")
    mid_fraction = check_probability(mid_fraction, "mid_fraction")
    codec = autoencoder if isinstance(autoencoder, LatentCodec) else load_codec(autoencoder, data)
    latents = encode_dataset(codec, data)
    cond_dropout = check_probability(cond_dropout, "cond_dropout", inclusive_high=False)
    if class_cond and data.labels is None:
        raise ConfigError(expected("labelled images for class_cond", f"{data.name} has no labels",
                                   "pass class_cond=False"))
    teacher_run = None
    if objective == "mfrae":
        teacher_run = teacher if isinstance(teacher, TrainedLatentModel) else load_latent_fm(teacher)
        check_latent_teacher(teacher_run, codec, class_cond=class_cond, num_classes=int(data.num_classes),
                             where=str(teacher_run.run_dir))
    trainer = _default_trainer(str(out_dir)) if trainer is None else dataclasses.replace(trainer, out_dir=str(out_dir))
    classes = data.num_classes if class_cond else 0
    torch.manual_seed(trainer.seed)
    model = build_latent_net(codec.latent_shape, net=net, width=width, res_blocks=res_blocks, num_classes=classes,
                             flowmap=objective != "fm")
    loss = _latent_objective(objective, class_cond=class_cond, cond_dropout=cond_dropout, classes=classes,
                             teacher=teacher_run, mid_steps=round(mid_fraction * trainer.steps),
                             teacher_steps=teacher_steps)
    record = {**codec.record(), "data": data.name, "net": net, "width": width,
              "res_blocks": res_blocks, "class_cond": bool(class_cond),
              "num_classes": int(data.num_classes), "objective": objective}
    if teacher_run is not None:
        record.update(teacher=str(teacher_run.run_dir), teacher_steps=teacher_steps, mid_fraction=mid_fraction)
    fitted = Trainer(model, loss, ImageBatchSampler(latents, trainer.batch_size, labels=class_cond), trainer,
                     evaluate=evaluate, run_config={LATENT_KEY: record, "trainer": config_to_dict(trainer)},
                     callbacks=callbacks)
    if isinstance(loss, MidTrainingThenDistillation):   # the phase follows the Trainer's update count
        loss.step = lambda: fitted.step
    result = fitted.fit()
    final = fitted.ema.module if fitted.ema is not None else fitted.model
    return TrainedLatentModel(final.eval(), codec, int(data.num_classes), bool(class_cond), Path(out_dir),
                              result.step, objective)


def load_latent_fm(path: str | Path) -> TrainedLatentModel:
    """Rebuild a :func:`train_latent_fm` run (directory or checkpoint) and its codec with the stored scale."""
    checkpoint, record, _ = read_checkpoint_record(path, LATENT_KEY, run_of="train_latent_fm",
                                                   fix="pass the out_dir of train_latent_fm(...)", required="scale")
    codec = LatentCodec.from_record(record)
    classes = int(record["num_classes"]) if record["class_cond"] else 0
    objective = str(record.get("objective", "fm"))
    model = build_latent_net(codec.latent_shape, net=record["net"], width=int(record["width"]),
                             res_blocks=int(record.get("res_blocks", 2)), num_classes=classes,
                             flowmap=objective != "fm")
    model.load_state_dict(checkpoint.inference_weights)
    return TrainedLatentModel(model.eval(), codec, int(record["num_classes"]), bool(record["class_cond"]),
                              Path(path), checkpoint.step, objective)


@dataclass
class LatentSamples:
    """Decoded images (n, C, H, W), their scaled latents (n, c, h, w) and the model evaluations per sample."""

    images: torch.Tensor
    latents: torch.Tensor
    nfe: int


def generate_latent(model: nn.Module, codec: LatentCodec, n: int, *, steps: int | None = None,
                    method: str = "euler", labels: torch.Tensor | None = None, cfg_scale: float = 1.0,
                    null_class: int | None = None, generator: torch.Generator | None = None,
                    batch_size: int = 256, atol: float = 1e-5, rtol: float = 1e-5) -> LatentSamples:
    """Integrate ``n`` latents from N(0, I) at t = 0 to t = 1 (Euler, Heun, ... or dopri5 with ``atol`` /
    ``rtol``: LFM's 1e-5) and decode them; ``labels`` and ``cfg_scale`` as :func:`flowzoo.vision.sampling.generate`.
    A flow map (:func:`~flowzoo.vision.fewstep.is_flowmap`) jumps ``steps`` uniform intervals instead (default 1,
    one evaluation each; ``method`` must stay ``"euler"`` and ``cfg_scale`` 1: MF-RAE samples without guidance)."""
    n = check_positive_int(n, "n")
    cfg_scale = check_number(cfg_scale, "cfg_scale")
    flowmap = is_flowmap(model)
    if flowmap and (method != "euler" or cfg_scale != 1.0):
        raise ConfigError(expected("a flow map sampled by jumps (--steps N) without guidance",
                                   f"method {method!r}, cfg_scale {cfg_scale}",
                                   "drop --sampler and --cfg_scale for a flow-map latent run"))
    velocity: Any = model
    if labels is not None and cfg_scale != 1.0:
        velocity = ClassifierFreeGuidance(model, scale=cfg_scale, null_cond={"y": null_class})
    device = next(model.parameters()).device
    noise = torch.randn((n, *codec.latent_shape), generator=generator)
    latents, images, calls = [], [], 0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            cond = None if labels is None else {"y": labels[start:start + batch_size].to(device)}
            chunk = noise[start:start + batch_size].to(device)
            if flowmap:
                result = flowmap_sample(model, chunk, steps=steps or 1, cond=cond)
            else:
                result = integrate(velocity, chunk, method=method, steps=steps, cond=cond, atol=atol, rtol=rtol)
            latents.append(result.x.float().cpu())
            images.append(codec.decode(result.x.float()).cpu())
            calls += int(result.nfe) * len(result.x)
    return LatentSamples(torch.cat(images), torch.cat(latents), calls // n)
