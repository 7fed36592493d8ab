"""Latent flow matching (LFM, Dao et al., arXiv 2307.08698) against pixel I-CFM on class-conditional MNIST.

Claim under test (LFM §5): flow matching in an autoencoder's latent space reaches pixel flow matching's Fréchet
distance in less training time and with fewer ODE evaluations (dopri5's count), with its FD floored by the
autoencoder's reconstruction, and LFM's bound (reconstruction W2 + decoder Lipschitz × latent W2) above the
measured W2.

Both flows are trained by the core Trainer with the same objective (I-CFM, label dropout 0.1), batch, learning
rate, EMA and U-Net width; the pixel model is the core U-Net on 28×28 images, LFM the same width of U-Net on the
4×7×7 latents of a conv autoencoder (:mod:`flowzoo.vision.autoencoder`, :mod:`flowzoo.vision.latent`) trained
first. LFM runs more (cheaper) steps: the claim is about training time, not steps. Every
``eval_every`` steps the EMA model draws class-conditional samples with Euler steps and their FD (features of the
cached MNIST classifier, :class:`flowzoo.vision.features.ImageEvaluator`) is recorded against the training time
so far; ``train_seconds_to_fd`` is the first such time at which a model's FD is at most the pixel model's final
FD. Times are the process's CPU seconds (one thread), not wall time, so that waiting for a core on a shared machine
does not count; the autoencoder's own training time is given in the LFM rows' note. The final rows sample with
Euler and dopri5 (atol = rtol = 1e-5 as LFM's code; looser in quick mode) and report FD, KID and the share of
samples the classifier assigns to their requested class.

    python -m benchmarks.vision_lfm --quick        # a small run (a few minutes on one core)
    python -m benchmarks.vision_lfm                # longer training, more samples

``rows()`` returns the table for ``benchmarks/vision.py``; nothing is saved here.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from flowzoo.core.analysis import wasserstein2
from flowzoo.core.nets import UNet
from flowzoo.core.objectives import FlowMatchingLoss
from flowzoo.core.sampling import integrate
from flowzoo.core.training import Trainer, TrainerConfig
from flowzoo.vision.autoencoder import AutoencoderConfig, train_autoencoder
from flowzoo.vision.datasets import ImageBatchSampler, ImageData, load_images
from flowzoo.vision.features import ImageEvaluator
from flowzoo.vision.latent import LatentCodec, TrainedLatentModel, generate_latent, load_codec, train_latent_fm
from flowzoo.vision.latent_bound import lfm_bound_terms

from benchmarks.results import markdown_table

__all__ = ["Settings", "SETTINGS", "FDTrace", "rows", "format_table", "main"]

COLUMNS = ("section", "data", "method", "baseline", "nfe", "fd", "kid", "accuracy", "ms_per_sample",
           "train_ms_per_step", "train_seconds_to_fd", "note")


@dataclass(frozen=True)
class Settings:
    """Sizes of one run (quick or full)."""

    ae_steps: int
    ae_channels: int
    ae_lr: float
    flow_steps: int
    lfm_steps: int
    batch: int
    width: int
    eval_every: int
    lfm_eval_every: int
    eval_samples: int
    eval_euler: int
    final_samples: int
    final_euler: int
    tolerance: float


SETTINGS = {
    True: Settings(ae_steps=600, ae_channels=8, ae_lr=3e-3, flow_steps=200, lfm_steps=1000, batch=32, width=16,
                   eval_every=50, lfm_eval_every=100, eval_samples=200, eval_euler=8, final_samples=200,
                   final_euler=10, tolerance=1e-3),
    False: Settings(ae_steps=2000, ae_channels=16, ae_lr=2e-3, flow_steps=3000, lfm_steps=10000, batch=64, width=16,
                    eval_every=250, lfm_eval_every=500, eval_samples=500, eval_euler=20, final_samples=1000,
                    final_euler=50, tolerance=1e-5),
}
# Per data set: the autoencoder's latent channels and stride-2 stages (MNIST 28 px -> 4x7x7; digits 8 px -> 2x4x4).
LATENT = {"mnist": (4, 2), "digits": (2, 1)}


class FDTrace:
    """A Trainer ``evaluate`` hook: samples with ``sample(model)``, records (step, training CPU seconds, FD).

    The CPU time spent here is subtracted, so the seconds are those of training alone.
    """

    def __init__(self, evaluator: ImageEvaluator, sample: Callable[[nn.Module], torch.Tensor]) -> None:
        self.evaluator, self.sample = evaluator, sample
        self.points: list[tuple[int, float, float]] = []
        self.started = time.process_time()
        self.eval_seconds = 0.0

    def start(self) -> None:
        self.started, self.eval_seconds, self.points = time.process_time(), 0.0, []

    def __call__(self, model: nn.Module, step: int, eval_dir: Path) -> dict[str, float]:
        tic = time.process_time()
        fd = self.evaluator.fd(self.sample(model))
        self.points.append((step, tic - self.started - self.eval_seconds, fd))
        self.eval_seconds += time.process_time() - tic
        return {"fd": fd}

    def seconds_to(self, target: float) -> float:
        """Training seconds at the first evaluation with FD <= ``target`` (NaN if never)."""
        return next((seconds for _, seconds, fd in self.points if fd <= target * (1 + 1e-9)), math.nan)

    def ms_per_step(self) -> float:
        step, seconds, _ = self.points[-1]
        return 1000.0 * seconds / step


def _trainer(s: Settings, seed: int, progress: bool, steps: int, eval_every: int, ema: float = 0.999,
             lr: float = 2e-3) -> TrainerConfig:
    return TrainerConfig(steps=steps, batch_size=s.batch, lr=lr, warmup_steps=min(50, steps // 10), ema_decay=ema,
                         eval_every=eval_every, checkpoint_every=0, log_every=50, seed=seed, progress=progress,
                         tensorboard=False)


def _labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 10


def _pixel_sample(model: nn.Module, shape, n: int, seed: int, **options) -> tuple[torch.Tensor, int]:
    noise = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        result = integrate(model, noise, cond={"y": _labels(n)}, **options)
    return result.x, int(result.nfe)


def _scores(evaluator: ImageEvaluator, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
    return evaluator.scores(images, _labels(len(images)) if labels is None else labels)


def _row(data: str, method: str, baseline: str, nfe: float, scores: dict[str, float], ms_sample: float,
         ms_step: float, to_fd: float, note: str) -> dict:
    return {"section": "latent", "data": data, "method": method, "baseline": baseline, "nfe": nfe,
            "fd": scores.get("fd", math.nan), "kid": scores.get("kid", math.nan),
            "accuracy": scores.get("accuracy", math.nan), "ms_per_sample": ms_sample, "train_ms_per_step": ms_step,
            "train_seconds_to_fd": to_fd, "note": note}


def _timed(fn: Callable[[], tuple[torch.Tensor, int]], n: int) -> tuple[torch.Tensor, int, float]:
    tic = time.process_time()
    images, nfe = fn()
    return images, nfe, 1000.0 * (time.process_time() - tic) / n


def _train_pixel(train: ImageData, evaluator: ImageEvaluator, s: Settings, seed: int, progress: bool,
                 work: Path) -> tuple[nn.Module, FDTrace]:
    """Pixel I-CFM with the core U-Net; returns its EMA model and FD trace."""
    torch.manual_seed(seed)
    pixel = UNet(train.shape[0], s.width, (1, 2), 1, (), s.width, num_classes=train.num_classes)
    trace = FDTrace(evaluator, lambda m: _pixel_sample(m, train.shape, s.eval_samples, seed + 1,
                                                       steps=s.eval_euler)[0])
    objective = FlowMatchingLoss(cond_dropout=0.1, null_cond={"y": train.num_classes})
    config = dataclasses.replace(_trainer(s, seed, progress, s.flow_steps, s.eval_every), out_dir=str(work / "pixel"))
    trainer = Trainer(pixel, objective, ImageBatchSampler(train, s.batch), config, evaluate=trace)
    trace.start()
    trainer.fit()
    return trainer.ema.module.eval(), trace


def _train_lfm(train: ImageData, evaluator: ImageEvaluator, s: Settings, seed: int, progress: bool, work: Path,
               latent: tuple[int, int]) -> tuple[TrainedLatentModel, LatentCodec, FDTrace, float]:
    """The autoencoder, then LFM on its latents; returns the run, codec, FD trace and the AE's CPU seconds."""
    tic = time.process_time()
    torch.manual_seed(seed)
    ae_run = train_autoencoder(train, work / "ae", config=AutoencoderConfig(*latent, s.ae_channels),
                               trainer=_trainer(s, seed, progress, s.ae_steps, 0, ema=0.0, lr=s.ae_lr))
    codec = load_codec(ae_run, train)
    ae_seconds = time.process_time() - tic
    trace = FDTrace(evaluator, lambda m: generate_latent(m, codec, s.eval_samples, steps=s.eval_euler,
                                                         labels=_labels(s.eval_samples),
                                                         generator=torch.Generator().manual_seed(seed + 1)).images)
    trace.start()
    lfm = train_latent_fm(train, codec, work / "lfm", width=s.width, res_blocks=1,
                          trainer=_trainer(s, seed, progress, s.lfm_steps, s.lfm_eval_every), evaluate=trace)
    return lfm, codec, trace, ae_seconds


def rows(data: str = "mnist", quick: bool = True, seed: int = 0, *, progress: bool = False,
         settings: Settings | None = None, samples: dict | None = None) -> list[dict]:
    """The benchmark's rows (module docstring) for ``data`` (``"mnist"`` or ``"digits"``); ``settings`` replaces
    the quick or full sizes (a test passes tiny ones); ``samples`` (a dict), when given, receives the first 8
    images of each sampled row under ``"<data> <method>"``."""
    s = SETTINGS[bool(quick)] if settings is None else settings
    train, test = load_images(data), load_images(data, split="test")
    evaluator = ImageEvaluator.for_dataset(data, verbose=progress)
    out, work = [], Path(tempfile.mkdtemp(prefix="vision_lfm_"))

    def say(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    say("pixel I-CFM: training")
    pixel_model, pixel_trace = _train_pixel(train, evaluator, s, seed, progress, work)
    target = pixel_trace.points[-1][2]
    say("LFM: training the autoencoder, then the latent flow")
    lfm, codec, lfm_trace, ae_seconds = _train_lfm(train, evaluator, s, seed, progress, work,
                                                   LATENT.get(data, (4, 2)))

    say("sampling and scoring")
    n = s.final_samples
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in
              (("pixel", pixel_model), ("lfm", lfm.model), ("ae", codec.autoencoder))}
    fd_note = f"FD target {target:.3g} (pixel's final, {s.eval_euler} Euler steps, {s.eval_samples} samples)"
    for name, options in ((f"euler {s.final_euler}", {"steps": s.final_euler}),
                          ("dopri5", {"method": "dopri5", "atol": s.tolerance, "rtol": s.tolerance})):
        pixel_images, pixel_nfe, ms = _timed(lambda: _pixel_sample(pixel_model, train.shape, n, seed + 2, **options),
                                             n)
        out.append(_row(data, f"pixel I-CFM ({name})", "", pixel_nfe, _scores(evaluator, pixel_images), ms,
                        pixel_trace.ms_per_step(), pixel_trace.seconds_to(target),
                        f"{params['pixel']} params; {fd_note}"))
        generated = None

        def draw():
            nonlocal generated
            generated = generate_latent(lfm.model, codec, n, labels=_labels(n),
                                        generator=torch.Generator().manual_seed(seed + 2), **options)
            return generated.images, generated.nfe

        images, nfe, ms = _timed(draw, n)
        if samples is not None:
            samples[f"{data} pixel I-CFM ({name})"] = pixel_images[:8].clone()
            samples[f"{data} LFM ({name})"] = images[:8].clone()
        to_fd, pixel_to_fd = lfm_trace.seconds_to(target), pixel_trace.seconds_to(target)
        if not math.isfinite(to_fd):
            verdict = "never reaches the FD target"
        else:
            verdict = f"reaches the FD target {'sooner' if to_fd < pixel_to_fd else 'NOT sooner'}"
            verdict += f" ({'also' if to_fd + ae_seconds < pixel_to_fd else 'but not'} with the AE's time added)"
        if name == "dopri5":
            verdict = f"{'fewer' if nfe < pixel_nfe else 'NOT fewer'} NFE than pixel ({pixel_nfe}); {verdict}"
        out.append(_row(data, f"LFM ({name})", f"pixel I-CFM ({name})", nfe, _scores(evaluator, images), ms,
                        lfm_trace.ms_per_step(), to_fd,
                        f"{verdict}; {params['lfm']} params + AE {params['ae']} (AE training {ae_seconds:.1f} CPU s, "
                        "not in train_seconds_to_fd)"))
    with torch.no_grad():
        recon = codec.decode(codec.encode(test.images))
    out.append(_row(data, "AE reconstruction (FD floor)", "", 0, _scores(evaluator, recon, test.labels), math.nan,
                    math.nan, math.nan, "decoded encodings of the test split (accuracy against their true labels)"))
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    bound = lfm_bound_terms(codec, test.images[order], generated.latents, max_points=min(n, 500),
                            generator=torch.Generator().manual_seed(seed))
    pixel_w2 = wasserstein2(test.images[order][:bound.n], pixel_images[:bound.n].clamp(-1, 1))
    holds = "holds" if bound.bound >= bound.measured_w2 else "is VIOLATED (local Lipschitz estimate too low)"
    out.append({**_row(data, "LFM bound terms (dopri5)", "", math.nan, {}, math.nan, math.nan, math.nan,
                       f"recon W2 {bound.recon_w2:.3g} + Lipschitz {bound.lipschitz:.3g} x latent W2 "
                       f"{bound.latent_w2:.3g} = bound {bound.bound:.3g}; measured pixel W2 {bound.measured_w2:.3g} "
                       f"(pixel I-CFM's {pixel_w2:.3g}); the bound {holds}; {bound.n} points"),
                "recon_w2": bound.recon_w2, "lipschitz": bound.lipschitz, "latent_w2": bound.latent_w2,
                "bound": bound.bound, "measured_w2": bound.measured_w2})
    return out


def format_table(table: list[dict]) -> str:
    """The rows as a Markdown table (the common columns; bound values are in the note)."""
    return markdown_table(table, COLUMNS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="mnist", choices=sorted(LATENT))
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes on one core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(format_table(rows(args.data, quick=args.quick, seed=args.seed, progress=True)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
