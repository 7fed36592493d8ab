"""Invariants of the package layout that ARCHITECTURE.md promises, checked over every module of core/, robotics/
and biology/.

The checks read the source with :mod:`ast` (so a lazy import inside a function counts as much as a top-level one)
and import every module once in a fresh interpreter. Each failure lists every offender, not just the first.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "robotics", "biology", "driving", "vision", "three_d")
MAX_CORE_TOP_LEVEL_FILES = 12


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """Dotted module name -> source file; a package is named by its ``__init__.py``."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = ("flowzoo", *path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


@lru_cache(maxsize=None)
def tree(name: str) -> ast.Module:
    path = modules()[name]
    return ast.parse(path.read_text(), filename=str(path))


def is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def absolute(name: str, node: ast.ImportFrom) -> str:
    """The absolute module of ``from <node.module> import ...`` written in module ``name``."""
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_package(name) else name.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``, whose body runs only in a script, as module ``__main__``."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and getattr(test.comparators[0], "value", None) == "__main__")


def walk_importable(node: ast.AST):
    """``ast.walk`` minus the bodies of ``__main__`` guards: code there never runs on import, so an import in it
    (``python -m flowzoo.core.train`` reaching for the CLI helpers) cannot close a cycle."""
    todo = [node]
    while todo:
        node = todo.pop()
        yield node
        todo += [child for child in ast.iter_child_nodes(node) if not is_main_guard(child)]


def imports(name: str) -> list[tuple[str, int]]:
    """(imported flowzoo module, line) for every import in the file, at any depth.

    ``from pkg import x`` is an edge to ``pkg.x`` when that is a module of ours, else to ``pkg`` itself (its
    ``__init__`` runs and must provide x).
    """
    known = modules()
    edges = []
    for node in walk_importable(tree(name)):
        if isinstance(node, ast.Import):
            edges += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("flowzoo.")]
        elif isinstance(node, ast.ImportFrom):
            source = absolute(name, node)
            if not source.startswith("flowzoo."):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                edges.append((sub if sub in known else source, node.lineno))
    return [(target, line) for target, line in edges if target in known and target != name]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_find_cycle_reports_a_cycle_and_accepts_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_static_import_graph_has_no_cycle():
    graph = {name: {target for target, _ in imports(name)} for name in modules()}
    cycle = find_cycle(graph)
    if cycle:
        where = []
        for a, b in zip(cycle, cycle[1:]):
            lines = sorted({line for target, line in imports(a) if target == b})
            where.append(f"  {a} -> {b}  ({modules()[a].relative_to(ROOT)}:{lines})")
        raise AssertionError("import cycle (lazy imports included):\n" + "\n".join(where))


def test_domains_depend_on_core_only_and_core_on_no_domain():
    bad = []
    for name in modules():
        own = name.split(".")[1]
        for target, line in imports(name):
            other = target.split(".")[1]
            if other != own and other != "core":
                bad.append(f"{modules()[name].relative_to(ROOT)}:{line} imports {target}")
            if own == "core" and other != "core":
                bad.append(f"{modules()[name].relative_to(ROOT)}:{line} (core) imports {target}")
    assert bad == [], "\n".join(bad)


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(modules())
    code = (
        "import importlib, json, sys, traceback\n"
        f"names = {names!r}\n"
        "failed, missing = {}, {}\n"
        "for name in names:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failed[name] = ''.join(traceback.format_exception_only(type(error), error)).strip()\n"
        "for name in names:\n"
        "    module = sys.modules.get(name)\n"
        "    gone = [n for n in getattr(module, '__all__', ()) if not hasattr(module, n)]\n"
        "    if gone:\n"
        "        missing[name] = gone\n"
        "print(json.dumps({'failed': failed, 'missing': missing}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}, "modules that fail to import:\n" + "\n".join(
        f"  {name}: {error}" for name, error in report["failed"].items())
    assert report["missing"] == {}, f"__all__ names the module does not have: {report['missing']}"


def module_aliases(name: str, source: ast.Module) -> dict[str, str]:
    """Local names bound to flowzoo modules by the file's imports (``import a.b as m``, ``from a import b``)."""
    known = modules()
    aliases = {}
    for node in ast.walk(source):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("flowzoo."):
                    aliases[alias.asname or "flowzoo"] = alias.name if alias.asname else "flowzoo"
        elif isinstance(node, ast.ImportFrom):
            source = absolute(name, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in known:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
    return aliases


def dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"]; None when the chain does not start at a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def is_private(attr: str) -> bool:
    return attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__"))


def private_uses(name: str, source: ast.Module | None = None) -> list[str]:
    """Every private name of another flowzoo module that ``name`` (parsed: ``source``) imports or reads."""
    source = tree(name) if source is None else source
    known, aliases, found = modules(), module_aliases(name, source), []
    where = modules()[name].relative_to(ROOT) if name in known else name
    for node in ast.walk(source):
        if isinstance(node, ast.ImportFrom) and absolute(name, node).startswith("flowzoo."):
            source = absolute(name, node)
            found += [f"{where}:{node.lineno} from {source} import {alias.name}"
                      for alias in node.names if is_private(alias.name) and source != name]
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            chain = dotted(node.value)
            if chain is None or chain[0] not in aliases:
                continue
            target = ".".join([aliases[chain[0]], *chain[1:]])
            if target in known and target != name:
                found.append(f"{where}:{node.lineno} {target}.{node.attr}")
    return found


def test_private_uses_catches_both_forms():
    source = ast.parse("import flowzoo.core.sampling.ode as ode\nfrom flowzoo.core.couplings.base import _cond_rows\n"
                       "import flowzoo.core.batching\n"
                       "def f():\n    return ode._velocity, ode.__name__, flowzoo.core.batching.Batch._x, f._y\n")
    uses = private_uses("flowzoo.core.probe", source)
    assert [use.split(" ", 1)[1] for use in uses] == [
        "from flowzoo.core.couplings.base import _cond_rows", "flowzoo.core.sampling.ode._velocity"]


def test_no_private_name_crosses_a_module_boundary():
    bad = [use for name in modules() for use in private_uses(name)]
    assert bad == [], "private names used outside their module (make them public or move them):\n" + "\n".join(bad)


def test_no_module_level_getattr():
    bad = []
    for name in modules():
        for node in tree(name).body:
            names = ([node.name] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                     else [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)])
            if "__getattr__" in names:
                bad.append(f"{modules()[name].relative_to(ROOT)}:{node.lineno}")
    assert bad == [], f"module-level __getattr__ (lazy re-export shims): {bad}"


def declared_all(name: str) -> list[str] | None:
    """The literal ``__all__`` of a module; None when it has none. ValueError when it is computed or changed
    after its literal (then neither readers nor this test can tell what the module exports)."""
    value = None
    for node in tree(name).body:
        targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            if isinstance(node, ast.AugAssign) or value is not None:
                raise ValueError("__all__ is extended after its literal; list every name in it")
            value = list(ast.literal_eval(node.value))
        elif (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
              and (dotted(node.value.func) or [""])[0] == "__all__"):
            raise ValueError("__all__ is changed after its literal; list every name in it")
    return value


def defined_names(body: list[ast.stmt]) -> set[str]:
    """Names a module body binds itself (defs, classes, assignments, also under if/try), imports excluded."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in getattr(node, "targets", None) or [node.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody"):
                names |= defined_names(getattr(node, block, []))
            for handler in getattr(node, "handlers", []):
                names |= defined_names(handler.body)
    return names


def test_all_of_a_module_names_only_what_it_defines():
    bad = {}
    for name in modules():
        if is_package(name):
            continue
        where = str(modules()[name].relative_to(ROOT))
        try:
            exported = declared_all(name) or []
        except ValueError as error:
            bad[where] = str(error)
            continue
        foreign = sorted(set(exported) - defined_names(tree(name).body))
        if foreign:
            bad[where] = foreign
    assert bad == {}, f"__all__ re-exports names defined elsewhere (import them from their module): {bad}"


def test_core_has_few_top_level_files():
    files = sorted(p.name for p in (ROOT / "core").glob("*.py"))
    assert len(files) <= MAX_CORE_TOP_LEVEL_FILES, (
        f"{len(files)} files at the top of core/ (at most {MAX_CORE_TOP_LEVEL_FILES}): move methods into a "
        f"subpackage: {files}")


def test_every_package_declares_all():
    bad = []
    for name in modules():
        if is_package(name):
            try:
                if declared_all(name) is None:
                    bad.append(str(modules()[name].relative_to(ROOT)))
            except ValueError as error:
                bad.append(f"{modules()[name].relative_to(ROOT)}: {error}")
    assert bad == [], f"package __init__ files without __all__: {bad}"
