"""Sample grids of the image benchmark: one labelled PNG per data set, a row of samples per method and NFE.

:mod:`benchmarks.vision` (and the sections it composes) keep the first samples each row already drew, and
:func:`save_method_grid` lays them out one row per method (the row's label on the left: method and sampler / NFE),
so the documentation shows every method beside its baseline without drawing a sample twice. The class-conditional
rows ask for classes 0, 1, 2, ... in turn, so the columns line up by class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

__all__ = ["GRID_SAMPLES", "grid_rows", "save_method_grid"]

GRID_SAMPLES = 8  # samples per method row


def grid_rows(samples: Mapping[str, torch.Tensor], rows: Sequence[dict]) -> list[str]:
    """The keys of ``samples`` worth a grid row: per method, its fewest-NFE and most-NFE rows, in table order.

    ``rows`` are the table's rows (``method``, ``sampler``, ``nfe``); a key is ``"<method> <sampler>"``.

    Example:
        >>> rows = [{"method": "A", "sampler": f"euler {n}", "nfe": n} for n in (4, 10, 100)]
        >>> grid_rows({"A euler 4": 0, "A euler 10": 0, "A euler 100": 0}, rows)
        ['A euler 4', 'A euler 100']
    """
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        if f"{row['method']} {row['sampler']}" in samples:
            by_method.setdefault(row["method"], []).append(row)
    keep = set()
    for group in by_method.values():
        ordered = sorted(group, key=lambda row: row["nfe"] if row.get("nfe") is not None else 0)
        keep |= {f"{ordered[0]['method']} {ordered[0]['sampler']}", f"{ordered[-1]['method']} {ordered[-1]['sampler']}"}
    return [key for key in (f"{row['method']} {row['sampler']}" for row in rows) if key in keep]


def save_method_grid(path: str | Path, entries: Sequence[tuple[str, torch.Tensor]], title: str = "") -> Path:
    """Write one PNG with a labelled row of images per entry ``(label, images (n, C, H, W) in [-1, 1])``.

    At most :data:`GRID_SAMPLES` images per row; grey or RGB; nearest-neighbour upscaling keeps pixels sharp.

    Example:
        >>> import tempfile
        >>> out = save_method_grid(Path(tempfile.mkdtemp()) / "g.png", [("noise", torch.rand(8, 1, 8, 8) * 2 - 1)])
        >>> out.suffix, out.stat().st_size > 0
        ('.png', True)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowzoo.vision.metrics import image_grid

    if not entries:
        raise ValueError("save_method_grid needs at least one (label, images) entry")
    strips = [image_grid(images[:GRID_SAMPLES].detach().float().clamp(-1, 1).cpu(), nrow=GRID_SAMPLES, padding=1)
              .permute(1, 2, 0).numpy() for _, images in entries]
    height, width = strips[0].shape[:2]
    row_inches, dpi = 0.42, 100
    label_inches = max(2.2, 0.065 * max(len(label) for label, _ in entries))  # 7-point text: the longest label fits
    figure = plt.figure(figsize=(label_inches + 0.1 + row_inches * width / height, 0.25 + row_inches * len(entries)),
                        dpi=dpi)
    for i, ((label, _), strip) in enumerate(zip(entries, strips)):
        axis = figure.add_axes((label_inches / figure.get_figwidth(),
                                1 - (0.25 + row_inches * (i + 1)) / figure.get_figheight(),
                                1 - (label_inches + 0.05) / figure.get_figwidth(), row_inches * 0.94 / figure.get_figheight()))
        axis.imshow(strip[..., 0] if strip.shape[-1] == 1 else strip, cmap="gray", vmin=0, vmax=255,
                    interpolation="nearest", aspect="auto")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=8, y=1 - 0.05 / figure.get_figheight(), va="top")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path
