"""Sphinx configuration for the flowzoo documentation site.

Build with ``bash scripts/docs.sh`` (warnings are errors). Results tables are rendered from
``benchmarks/results/*.json`` by ``render_results.py`` at the start of every build, so a number in the
docs is always one that a benchmark run wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))  # render_results.py lives beside this file

import render_results  # noqa: E402

project = "flowzoo"
author = "flowzoo contributors"
copyright = "flowzoo contributors, MIT licence"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_generated"]  # _generated/*.md are {include}d by the pages
templates_path = ["_templates"]

# MyST: `$...$` maths and ```{directive}``` fences; anchors for the headings that pages link to.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc: documented members come from each module itself; packages (whose __init__ re-exports their
# modules' names) show only their docstring and a list of modules (see _templates/autosummary/module.rst),
# so no object is described twice.
autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = False  # True trips Sphinx 9 on some signatures ("pop from empty list")
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = "flowzoo"

# Cross-references that autodoc cannot resolve (third-party types in signatures) are not errors.
nitpicky = False


def _render(app) -> None:  # noqa: ANN001  (sphinx.application.Sphinx)
    """Regenerate docs/_generated/*.md from benchmarks/results/*.json before any page is read."""
    render_results.render_all(DOCS.parent / "benchmarks" / "results", DOCS / "_generated")


def setup(app) -> None:  # noqa: ANN001
    app.connect("builder-inited", _render)
