"""Command lines for sequence generation: train a simplex flow, train a guide, sample (optionally guided).

::

    python -m flowzoo.biology.train gumbel_fm --fasta seqs.fa --alphabet dna --out run/
    python -m flowzoo.biology.train gumbel_fm guide --fasta labelled.fa --alphabet dna --motif TATAAT --out guide/
    flowzoo biology sample --checkpoint run/ --n 100 --guide guide/ --out out.fa

``train_main`` trains :mod:`flowzoo.biology.sequences.gumbel_fm` (``--method gumbel_fm | gumbel_score | linear_fm``)
through the core :class:`~flowzoo.core.training.Trainer` (its checkpoints land in ``--out``) and exports the
EMA weights as ``sequence_model.safetensors`` + ``sequence_model.json`` (alphabet, length, backbone,
path). Its ``guide`` (or ``train-guide``) form trains a clean-sequence classifier for STGFlow, labelled
either by a motif (``--motif``: 1 if the sequence holds it) or by a ``key=value`` token in each FASTA
header (``--label_key label``, e.g. ``>seq7 label=1``), exported as ``guide.safetensors`` +
``guide.json``. ``sample_main`` loads a model directory (and a guide), samples and writes FASTA.
Every file is written atomically; input files are only read.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import safetensors.torch
import torch

from flowzoo.core.config import option_help, parse_config
from flowzoo.core.errors import CheckpointError, ConfigError, expected
from flowzoo.core.training import Trainer, TrainerConfig, atomic_write_bytes, unwrap_model
from flowzoo.biology.sequences.gumbel_fm import build_method
from flowzoo.biology.sequences.nets import build_sequence_net
from flowzoo.biology.sequences.alphabets import Alphabet, FastaRecord, encode_records, one_hot, read_fasta, write_fasta
from flowzoo.biology.sequences.stgflow import SequenceClassifier, StraightThroughGuidance, train_guide

__all__ = [
    "SequenceTrainConfig",
    "GuideTrainConfig",
    "SampleConfig",
    "train_main",
    "sample_main",
    "train_guide_main",
    "train_sequence_model",
    "save_sequence_model",
    "load_sequence_model",
    "save_guide",
    "load_guide",
    "MODEL_FILE",
    "GUIDE_FILE",
]

MODEL_FILE, GUIDE_FILE = "sequence_model", "guide"




def _default_trainer() -> TrainerConfig:
    return TrainerConfig(steps=2000, batch_size=128, lr=2e-3, warmup_steps=50, ema_decay=0.995,
                         checkpoint_every=1000, log_every=50, tensorboard=False)


@dataclass
class SequenceTrainConfig:
    """Train a flow on the simplex on the sequences of a FASTA file (all of one length)."""

    fasta: str = field(default="", metadata=option_help("training sequences (FASTA, equal lengths)"))
    alphabet: str = field(default="dna", metadata=option_help("dna, protein, base64, or the letters themselves; case is "
                                                             "ignored unless the alphabet holds a letter in both cases"))
    out: str = field(default="runs/gumbel_fm",
                     metadata=option_help("run directory: checkpoints and the exported model (sets trainer.out_dir)"))
    method: Literal["gumbel_fm", "gumbel_score", "linear_fm"] = field(default="gumbel_fm", metadata=option_help("flow"))
    net: Literal["conv", "transformer"] = field(default="conv", metadata=option_help("backbone"))
    hidden: int = field(default=128, metadata=option_help("backbone width"))
    depth: int = field(default=4, metadata=option_help("backbone blocks / layers"))
    tau_max: float = field(default=10.0, metadata=option_help("Gumbel-softmax temperature at t = 0"))
    decay: float = field(default=3.0, metadata=option_help("temperature decay rate lambda"))
    beta: float = field(default=2.0, metadata=option_help("Gumbel noise scale beta"))
    noise: Literal["fixed", "tempered"] = field(
        default="fixed", metadata=option_help("Gumbel-softmax noise schedule: fixed (Eq. 13 exact) or tempered "
                                              "(the paper's Eq. 9 path)"))
    step: Literal["euler", "logit"] = field(default="euler", metadata=option_help("simplex Euler step kind"))
    sample_steps: int = field(default=100, metadata=option_help("default sampling steps stored with the model"))
    trainer: TrainerConfig = field(default_factory=_default_trainer)


@dataclass
class GuideTrainConfig:
    """Train a clean-sequence classifier for straight-through guidance."""

    fasta: str = field(default="", metadata=option_help("labelled sequences (FASTA, equal lengths)"))
    alphabet: str = field(default="dna", metadata=option_help("dna, protein, base64, or the letters themselves; case is "
                                                             "ignored unless the alphabet holds a letter in both cases"))
    out: str = field(default="runs/guide", metadata=option_help("output directory of guide.safetensors / guide.json"))
    motif: str = field(default="", metadata=option_help("label = 1 if the sequence holds this motif (else read headers)"))
    label_key: str = field(default="label", metadata=option_help("header token key=value giving the class label"))
    target_class: int = field(default=1, metadata=option_help("class that guidance raises by default"))
    hidden: int = field(default=64, metadata=option_help("classifier channels"))
    kernel_size: int = field(default=7, metadata=option_help("odd convolution width"))
    steps: int = field(default=500, metadata=option_help("training steps"))
    batch_size: int = field(default=128, metadata=option_help("batch size"))
    lr: float = field(default=2e-3, metadata=option_help("learning rate"))
    seed: int = field(default=0, metadata=option_help("seed"))
    progress: bool = field(default=True, metadata=option_help("show a progress bar"))


@dataclass
class SampleConfig:
    """Sample sequences from a trained model, optionally with straight-through guidance."""

    checkpoint: str = field(default="", metadata=option_help("run directory written by train (or its sequence_model.json)"))
    n: int = field(default=100, metadata=option_help("number of sequences"))
    out: str = field(default="samples.fa", metadata=option_help("output FASTA"))
    steps: int = field(default=0, metadata=option_help("Euler steps (0: the model's default)"))
    guide: str = field(default="", metadata=option_help("guide directory (or guide.json) from train ... guide"))
    guide_strength: float = field(default=1.0, metadata=option_help("guidance strength gamma: higher meets the constraint more "
                                                                    "often and drifts the letter composition more"))
    guide_samples: int = field(default=16, metadata=option_help("sequences drawn per step for the straight-through gradient"))
    target_class: int = field(default=-1, metadata=option_help("class to raise (-1: the guide's default)"))
    batch_size: int = field(default=500, metadata=option_help("sequences per sampling batch"))
    seed: int = field(default=0, metadata=option_help("seed"))
    progress: bool = field(default=True, metadata=option_help("show a progress bar"))


def _write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def _resolve(path: str | Path, stem: str) -> tuple[Path, Path]:
    path = Path(path)
    base = path / stem if path.is_dir() else path.with_suffix("")
    meta, weights = base.with_suffix(".json"), base.with_suffix(".safetensors")
    for required in (meta, weights):
        if not required.is_file():
            raise CheckpointError(expected(f"{required.name} (written by the train command)", f"nothing at {required}",
                                           f"pass the directory given as --out to train (it holds {stem}.json)"))
    return meta, weights


def _read_meta(path: Path, form: str) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(expected(f"readable JSON in {path}", repr(error),
                                       "retrain or restore the file")) from error
    if meta.get("format") != form:
        raise CheckpointError(expected(f"format {form!r} in {path}", meta.get("format"), "pass the matching file"))
    return meta


def save_sequence_model(directory: str | Path, net: torch.nn.Module, meta: dict) -> Path:
    """Write ``sequence_model.safetensors`` and ``.json`` (weights first, so the JSON marks a complete save)."""
    directory = Path(directory)
    atomic_write_bytes(directory / f"{MODEL_FILE}.safetensors", safetensors.torch.save(
        {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}))
    _write_json(directory / f"{MODEL_FILE}.json", {"format": "flowzoo-sequence-model", **meta})
    return directory


def load_sequence_model(path: str | Path):
    """Load ``(net, method, alphabet, meta)`` from a run directory or its ``sequence_model.json``."""
    meta_path, weights_path = _resolve(path, MODEL_FILE)
    meta = _read_meta(meta_path, "flowzoo-sequence-model")
    alphabet = Alphabet.from_dict(meta["alphabet"])
    net = build_sequence_net(meta["net"], alphabet.size, **meta["net_kwargs"])
    try:
        net.load_state_dict(safetensors.torch.load_file(str(weights_path)))
    except Exception as error:
        raise CheckpointError(expected(f"weights matching {meta_path.name}", repr(error)[:200],
                                       "retrain; the weights and the JSON belong to different runs")) from error
    net.eval()
    # Checkpoints written before the noise schedule was stored were trained on the paper's (tempered) path.
    path_kw = {"noise": "tempered", **meta.get("path", {})}
    method = build_method(meta["method"], alphabet.size, step=meta.get("step", "euler"), **path_kw)
    return net, method, alphabet, meta


def save_guide(directory: str | Path, guide: SequenceClassifier, meta: dict) -> Path:
    directory = Path(directory)
    atomic_write_bytes(directory / f"{GUIDE_FILE}.safetensors", safetensors.torch.save(
        {k: v.detach().cpu().contiguous() for k, v in guide.state_dict().items()}))
    _write_json(directory / f"{GUIDE_FILE}.json", {"format": "flowzoo-sequence-guide", **meta})
    return directory


def load_guide(path: str | Path) -> tuple[SequenceClassifier, dict]:
    """Load ``(classifier, meta)`` from a guide directory or its ``guide.json``."""
    meta_path, weights_path = _resolve(path, GUIDE_FILE)
    meta = _read_meta(meta_path, "flowzoo-sequence-guide")
    guide = SequenceClassifier(Alphabet.from_dict(meta["alphabet"]).size, meta["outputs"], meta["hidden"],
                               meta["kernel_size"])
    guide.load_state_dict(safetensors.torch.load_file(str(weights_path)))
    guide.eval()
    return guide, meta


def _load_tokens(fasta: str, alphabet_name: str) -> tuple[list[FastaRecord], torch.Tensor, Alphabet]:
    if not fasta:
        raise ConfigError(expected("--fasta FILE", "nothing", "name the FASTA file of training sequences"))
    alphabet = Alphabet.from_name(alphabet_name)
    records = read_fasta(fasta)
    tokens = encode_records(records, alphabet)
    if not alphabet.case_sensitive:
        folded = sum(c not in alphabet.letters for record in records for c in record.sequence)
        if folded:
            print(f"note: {folded} letters not in the alphabet's case were read as {alphabet.letters!r} letters "
                  f"(the {alphabet.name} alphabet ignores case)")
    return records, tokens, alphabet


def train_sequence_model(cfg: SequenceTrainConfig):
    """Train and export; returns the core :class:`~flowzoo.core.training.TrainResult`."""
    _, tokens, alphabet = _load_tokens(cfg.fasta, cfg.alphabet)
    cfg.trainer.out_dir = cfg.out
    torch.manual_seed(cfg.trainer.seed)
    net_kwargs = {"hidden": cfg.hidden, "depth": cfg.depth}
    if cfg.net == "transformer":
        net_kwargs["max_length"] = tokens.shape[1]
    net = build_sequence_net(cfg.net, alphabet.size, **net_kwargs)
    path = {"tau_max": cfg.tau_max, "decay": cfg.decay, "beta": cfg.beta, "noise": cfg.noise}
    method = build_method(cfg.method, alphabet.size, step=cfg.step, **path)
    data = one_hot(tokens, alphabet.size)

    def sample_batch(generator: torch.Generator) -> dict[str, torch.Tensor]:
        index = torch.randint(0, data.shape[0], (cfg.trainer.batch_size,), generator=generator)
        return {"x1": data[index]}

    trainer = Trainer(net, method, sample_batch, cfg.trainer, run_config=cfg)
    result = trainer.fit()
    final = trainer.ema.module if trainer.ema is not None else unwrap_model(trainer.model)
    save_sequence_model(cfg.out, final, {
        "method": cfg.method, "alphabet": alphabet.to_dict(), "length": int(tokens.shape[1]), "net": cfg.net,
        "net_kwargs": net_kwargs, "path": path, "step": cfg.step, "sample_steps": cfg.sample_steps,
        "trained_steps": result.step, "training_sequences": int(tokens.shape[0])})
    return result


def _labels(records: list[FastaRecord], tokens: torch.Tensor, alphabet: Alphabet,
            cfg: GuideTrainConfig) -> torch.Tensor:
    if cfg.motif:
        from flowzoo.biology.sequences.hmm import motif_counts

        return (motif_counts(tokens, alphabet.encode(cfg.motif, record="--motif").tolist()) > 0).long()
    values = []
    for record in records:
        found = [tok.split("=", 1)[1] for tok in record.header.split() if tok.startswith(cfg.label_key + "=")]
        try:
            values.append(float(found[0]))
        except (IndexError, ValueError):
            raise ConfigError(expected(f"a numeric '{cfg.label_key}=VALUE' token in every header",
                                       f"header {record.header!r}",
                                       "add labels to the headers or pass --motif")) from None
    return torch.tensor(values)


def train_guide_main(argv: Sequence[str] | None = None) -> int:
    """``... train gumbel_fm guide --fasta F --motif M --out DIR``: train and export a guide."""
    cfg = parse_config(GuideTrainConfig, argv, prog="flowzoo.biology.train gumbel_fm guide")
    records, tokens, alphabet = _load_tokens(cfg.fasta, cfg.alphabet)
    labels = _labels(records, tokens, alphabet, cfg)
    # Whole numbers 0..C-1 are class labels; anything else is a regression target.
    classes = bool((labels == labels.round()).all() and labels.min() >= 0 and labels.max() < 100)
    outputs = max(2, int(labels.max()) + 1) if classes else 1
    torch.manual_seed(cfg.seed)
    guide = SequenceClassifier(alphabet.size, outputs, cfg.hidden, cfg.kernel_size)
    losses = train_guide(guide, tokens, labels, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                         seed=cfg.seed, progress=cfg.progress)
    save_guide(cfg.out, guide, {"alphabet": alphabet.to_dict(), "length": int(tokens.shape[1]), "outputs": outputs,
                                "hidden": cfg.hidden, "kernel_size": cfg.kernel_size,
                                "target_class": cfg.target_class if outputs > 1 else None,
                                "labels": f"motif {cfg.motif}" if cfg.motif else f"header {cfg.label_key}",
                                "final_loss": losses[-1] if losses else None})
    print(f"guide ({'classes ' + str(outputs) if outputs > 1 else 'regression'}) written to {cfg.out}")
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entrypoint of ``python -m flowzoo.biology.train gumbel_fm ...`` (``guide ...`` trains a guide)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "gumbel_fm":
        argv = argv[1:]
    if argv and argv[0] in ("guide", "train-guide"):
        return train_guide_main(argv[1:])
    cfg = parse_config(SequenceTrainConfig, argv, prog="flowzoo.biology.train gumbel_fm")
    result = train_sequence_model(cfg)
    print(f"trained {result.step} steps; model written to {Path(cfg.out) / (MODEL_FILE + '.json')}")
    return 0


def sample_main(argv: Sequence[str] | None = None) -> int:
    """Entrypoint of ``flowzoo biology sample --checkpoint DIR --n 100 [--guide DIR] --out out.fa``."""
    cfg = parse_config(SampleConfig, argv, prog="flowzoo biology sample")
    if not cfg.checkpoint:
        raise ConfigError(expected("--checkpoint DIR", "nothing", "pass the --out directory of the train command"))
    if cfg.n < 1 or cfg.batch_size < 1 or cfg.steps < 0:
        raise ConfigError(expected("--n >= 1, --batch_size >= 1, --steps >= 0", (cfg.n, cfg.batch_size, cfg.steps),
                                   "e.g. --n 100"))
    net, method, alphabet, meta = load_sequence_model(cfg.checkpoint)
    guidance = None
    if cfg.guide:
        guide, guide_meta = load_guide(cfg.guide)
        if guide_meta["alphabet"]["letters"] != alphabet.letters:
            raise ConfigError(expected(f"a guide over the model's alphabet {alphabet.letters!r}",
                                       guide_meta["alphabet"]["letters"], "train the guide with the same --alphabet"))
        target = guide_meta.get("target_class") if cfg.target_class < 0 else cfg.target_class
        guidance = StraightThroughGuidance(guide, method, cfg.guide_strength, cfg.guide_samples, target, seed=cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    steps = cfg.steps or int(meta.get("sample_steps", 100))
    records = []
    for start in range(0, cfg.n, cfg.batch_size):
        count = min(cfg.batch_size, cfg.n - start)
        result = method.sample(net, count, int(meta["length"]), alphabet.size, steps=steps, generator=generator,
                               guidance=guidance, progress=cfg.progress)
        for offset, row in enumerate(result.tokens):
            header = f"sample_{start + offset + 1} method={meta['method']} steps={steps}"
            if guidance is not None:
                header += f" guide_strength={cfg.guide_strength:g}"
            records.append(FastaRecord(header, alphabet.decode(row)))
    write_fasta(cfg.out, records)
    print(f"wrote {len(records)} sequences to {cfg.out}")
    return 0
