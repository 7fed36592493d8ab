"""The 3D benchmark: point-cloud upsampling, scene flow and few-step 3D generation, three tables in one run.

Runs, in order, the three section benchmarks (each keeps its own command line and writes its own result file):

* ``upsampling`` (:mod:`benchmarks.three_d_upsampling`): PUFM / PUFM++ (arXiv 2501.15286) 4x and 16x on held-out
  generated shapes against midpoints and a Gaussian-source flow, CD / HD / P2F / uniformity at 1, 2, 5 NFE;
* ``scene_flow`` (:mod:`benchmarks.three_d_scene_flow`): SCOOP (arXiv 2211.14020) raw, refined, refinement from
  zero and without smoothness, three training-set sizes; EPE3D, Acc3DS, Acc3DR, Outliers, ms per pair;
* ``generation`` (:mod:`benchmarks.three_d_generation`): a TRELLIS-style two-stage generator and its MDT-dist
  (arXiv 2509.04406) students; coverage / MMD, Fréchet distance, seconds per shape.

Result files: ``three_d_upsampling``, ``three_d_scene_flow``, ``three_d_generation`` (``.quick`` with ``--quick``),
each with the command that reproduces it alone. After the sections, the claim lines of each table are printed
together. ``--quick`` is a smoke run (under 10 minutes on one busy core); the full run takes about an hour.

    python -m benchmarks.three_d --quick
    python -m benchmarks.three_d --sections upsampling generation
    python -m benchmarks.three_d
"""

from __future__ import annotations

import argparse
import importlib
import time

__all__ = ["SECTIONS", "section_argv", "claims", "main"]

SECTIONS = {"upsampling": "benchmarks.three_d_upsampling", "scene_flow": "benchmarks.three_d_scene_flow",
            "generation": "benchmarks.three_d_generation"}


def section_argv(section: str, *, quick: bool, seed: int, figures: bool) -> list[str]:
    """The command line one section's ``main`` gets.

    Example:
        >>> section_argv("scene_flow", quick=True, seed=1, figures=False)
        ['--seed', '1', '--quick', '--figure', '']
    """
    argv = ["--seed", str(seed)] + (["--quick"] if quick else [])
    if not figures:
        argv += ["--no-figure"] if section == "upsampling" else ["--figure", ""]
    return argv


def claims(section: str, table: list[dict]) -> list[str]:
    """The section's verdict lines, computed from its rows by the section module's own function."""
    module = importlib.import_module(SECTIONS[section])
    if section == "upsampling":
        return module.claims(table)
    if section == "scene_flow":
        main_size = max((row["train_scenes"] for row in table if row["method"] == "SCOOP + refinement, no smoothness"),
                        default=None)
        return [module.verdict(table, main_size)] if main_size is not None else []
    return [module.verdict(table)]


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="each section's quick setting (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS),
                        help="which tables to run (default: all three)")
    parser.add_argument("--no-figures", action="store_true", help="do not write the docs figures")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    tables, summary = {}, []
    for section in dict.fromkeys(args.sections):
        print(f"== {section} ({SECTIONS[section]}) ==", flush=True)
        module = importlib.import_module(SECTIONS[section])
        tables[section] = module.main(section_argv(section, quick=args.quick, seed=args.seed,
                                                   figures=not args.no_figures))
        summary += [f"{section}: {line}" for line in claims(section, tables[section])]
    print("== claims ==")
    print("\n".join(summary))
    print(f"three_d benchmark: {time.perf_counter() - started:.0f} s")
    return tables


if __name__ == "__main__":
    main()
