"""MF-RAE's path (arXiv 2511.13019) in a representation autoencoder's latent against MeanFlow from scratch, on MNIST.

Claim under test (MF-RAE §3-4): in a representation autoencoder's latent space (RAE, arXiv 2510.11690), a flow
map initialised by consistency mid-training (CMT) on a flow-matching teacher's trajectories and then trained by
MeanFlow distillation (MFD) from that teacher converges faster, and reaches a lower one-step Fréchet distance,
than MeanFlow trained from scratch in the same space with the same steps.

Pipeline, all with the core Trainer on class-conditional MNIST (5000 images, 28×28):

1. RAE: the frozen encoder is the trunk of MNIST's feature classifier trained for BFM's guidance epochs (not the
   evaluator's network), its (64, 7, 7) map normalised per channel; a conv decoder is trained on L2 with RAE's
   latent noise (:mod:`flowzoo.vision.representation`). Row: reconstruction PSNR (and the FD of reconstructions,
   the floor of every latent method).
2. Teacher: latent I-CFM (label dropout 0.1) on the normalised latents (:func:`flowzoo.vision.latent.train_latent_fm`),
   sampled with 4, 10 and 100 Euler steps, without guidance.
3. (a) MF-RAE: a latent flow-map U-Net of the teacher's width, CMT for ``mid_fraction`` of the steps, then MFD
   (``objective="mfrae"``); (b) MeanFlow from scratch with the same network, steps, batch and learning rate and the
   same finite-difference derivative as MFD (``objective="meanflow_fd"``), so the two differ only in the teacher.
   Both are sampled at 1, 2 and 4 jumps; each one's 1-jump FD every ``eval_every`` steps is in its note.

FD and KID are measured in the features of the cached MNIST evaluation classifier
(:class:`flowzoo.vision.features.ImageEvaluator`), accuracy is the share of samples that classifier assigns to the
class asked for. Times are the process's CPU seconds (one thread): ``train_ms_per_step`` excludes evaluations,
``ms_per_sample`` includes decoding.

    python -m benchmarks.vision_mfrae --quick     # a few minutes on one core
    python -m benchmarks.vision_mfrae             # longer training, more samples

``rows()`` returns the table for ``benchmarks/vision.py`` (section ``mfrae``); nothing is saved there, ``main()``
saves it as ``vision_mfrae``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks.results import markdown_table, save_table
from flowzoo.core.training import TrainerConfig
from flowzoo.vision.autoencoder import AutoencoderConfig, train_autoencoder
from flowzoo.vision.datasets import ImageData, load_images
from flowzoo.vision.features import ImageEvaluator
from flowzoo.vision.latent import LatentCodec, TrainedLatentModel, generate_latent, load_codec, train_latent_fm

__all__ = ["Settings", "SETTINGS", "COLUMNS", "rows", "format_table", "main"]

COLUMNS = ("section", "data", "method", "baseline", "nfe", "fd", "kid", "accuracy", "ms_per_sample",
           "train_ms_per_step", "note")
NOTES = ("(a) and (b) share the flow-map network, steps, batch, learning rate and finite-difference derivative; "
         "only the teacher (CMT chords, then MFD's teacher velocity) differs.",)


@dataclass(frozen=True)
class Settings:
    """Sizes of one run (quick or full)."""

    ae_steps: int
    ae_channels: int
    noise_tau: float
    teacher_steps: int
    student_steps: int
    batch: int
    width: int
    lr: float
    cmt_steps: int
    mid_fraction: float
    eval_every: int
    eval_samples: int
    final_samples: int


SETTINGS = {
    True: Settings(ae_steps=300, ae_channels=16, noise_tau=0.3, teacher_steps=1200, student_steps=400, batch=32,
                   width=32, lr=2e-3, cmt_steps=8, mid_fraction=0.3, eval_every=100, eval_samples=200,
                   final_samples=300),
    False: Settings(ae_steps=1500, ae_channels=24, noise_tau=0.3, teacher_steps=4000, student_steps=1500,
                    batch=64, width=48, lr=2e-3, cmt_steps=16, mid_fraction=0.3, eval_every=250,
                    eval_samples=500, final_samples=1000),
}
TEACHER_EULER = (4, 10, 100)
JUMPS = (1, 2, 4)


def _trainer(s: Settings, seed: int, steps: int, *, eval_every: int = 0, ema: float = 0.999,
             lr: float | None = None) -> TrainerConfig:
    return TrainerConfig(steps=steps, batch_size=s.batch, lr=s.lr if lr is None else lr,
                         warmup_steps=min(50, steps // 10), ema_decay=ema, eval_every=eval_every,
                         checkpoint_every=0, log_every=50, seed=seed, progress=False, tensorboard=False)


def _labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 10


def _scores(evaluator: ImageEvaluator, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
    return evaluator.scores(images, _labels(len(images)) if labels is None else labels)


def _row(data: str, method: str, baseline: str, nfe: float, scores: dict[str, float], ms_sample: float,
         ms_step: float, note: str) -> dict:
    return {"section": "mfrae", "data": data, "method": method, "baseline": baseline, "nfe": nfe,
            "fd": scores.get("fd", math.nan), "kid": scores.get("kid", math.nan),
            "accuracy": scores.get("accuracy", math.nan), "ms_per_sample": ms_sample,
            "train_ms_per_step": ms_step, "note": note}


class OneJumpTrace:
    """A Trainer ``evaluate`` hook: records (step, training CPU seconds so far, 1-jump FD of ``n`` decoded samples);
    the CPU time spent here is subtracted (``seconds``), so the times are those of training alone."""

    def __init__(self, evaluator: ImageEvaluator, codec: LatentCodec, n: int, seed: int) -> None:
        self.evaluator, self.codec, self.n, self.seed = evaluator, codec, n, seed
        self.points: list[tuple[int, float, float]] = []
        self.seconds = 0.0
        self.started = time.process_time()

    def __call__(self, model: nn.Module, step: int, eval_dir: Path) -> dict[str, float]:
        tic = time.process_time()
        out = generate_latent(model, self.codec, self.n, steps=1, labels=_labels(self.n),
                              generator=torch.Generator().manual_seed(self.seed))
        fd = self.evaluator.fd(out.images)
        self.points.append((step, tic - self.started - self.seconds, fd))
        self.seconds += time.process_time() - tic
        return {"fd_1jump": fd}

    def text(self) -> str:
        return ", ".join(f"{step}: {fd:.3g}" for step, _, fd in self.points)

    def first_at(self, target: float) -> tuple[int, float] | None:
        """(step, training CPU seconds) of the first evaluation with FD <= ``target``, or None."""
        return next(((step, seconds) for step, seconds, fd in self.points if fd <= target * (1 + 1e-9)), None)


def _train(fn, trace: OneJumpTrace | None, steps: int):
    """Run ``fn()``; returns its result and the CPU ms per step without the evaluations."""
    tic = time.process_time()
    result = fn()
    spent = time.process_time() - tic - (trace.seconds if trace is not None else 0.0)
    return result, 1000.0 * spent / steps


def _sample_rows(data: str, run: TrainedLatentModel, name: str, baseline: str, steps_list, evaluator, n: int,
                 seed: int, ms_step: float, note: str, samples: dict | None) -> list[dict]:
    out = []
    for steps in steps_list:
        tic = time.process_time()
        generated = generate_latent(run.model, run.codec, n, steps=steps, labels=_labels(n),
                                    generator=torch.Generator().manual_seed(seed))
        ms = 1000.0 * (time.process_time() - tic) / n
        label = f"{name} ({steps} {'jump' if run.flowmap else 'Euler step'}{'s' if steps > 1 else ''})"
        if samples is not None:
            samples[f"{data} {label}"] = generated.images[:8].clone()
        out.append(_row(data, label, baseline, generated.nfe, _scores(evaluator, generated.images), ms, ms_step,
                        note))
    return out


def _reconstruction_row(data: str, codec: LatentCodec, test: ImageData, evaluator: ImageEvaluator,
                        ms_step: float, ae_seconds: float) -> dict:
    with torch.no_grad():
        recon = torch.cat([codec.decode(codec.encode(test.images[i:i + 500])).cpu()
                           for i in range(0, len(test), 500)])
    mse = float((recon - test.images).pow(2).mean())
    psnr = 10.0 * math.log10(4.0 / max(mse, 1e-12))
    encoder = codec.autoencoder.encoder_record
    row = _row(data, "RAE reconstruction (FD floor)", "", 0, _scores(evaluator, recon, test.labels), math.nan,
               ms_step, f"test PSNR {psnr:.2f} dB; latent {'x'.join(map(str, codec.latent_shape))} (frozen "
               f"{encoder['spec']} classifier, {encoder['epochs']} epochs, test acc "
               f"{encoder['classifier_accuracy']:.3f}); decoder training {ae_seconds:.1f} CPU s")
    return {**row, "psnr": psnr}


def rows(quick: bool = True, seed: int = 0, samples: dict | None = None, *, data: str = "mnist",
         progress: bool = False, settings: Settings | None = None) -> list[dict]:
    """The benchmark's rows (module docstring); ``settings`` replaces the quick or full sizes (a test passes tiny
    ones, e.g. on ``data="digits"`` loaded at 20 px); ``samples`` (a dict), when given, receives the first 8 images
    of each sampled row."""
    s = SETTINGS[bool(quick)] if settings is None else settings
    load = {"size": 20} if data == "digits" else {}   # digits' 8x8 classifier is an MLP: no spatial map
    train, test = load_images(data, **load), load_images(data, split="test", **load)
    evaluator = ImageEvaluator.for_dataset(data, verbose=progress, **load)
    work = Path(tempfile.mkdtemp(prefix="vision_mfrae_"))

    def say(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    say("RAE: training the decoder on the frozen representation")
    config = AutoencoderConfig(kind="representation", channels=s.ae_channels, noise_tau=s.noise_tau)
    tic = time.process_time()
    ae_run = train_autoencoder(train, work / "rae", config=config, spec=data, load=load,
                               trainer=_trainer(s, seed, s.ae_steps, ema=0.0, lr=3e-3))
    ae_seconds = time.process_time() - tic
    codec = load_codec(ae_run, train)   # reloads the run: the encoder is rebuilt and its checksum checked
    out = [_reconstruction_row(data, codec, test, evaluator, 1000.0 * ae_seconds / s.ae_steps, ae_seconds)]

    say("teacher: latent I-CFM")
    teacher, teacher_ms = _train(lambda: train_latent_fm(train, codec, work / "teacher", width=s.width, res_blocks=1,
                                                         trainer=_trainer(s, seed, s.teacher_steps)),
                                 None, s.teacher_steps)
    n = s.final_samples
    out += _sample_rows(data, teacher, "teacher latent I-CFM", "", TEACHER_EULER, evaluator, n, seed + 2,
                        teacher_ms, f"{s.teacher_steps} steps; no guidance", samples)
    teacher_fd = {row["nfe"]: row["fd"] for row in out[1:]}

    students = {}
    for name, objective in (("MF-RAE (CMT -> MFD)", "mfrae"), ("MeanFlow from scratch", "meanflow_fd")):
        say(f"{name}: training")
        trace = OneJumpTrace(evaluator, codec, s.eval_samples, seed + 1)   # its clock starts here
        options = {"teacher": teacher, "teacher_steps": s.cmt_steps, "mid_fraction": s.mid_fraction} \
            if objective == "mfrae" else {}
        run, ms_step = _train(lambda: train_latent_fm(train, codec, work / objective, width=s.width, res_blocks=1,
                                                      trainer=_trainer(s, seed, s.student_steps,
                                                                       eval_every=s.eval_every),
                                                      evaluate=trace, objective=objective, **options),
                              trace, s.student_steps)
        students[objective] = (name, run, ms_step, trace)
    reference = "teacher latent I-CFM (100 Euler steps)"
    scratch_trace = students["meanflow_fd"][3]
    scratch_final = scratch_trace.points[-1][2] if scratch_trace.points else math.nan
    for objective, (name, run, ms_step, trace) in students.items():
        schedule = (f"CMT for the first {round(s.mid_fraction * s.student_steps)}, then MFD"
                    if objective == "mfrae" else "no teacher")
        note = f"{s.student_steps} steps ({schedule}); 1-jump FD at step {trace.text()}"
        for what, target in ((f"MeanFlow-from-scratch's final 1-jump FD {scratch_final:.3g}", scratch_final),
                             ("1.5x the teacher's 100-step FD", 1.5 * teacher_fd.get(100, math.nan))):
            first = trace.first_at(target)
            note += (f"; reaches {what} at step {first[0]} ({first[1]:.1f} CPU s)" if first is not None
                     else f"; never reaches {what}")
        out += _sample_rows(data, run, name, reference if objective == "mfrae" else "MF-RAE (CMT -> MFD)", JUMPS,
                            evaluator, n, seed + 2, ms_step, note, samples)
    shutil.rmtree(work, ignore_errors=True)   # the runs served their rows (kept when a step fails, to look at)
    return out


def format_table(table: list[dict]) -> str:
    """The rows as a Markdown table (the common columns)."""
    return markdown_table(table, COLUMNS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes on one core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-save", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = rows(quick=args.quick, seed=args.seed, progress=True)
    print(format_table(table))
    if not args.no_save:
        path = save_table("vision_mfrae", [{c: row[c] for c in COLUMNS} for row in table], columns=list(COLUMNS),
                          title=__doc__.strip().splitlines()[0], notes=list(NOTES), quick=args.quick,
                          command="python -m benchmarks.vision_mfrae" + (" --quick" if args.quick else ""))
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
