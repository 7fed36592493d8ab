r"""A TRELLIS-style two-stage shape generator and its few-step students (MDT-dist, arXiv 2509.04406).

TRELLIS (Xiang et al., arXiv 2412.01506) generates a 3D asset with two rectified flows: stage 1 samples the
*sparse structure* (the latent of a conv-3D VAE of the occupancy grid), stage 2 samples one attribute vector per
active voxel given that structure. Here, at CPU size (:mod:`flowzoo.three_d.voxels`):

* stage 1, :class:`StructureFlow`: a small transformer over the (S/4)³ tokens of the VAE latent, conditioned on
  the shape class (the index K is the null class of classifier-free guidance);
* stage 2, :class:`AttributeFlow`: the velocity of the per-voxel offsets :math:`x = 2a` given the class and the
  occupancy o. An empty voxel's datum is 0, so its exact velocity on the linear path :math:`x_t = (1 - t) z + t x`
  is :math:`-x_t / (1 - t)` (also its exact one-jump average velocity); the net computes only active voxels and
  returns that closed form elsewhere: the sparse stage, dense tensors.

Both stages are velocity models ``model(x, t, **cond)`` trained with the core's ``FlowMatchingLoss`` (time 0 =
noise, 1 = data; TRELLIS's τ = 1 − t). The teacher samples 25 Euler steps per stage. A student is initialised from
its teacher and trained as the one-jump map :math:`\hat x_1 = x_s + (1 - s) u(x_s, s)` with the core's
``VelocityMatchingLoss`` (VM) or ``MDTDistillationLoss`` (VM + VD); the core's ``ConsistencyDistillationLoss`` is
the consistency-distillation baseline (Song et al., arXiv 2303.01469, Eq. 7, with the one-jump parametrisation
:math:`f(x, s) = x + (1 - s) u(x, s)` so that f(x, 1) = x). A student's k-step sample is Euler on u with k steps:
its last step is exactly the one jump, and for k = 1 it is the one-step sample.

Example:
    >>> import torch
    >>> from flowzoo.three_d.voxels import OccupancyVAE
    >>> gen = TwoStageGenerator(OccupancyVAE(8, 2, 4), StructureFlow((2, 2, 2, 2), 2, width=16),
    ...                         AttributeFlow(2, hidden=8), guidance=(1.0, 1.0))
    >>> shapes = gen.sample(torch.tensor([0, 1]), steps=2, generator=torch.Generator().manual_seed(0))
    >>> shapes.occupancy.shape, shapes.offsets.shape, shapes.nfe
    (torch.Size([2, 1, 8, 8, 8]), torch.Size([2, 3, 8, 8, 8]), 4)
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from flowzoo.core.errors import ConfigError, expected
from flowzoo.core.fewstep import ConsistencyDistillationLoss, MDTDistillationLoss, VelocityMatchingLoss
from flowzoo.core.nets import SinusoidalTimeEmbedding
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import ClassifierFreeGuidance, integrate, progress_bar
from flowzoo.core.validation import broadcast_time, check_int, check_number

from flowzoo.three_d.voxels import OccupancyVAE, OccupancyVAELoss, ShapeVoxels, devoxelize

__all__ = ["OFFSET_SCALE", "DISTILL_METHODS", "StructureFlow", "AttributeFlow", "GeneratedShapes",
           "TwoStageGenerator", "check_labels", "fit", "distillation_loss",
           "distill_student", "GeneratorConfig", "batch_sampler", "train_teacher", "distill_generator"]

OFFSET_SCALE = 2.0  # stage 2 generates 2a, so offsets a ∈ [-½, ½]³ have roughly unit scale
DISTILL_METHODS = ("vm", "vm_vd", "cd")


def _condition_embedding(time_dim: int, num_classes: int) -> tuple[nn.Module, nn.Embedding]:
    time_mlp = nn.Sequential(SinusoidalTimeEmbedding(time_dim), nn.Linear(time_dim, time_dim), nn.SiLU(),
                             nn.Linear(time_dim, time_dim))
    return time_mlp, nn.Embedding(num_classes + 1, time_dim)


class StructureFlow(nn.Module):
    """Stage-1 velocity ``v(x, t, y)`` of latents ``(B, C, n, n, n)``: a pre-norm transformer over the n³ tokens.

    The class-and-time embedding is added to every token and prepended as one more token.

    Args:
        latent_shape: ``(C, n, n, n)`` of the VAE latent.
        num_classes: K real classes; ``y == K`` is the null class.
        width, depth, heads: transformer size.
    """

    def __init__(self, latent_shape: tuple[int, ...], num_classes: int, width: int = 64, depth: int = 2,
                 heads: int = 4):
        super().__init__()
        self.latent_shape = tuple(int(d) for d in latent_shape)
        self.num_classes = check_int(num_classes, "num_classes", low=1)
        channels, tokens = self.latent_shape[0], math.prod(self.latent_shape[1:])
        self.time_mlp, self.label_embedding = _condition_embedding(width, self.num_classes)
        self.inp = nn.Linear(channels, width)
        self.position = nn.Parameter(0.02 * torch.randn(tokens, width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (B, n³, C)
        emb = self.time_mlp(t) + self.label_embedding(y)
        h = torch.cat([emb[:, None], self.inp(tokens) + self.position + emb[:, None]], dim=1)
        h = self.out(self.norm(self.blocks(h)[:, 1:]))
        return h.transpose(1, 2).reshape(x.shape)


class AttributeFlow(nn.Module):
    """Stage-2 velocity ``v(x, t, y, occupancy)`` of per-voxel offsets ``(B, 3, S, S, S)``.

    Each active voxel reads the noisy offsets, occupancy and relative positions of its 3×3×3 neighbourhood
    (gathered for the active voxels only, a sparse convolution) and an MLP with the class-and-time embedding
    gives its velocity. Empty voxels get the closed form −x / (1 − t) (module docstring).

    Args:
        num_classes: K real classes; ``y == K`` is the null class.
        hidden: width of the MLP.
        depth: hidden MLP layers.
    """

    def __init__(self, num_classes: int, hidden: int = 64, depth: int = 2):
        super().__init__()
        self.num_classes = check_int(num_classes, "num_classes", low=1)
        self.time_mlp, self.label_embedding = _condition_embedding(hidden, self.num_classes)
        self.local = nn.Linear(27 * 4 + 3, hidden)
        layers: list[nn.Module] = []
        for _ in range(check_int(depth, "depth", low=1)):
            layers += [nn.SiLU(), nn.Linear(hidden, hidden)]
        self.mlp = nn.Sequential(*layers, nn.SiLU(), nn.Linear(hidden, 3))
        grid = torch.stack(torch.meshgrid(*[torch.arange(3)] * 3, indexing="ij")).reshape(3, 27).T
        self.register_buffer("neighbours", grid, persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, occupancy: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        out = (-x / broadcast_time((1.0 - t).clamp(min=1e-4), x)).permute(0, 2, 3, 4, 1).clone()
        b, i, j, k = (occupancy[:, 0] > 0.5).nonzero(as_tuple=True)
        if b.numel() == 0:
            return out.permute(0, 4, 1, 2, 3)
        padded = F.pad(torch.cat([x, occupancy], dim=1), (1, 1, 1, 1, 1, 1)).permute(0, 2, 3, 4, 1)
        near = self.neighbours
        patch = padded[b[:, None], i[:, None] + near[:, 0], j[:, None] + near[:, 1], k[:, None] + near[:, 2]]
        position = torch.stack([i, j, k], dim=1).to(x.dtype) * (2.0 / size) - 1.0 + 1.0 / size
        emb = self.time_mlp(t) + self.label_embedding(y)
        h = self.local(torch.cat([patch.flatten(1), position], dim=1)) + emb[b]
        out[b, i, j, k] = self.mlp(h)
        return out.permute(0, 4, 1, 2, 3)


@dataclass
class GeneratedShapes:
    """Samples of a :class:`TwoStageGenerator`: ``occupancy (B, 1, S, S, S)``, ``offsets (B, 3, S, S, S)`` (voxel
    units), ``labels (B,)``, model evaluations ``nfe`` (both stages, guided passes counted once) and ``seconds``."""

    occupancy: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor
    nfe: int
    seconds: float

    def points(self) -> list[torch.Tensor]:
        """One ``(n_b, 3)`` cloud per shape: active voxel centres plus offsets."""
        return devoxelize(self.occupancy, self.offsets)


def check_labels(labels: object, num_classes: int) -> torch.Tensor:
    """``labels`` as a 1-D long tensor of classes in [0, K), else a ConfigError naming the bad value."""
    y = torch.as_tensor(labels)
    if y.dim() != 1 or y.numel() == 0 or y.is_floating_point():
        raise ConfigError(expected("labels as a non-empty 1-D integer tensor", f"shape {tuple(y.shape)}, "
                                   f"dtype {y.dtype}", "pass e.g. torch.tensor([0, 1])"))
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ConfigError(expected(f"class labels in [0, {num_classes})", f"{int(y.min())}..{int(y.max())}",
                                   f"pass labels below the number of classes ({num_classes})"))
    return y.long()


class TwoStageGenerator(nn.Module):
    """VAE + stage-1 structure flow + stage-2 attribute flow; :meth:`sample` runs the whole pipeline.

    Args:
        vae: the :class:`~flowzoo.three_d.voxels.OccupancyVAE` (frozen after its own training).
        structure: stage-1 velocity (or one-jump student) ``model(x, t, y)``.
        attributes: stage-2 velocity (or student) ``model(x, t, y, occupancy)``.
        guidance: CFG scale per stage at sampling (1: no guidance; a distilled student has it built in).
        latent_scale: the std of the VAE latents (stage 1 runs on latent / scale).
    """

    def __init__(self, vae: OccupancyVAE, structure: nn.Module, attributes: nn.Module,
                 guidance: tuple[float, float] = (1.0, 1.0), latent_scale: float = 1.0):
        super().__init__()
        self.vae, self.structure, self.attributes = vae, structure, attributes
        self.guidance = tuple(check_number(g, "guidance", low=0.0) for g in guidance)
        self.register_buffer("latent_scale", torch.tensor(float(latent_scale)))

    @property
    def num_classes(self) -> int:
        return self.structure.num_classes

    def stage_models(self) -> tuple[Callable, Callable]:
        """The two velocity models as sampled, CFG-wrapped where ``guidance != 1``."""
        null = {"y": self.num_classes}
        return tuple(m if g == 1.0 else ClassifierFreeGuidance(m, g, null)
                     for m, g in zip((self.structure, self.attributes), self.guidance))

    @torch.no_grad()
    def sample(self, labels: object, *, steps: int | tuple[int, int] = 25,
               generator: torch.Generator | None = None) -> GeneratedShapes:
        """Shapes of the given classes with ``steps`` Euler steps per stage (an int, or one per stage)."""
        y = check_labels(labels, self.num_classes).to(self.latent_scale.device)
        k1, k2 = (steps, steps) if isinstance(steps, int) else steps
        k1, k2 = check_int(k1, "steps", low=1), check_int(k2, "steps", low=1)
        stage1, stage2 = self.stage_models()
        start, n, device = time.perf_counter(), y.shape[0], y.device
        z = torch.randn((n,) + tuple(self.vae.latent_shape), generator=generator, device=device)
        latent = integrate(stage1, z, steps=k1, cond={"y": y}).x * self.latent_scale
        occupancy = (self.vae.decode(latent) > 0).float()
        size = self.vae.grid_size
        z = torch.randn((n, 3, size, size, size), generator=generator, device=device)
        x = integrate(stage2, z, steps=k2, cond={"y": y, "occupancy": occupancy}).x
        offsets = (x / OFFSET_SCALE).clamp(-0.5, 0.5) * occupancy
        return GeneratedShapes(occupancy, offsets, y, k1 + k2, time.perf_counter() - start)

    def as_student(self, structure: nn.Module, attributes: nn.Module) -> "TwoStageGenerator":
        """A generator with this one's VAE and new stage models, sampled unguided (guidance distilled in)."""
        return TwoStageGenerator(self.vae, structure, attributes, (1.0, 1.0), float(self.latent_scale))


def fit(model: nn.Module, objective: Callable, sample_batch: Callable[[torch.Generator], dict], *, steps: int,
        lr: float = 1e-3, seed: int = 0, progress: bool = False, desc: str = "training") -> list[float]:
    """AdamW on ``objective(model, sample_batch(generator))`` for ``steps`` updates (clipped at norm 1); losses."""
    steps = check_int(steps, "steps", low=0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=check_number(lr, "lr", low=0.0, strict_low=True), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps))
                                                 if steps else 1.0)
    generator = torch.Generator().manual_seed(seed)
    bar, losses = progress_bar(steps, progress, desc), []
    model.train()
    for _ in range(steps):
        loss, _metrics = objective(model, sample_batch(generator), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    if bar is not None:
        bar.close()
    model.eval()
    return losses


def distillation_loss(method: str, teacher: Callable, guidance: float, num_classes: int, *,
                      loss_normalization: str | None = None) -> Callable:
    """The objective of a student: ``"vm"`` (Velocity Matching), ``"vm_vd"`` (VM + Velocity Distillation) or
    ``"cd"`` (consistency distillation), distilling the teacher guided at scale ``guidance``;
    ``loss_normalization`` (VM and VM + VD only) is the core option of ``VelocityMatchingLoss``."""
    if method not in DISTILL_METHODS:
        raise ConfigError(expected(f"method in {DISTILL_METHODS}", repr(method), "pick one of them"))
    cfg = {} if guidance == 1.0 else {"teacher_guidance": guidance, "null_cond": {"y": num_classes}}
    if method == "cd":
        return ConsistencyDistillationLoss(teacher, **cfg)
    if method == "vm":
        return VelocityMatchingLoss(teacher, loss_normalization=loss_normalization, **cfg)
    return MDTDistillationLoss(teacher, loss_normalization=loss_normalization, **cfg)


def distill_student(teacher: nn.Module, method: str, guidance: float, sample_batch: Callable, *, steps: int,
                    lr: float = 3e-4, seed: int = 0, progress: bool = False,
                    loss_normalization: str | None = None) -> nn.Module:
    """A student initialised as a copy of ``teacher`` (frozen) and trained by :func:`distillation_loss`."""
    frozen = copy.deepcopy(teacher).eval().requires_grad_(False)
    student = copy.deepcopy(teacher)
    objective = distillation_loss(method, frozen, guidance, teacher.num_classes,
                                  loss_normalization=loss_normalization)
    fit(student, objective, sample_batch, steps=steps, lr=lr, seed=seed, progress=progress,
        desc=f"distilling ({method})")
    return student


@dataclass
class GeneratorConfig:
    """Sizes and training budgets of a two-stage generator (the defaults suit a 16³ grid on one CPU core)."""

    classes: tuple[str, ...] = ("sphere", "box", "torus", "cylinder", "cone")
    grid_size: int = 16
    latent_channels: int = 4
    vae_width: int = 16
    width: int = 64
    depth: int = 2
    attribute_hidden: int = 64
    guidance: tuple[float, float] = (1.5, 1.0)
    cond_dropout: float = 0.1
    vae_steps: int = 400
    structure_steps: int = 800
    attribute_steps: int = 400
    batch_size: int = 32
    lr: float = 2e-3


def batch_sampler(data: ShapeVoxels, stage: str, batch_size: int, latents: torch.Tensor | None = None
                  ) -> Callable[[torch.Generator], dict]:
    """Random training batches of one stage: ``"vae"`` ({x1: occupancy}), ``"structure"`` ({x1: latents, y})
    or ``"attributes"`` ({x1: 2 · offsets, y, occupancy})."""
    batch_size = check_int(batch_size, "batch_size", low=1)

    def sample(generator: torch.Generator) -> dict:
        rows = torch.randint(len(data), (batch_size,), generator=generator)
        if stage == "vae":
            return {"x1": data.occupancy[rows]}
        if stage == "structure":
            return {"x1": latents[rows], "y": data.labels[rows]}
        return {"x1": OFFSET_SCALE * data.offsets[rows], "y": data.labels[rows], "occupancy": data.occupancy[rows]}

    if stage not in ("vae", "structure", "attributes") or (stage == "structure" and latents is None):
        raise ConfigError(expected("stage vae, attributes, or structure with latents", repr(stage),
                                   "pass latents=encoded occupancy for the structure stage"))
    return sample


def train_teacher(data: ShapeVoxels, config: GeneratorConfig | None = None, *, seed: int = 0,
                  progress: bool = False) -> TwoStageGenerator:
    """Train the VAE, then the stage-1 and stage-2 flows (flow matching with condition dropout) on ``data``."""
    cfg = config or GeneratorConfig()
    torch.manual_seed(seed)
    k = len(data.classes)
    vae = OccupancyVAE(cfg.grid_size, cfg.latent_channels, cfg.vae_width)
    fit(vae, OccupancyVAELoss(), batch_sampler(data, "vae", cfg.batch_size), steps=cfg.vae_steps, lr=cfg.lr,
        seed=seed, progress=progress, desc="VAE")
    vae.requires_grad_(False)
    with torch.no_grad():
        latents = vae.encode(data.occupancy)[0]
    scale = float(latents.std())
    structure = StructureFlow(vae.latent_shape, k, cfg.width, cfg.depth)
    attributes = AttributeFlow(k, cfg.attribute_hidden)
    objective = FlowMatchingLoss(cond_dropout=cfg.cond_dropout, null_cond={"y": k})
    fit(structure, objective, batch_sampler(data, "structure", cfg.batch_size, latents / scale),
        steps=cfg.structure_steps, lr=cfg.lr, seed=seed + 1, progress=progress, desc="stage 1 (structure)")
    fit(attributes, objective, batch_sampler(data, "attributes", cfg.batch_size), steps=cfg.attribute_steps,
        lr=cfg.lr, seed=seed + 2, progress=progress, desc="stage 2 (attributes)")
    return TwoStageGenerator(vae, structure, attributes, cfg.guidance, scale).eval()


def distill_generator(teacher: TwoStageGenerator, data: ShapeVoxels, method: str, *, steps: int = 200,
                      batch_size: int = 32, lr: float = 3e-4, seed: int = 0, progress: bool = False,
                      loss_normalization: str | None = None) -> TwoStageGenerator:
    """Both stages of ``teacher`` distilled with ``method`` (:data:`DISTILL_METHODS`) into one-jump students
    (``loss_normalization``: the core option of ``VelocityMatchingLoss``, for VM and VM + VD)."""
    with torch.no_grad():
        latents = teacher.vae.encode(data.occupancy)[0] / teacher.latent_scale
    students = [distill_student(model, method, guidance, batch_sampler(data, stage, batch_size, latents),
                                steps=steps, lr=lr, seed=seed + i, progress=progress,
                                loss_normalization=loss_normalization)
                for i, (model, guidance, stage) in enumerate(zip((teacher.structure, teacher.attributes),
                                                                 teacher.guidance, ("structure", "attributes")))]
    return teacher.as_student(*students).eval()
