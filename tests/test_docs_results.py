"""The docs' results tables come from benchmarks/results/*.json, and every results file reaches a docs page.

Also the README's promises of issue 23: at most 150 lines and no dated measurements (those live in the results
files, rendered on the docs pages with the machine and date of their run). The Sphinx build itself runs in CI
(``bash scripts/docs.sh``); these checks are the fast part that needs no Sphinx.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
INCLUDE = re.compile(r"```\{include\}\s+_generated/(\S+)\.md")


def _renderer():
    spec = importlib.util.spec_from_file_location("render_results", DOCS / "render_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _included() -> dict[str, list[str]]:
    """Generated table stem -> the docs pages that include it."""
    found: dict[str, list[str]] = {}
    for page in DOCS.glob("*.md"):
        for stem in INCLUDE.findall(page.read_text(encoding="utf-8")):
            found.setdefault(stem, []).append(page.name)
    return found


def test_every_results_file_renders_and_keeps_its_numbers(tmp_path):
    render = _renderer()
    written = render.render_all(RESULTS, tmp_path)
    assert {p.name for p in written} == {p.name[:-len(".json")] + ".md" for p in RESULTS.glob("*.json")} | {
        "results_index.md"}
    for path in RESULTS.glob("*.json"):
        table = json.loads(path.read_text(encoding="utf-8"))
        text = (tmp_path / (path.name[:-len(".json")] + ".md")).read_text(encoding="utf-8")
        assert f"`{table['command']}`" in text and table["date"] in text
        for row in table["rows"]:
            for value in row.values():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    assert str(value) in text, f"{path.name}: {value} not printed as stored"


def test_every_results_file_is_on_a_docs_page_and_every_include_exists():
    included = _included()
    stems = {p.name[:-len(".json")] for p in RESULTS.glob("*.json")}
    missing_files = sorted(set(included) - stems - {"results_index"})
    assert missing_files == [], f"docs pages include tables with no results file: {missing_files}"
    full_runs = {s for s in stems if not s.endswith(".quick")}
    unshown = sorted(full_runs - set(included))
    assert unshown == [], f"results files on no docs page (add an {{include}} to a domain page): {unshown}"
    assert "results_index" in included


def test_a_malformed_results_file_is_refused_with_its_name(tmp_path):
    render = _renderer()
    good = json.loads((RESULTS / "robotics_afm.json").read_text(encoding="utf-8"))
    bad = dict(good)
    del bad["machine"]
    (tmp_path / "robotics_afm.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(render.ResultsFileError, match="robotics_afm.json: missing keys \\['machine'\\]"):
        render.render_all(tmp_path, tmp_path / "out")
    (tmp_path / "robotics_afm.json").write_text(json.dumps(dict(good, quick=True)), encoding="utf-8")
    with pytest.raises(render.ResultsFileError, match="belongs in robotics_afm.quick.json"):
        render.render_all(tmp_path, tmp_path / "out")


def test_readme_is_short_and_holds_no_dated_measurements():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "dated measurements belong in benchmarks/results/"
    for page in re.findall(r"\]\((docs/[^)#]+|ARCHITECTURE\.md)", text):
        assert (ROOT / page).is_file(), f"README links to {page}, which does not exist"
