"""SymmFlow against single-task baselines: segmentation, one-step classification and map-to-image generation.

For each data set (``mnist-masks``: real MNIST digits with an 11-class map, background + digit class;
``shapes``: synthetic RGB shapes with a 5-class map and several shapes per image) four networks of one U-Net
size are trained with the same budget (steps, batch, learning rate, seed):

* ``SymmFlow``: :class:`flowzoo.vision.symmflow.SymmFlowNet` with the symmetric loss (both directions);
* ``image→map FM``: the same network and loss with the image held clean (``direction="segment"``);
* ``map→image FM``: the same with the map held clean (``direction="generate"``);
* ``classifier``: :class:`flowzoo.vision.symmflow.PooledClassifier`, the same U-Net as a classifier
  (cross-entropy; binary cross-entropy over the visible shape classes for ``shapes``).

Rows (``task``):

* ``segmentation``: mean IoU and pixel accuracy of the decoded map on test images, Euler steps = NFE;
* ``classification``: SymmFlow's one-step pixel vote against the classifier; accuracy is the share of test
  images whose label (``mnist-masks``) or whole set of visible classes (``shapes``) is right;
* ``generation``: images generated from the test maps, Fréchet distance to the test images in the features of
  a small classifier trained on the training split (:func:`flowzoo.vision.features.train_feature_classifier`),
  and in ``miou`` the foreground IoU of the generated image against its map (digit pixels brighter than mid
  grey; shape pixels saturated).

``ms_per_sample`` is the wall time of the evaluation call per test image; ``train_ms_per_step`` the mean wall
time of one training step. The ``note`` column of SymmFlow's rows says whether the claim holds on this run:
segmentation mIoU and classification accuracy within 5 points of the single-task baseline, generation FD
against map→image FM. Maps use the paper's colour code (three channels; :class:`~flowzoo.vision.segmentation.
MapCodec`): with the one-hot code the segmenting networks start from one noise channel per class, and at these
budgets they did not learn even the foreground of the 11-class digit maps. The quick run is a smoke run (small
budget, 16×16 images): its numbers are noisy.

    python -m benchmarks.vision_symmflow --quick     # about a minute of CPU time on one thread
    python -m benchmarks.vision_symmflow             # the full budget
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from flowzoo.vision.segmentation import MapCodec, SegmentationData, load_segmentation
from flowzoo.vision.symmflow import (ClassifierLoss, PooledClassifier, SymmFlowLoss, SymmFlowNet, classify, fit,
                                     generate, segment)
from flowzoo.vision.train_symmflow import (exact_accuracy, feature_evaluator, foreground_iou, is_multilabel,
                                           segmentation_scores)

__all__ = ["SETTINGS", "COLUMNS", "DATASETS", "WITHIN", "NOTES", "rows", "dataset_rows", "format_table", "main"]

COLUMNS = ("section", "data", "method", "baseline", "task", "miou", "accuracy", "fd", "nfe", "ms_per_sample",
           "train_ms_per_step", "note")
SETTINGS = {
    "quick": {"size": 16, "train": 1000, "test": 200, "steps": 100, "batch": 16, "lr": 3e-3, "channels": 16,
              "seg_steps": (1,), "gen_steps": 8, "feature_epochs": 10, "min_pixels": 2, "encoding": "colour"},
    "full": {"size": 16, "train": None, "test": 1000, "steps": 3000, "batch": 32, "lr": 2e-3, "channels": 32,
             "seg_steps": (1, 10), "gen_steps": 20, "feature_epochs": 30, "min_pixels": 3, "encoding": "colour"},
}
WITHIN = 0.05  # "within a few points": five percentage points
DATASETS = ("mnist-masks", "shapes")
NOTES = ("Four networks of one U-Net size per data set, same steps, batch, learning rate and seed: SymmFlow "
         "(both directions), image→map FM, map→image FM and a pooled classifier.",
         "segmentation: mIoU and pixel accuracy of the decoded map; classification: SymmFlow's one-step pixel vote "
         "against the classifier (shapes: the whole set of visible classes must be right); generation: FD in the "
         "features of a classifier trained on the training split, miou = foreground IoU of the image against its map.",
         "Claim: SymmFlow within 5 points of the single-task baselines (mIoU, accuracy), FD within 1.5x of "
         "map→image FM; each SymmFlow row's note says whether it holds on this run.")


def _load(name: str, setting: dict, seed: int) -> tuple[SegmentationData, SegmentationData]:
    size, n_train, n_test = setting["size"], setting["train"], setting["test"]
    if name == "shapes":
        return (load_segmentation(name, split="train", size=size, seed=seed, count=n_train or 4000),
                load_segmentation(name, split="test", size=size, seed=seed, count=n_test))
    train = load_segmentation(name, split="train", size=size, seed=seed)
    test = load_segmentation(name, split="test", size=size, seed=seed)
    return train.subset(slice(0, n_train)), test.subset(slice(0, n_test))


def _train(model, loss, data, setting: dict, seed: int) -> float:
    torch.manual_seed(seed)
    start = time.perf_counter()
    fit(model, loss, data, steps=setting["steps"], batch_size=setting["batch"], lr=setting["lr"], seed=seed,
        progress=True)
    model.eval()
    return 1000 * (time.perf_counter() - start) / setting["steps"]


def _timed(fn, n: int):
    start = time.perf_counter()
    with torch.no_grad():
        out = fn()
    return out, 1000 * (time.perf_counter() - start) / n


def _verdict(value: float, reference: float, higher_is_better: bool = True) -> str:
    gap = (value - reference) if higher_is_better else (reference - value)
    return f"{'holds' if gap >= -WITHIN else 'fails'}: {100 * gap:+.1f} points against the baseline"


def _row(data: str, method: str, baseline: str, task: str, **values) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(section="symmflow", data=data, method=method, baseline=baseline, task=task, note="")
    row.update(values)
    return row


def dataset_rows(name: str, setting: dict, seed: int = 0, samples: dict | None = None) -> list[dict]:
    """The rows of one data set (``"mnist-masks"`` or ``"shapes"``) under one of :data:`SETTINGS`; ``samples`` (a
    dict), when given, receives the first 8 generated images of each generation row under ``"<data> <method>"``."""
    train, test = _load(name, setting, seed)
    codec = MapCodec(train.num_classes, encoding=setting["encoding"])
    channels, multilabel = train.shape[0], is_multilabel(train)
    unet = {"channels": setting["channels"]}
    torch.manual_seed(seed)  # the networks' initial weights: a rerun gives the same table
    nets = {d: SymmFlowNet(channels, codec, direction=d, **unet) for d in ("symmetric", "segment", "generate")}
    train_ms = {d: _train(net, SymmFlowLoss(codec, direction=d), train, setting, seed) for d, net in nets.items()}
    torch.manual_seed(seed)
    classifier = PooledClassifier(channels, train.num_classes - 1, **unet)
    train_ms["classifier"] = _train(classifier, ClassifierLoss(multilabel=multilabel), train, setting, seed)
    names = {"symmetric": "SymmFlow", "segment": "image→map FM", "generate": "map→image FM"}
    n, out = len(test), []

    for steps in setting["seg_steps"]:
        scores = {}
        for d in ("symmetric", "segment"):
            result, ms = _timed(lambda: segment(nets[d], test.images, steps=steps,
                                                generator=torch.Generator().manual_seed(seed)), n)
            seg = segmentation_scores(result.extras["labels"], test)
            scores[d] = seg["miou"]
            out.append(_row(name, names[d], names["segment"] if d == "symmetric" else "", "segmentation",
                            miou=seg["miou"], accuracy=seg["pixel_accuracy"],
                            nfe=result.nfe, ms_per_sample=ms, train_ms_per_step=train_ms[d]))
        out[-2]["note"] = "mIoU " + _verdict(scores["symmetric"], scores["segment"])

    truth = test.multilabels if multilabel else test.labels
    votes, ms = _timed(lambda: classify(nets["symmetric"], test.images, steps=1, multilabel=multilabel,
                                        min_pixels=setting["min_pixels"],
                                        generator=torch.Generator().manual_seed(seed)), n)
    logits, ms_clf = _timed(lambda: classifier(test.images), n)
    guesses = logits > 0 if multilabel else logits.argmax(1)
    acc = {"symmflow": exact_accuracy(votes, truth), "classifier": exact_accuracy(guesses, truth)}
    out.append(_row(name, "SymmFlow (1-step vote)", "classifier", "classification", accuracy=acc["symmflow"], nfe=1,
                    ms_per_sample=ms, train_ms_per_step=train_ms["symmetric"],
                    note="accuracy " + _verdict(acc["symmflow"], acc["classifier"])))
    out.append(_row(name, "classifier", "", "classification", accuracy=acc["classifier"], nfe=1, ms_per_sample=ms_clf,
                    train_ms_per_step=train_ms["classifier"]))

    evaluator = feature_evaluator(train, test, epochs=setting["feature_epochs"], seed=seed)
    fds = {}
    for d in ("symmetric", "generate"):
        result, ms = _timed(lambda: generate(nets[d], test.maps, steps=setting["gen_steps"],
                                             generator=torch.Generator().manual_seed(seed)), n)
        fds[d] = evaluator.fd(result.x)
        if samples is not None:
            samples[f"{name} {names[d]}"] = result.x[:8].clone()
        out.append(_row(name, names[d], names["generate"] if d == "symmetric" else "", "generation",
                        miou=foreground_iou(result.x, test), fd=fds[d],
                        nfe=result.nfe, ms_per_sample=ms, train_ms_per_step=train_ms[d]))
    ratio = fds["symmetric"] / max(fds["generate"], 1e-12)
    out[-2]["note"] = (f"FD {ratio:.2f}x the single-direction FM's: "
                       f"{'holds (within 1.5x)' if ratio <= 1.5 else 'fails (above 1.5x)'}")
    return out


def rows(quick: bool = True, seed: int = 0, samples: dict | None = None) -> list[dict]:
    """Every row of the SymmFlow table (both data sets), under the quick or the full :data:`SETTINGS`; ``samples``
    as in :func:`dataset_rows`."""
    setting = SETTINGS["quick" if quick else "full"]
    return [row for name in DATASETS for row in dataset_rows(name, setting, seed, samples)]


def format_table(table: list[dict]) -> str:
    """The rows as a fixed-width text table."""
    def cell(value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    widths = {c: max(len(c), *(len(cell(r[c])) for r in table)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines += ["  ".join(cell(r[c]).ljust(widths[c]) for c in COLUMNS) for r in table]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke budget (about a minute of CPU time)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", choices=DATASETS, nargs="+", default=list(DATASETS), help="data sets to run")
    parser.add_argument("--steps", type=int, help="training steps of every network (overrides the setting)")
    parser.add_argument("--channels", type=int, help="U-Net width (overrides the setting)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    setting = dict(SETTINGS["quick" if args.quick else "full"])
    setting.update({k: v for k, v in (("steps", args.steps), ("channels", args.channels)) if v is not None})
    table = [row for name in args.data for row in dataset_rows(name, setting, args.seed)]
    print(format_table(table))
    return table


if __name__ == "__main__":
    main()
