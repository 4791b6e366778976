"""The kit's structure: layers as docs/LAYOUT.md orders them (no import cycle, none upwards, imports at the top),
modules of one concept each, thin notebooks."""
from __future__ import annotations

import ast
import json
import re

import pytest

from ama.paths import ROOT

PACKAGE = ROOT / "ama"
MAX_MODULE_LINES = 450  # one concept per module: past this, split it by job
MAX_NOTEBOOK_CODE_LINES = 60


LAYOUT = ROOT / "docs" / "LAYOUT.md"
# Modules that import the kit inside functions on purpose: the package's lazy attributes, and the processes
# `make reproduce` starts (the pipeline's steps, the CLI, the parameters and the import graph the Makefile reads before
# .venv exists), which must start without importing torch (test_import_ama_and_the_pipeline_do_not_import_torch).
LAZY_IMPORTERS = {"__init__", "__main__", "pipeline", "cli", "params", "deps"}


def layer_order(text: str) -> list[str]:
    """The modules of docs/LAYOUT.md's table, top to bottom (left to right within a row)."""
    return [m for line in text.splitlines() if line.startswith("| `")
            for m in re.findall(r"`(\w+)`", line.split("|")[1])]


def upward_imports(graph: dict[str, set[str]], order: list[str]) -> list[tuple[str, str]]:
    """``(module, imported)`` pairs where a module imports one placed below it (or one the order does not name)."""
    rank = {m: k for k, m in enumerate(order)}
    return sorted((m, d) for m, deps in graph.items() if m in rank
                  for d in deps if rank.get(d, len(order)) > rank[m])


def function_level_imports(source: str) -> list[str]:
    """``"line: statement"`` of every import of the kit inside a function or class body of ``source``."""
    tree = ast.parse(source)
    top = {id(n) for n in tree.body}
    return [f"{n.lineno}: {ast.unparse(n)}" for n in ast.walk(tree)
            if id(n) not in top and ((isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("ama")))
                                     or (isinstance(n, ast.Import) and any(a.name.startswith("ama") for a in n.names)))]


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of ama it imports}`` from every ``import`` statement of its source, function bodies included
    (``from . import x``, ``from .x import y``, ``from ama.x import y``, ``import ama.x``)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph = {}
    for name in modules:
        deps = set()
        for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ama"):
                deps |= {node.module.split(".")[1]} if "." in node.module else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ama.")}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle's members, found by depth-first search (one entry per cycle, in some rotation)."""
    found = set()

    def walk(start, node, path):
        for nxt in graph[node]:
            if nxt == start:
                found.add(tuple(sorted(path)))
            elif nxt not in path and nxt > start:
                walk(start, nxt, path + [nxt])

    for start in graph:
        walk(start, start, [start])
    return [list(c) for c in sorted(found)]


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_ama_has_no_import_cycle():
    graph = {k: v for k, v in import_graph().items() if k != "__init__"}  # the package imports its parts lazily
    assert cycles(graph) == []


def test_the_layer_checks_find_what_they_look_for():
    assert layer_order("| `a` | x |\n| `b`, `c` | y |\n| not | a row |") == ["a", "b", "c"]
    assert upward_imports({"a": {"b"}, "b": set(), "c": {"a"}}, ["a", "b", "c"]) == [("a", "b")]
    assert upward_imports({"a": {"z"}}, ["a"]) == [("a", "z")]
    source = "from . import a\n\ndef f():\n    from .b import c\n    import os\n"
    assert function_level_imports(source) == ["4: from .b import c"]


def test_every_module_imports_only_modules_above_it_in_the_layout():
    """docs/LAYOUT.md's table is the order (the README links it): each module imports only modules above it, and
    every module of ``ama`` has its row."""
    order = layer_order(LAYOUT.read_text())
    modules = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__")}
    assert sorted(modules - set(order)) == [] and sorted(set(order) - modules) == []
    assert upward_imports(import_graph(), order) == []


@pytest.mark.parametrize("module", sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in LAZY_IMPORTERS))
def test_the_kit_is_imported_at_the_top_of_each_module(module):
    """Dependencies are visible at the top; only the lazy entry points import the kit inside functions."""
    assert function_level_imports((PACKAGE / f"{module}.py").read_text()) == []


def test_geometry_defaults_and_params_sit_at_the_bottom():
    graph = import_graph()
    assert graph["geometry"] == set()  # grid and pixel geometry imports nothing else from ama
    assert graph["defaults"] == set()  # the kernels' defaults: standard library only
    assert graph["params"] == {"defaults", "geometry"}  # the Makefile runs it before .venv exists
    assert "shards" in graph["runs"] and "experiments" in graph["runs"]  # orchestration above both
    assert "runs" not in graph["shards"] and "runs" not in graph["experiments"]


@pytest.mark.parametrize("module", sorted(p.name for p in PACKAGE.glob("*.py")))
def test_modules_stay_one_concept(module):
    lines = len((PACKAGE / module).read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"ama/{module} has {lines} lines: split it by job"


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_notebooks_only_call_plot_and_save(notebook):
    """No loop and few code lines: the science lives in ama."""
    nb = json.loads((ROOT / "notebooks" / notebook).read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert sum(len(c.splitlines()) for c in code) <= MAX_NOTEBOOK_CODE_LINES
    for cell in code:
        for node in ast.walk(ast.parse(cell)):
            assert not isinstance(node, (ast.For, ast.While, ast.FunctionDef, ast.ClassDef)), \
                f"{notebook}: {ast.unparse(node).splitlines()[0]} belongs in ama"


def test_files_are_written_atomically_in_one_place():
    """``ama.paths.atomic_write`` is the kit's one write-then-rename; no module spells its own ``.tmp`` file (the
    reference's folder swap aside: a folder, not a file)."""
    spelled = {p.name for p in PACKAGE.glob("*.py") if '".tmp"' in p.read_text() or "'.tmp'" in p.read_text()}
    assert spelled <= {"paths.py", "reference.py"}, spelled
    assert (PACKAGE / "reference.py").read_text().count('".tmp"') == 1


def test_import_ama_and_the_pipeline_do_not_import_torch():
    """``make reproduce`` starts a pipeline process per step: they must start in a fraction of a second."""
    import subprocess
    import sys

    code = "import sys, ama, ama.pipeline, ama.params; print(sorted({'torch', 'scipy', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


# Words that are an artifact's name and also, here, something else: a function, a module, a measure's column.
NOT_ARTIFACTS = {("__init__.py", "misalignment"), ("__init__.py", "faithfulness"), ("__init__.py", "transfer"),
                 ("receptive_field.py", "margin_mass_ratio"), ("figures.py", "margin_mass_ratio")}


def spelled_artifacts(source: str) -> list[tuple[int, str]]:
    """``(line, name)`` of every string literal of ``source`` that is a declared table's or figure's name (docstrings
    and f-string pieces aside)."""
    from ama.artifacts import FIGURES, TABLES
    from ama.registry import studies

    studies()  # the studies' artifacts are declared with them
    names = {str(a) for a in TABLES} | {str(a) for a in FIGURES}
    tree = ast.parse(source)
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    pieces = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    exports = {id(v) for n in tree.body if isinstance(n, ast.Assign)  # __all__ names functions, not artifacts
               and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets) for v in ast.walk(n.value)}
    studies = {id(n.left) for n in ast.walk(tree)  # a study's name (ama.params.STUDIES), not its table's: "x" in studies
               if isinstance(n, ast.Compare) and "studies" in ast.unparse(n.comparators[0])}
    studies |= {id(v) for n in tree.body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id.endswith(("STUDIES", "MODULES")) for t in n.targets) for v in ast.walk(n.value)}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    called = lambda n: n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")  # noqa: E731
    # a declaration (ama.study: Table("name", ...), Figure("name", ...), Study(name="...")) and a study's notebook
    # cell (beyond.show(folder, "name")) are where the names are given
    studies |= {id(n.args[0]) for n in calls if called(n) in ("Table", "Figure") and n.args}
    studies |= {id(a) for n in calls if called(n) == "show" for a in n.args}
    studies |= {id(k.value) for n in calls if called(n) == "Study" for k in n.keywords if k.arg == "name"}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in names
            and id(n) not in docs and id(n) not in pieces and id(n) not in exports and id(n) not in studies]


def test_the_spelling_check_finds_a_literal_name():
    assert spelled_artifacts('__all__ = ["attack_metrics"]') == []
    assert spelled_artifacts('STUDIES = ("transfer",)\nif "transfer" in P.studies: pass') == []  # a study's name
    assert spelled_artifacts('register(Study(name="transfer", tables=(Table("transfer", "m"),)))\n'
                             'beyond.show(folder, "transfer")\nx = read("transfer")') == [(3, "transfer")]
    assert spelled_artifacts('"""attack_metrics"""\nx = tables["attack_metrics"]\ny = f"{a}attack_metrics"') == [
        (2, "attack_metrics")]


def test_no_artifact_name_is_spelled_twice():
    """A table or figure is named by its declaration in ama/artifacts.py everywhere else: module code and notebooks."""
    found = [f"ama/{p.name}:{line}: {name!r}" for p in sorted(PACKAGE.glob("*.py")) if p.name != "artifacts.py"
             for line, name in spelled_artifacts(p.read_text()) if (p.name, name) not in NOT_ARTIFACTS]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for k, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] == "code":
                found += [f"{nb.name} cell {k}: {name!r}" for _, name in spelled_artifacts("".join(cell["source"]))]
    assert found == [], "spell these by ama.artifacts.TABLES / FIGURES:\n" + "\n".join(found)


def test_artifact_declarations_are_unique_and_explained():
    from ama.artifacts import FIGURES, TABLES
    from ama.registry import studies

    studies()

    for declared in (TABLES, FIGURES):
        names = [str(a) for a in declared]
        assert len(names) == len(set(names)) and all(a.meaning and a.notebook in {"01", "02", "03", "04", "05"}
                                                     for a in declared)
        assert all(getattr(declared, n) == n for n in names)


def shared_parameters(text: str) -> set[str]:
    """The parameter names of docs/API.md's table *Parameters that mean the same everywhere*."""
    section = text.split("## Parameters that mean the same everywhere", 1)[1]
    return {m for line in section.splitlines() if line.startswith("| `")
            for m in re.findall(r"`(\w+)`", line.split("|")[1])}


def undocumented_parameters(source: str, shared: set[str]) -> list[str]:
    """``"function: parameter"`` for each parameter of a public top-level function of ``source`` that is neither
    shared nor written in ``code`` in its docstring (inside any ````...```` span: ````k / n```` names ``k`` and ``n``)."""
    out = []
    for fn in ast.parse(source).body:
        if isinstance(fn, ast.FunctionDef) and not fn.name.startswith("_"):
            spans = re.findall(r"``(.+?)``", ast.get_docstring(fn) or "", re.S)
            for arg in fn.args.args + fn.args.kwonlyargs:
                named = any(re.search(rf"(?<![\w.]){arg.arg}(?!\w)", span) for span in spans)
                if arg.arg not in shared | {"self", "cls"} and not named:
                    out.append(f"{fn.name}: {arg.arg}")
    return out


def test_the_parameter_check_finds_an_undocumented_parameter():
    source = 'def f(model, k, n, width):\n    """The rate ``k / n``."""\n\ndef _g(z):\n    pass\n'
    assert undocumented_parameters(source, {"model"}) == ["f: width"]


@pytest.mark.parametrize("module", sorted(p.stem for p in PACKAGE.glob("*.py")))
def test_public_functions_document_their_parameters(module):
    """One style: each parameter in ``code`` in its function's docstring, or in docs/API.md's shared table."""
    shared = shared_parameters((ROOT / "docs" / "API.md").read_text())
    assert undocumented_parameters((PACKAGE / f"{module}.py").read_text(), shared) == []


def test_the_layout_page_names_every_module():
    text = LAYOUT.read_text()
    missing = [p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__") and f"`{p.stem}`" not in text]
    assert missing == [], f"docs/LAYOUT.md does not say what these modules are: {missing}"
