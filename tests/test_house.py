"""The kit's structure: layers as docs/LAYOUT.md orders them (no import cycle, none upwards, imports at the top),
modules of one concept each, thin notebooks."""
from __future__ import annotations

import ast
import json
import re

import pytest

from ama.paths import ROOT

PACKAGE = ROOT / "ama"
# every module of ama by its dotted name below the package (params, kernels.cam; a subpackage's __init__.py:
# kernels.__init__), and by its file below ama/ (kernels/cam.py)
MODULES = {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in sorted(PACKAGE.rglob("*.py"))}
FILES = {p.relative_to(PACKAGE).as_posix(): p for p in MODULES.values()}
MAX_MODULE_LINES = 450  # one concept per module: past this, split it by job
MAX_NOTEBOOK_CODE_LINES = 60


LAYOUT = ROOT / "docs" / "LAYOUT.md"
# Modules that import the kit inside functions on purpose: the package's lazy attributes, and the processes
# `make reproduce` starts (the pipeline's steps, the CLI, the parameters and the import graph the Makefile reads before
# .venv exists), which must start without importing torch (test_import_ama_and_the_pipeline_do_not_import_torch).
LAZY_IMPORTERS = {"__init__", "__main__", "runs.pipeline", "apps.cli", "params", "deps"}


def layer_order(text: str) -> dict[str, list[str]]:
    """docs/LAYOUT.md's packages top to bottom, the lowest layer first (``""``: the top level, ``## `ama```; then
    ``## `ama.kernels```...), each with the modules of its table, top to bottom (left to right within a row)."""
    order, package = {}, None
    for line in text.splitlines():
        heading = re.match(r"## `ama(?:\.(\w+))?`", line)
        if heading:
            package = order.setdefault(heading.group(1) or "", [])
        elif line.startswith("| `") and package is not None:
            package += re.findall(r"`(\w+)`", line.split("|")[1])
    return order


def package_of(module: str) -> str:
    """The package of a dotted module name: ``kernels`` of ``kernels.cam`` and ``kernels.__init__``; ``""`` (the top
    level) of ``params``."""
    return module.rpartition(".")[0]


def upward_imports(graph: dict[str, set[str]], packages: list[str]) -> list[tuple[str, str]]:
    """``(module, imported)`` pairs where a module imports one of a package placed below its own (or of a package the
    order does not name); ``__init__`` and ``__main__`` modules aside (the lazy attributes, ``python -m ama``)."""
    rank = {p: k for k, p in enumerate(packages)}
    return sorted((m, d) for m, deps in graph.items() if not m.rpartition(".")[2].startswith("__")
                  for d in deps if rank.get(package_of(d), len(packages)) > rank.get(package_of(m), -1))


def function_level_imports(source: str) -> list[str]:
    """``"line: statement"`` of every import of the kit inside a function or class body of ``source``."""
    tree = ast.parse(source)
    top = {id(n) for n in tree.body}
    return [f"{n.lineno}: {ast.unparse(n)}" for n in ast.walk(tree)
            if id(n) not in top and ((isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("ama")))
                                     or (isinstance(n, ast.Import) and any(a.name.startswith("ama") for a in n.names)))]


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of ama it imports}`` from every ``import`` statement of its source, function bodies included
    (``from . import x``, ``from ..x.y import z``, ``from ama.x import y``, ``import ama.x.y``); a subpackage imported
    counts as its ``__init__``."""
    def module(dotted: str) -> str | None:
        return next((m for m in (dotted, f"{dotted}.__init__") if m in MODULES), None)

    graph = {}
    for name, path in MODULES.items():
        here, deps = name.split(".")[:-1], set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ama")):
                base = here[:max(len(here) + 1 - node.level, 0)] if node.level else []
                parts = [*base, *(node.module.split(".")[0 if node.level else 1:] if node.module else [])]
                deps |= {module(".".join([*parts, a.name])) for a in node.names}
                deps |= {module(".".join(parts))} if parts else set()
            elif isinstance(node, ast.Import):
                deps |= {module(a.name.split(".", 1)[1]) for a in node.names if a.name.startswith("ama.")}
        graph[name] = {d for d in deps if d and d != name}
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
    text = "## `ama`\n| `a` | x |\n## `ama.p`: y\n| `b`, `c` | y |\n| not | a row |"
    assert layer_order(text) == {"": ["a"], "p": ["b", "c"]}
    assert upward_imports({"a": {"p.b"}, "p.b": {"a", "p.c"}, "p.c": set()}, ["", "p"]) == [("a", "p.b")]
    assert upward_imports({"p.a": {"q.z"}, "__main__": {"p.a"}}, ["", "p"]) == [("p.a", "q.z")]
    source = "from . import a\n\ndef f():\n    from .b import c\n    import os\n"
    assert function_level_imports(source) == ["4: from .b import c"]


def test_every_module_imports_only_its_package_and_those_above_it_in_the_layout():
    """docs/LAYOUT.md's packages are the order (the README links it): a module imports only modules of its own
    package, of the packages above it and of the top level (which imports no package), and every module of ``ama``
    has its row in its package's table."""
    order = layer_order(LAYOUT.read_text())
    named = {f"{package}.{m}" if package else m for package, modules in order.items() for m in modules}
    modules = {m for m in MODULES if not m.rpartition(".")[2].startswith("__")}
    assert sorted(modules - named) == [] and sorted(named - modules) == []
    assert sorted({package_of(m) for m in MODULES} - set(order)) == []  # every package has its table
    assert upward_imports(import_graph(), list(order)) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m not in LAZY_IMPORTERS))
def test_the_kit_is_imported_at_the_top_of_each_module(module):
    """Dependencies are visible at the top; only the lazy entry points import the kit inside functions."""
    assert function_level_imports(MODULES[module].read_text()) == []


def test_geometry_defaults_and_params_sit_at_the_bottom():
    graph = import_graph()
    assert graph["geometry"] == set()  # grid and pixel geometry imports nothing else from ama
    assert graph["defaults"] == set()  # the kernels' defaults: standard library only
    assert graph["params"] == {"defaults", "geometry"}  # the Makefile runs it before .venv exists
    assert "runs.shards" in graph["runs.folder"] and "studies.experiments" in graph["runs.folder"]  # orchestration above both
    assert "runs.folder" not in graph["runs.shards"] and "runs.folder" not in graph["studies.experiments"]


@pytest.mark.parametrize("module", sorted(FILES))
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
    spelled = {f for f, p in FILES.items() if '".tmp"' in p.read_text() or "'.tmp'" in p.read_text()}
    assert spelled <= {"paths.py", "runs/check.py"}, spelled
    assert (PACKAGE / "runs/check.py").read_text().count('".tmp"') == 1


def test_import_ama_and_the_pipeline_do_not_import_torch():
    """``make reproduce`` starts a pipeline process per step: they must start in a fraction of a second."""
    import subprocess
    import sys

    code = "import sys, ama, ama.runs.pipeline, ama.params; print(sorted({'torch', 'scipy', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


# Words that are an artifact's name and also, here, something else: a function, a module, a measure's column.
NOT_ARTIFACTS = {("__init__.py", "misalignment"), ("__init__.py", "faithfulness"), ("__init__.py", "transfer"),
                 ("kernels/receptive_field.py", "margin_mass_ratio"), ("figures/charts.py", "margin_mass_ratio"),
                 ("params.py", "erf_definitions")}  # a study's name in a profile, not its table


def spelled_artifacts(source: str) -> list[tuple[int, str]]:
    """``(line, name)`` of every string literal of ``source`` that is a declared table's or figure's name (docstrings
    and f-string pieces aside)."""
    from ama.artifacts import FIGURES, TABLES
    from ama.studies.registry import studies

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
    # a declaration (ama.studies.study: Table("name", ...), Figure("name", ...), Study(name="...")) and a study's
    # notebook cell (beyond.show(folder, "name")) are where the names are given
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
    found = [f"ama/{f}:{line}: {name!r}" for f, p in FILES.items() if f != "artifacts.py"
             for line, name in spelled_artifacts(p.read_text()) if (f, name) not in NOT_ARTIFACTS]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for k, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] == "code":
                found += [f"{nb.name} cell {k}: {name!r}" for _, name in spelled_artifacts("".join(cell["source"]))]
    assert found == [], "spell these by ama.artifacts.TABLES / FIGURES:\n" + "\n".join(found)


def test_artifact_declarations_are_unique_and_explained():
    from ama.artifacts import FIGURES, TABLES
    from ama.studies.registry import studies

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


@pytest.mark.parametrize("module", sorted(MODULES))
def test_public_functions_document_their_parameters(module):
    """One style: each parameter in ``code`` in its function's docstring, or in docs/API.md's shared table."""
    shared = shared_parameters((ROOT / "docs" / "API.md").read_text())
    assert undocumented_parameters(MODULES[module].read_text(), shared) == []


def test_the_layout_page_names_every_module():
    order = layer_order(LAYOUT.read_text())
    missing = [m for m in MODULES if not m.rpartition(".")[2].startswith("__")
               and m.rpartition(".")[2] not in order.get(package_of(m), [])]
    assert missing == [], f"docs/LAYOUT.md does not say what these modules are: {missing}"


def test_the_tracked_tree_stays_under_64_mib():
    """Every file git tracks, together (the data, 44 MB, the references' tables and full-colour figures): under 64 MiB
    (60 until the evidence reference went back to 200 images, issue 42)."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    total = sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())
    assert total < 64 * 2**20, f"the tracked tree holds {total / 2**20:.1f} MiB"
