"""Commands of ``flowzoo vision ...``: ``train``, ``sample`` and ``evaluate`` for runs of ``flowzoo.vision.train``.

* ``flowzoo vision sample --checkpoint RUN --n 64 --steps 10 --out samples.png`` draws images by integrating the
  trained velocity from Gaussian noise at t = 0 to the data at t = 1 (flowzoo's time convention; Lipman et al.,
  arXiv 2210.02747) with ``--sampler euler|midpoint|heun|rk4|dopri5|boss|flowturbo`` (also ``--method``; BOSS:
  Euler on a Bellman-optimal grid, arXiv 2312.16414; FlowTurbo: Heun then pseudo-corrector steps, arXiv
  2409.18128; :mod:`flowzoo.vision.fewstep`), optionally for one ``--class`` and with classifier-free guidance
  ``--cfg_scale`` (Ho & Salimans, arXiv 2207.12598: :math:`v_u + w(v_c - v_u)`; ``--guidance raag``: RAAG's
  ratio-aware scale up to ``--cfg_scale``, arXiv 2508.03442). A flow-map run (``meanflow``, ``meanflow_fd``,
  ``splitmeanflow``, ``mfrae``) jumps ``--steps`` times instead (``--steps 1``: one evaluation per image). It
  writes a PNG grid and an ``.npz`` beside it (``images`` uint8 (N, C, H, W), ``x`` float in [−1, 1],
  ``labels``). Existing files are replaced only with ``--overwrite``. A SourceFM run (``sourcefm_icfm``,
  ``sourcefm_otcfm``) starts from its stored norm-aligned source; ``--prune true`` (any run) rejection-samples the
  noise away from SourceFM's pruning axes of the run's training images (Lee, Kim, Lee, TMLR 2025;
  :mod:`flowzoo.vision.sourcefm`) and prints the acceptance rate. ``--sampler flowturbo --refiner RUN`` ends with
  ``--refiner_steps`` (default 3) steps of FlowTurbo's velocity refiner trained by ``train refiner --teacher``
  (:mod:`flowzoo.vision.refiner`), which cost no predictor evaluation.
* ``flowzoo vision evaluate --checkpoint RUN --n 500 --steps 10`` prints the Fréchet distance, KID, k-NN
  precision/recall and (class-conditional runs) the classifier accuracy of ``--n`` samples against the data
  set's test split, in the features of the cached per-data-set classifier
  (:class:`~flowzoo.vision.features.ImageEvaluator`), and writes them as JSON into the run directory.
  ``--data`` compares against another data spec; its image shape must be the checkpoint's. On a latent-FM run
  (``lfm``) it decodes the samples first and scores them against the data the run trained on.
* On a SymmFlow run (``python -m flowzoo.vision.train symmflow``; Caetano et al., arXiv 2506.10634;
  :mod:`flowzoo.vision.train_symmflow`) both work on the first ``--n`` items of the test split of the run's own
  data. ``sample --task generate`` (the default) integrates the image's time t from 0 to 1 starting at the test
  maps and writes map | image pairs; ``--task segment`` integrates from the test images at t = 1 back to t = 0 and
  writes image | predicted map | true map; ``--task classify`` prints the classes voted by the pixels of a
  ``--steps``-step Euler segmentation (``--steps 1``: the paper's one-step classification). Its ``.npz`` holds
  ``images``, ``x``, ``maps``, ``labels``, ``multilabels`` and ``predicted_maps`` (segment) or ``predicted``
  (classify). ``evaluate`` prints the segmentation mIoU (``--seg_steps`` steps, default 1), the one-step
  classification accuracy and the generation FD (``--steps`` steps) and writes them as JSON into the run
  directory. A SymmFlow run takes ``--task``, ``--n``, ``--steps``, ``--seg_steps``, ``--sampler`` euler, midpoint,
  heun, rk4 or dopri5, ``--out``, ``--nrow``, ``--seed``, ``--overwrite`` and ``--progress``; any other option is an
  error, and ``--task segment|classify`` or ``--seg_steps`` need a SymmFlow run.

Rationale: sampling and evaluation rebuild the network from the checkpoint alone (its ``config.yaml`` records the
data spec, image shape and class count), so a run directory is all a user needs to keep.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from flowzoo.core.config import option_help, parse_config
from flowzoo.core.errors import ConfigError, ShapeError, expected
from flowzoo.core.training import atomic_write_bytes, atomic_write_with
from flowzoo.core.validation import check_int, check_new_outputs, check_number, check_positive_int, check_probability

__all__ = ["SampleConfig", "EvaluateConfig", "sample_main", "evaluate_main", "commands"]

_SAMPLERS = ("euler", "midpoint", "heun", "rk4", "dopri5", "boss", "flowturbo")
_GUIDANCES = ("cfg", "raag")
def _check_sampler(cfg) -> None:
    if cfg.method not in _SAMPLERS:
        raise ConfigError(expected(f"--sampler in {_SAMPLERS}", repr(cfg.method), "pass e.g. --sampler heun"))
    if cfg.guidance not in _GUIDANCES:
        raise ConfigError(expected(f"--guidance in {_GUIDANCES}", repr(cfg.guidance), "pass --guidance cfg or raag"))
    check_number(cfg.raag_alpha, "--raag_alpha", low=0.0)
    check_int(cfg.refiner_steps, "--refiner_steps", low=0)
    if cfg.refiner and cfg.method != "flowturbo":
        raise ConfigError(expected("--refiner with --sampler flowturbo", f"--sampler {cfg.method}",
                                   "pass --sampler flowturbo, or drop --refiner"))
    if cfg.refiner_steps and not cfg.refiner:
        raise ConfigError(expected("--refiner RUN for --refiner_steps", f"--refiner_steps {cfg.refiner_steps}",
                                   "pass --refiner RUN (python -m flowzoo.vision.train refiner --teacher ...)"))
    if cfg.method == "flowturbo" and cfg.steps < 2:
        raise ConfigError(expected("--steps >= 2 for --sampler flowturbo (its Heun step costs 2 evaluations)",
                                   cfg.steps, "pass --steps 2 or more"))


@dataclass
class SampleConfig:
    """Draw images from a trained vision run and write a PNG grid and an .npz."""

    checkpoint: str = field(metadata=option_help("run directory (or checkpoint) of `python -m flowzoo.vision.train`"))
    n: int = field(default=64, metadata=option_help("number of images"))
    steps: int = field(default=10, metadata=option_help("ODE steps (dopri5: output times only)"))
    method: str = field(default="euler", metadata=option_help("sampler (also --sampler): euler, midpoint, heun, rk4, dopri5, boss, flowturbo"))
    guidance: str = field(default="cfg", metadata=option_help("cfg (constant --cfg_scale) or raag (ratio-aware, up to --cfg_scale)"))
    raag_alpha: float = field(default=1.0, metadata=option_help("RAAG's decay rate alpha of the scale with the velocity ratio"))
    label: int | None = field(default=None, metadata=option_help("class of every image (also --class; none: classes in turn)"))
    cfg_scale: float = field(default=1.0, metadata=option_help("classifier-free guidance scale (1: conditional only)"))
    task: str = field(default="generate", metadata=option_help("SymmFlow runs: generate (maps -> images), segment (images -> maps) or classify"))
    out: str = field(default="samples.png", metadata=option_help("PNG grid to write; the .npz goes beside it"))
    nrow: int = field(default=0, metadata=option_help("images (SymmFlow: image tuples) per grid row (0: square-ish)"))
    seed: int = field(default=0, metadata=option_help("seed of the noise"))
    prune: bool = field(default=False, metadata=option_help("SourceFM directional pruning of the initial noise"))
    prune_tau: float = field(default=0.0, metadata=option_help("pruning cosine threshold (0: 0.048*sqrt(3072/D), raised until 5 % of draws pass)"))
    prune_max_similarity: float = field(default=0.01, metadata=option_help("pruning-axis threshold on the largest data cosine"))
    refiner: str = field(default="", metadata=option_help("flowturbo: run directory of a FlowTurbo refiner (train refiner --teacher RUN)"))
    refiner_steps: int = field(default=0, metadata=option_help("flowturbo: refiner steps after the pseudo-corrector ones (0: 3 with --refiner)"))
    overwrite: bool = field(default=False, metadata=option_help("replace existing output files"))
    progress: bool = field(default=True, metadata=option_help("progress bar over batches"))

    def __post_init__(self) -> None:
        check_positive_int(self.n, "--n")
        check_positive_int(self.steps, "--steps")
        check_int(self.nrow, "--nrow", low=0)
        check_int(self.seed, "--seed", low=0)
        check_number(self.cfg_scale, "--cfg_scale")
        check_probability(self.prune_tau, "--prune_tau")
        check_probability(self.prune_max_similarity, "--prune_max_similarity")
        _check_sampler(self)
        from flowzoo.vision.cli_symmflow import check_symmflow_options
        from flowzoo.vision.train_symmflow import SYMMFLOW_TASKS

        if self.task not in SYMMFLOW_TASKS:
            raise ConfigError(expected(f"--task in {SYMMFLOW_TASKS}", repr(self.task), "pass --task generate"))
        if self.task != "generate":
            check_symmflow_options(self, "sample")


@dataclass
class EvaluateConfig:
    """Score samples of a trained vision run against its data set's real images (``--reference``)."""

    checkpoint: str = field(metadata=option_help("run directory (or checkpoint) of `python -m flowzoo.vision.train`"))
    n: int = field(default=500, metadata=option_help("number of samples scored"))
    steps: int = field(default=10, metadata=option_help("ODE steps"))
    seg_steps: int = field(default=1, metadata=option_help("SymmFlow runs: steps of the segmentation scored by mIoU"))
    method: str = field(default="euler", metadata=option_help("sampler (also --sampler): euler, midpoint, heun, rk4, dopri5, boss, flowturbo"))
    guidance: str = field(default="cfg", metadata=option_help("cfg (constant --cfg_scale) or raag (ratio-aware, up to --cfg_scale)"))
    raag_alpha: float = field(default=1.0, metadata=option_help("RAAG's decay rate alpha of the scale with the velocity ratio"))
    cfg_scale: float = field(default=1.0, metadata=option_help("classifier-free guidance scale (class-conditional runs)"))
    data: str | None = field(default=None, metadata=option_help("data spec compared against (none: the run's)"))
    reference: str = field(default="auto", metadata=option_help(
        "real images compared against: test, train, or auto (train for patches, whose test crops come from another "
        "region of the photographs; test otherwise)"))
    seed: int = field(default=0, metadata=option_help("seed of the noise"))
    prune: bool = field(default=False, metadata=option_help("SourceFM directional pruning of the initial noise"))
    prune_tau: float = field(default=0.0, metadata=option_help("pruning cosine threshold (0: 0.048*sqrt(3072/D), raised until 5 % of draws pass)"))
    prune_max_similarity: float = field(default=0.01, metadata=option_help("pruning-axis threshold on the largest data cosine"))
    refiner: str = field(default="", metadata=option_help("flowturbo: run directory of a FlowTurbo refiner (train refiner --teacher RUN)"))
    refiner_steps: int = field(default=0, metadata=option_help("flowturbo: refiner steps after the pseudo-corrector ones (0: 3 with --refiner)"))
    out: str | None = field(default=None, metadata=option_help("JSON file (none: <run>/evaluate_<method><steps>_n<n>.json)"))
    overwrite: bool = field(default=False, metadata=option_help("replace an existing JSON file"))
    progress: bool = field(default=True, metadata=option_help("progress bar over batches"))

    def __post_init__(self) -> None:
        check_int(self.n, "--n", low=2)
        check_positive_int(self.steps, "--steps")
        check_positive_int(self.seg_steps, "--seg_steps")
        if self.reference not in ("auto", "test", "train"):
            raise ConfigError(expected("--reference auto, test or train", repr(self.reference), "pass --reference auto"))
        check_int(self.seed, "--seed", low=0)
        check_number(self.cfg_scale, "--cfg_scale")
        check_probability(self.prune_tau, "--prune_tau")
        check_probability(self.prune_max_similarity, "--prune_max_similarity")
        _check_sampler(self)


def _normalise(argv: Sequence[str]) -> list[str]:
    """``--class 3`` -> ``--label 3``, ``--sampler`` -> ``--method`` and ``--cfg-scale`` -> ``--cfg_scale``
    (values are left alone)."""
    out = []
    for token in argv:
        if token.startswith("--"):
            name, sep, value = token[2:].partition("=")
            name = {"class": "label", "sampler": "method"}.get(name, name.replace("-", "_"))
            token = "--" + name + sep + value
        out.append(token)
    return out


def _labels(run, n: int, label: int | None, cfg_scale: float, guidance: str = "cfg") -> torch.Tensor | None:
    if not run.class_cond and (cfg_scale != 1.0 or guidance != "cfg"):
        raise ConfigError(expected("--cfg_scale / --guidance only for a class-conditional run",
                                   f"--cfg_scale {cfg_scale} --guidance {guidance}",
                                   "drop them, or train with --class_cond true"))
    if not run.class_cond:
        if label is not None:
            raise ConfigError(expected("--class only for a class-conditional run", f"--class {label}",
                                       "drop --class, or train with --class_cond true"))
        return None
    if label is None:
        return torch.arange(n) % run.num_classes
    if not 0 <= label < run.num_classes:
        raise ConfigError(expected(f"--class in [0, {run.num_classes})", label, "pass a class of the run's data"))
    return torch.full((n,), label, dtype=torch.int64)


def _source(run, cfg):
    """The run's source (None: the standard Gaussian), pruned with ``cfg.prune``."""
    from flowzoo.vision.train import run_source

    return run_source(run, prune=cfg.prune, max_similarity=cfg.prune_max_similarity, tau=cfg.prune_tau or None)


def _refiner(run, cfg):
    """``(refiner module or None, refiner steps)``: the ``--refiner`` run, checked against ``run`` and the grid."""
    if not cfg.refiner:
        return None, 0
    from flowzoo.vision.refiner import check_refiner_run
    from flowzoo.vision.train import load_trained

    steps = cfg.refiner_steps or 3
    refiner = load_trained(cfg.refiner)
    check_refiner_run(refiner, run, steps=cfg.steps, refiner_steps=steps)
    return refiner.model, steps


def _source_note(source) -> str:
    if source is None or source.axes is None:
        return ""
    return f"; pruned source: {len(source.axes)} axes, tau {source.tau:.4g}, acceptance {source.acceptance_rate:.3f}"


def sample_main(argv: Sequence[str] | None = None) -> int:
    """sample --checkpoint RUN --n 64 --steps 10 --out samples.png: write a PNG grid and an .npz."""
    from flowzoo.vision.metrics import save_image_grid
    from flowzoo.vision.datasets import to_uint8
    from flowzoo.vision.fewstep import is_flowmap
    from flowzoo.vision.sampling import generate
    from flowzoo.vision.train import load_trained
    from flowzoo.vision.train_latent import is_latent_run, sample_latent_run
    from flowzoo.vision.cli_symmflow import sample_symmflow_command
    from flowzoo.vision.train_symmflow import is_symmflow_run

    cfg = parse_config(SampleConfig, _normalise(sys.argv[1:] if argv is None else argv), prog="flowzoo vision sample")
    out = Path(cfg.out)
    if out.suffix.lower() != ".png":
        raise ConfigError(expected("--out ending in .png", str(out), "name the grid e.g. samples.png"))
    arrays = out.with_suffix(".npz")
    check_new_outputs([out, arrays], cfg.overwrite)
    if cfg.task != "generate" or is_symmflow_run(cfg.checkpoint):
        return sample_symmflow_command(cfg, out, arrays)
    if is_latent_run(cfg.checkpoint):
        images, labels, nfe, shape = sample_latent_run(cfg.checkpoint, cfg.n, steps=cfg.steps, method=cfg.method,
                                                       label=cfg.label, cfg_scale=cfg.cfg_scale, seed=cfg.seed)
        save_image_grid(images.clamp(-1, 1), out, nrow=cfg.nrow or None, scale=max(1, min(4, 64 // shape[-1])))
        payload = {"images": to_uint8(images).numpy(), "x": images.numpy(), "nfe": np.int64(nfe),
                   "labels": np.full(cfg.n, -1) if labels is None else labels.numpy()}
        atomic_write_with(arrays, lambda path: np.savez_compressed(path, **payload), suffix=".npz")
        print(f"{cfg.n} decoded latent-FM images ({cfg.steps} steps or jumps, {nfe} evaluations each): wrote {out} "
              f"and {arrays}")
        return 0
    run = load_trained(cfg.checkpoint)
    labels = _labels(run, cfg.n, cfg.label, cfg.cfg_scale, cfg.guidance)
    source = _source(run, cfg)
    refiner, refiner_steps = _refiner(run, cfg)
    images, nfe = generate(run.model, cfg.n, run.shape, steps=cfg.steps, method=cfg.method, labels=labels,
                           cfg_scale=cfg.cfg_scale, null_class=run.num_classes, guidance=cfg.guidance,
                           raag_alpha=cfg.raag_alpha, generator=torch.Generator().manual_seed(cfg.seed),
                           progress=cfg.progress, source=source, refiner=refiner, refiner_steps=refiner_steps)
    nrow = cfg.nrow or (run.num_classes if labels is not None and cfg.label is None and cfg.n >= run.num_classes
                        else None)
    save_image_grid(images.clamp(-1, 1), out, nrow=nrow, scale=max(1, min(4, 64 // run.shape[-1])))
    payload = {"images": to_uint8(images).numpy(), "x": images.numpy(),
               "labels": np.full(cfg.n, -1) if labels is None else labels.numpy(), "nfe": np.int64(nfe),
               "source_acceptance_rate": np.float64(1.0 if source is None else source.acceptance_rate)}
    atomic_write_with(arrays, lambda path: np.savez_compressed(path, **payload), suffix=".npz")
    how = "flow-map jumps" if is_flowmap(run.model) else cfg.method
    how += f" + {refiner_steps} refiner steps" if refiner_steps else ""
    print(f"{cfg.n} images ({how}, {cfg.steps} steps, {nfe} evaluations each) from {run.checkpoint}: "
          f"wrote {out} and {arrays}{_source_note(source)}")
    return 0


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """evaluate --checkpoint RUN --n 500 --steps 10: print FD, KID, precision/recall (and class accuracy)."""
    from flowzoo.vision.sampling import generate
    from flowzoo.vision.train import load_trained
    from flowzoo.vision.train_latent import is_latent_run
    from flowzoo.vision.cli_symmflow import evaluate_symmflow_command
    from flowzoo.vision.train_symmflow import is_symmflow_run

    cfg = parse_config(EvaluateConfig, _normalise(sys.argv[1:] if argv is None else argv),
                       prog="flowzoo vision evaluate")
    if cfg.seg_steps != 1 or is_symmflow_run(cfg.checkpoint):
        return evaluate_symmflow_command(cfg)
    if is_latent_run(cfg.checkpoint):
        return _evaluate_latent(cfg)
    run = load_trained(cfg.checkpoint)
    suffix = ("_pruned" if cfg.prune else "") + ("_raag" if cfg.guidance == "raag" else "") + \
        ("_refined" if cfg.refiner else "")
    out = _evaluate_out(cfg, run.checkpoint.parent.parent, suffix)
    labels = _labels(run, cfg.n, None, cfg.cfg_scale, cfg.guidance)
    refiner, refiner_steps = _refiner(run, cfg)
    spec = cfg.data or run.config.data
    evaluator = _evaluator(spec, run.config.load_options(), run.shape, f"{run.checkpoint} trained on "
                           f"{run.config.data} images {run.shape}", _reference(spec, cfg.reference))
    source = _source(run, cfg)
    images, nfe = generate(run.model, cfg.n, run.shape, steps=cfg.steps, method=cfg.method, labels=labels,
                           cfg_scale=cfg.cfg_scale, null_class=run.num_classes, guidance=cfg.guidance,
                           raag_alpha=cfg.raag_alpha, generator=torch.Generator().manual_seed(cfg.seed),
                           progress=cfg.progress, source=source, refiner=refiner, refiner_steps=refiner_steps)
    record = {"checkpoint": str(run.checkpoint), "step": run.step, "data": spec,
              "reference": _reference(spec, cfg.reference), "n": cfg.n, "method": cfg.method,
              "steps": cfg.steps, "nfe": nfe, "cfg_scale": cfg.cfg_scale, "guidance": cfg.guidance,
              "source_scale": run.source_scale, "prune": cfg.prune, "refiner": cfg.refiner or None,
              "refiner_steps": refiner_steps,
              "source_acceptance_rate": 1.0 if source is None else source.acceptance_rate}
    _score_and_write(evaluator, images, labels, record, out, f"nfe {nfe}{_source_note(source)}")
    return 0


def _evaluate_out(cfg, run_dir: Path, suffix: str = "") -> Path:
    out = Path(cfg.out) if cfg.out else run_dir / f"evaluate_{cfg.method}{cfg.steps}_n{cfg.n}{suffix}.json"
    check_new_outputs([out], cfg.overwrite)
    return out


def _reference(spec: str, reference: str) -> str:
    """``--reference auto``: the training distribution for patches (test crops are another region), else test."""
    from flowzoo.vision.features import generation_reference

    return generation_reference(spec) if reference == "auto" else reference


def _evaluator(spec: str, load: dict, shape, what: str, reference: str = "test"):
    """The feature-space evaluator of ``spec`` against ``reference`` (``ImageEvaluator.for_dataset``), refusing a
    run whose image shape differs."""
    from flowzoo.vision.datasets import load_images
    from flowzoo.vision.features import ImageEvaluator, load_feature_classifier

    test = load_images(spec, split="test", **load)
    if tuple(test.shape) != tuple(shape):
        raise ShapeError(expected(f"a checkpoint of images shaped like {spec}'s {test.shape}", what,
                                  "pass the run's own data with --data, or a checkpoint trained on this data"))
    if reference == "train":
        return ImageEvaluator.for_dataset(spec, reference="train", **load)
    classifier, accuracy = load_feature_classifier(spec, **load)
    return ImageEvaluator(classifier, test.images, accuracy)


def _score_and_write(evaluator, images: torch.Tensor, labels, record: dict, out: Path, note: str) -> None:
    precision, recall = evaluator.precision_recall(images)
    metrics = {"fd": evaluator.fd(images), "kid": evaluator.kid(images, subset_size=min(1000, len(images))),
               "precision": precision, "recall": recall}
    if labels is not None:
        metrics["class_accuracy"] = evaluator.class_accuracy(images, labels)
    record = {**record, "metrics": metrics, "feature_classifier_accuracy": evaluator.accuracy}
    atomic_write_bytes(out, json.dumps(record, indent=2).encode("utf-8"))
    print("  ".join(f"{name} {value:.4g}" for name, value in metrics.items()) + f"  ({note}; wrote {out})")


def _evaluate_latent(cfg) -> int:
    """``evaluate`` on an ``lfm`` run: decode its samples, then the pixel runs' metrics on the data it trained on."""
    from flowzoo.core.training import resolve_checkpoint
    from flowzoo.vision.fewstep import SOLVERS
    from flowzoo.vision.train_latent import latent_run_data, sample_latent_run

    unsupported = [name for name, used in (("--prune", cfg.prune), ("--guidance raag", cfg.guidance != "cfg"),
                                           ("--refiner", bool(cfg.refiner)),
                                           (f"--sampler {cfg.method}", cfg.method not in SOLVERS)) if used]
    if unsupported:
        raise ConfigError(expected(f"for a latent-FM run, a solver in {SOLVERS} and constant --cfg_scale only",
                                   ", ".join(unsupported), "drop them, or evaluate a pixel-space run"))
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    spec, load = latent_run_data(cfg.checkpoint)
    out = _evaluate_out(cfg, checkpoint.parent.parent, "_decoded")
    import yaml

    shape = tuple(yaml.safe_load((checkpoint / "config.yaml").read_text(encoding="utf-8"))["latent"]["shape"])
    spec = cfg.data or spec
    evaluator = _evaluator(spec, load, shape, f"{checkpoint} decodes images {shape}", _reference(spec, cfg.reference))
    images, labels, nfe, _ = sample_latent_run(cfg.checkpoint, cfg.n, steps=cfg.steps, method=cfg.method,
                                               label=None, cfg_scale=cfg.cfg_scale, seed=cfg.seed)
    record = {"checkpoint": str(checkpoint), "data": spec, "reference": _reference(spec, cfg.reference),
              "latent": True, "n": cfg.n, "method": cfg.method,
              "steps": cfg.steps, "nfe": nfe, "cfg_scale": cfg.cfg_scale, "guidance": "cfg"}
    _score_and_write(evaluator, images, labels, record, out, f"nfe {nfe}, decoded latent-FM samples")
    return 0


def _train(argv: Sequence[str]) -> int:
    from flowzoo.vision.train import main

    return main(argv)


_train.__doc__ = "train <method> --data SPEC ...: python -m flowzoo.vision.train"


def commands() -> dict[str, Callable[[Sequence[str]], int | None]]:
    """The vision command table for ``flowzoo`` (entry point ``vision = flowzoo.vision.cli:commands``).

    Example:
        >>> sorted(commands())
        ['edit', 'evaluate', 'invert', 'measure-crw', 'restore', 'sample', 'train', 'train-editor', 'video-edit']
    """
    from flowzoo.vision.cli_edit import edit_main, invert_main, video_edit_main
    from flowzoo.vision.cli_restore import measure_crw_main, restore_main
    from flowzoo.vision.video_edit import main as train_editor_main

    return {"train": _train, "sample": sample_main, "evaluate": evaluate_main, "restore": restore_main,
            "invert": invert_main, "edit": edit_main, "video-edit": video_edit_main,
            "train-editor": train_editor_main, "measure-crw": measure_crw_main}
