"""The Makefile's prerequisites from the import graph: which ``ama/**/*.py`` files each notebook, and each step of
``make reproduce``, imports, directly or through other modules (standard library only: the Makefile runs it with the
system ``python3`` before ``.venv`` exists).

The graph is read statically with :mod:`ast` and errs on the side of an edge: every import of a module counts, those
inside functions included (``from . import a, b``, ``from ..kernels.cam import y``, ``from ama import x``,
``import ama.x.y``, ``ama.x.y`` attribute uses after ``import ama``, the modules a ``*_MODULES`` tuple names for
``importlib``); a name the package maps lazily (``from ama import
compute_cam``, ``ama.cam``: ``_LAZY`` and ``_SUBMODULES`` in ``ama/__init__.py``) counts as its module, a subpackage
as its ``__init__``; ``ama/__init__.py`` belongs to every closure, and a subpackage's ``__init__.py`` to the closure of
each of its modules (Python runs them on any import of one). A notebook's imports are those of its code cells. A step
(``runs.pipeline:select_images``) is narrower than its module: the module's file, its imports outside functions, and
those inside the named function and the module's functions and classes it names, transitively; the closure of each
imported module is then whole.

``python3 ama/deps.py --out build/deps.mk NAME=ENTRY[,ENTRY...] ... NOTEBOOK.ipynb ...`` writes a makefile fragment:
``NAME := <files>`` per named set of entries (an entry: ``module`` or ``module:function``, a module named by its
dotted path below ``ama``: ``runs.pipeline``) and ``NB_DEPS_<stem> := <files>`` per notebook, each a sorted list of
paths of ``ama/``'s files (``ama/kernels/cam.py``) relative to the project root.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
from pathlib import Path

try:
    from .paths import atomic_write
except ImportError:  # run as a script (python3 ama/deps.py): the folder ama/ is on sys.path
    from paths import atomic_write

PACKAGE = "ama"
PACKAGE_DIR = Path(__file__).resolve().parent
INIT = "__init__"
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


class DepsError(ValueError):
    """An entry or a notebook the graph cannot read (a one-line message)."""


def lazy_names(init_source: str) -> dict[str, str]:
    """``{name: module}`` the package resolves on first use: ``_LAZY`` (a name -> its module) and ``_SUBMODULES`` (an
    attribute -> the module or subpackage it loads) of ``init_source``, the text of ``ama/__init__.py``."""
    found = {}
    for node in ast.parse(init_source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("_LAZY", "_SUBMODULES")
                                                for t in node.targets):
            value = ast.literal_eval(node.value)
            found.update(value if isinstance(value, dict) else {})
    return found


def attribute_chain(node: ast.AST) -> list[str]:
    """``["ama", "kernels", "cam"]`` of ``node``, the expression ``ama.kernels.cam``; ``[]`` if it is not names and
    attributes."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else []


class Graph:
    """The modules of one package folder, its subpackages' included, and the modules each one's imports name (function
    bodies included). A module is named by its dotted path below the package: ``params``, ``kernels.cam``; a
    subpackage's ``__init__.py`` is ``kernels.__init__``."""

    def __init__(self, package_dir: str | Path = PACKAGE_DIR):
        self.dir = Path(package_dir)
        files = [p.relative_to(self.dir) for p in sorted(self.dir.rglob("*.py"))]
        self.sources = {".".join(f.with_suffix("").parts): (self.dir / f).read_text(encoding="utf-8") for f in files
                        if not any(part.startswith(".") for part in f.parts)}
        self.lazy = lazy_names(self.sources.get(INIT, ""))
        self.trees = {name: ast.parse(text, filename=self.file(name)) for name, text in self.sources.items()}
        self.edges = {name: self.imported(tree, within=name) | self.listed(tree, within=name)
                      for name, tree in self.trees.items()}

    @staticmethod
    def file(module: str) -> str:
        """``ama/<module>.py`` of a dotted module name (``ama/kernels/cam.py``), relative to the project root."""
        return f"{PACKAGE}/{module.replace('.', '/')}.py"

    def module_of(self, name: str) -> str | None:
        """The module a dotted name below the package stands for: a module itself, a subpackage (its ``__init__``), a
        lazy name's or lazy attribute's module, or None."""
        for candidate in (name, self.lazy.get(name)):
            for module in (candidate, f"{candidate}.{INIT}") if candidate else ():
                if module in self.sources:
                    return module
        return None

    def imported(self, *nodes: ast.AST, within: str = INIT) -> set[str]:
        """The package's modules that the imports and ``ama.x`` attribute uses in ``nodes`` (and below) name; relative
        imports are read from the module ``within`` (its package: ``kernels`` of ``kernels.cam``)."""
        package = within.split(".")[:-1]
        found = set()
        for top in nodes:
            for node in ast.walk(top):
                if isinstance(node, ast.ImportFrom) and (node.level or node.module == PACKAGE
                                                         or (node.module or "").startswith(PACKAGE + ".")):
                    named = node.module.split(".")[0 if node.level else 1:] if node.module else []
                    path = [*(package[:max(len(package) + 1 - node.level, 0)] if node.level else []), *named]
                    found |= {self.module_of(".".join(path))} if path else set()
                    found |= {self.module_of(".".join([*path, a.name])) for a in node.names}  # a module imported
                elif isinstance(node, ast.Import):
                    found |= {self.module_of(a.name.split(".", 1)[1]) for a in node.names
                              if a.name.startswith(PACKAGE + ".")}
                elif isinstance(node, ast.Attribute):
                    chain = attribute_chain(node)
                    if len(chain) > 1 and chain[0] == PACKAGE:
                        found.add(self.module_of(".".join(chain[1:])))
        return found - {None}

    def listed(self, tree: ast.AST, within: str = INIT) -> set[str]:
        """The modules a module imports by name at run time: the strings of a top-level tuple whose name ends in
        ``_MODULES``, modules of its own package (``STUDY_MODULES`` of ``studies.registry``: the modules that declare a
        study)."""
        package = within.split(".")[:-1]
        found = set()
        for node in getattr(tree, "body", []):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple)
                    and any(isinstance(t, ast.Name) and t.id.endswith("_MODULES") for t in node.targets)):
                found |= {self.module_of(".".join([*package, e.value])) for e in node.value.elts
                          if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        return found - {None}

    def parents(self, module: str) -> list[str]:
        """The ``__init__`` modules Python runs before ``module``: the package's and its subpackages'."""
        parts = module.split(".")[:-1]
        return [INIT, *(".".join([*parts[:k], INIT]) for k in range(1, len(parts) + 1))]

    def closure(self, modules) -> set[str]:
        """``modules`` and every module they import, transitively, with the ``__init__`` of the package and of the
        subpackages they are in."""
        seen, todo = set(), [*modules, INIT]
        while todo:
            name = todo.pop()
            if name in seen or name not in self.edges:
                continue
            seen.add(name)
            todo += [*self.edges[name], *self.parents(name)]
        return seen

    def step(self, module: str, function: str) -> set[str]:
        """The modules one function of ``module`` needs: the module's imports outside functions, those inside
        ``function`` and inside the module's functions and classes it names, transitively (not the module's other
        functions)."""
        tree = self.trees[module]
        defs = {n.name: n for n in tree.body if isinstance(n, (*FUNCTIONS, ast.ClassDef))}
        if function not in defs:
            raise DepsError(f"{self.file(module)} has no function {function!r} at its top level")
        found, seen, todo = set(), set(), [function]
        found |= self.imported(*[n for n in tree.body if not isinstance(n, (*FUNCTIONS, ast.ClassDef))],
                               within=module)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            found |= self.imported(defs[name], within=module)
            todo += [n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name) and n.id in defs]
        return found

    def entry(self, spec: str) -> set[str]:
        """The closure of one entry: ``module`` (the whole module) or ``module:function`` (:meth:`step`)."""
        module, _, function = spec.partition(":")
        module = module.removeprefix(PACKAGE + ".")
        if module not in self.sources:
            raise DepsError(f"no module {self.file(module)} (entry {spec!r})")
        if not function:
            return self.closure({module})
        # not the module's other imports
        return self.closure(self.step(module, function) - {module}) | {module, *self.parents(module)}

    def notebook(self, path: str | Path) -> set[str]:
        """The closure of what a notebook's code cells import (IPython's ``%`` and ``!`` lines skipped)."""
        path = Path(path)
        try:
            cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DepsError(f"cannot read the notebook {path}: {err}") from None
        found = set()
        for k, cell in enumerate(cells):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
            try:
                found |= self.imported(ast.parse(code))
            except SyntaxError as err:
                raise DepsError(f"{path.name}: code cell {k} does not parse ({err.msg}, line {err.lineno})") from None
        return self.closure(found)

    def files(self, modules) -> list[str]:
        """The modules' files (:meth:`file`), sorted."""
        return sorted(self.file(m) for m in modules)


def variable_name(notebook: str | Path) -> str:
    """``NB_DEPS_<stem>``: the fragment's variable of a ``notebook`` path (characters make would misread become
    ``_``)."""
    return "NB_DEPS_" + re.sub(r"[^A-Za-z0-9_]", "_", Path(notebook).stem)


def fragment(graph: Graph, sets: dict[str, list[str]], notebooks) -> str:
    """The makefile fragment of ``graph``: ``NAME := files`` per item of ``sets`` (``{NAME: [entry, ...]}``), then
    one variable per path of ``notebooks`` (:func:`variable_name`)."""
    lines = [f"# generated by {PACKAGE}/deps.py from the import graph of {PACKAGE}/**/*.py: do not edit"]
    for name, entries in sets.items():
        lines.append(f"{name} := " + " ".join(graph.files(set().union(*(graph.entry(e) for e in entries)))))
    for nb in notebooks:
        lines.append(f"{variable_name(nb)} := " + " ".join(graph.files(graph.notebook(nb))))
    return "\n".join(lines) + "\n"


def parse_set(text: str) -> tuple[str, list[str]]:
    """A command-line ``text`` ``NAME=entry,entry`` -> ``(NAME, [entries])``; a DepsError on anything else."""
    name, sep, entries = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or not entries:
        raise DepsError(f"expected NAME=module[:function][,...] or a notebook, got {text!r}")
    return name, entries.split(",")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 ama/deps.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="the fragment to write (without it: printed)")
    parser.add_argument("items", nargs="*", help="NAME=module[:function][,...] or a notebook (.ipynb)")
    args = parser.parse_args(argv)
    notebooks = [item for item in args.items if item.endswith(".ipynb")]
    try:
        sets = dict(parse_set(item) for item in args.items if not item.endswith(".ipynb"))
        text = fragment(Graph(), sets, notebooks)
    except (DepsError, SyntaxError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out, text)
        # never older than what it was made from (a file dated in the future would otherwise have make remake it
        # and start again forever)
        newest = max(p.stat().st_mtime for p in [*PACKAGE_DIR.rglob("*.py"), *map(Path, notebooks)])
        if newest > os.stat(args.out).st_mtime:
            os.utime(args.out, (newest, newest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
