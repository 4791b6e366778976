#!/usr/bin/env python3
"""Restructure the flat package ``ama/`` into subpackages by role: move each module (``git mv``, its history kept),
rewrite every import of it and every reference to it, and write the packages' ``__init__.py`` and docs/LAYOUT.md.

Replayable on a newer commit of the flat tree: driven by MAPPING (old module -> new dotted place) and generic rules;
the few fixes no rule expresses are SUBSTITUTIONS, each of which fails loudly when its target text is not there.
Standard library only.

    python3 tools/restructure.py           # move, rewrite, ``git add`` the result (commit it yourself)
    python3 tools/restructure.py --check   # a dry run: every rule and substitution, nothing written; it says what
                                            # would move, what MAPPING names that is not there, and the imports that
                                            # would go against the packages' layer order

It acts on the repository that holds it and refuses a tree with uncommitted changes to tracked files, a tree already
restructured, and a module of ``ama/`` that MAPPING does not name.

The rules, in the order they apply to each file's original text (edits never overlap; a file is rewritten once):

- Python (``ama/``, ``tests/``, ``tools/``, ``benchmarks/``; notebooks' code cells; markdown's ```python blocks):
  every import of the kit, read with :mod:`ast` (inside functions too): ``from . import a, b`` and ``from ama import a,
  b`` are split by the package each name lands in (a renamed module keeps its local name: ``from ..attack import
  marginal as attack``); ``from .a import x`` / ``from ama.a import x`` / ``import ama.a`` get the new dotted path,
  relative inside ``ama/`` (``from ..kernels.cam import cam``), absolute elsewhere; long lines wrap at 120 columns as
  the project does; consecutive module-level imports of the kit that changed are re-sorted as isort does.
- Text of every file: ``ama.<old>`` dotted references (whole words: ``ama.attack`` is not ``ama.attack_result``;
  ``ama.cam(`` stays: the package's callable shortcut), ``ama/<old>.py`` paths, ``"ama" / "<old>.py"`` path
  pieces and ama/deps.py's entries ``<old>:function`` (after a quote, ``=``, ``,`` or a backtick).
- Lines the rules made longer than 120 columns in docstrings, comments and markdown paragraphs are rewrapped (in a
  Python file only within the lines the paragraph has: a module never grows by it).
- SCOPED_STRINGS: in named functions and assignments of a few files, string literals that are module names
  (``"pipeline:select_images"``, ``"runs"``) or module files (``"reference.py"``).
- ``ama/__init__.py``'s ``_LAZY`` and ``_SUBMODULES`` maps, rewritten to the new dotted paths.
- New files: each package's ``__init__.py`` (PACKAGES' role as its docstring, its modules in ``__all__``); and
  docs/LAYOUT.md, one table per package in layer order, rebuilt from the old table's rows.
- SUBSTITUTIONS, last (their targets are the text after the rules).
"""
from __future__ import annotations

import argparse
import ast
import fnmatch
import io
import json
import re
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = "ama"
WIDTH = 120  # the project's line length

# --- the mapping -----------------------------------------------------------------------------------------------------
# The packages, lowest layer first (a module imports only from its own package, packages before it and the top level;
# the top level imports no package): the role of each, the package's docstring and its heading in docs/LAYOUT.md.
PACKAGES = {
    "": "The package's entry points and the facts every layer shares: the kernels' defaults, a run's parameters, the "
        "grid's geometry, the project's folders, the declared artifacts, the claims' criteria and the Makefile's "
        "import graph (standard library only: the Makefile runs `params` and `deps` before `.venv` exists).",
    "kernels": "The kernel: CAM and the model it needs, upsampling, receptive fields, map metrics and occlusion, on a "
               "model and a batch of images, with no run machinery.",
    "attack": "The marginal attack, the rest of the kernel: its optimisers, what it returns and the attack itself, "
              "which counts its own calls and imports no run machinery.",
    "stats": "Statistics over a run's tables: exact and bootstrap intervals, paired tests, three-valued verdicts, and "
             "the rows of the attack's tables a statistic reads.",
    "store": "Where a run's tables live: writing and reading tables and figures, their lineage, and the ranks, part "
             "files and locks of a run on several processes.",
    "inputs": "What a run feeds the kernel: devices, models by name and their padding variants, images and their "
              "labels, the paper's protocol on labelled images, and the targeted attack's target maps.",
    "figures": "Figures: the drawing primitives and the notebooks' and the report's figures of the tables.",
    "studies": "The science: the notebooks' experiments per image with their summaries, the paper's three claims, the "
               "controls and the studies beyond the paper.",
    "runs": "Running the kit: a notebook's orchestration, the experiments on N processes, a run against its "
            "reference, and the `make reproduce` runner.",
    "report": "What a run reports: every verdict in its family, `REPORT.md`, and the generated blocks of the README "
              "and `docs/`.",
    "apps": "The interactive entry points: the command line (`python -m ama`), `make lab` and the explorer of "
            "notebook 00.",
}

# old module -> its new dotted place below ``ama`` (the top level: the same name)
MAPPING = {
    "__init__": "__init__", "__main__": "__main__", "defaults": "defaults", "params": "params", "paths": "paths",
    "artifacts": "artifacts", "criteria": "criteria", "deps": "deps",
    # grid geometry stays at the top level: params (top level, run by the Makefile as a script before .venv exists)
    # imports its check_frame_width, and the top level imports no package
    "geometry": "geometry",
    "cam_model": "kernels.cam_model", "cam": "kernels.cam", "upsampling": "kernels.upsampling",
    "metrics": "kernels.metrics", "receptive_field": "kernels.receptive_field", "occlusion": "kernels.occlusion",
    "attack": "attack.marginal", "optimizers": "attack.optimizers", "attack_result": "attack.result",
    "intervals": "stats.intervals", "selectors": "stats.rows",
    "lineage": "store.lineage", "results": "store.tables", "runstore": "store.parts",
    "distributed": "store.distributed",
    "data": "inputs.images", "models": "inputs.models", "padding": "inputs.padding", "devices": "inputs.devices",
    "protocol": "inputs.protocol",
    # the target maps import ama.data (inputs): in the attack package they would import a package above theirs
    "shapes": "inputs.targets",
    "plots": "figures.plots", "figures": "figures.charts", "control_figures": "figures.control_charts",
    **{m: f"studies.{m}" for m in (
        "experiments", "attack_experiments", "ablation", "targeted_shapes", "complete_change", "attack_summaries",
        "attack_examples", "controls", "claims", "transfer", "faithfulness", "under_attack", "border_defence", "sides",
        "erf_definitions", "padding_study", "causes", "confidence", "explanations", "location", "registry", "beyond",
        "study")},
    "runs": "runs.folder", "shards": "runs.shards", "reference": "runs.check", "pipeline": "runs.pipeline",
    "report": "report.markdown", "verdicts": "report.verdicts", "evidence": "report.evidence",
    "cli": "apps.cli", "lab": "apps.lab", "explorer": "apps.explorer",
}
CALLABLE = {"cam"}  # ama.cam(model, x): the package's callable shortcut (_SUBMODULES), left as it is written

# The files whose text the rules rewrite (git's tracked files matching these; results/reference/ is run output).
FILES = ["ama/*.py", "tests/*.py", "tools/*.py", "benchmarks/*", "docs/*.md", "*.md", "data/*.md", "data/*/*.md",
         "results/*.md", "notebooks/*.ipynb", "Makefile", ".ci/*", "pyproject.toml", "environment.yml"]
SELF = "tools/restructure.py"

# Strings that name modules in code (not as ``ama.x``): {file: {top-level function or assignment: kind}}; kind
# "module": a module name, ``module:function`` or ``NAME=module:function,...`` (ama/deps.py's entries); "file": a
# module's file below ama/ (``reference.py``).
SCOPED_STRINGS = {
    "tests/test_deps.py": {"test_the_notebooks_closures_hold_what_they_import_and_not_the_report": "module"},
    "tests/test_house.py": {"LAZY_IMPORTERS": "module", "test_geometry_defaults_and_params_sit_at_the_bottom": "module",
                            "NOT_ARTIFACTS": "file", "test_files_are_written_atomically_in_one_place": "file"},
}


class RestructureError(RuntimeError):
    """Something the script will not guess: the message says what and where."""


# --- helpers ---------------------------------------------------------------------------------------------------------
def package_of(dotted: str) -> str:
    return dotted.rpartition(".")[0]


def leaf(dotted: str) -> str:
    return dotted.rpartition(".")[2]


def file_of(dotted: str) -> str:
    """``ama/kernels/cam.py`` of ``kernels.cam``."""
    return f"{PKG}/{dotted.replace('.', '/')}.py"


def git(*args: str, capture: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=capture, text=True)
    if proc.returncode:
        raise RestructureError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout if capture else ""


class Offsets:
    """Character offsets of (line, column) positions of a text (ast's columns count UTF-8 bytes)."""

    def __init__(self, text: str):
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def at(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1] if lineno <= len(self.lines) else ""
        return self.starts[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8", errors="replace"))


def apply_edits(text: str, edits: list[tuple[int, int, str]]) -> str:
    out, pos = [], 0
    for start, end, new in sorted(edits):
        if start < pos:
            raise RestructureError(f"overlapping edits at {start}: {text[start:end]!r}")
        out += [text[pos:start], new]
        pos = end
    return "".join(out) + text[pos:]


class Rules:
    """The generic rewriting rules for ``moves``, {old module: its new dotted place} of the modules present."""

    def __init__(self, moves: dict[str, str]):
        self.moves = moves
        self.packages = [p for p in PACKAGES if p]
        renamed = sorted((m for m, new in moves.items() if new != m), key=len, reverse=True)
        alts = "|".join(map(re.escape, renamed)) or r"(?!x)x"
        self.dotted = re.compile(rf"(?<![\w.]){PKG}\.(?P<m>{alts})(?!\w)")
        self.path = re.compile(rf"(?<![\w./-]){PKG}/(?P<m>{alts})\.py(?!\w)")
        self.piece = re.compile(rf"(?P<q>[\"']){PKG}(?P=q) / (?P=q)(?P<m>{alts})\.py(?P=q)")
        self.entry = re.compile(rf"(?<=[\"'=,`])(?P<m>{alts}):(?=[A-Za-z_])")

    # -- text ----------------------------------------------------------------------------------------------------------
    def text_edits(self, text: str, skip: list[tuple[int, int]] = ()) -> list[tuple[int, int, str]]:
        """Edits of the ``ama.<old>``, ``ama/<old>.py`` and ``"ama" / "<old>.py"`` references of ``text`` outside the
        ``skip`` spans."""
        edits = []
        for m in self.dotted.finditer(text):
            if m.group("m") in CALLABLE and text[m.end():m.end() + 1] == "(":
                continue
            edits.append((m.start(), m.end(), f"{PKG}.{self.moves[m.group('m')]}"))
        for m in self.path.finditer(text):
            edits.append((m.start(), m.end(), file_of(self.moves[m.group("m")])))
        for m in self.entry.finditer(text):
            edits.append((m.start(), m.end(), f"{self.moves[m.group('m')]}:"))
        for m in self.piece.finditer(text):
            q, new = m.group("q"), self.moves[m.group("m")].split(".")
            edits.append((m.start(), m.end(), " / ".join(f"{q}{p}{q}" for p in [PKG, *new[:-1], new[-1] + ".py"])))
        return [e for e in edits if not any(s <= e[0] < t or s < e[1] <= t for s, t in skip)]

    def rewrite_text(self, text: str, comments: bool = False) -> str:
        """The text rules; with ``comments``, full-line ``#`` comments made too long are rewrapped."""
        new = apply_edits(text, self.text_edits(text))
        return reflow(new, text, "comments") if comments else new

    # -- imports -------------------------------------------------------------------------------------------------------
    def module_ref(self, target_package: str, here: str | None) -> str:
        """What ``from ___ import`` says to reach ``target_package`` ("" = the top level) from the module ``here``
        (a new dotted name below ama; None: outside the package, absolute)."""
        if here is None:
            return ".".join([PKG, *([target_package] if target_package else [])])
        mine = package_of(here).split(".") if package_of(here) else []
        theirs = target_package.split(".") if target_package else []
        common = 0
        while common < min(len(mine), len(theirs)) and mine[common] == theirs[common]:
            common += 1
        return "." * (len(mine) - common + 1) + ".".join(theirs[common:])

    def from_module(self, dotted: str, here: str | None) -> str:
        """``from ___ import`` of the module ``dotted`` itself (``..kernels.cam``, ``ama.kernels.cam``, ``.params``)."""
        ref = self.module_ref(package_of(dotted), here)
        return ref + leaf(dotted) if ref.endswith(".") else f"{ref}.{leaf(dotted)}"

    @staticmethod
    def format_from(module: str, names: list[tuple[str, str | None]], indent: str) -> str:
        """``from module import a, b as c`` (the first line without ``indent``), wrapped as the project wraps."""
        items = [n if a is None else f"{n} as {a}" for n, a in names]
        line = f"from {module} import {', '.join(items)}"
        if len(indent) + len(line) <= WIDTH:
            return line
        head = f"from {module} import ("
        lines, current = [], head
        for k, item in enumerate(items):
            piece = item + (", " if k < len(items) - 1 else ")")
            if len(indent) + len(current) + len(piece.rstrip()) > WIDTH and current != head:
                lines.append(current.rstrip())
                current = " " * (len(indent) + len(head)) + piece
            else:
                current += piece
        return "\n".join(lines + [current.rstrip()])

    def import_statements(self, node: ast.AST, here: str | None, in_package: bool, indent: str = ""
                          ) -> list[str] | None:
        """The statements that replace the import ``node`` (a kit import), or None when it is not one; wrapped for
        ``indent``, which they do not hold."""
        if isinstance(node, ast.Import):
            if not any(a.name.startswith(PKG + ".") for a in node.names):
                return None
            parts = []
            for a in node.names:
                name = a.name
                if name.startswith(PKG + "."):
                    first, _, rest = name[len(PKG) + 1:].partition(".")
                    if first in self.moves:
                        name = ".".join([PKG, self.moves[first], *([rest] if rest else [])])
                parts.append(name if a.asname is None else f"{name} as {a.asname}")
            return [f"import {', '.join(parts)}"]
        if not isinstance(node, ast.ImportFrom):
            return None
        if node.level:
            if not in_package:
                return None
            if node.level != 1:
                raise RestructureError(f"a relative import of level {node.level} in a flat package: "
                                       f"from {'.' * node.level}{node.module or ''}")
            path = node.module.split(".") if node.module else []
        elif node.module == PKG or (node.module or "").startswith(PKG + "."):
            path = node.module.split(".")[1:]
        else:
            return None
        names = [(a.name, a.asname) for a in node.names]
        here = here if node.level else None  # an absolute import stays absolute
        if path:
            if path[0] not in self.moves:
                return None  # not a module of the package: left as it is
            new = ".".join([self.moves[path[0]], *path[1:]])
            return [self.format_from(self.from_module(new, here), names, indent)]
        groups: dict[str, list[tuple[str, str | None]]] = {}
        for name, asname in names:
            if name in self.moves and name != "*":
                new = self.moves[name]
                bound = asname or name
                groups.setdefault(package_of(new), []).append((leaf(new), None if bound == leaf(new) else bound))
            else:  # an attribute of the package itself (a lazy name, __version__)
                groups.setdefault("", []).append((name, asname))
        refs = {p: self.module_ref(p, here) for p in groups}

        def isort_key(p):  # ``ama`` before ``ama.attack``; relative: the farthest first (``..`` before ``.``)
            return -(len(refs[p]) - len(refs[p].lstrip("."))), refs[p].lstrip(".").lower()

        # each package's names in the statement's own order (its old names', as isort sorted them)
        return [self.format_from(refs[p], groups[p], indent) for p in sorted(groups, key=isort_key)]

    def python_edits(self, text: str, tree: ast.AST, offsets: Offsets, here: str | None, in_package: bool,
                     base: int = 0) -> tuple[list[tuple[int, int, str]], list[tuple[int, int]], list[ast.AST]]:
        """The import edits of a parsed text (offsets shifted by ``base``), the spans of every kit import (the text
        rules leave them alone) and the nodes that changed."""
        edits, spans, changed = [], [], []
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            start = offsets.at(node.lineno, node.col_offset)
            end = offsets.at(node.end_lineno, node.end_col_offset)
            indent = text[offsets.starts[node.lineno - 1]:start]
            own_line = indent.strip() == ""
            statements = self.import_statements(node, here, in_package, indent if own_line else "")
            if statements is None:
                continue
            spans.append((base + start, base + end))
            old = text[start:end]
            new = ("\n" + indent if own_line else "; ").join(statements)
            if len(statements) == 1 and ast.dump(ast.parse(statements[0]).body[0]) == ast.dump(node):
                continue  # the same import (maybe wrapped otherwise): left as it is written
            if new != old:
                if "#" in old:
                    raise RestructureError(f"a comment inside an import to rewrite: {old!r}")
                edits.append((base + start, base + end, new))
                changed.append(node)
        return edits, spans, changed

    # -- scoped strings ------------------------------------------------------------------------------------------------
    def scoped_string_edits(self, text: str, tree: ast.Module, offsets: Offsets, scopes: dict[str, str],
                            where: str) -> list[tuple[int, int, str]]:
        edits, found = [], set()
        for top in tree.body:
            names = [top.name] if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else [
                t.id for t in getattr(top, "targets", [getattr(top, "target", None)]) if isinstance(t, ast.Name)]
            for name in set(names) & set(scopes):
                found.add(name)
                pieces = {id(v) for n in ast.walk(top) if isinstance(n, ast.JoinedStr) for v in n.values}
                for node in ast.walk(top):
                    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in pieces:
                        continue
                    new = self.module_string(node.value, scopes[name])
                    if new is None or new == node.value:
                        continue
                    start = offsets.at(node.lineno, node.col_offset)
                    end = offsets.at(node.end_lineno, node.end_col_offset)
                    literal = text[start:end]
                    if literal[1:-1] != node.value or literal[0] != literal[-1] or literal[0] not in "\"'":
                        raise RestructureError(f"{where}: cannot rewrite the string {literal!r}")
                    edits.append((start, end, literal[0] + new + literal[0]))
        if set(scopes) - found:
            raise RestructureError(f"{where}: no top-level function or assignment named {sorted(set(scopes) - found)}")
        return edits

    def module_string(self, value: str, kind: str) -> str | None:
        if kind == "file":
            m = re.fullmatch(r"(\w+)\.py", value)
            return file_of(self.moves[m.group(1)])[len(PKG) + 1:] if m and m.group(1) in self.moves else None
        m = re.fullmatch(r"(\w+=)?([\w:,]+)", value)
        if not m:
            return None
        entries = []
        for entry in m.group(2).split(","):
            module, colon, function = entry.partition(":")
            if module not in self.moves:
                return None
            entries.append(self.moves[module] + colon + function)
        return (m.group(1) or "") + ",".join(entries)

    # -- whole files ---------------------------------------------------------------------------------------------------
    def rewrite_python(self, text: str, here: str | None, in_package: bool, where: str,
                       scopes: dict[str, str] | None = None, extra=None) -> str:
        masked = mask_magics(text)
        try:
            tree = ast.parse(masked)
        except SyntaxError as err:
            raise RestructureError(f"{where} does not parse: {err}") from None
        offsets = Offsets(text)
        edits, spans, changed = self.python_edits(text, tree, offsets, here, in_package)
        if scopes:
            edits += self.scoped_string_edits(text, tree, offsets, scopes, where)
        if extra:
            edits += extra(text, tree, offsets)
        edits += self.text_edits(text, spans + [(s, t) for s, t, _ in edits])
        new = apply_edits(text, edits)
        new = sort_import_runs(new, text) if changed else new
        wrapped = reflow(new, text, "python")
        if not same_code(new, wrapped):
            raise RestructureError(f"{where}: rewrapping its long lines would change its code")
        return wrapped

    def rewrite_markdown(self, text: str, where: str) -> str:
        """The text rules, and the import rules inside ```python blocks."""
        edits, spans = [], []
        for block in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            code = block.group(1)
            try:
                tree = ast.parse(code)
            except SyntaxError:
                print(f"  note: {where}: a python block that does not parse is left to the text rules")
                continue
            e, s, _ = self.python_edits(code, tree, Offsets(code), None, False, base=block.start(1))
            edits += e
            spans += s
        edits += self.text_edits(text, spans)
        return reflow(apply_edits(text, edits), text, "markdown")

    def rewrite_notebook(self, text: str, where: str) -> str:
        nb = json.loads(text)
        for k, cell in enumerate(nb["cells"]):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            if cell["cell_type"] == "code":
                new = self.rewrite_python(source, None, False, f"{where} cell {k}")
            else:
                new = self.rewrite_markdown(source, f"{where} cell {k}")
            if new != source:
                cell["source"] = new.splitlines(keepends=True) if isinstance(cell["source"], list) else new
        return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def mask_magics(code: str) -> str:
    """IPython's ``%`` and ``!`` lines blanked (same lines, same lengths), so that a notebook's cell parses."""
    return "".join(" " * len(line.rstrip("\n")) + line[len(line.rstrip("\n")):]
                   if line.lstrip().startswith(("%", "!")) else line for line in code.splitlines(keepends=True))


def sort_import_runs(text: str, original: str) -> str:
    """Runs of consecutive imports of the kit (in one block, each statement on its own lines; all relative or all
    absolute) sorted as isort sorts them (the farthest relative import first), in the runs that hold a statement not
    in ``original``."""
    masked = mask_magics(text)
    tree = ast.parse(masked)
    lines = text.splitlines(keepends=True)
    masked_original = mask_magics(original)
    unchanged = {ast.get_source_segment(masked_original, n) for n in ast.walk(ast.parse(masked_original))
                 if isinstance(n, ast.ImportFrom)}
    offsets = Offsets(text)

    def kit(node) -> bool:
        return (isinstance(node, ast.ImportFrom)
                and (node.level > 0 or node.module == PKG or (node.module or "").startswith(PKG + "."))
                and not text[offsets.starts[node.lineno - 1]:offsets.at(node.lineno, node.col_offset)].strip())

    runs = []
    for parent in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(parent, field, None)
            if not isinstance(block, list):
                continue
            run = []
            for node in block:
                if kit(node) and run and node.lineno == run[-1].end_lineno + 1 and bool(node.level) == bool(
                        run[-1].level):
                    run.append(node)
                    continue
                runs.append(run)
                run = [node] if kit(node) else []
            runs.append(run)
    for run in sorted((r for r in runs if len(r) > 1), key=lambda r: r[0].lineno, reverse=True):
        if all(ast.get_source_segment(masked, n) in unchanged for n in run):
            continue
        ordered = sorted(run, key=lambda n: (-n.level, (n.module or "").lower()))
        if ordered == run:
            continue
        chunks = ["".join(lines[n.lineno - 1:n.end_lineno]) for n in ordered]
        block = "".join(c if c.endswith("\n") else c + "\n" for c in chunks)
        if not lines[run[-1].end_lineno - 1].endswith("\n"):
            block = block[:-1]
        lines[run[0].lineno - 1:run[-1].end_lineno] = [block]
    return "".join(lines)


# --- rewrapping what the rules made too long ------------------------------------------------------------------------
LIST_ITEM = re.compile(r"(?:[-*+] |\d+\. )")


def line_zones(text: str, kind: str) -> dict[int, tuple]:
    """``{line index: (zone, first)}`` of the lines whose words may move to the next line: a docstring's lines, a run
    of full-line comments, a markdown paragraph (not a table, a heading, a fenced or generated block). ``first``: the
    line opens a docstring (its continuation is indented as its quotes)."""
    lines = text.splitlines()
    zones = {}
    if kind == "python":
        tree = ast.parse(mask_magics(text))
        for doc in ast.walk(tree):  # docstrings, and the strings that document an assignment
            if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
                for k in range(doc.lineno - 1, doc.end_lineno):
                    zones[k] = (("doc", doc.lineno), k == doc.lineno - 1)
        strings = set()
        for tok in tokenize.generate_tokens(io.StringIO(mask_magics(text)).readline):
            if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
                strings |= set(range(tok.start[0] - 1, tok.end[0]))
    else:
        strings = set()
    fenced = generated = False
    for k, line in enumerate(lines):
        stripped = line.strip()
        if kind == "markdown":
            if stripped.startswith("```"):
                fenced = not fenced
                continue
            if re.match(r"<!-- [\w-]+: start -->", stripped):
                generated = True
            if re.match(r"<!-- [\w-]+: end -->", stripped):
                generated = False
                continue
            if not (fenced or generated or not stripped or stripped.startswith(("|", "#", "<", ">", "!["))):
                zones[k] = (("md",), False)
        elif stripped.startswith("# ") and k not in strings and k not in zones:
            zones[k] = (("comment", line[:len(line) - len(line.lstrip())]), False)
    return zones


def reflow(text: str, original: str, kind: str) -> str:
    """Lines the rules made longer than WIDTH, rewrapped: the words past it move to the start of the next line of the
    same paragraph (docstring, comment or markdown), which may push words on in turn, or onto a new line."""
    known = set(original.splitlines())
    lines = text.splitlines()
    ends_with_newline = text.endswith("\n")
    zones = line_zones(text, kind)
    k, start, before = 0, None, None  # start: the first line of the paragraph being rewrapped (before: the lines then)
    while k < len(lines):
        if len(lines[k]) <= WIDTH or lines[k] in known or k not in zones:
            start = None
            k += 1
            continue
        zone, first = zones[k]
        line = lines[k]
        indent = line[:len(line) - len(line.lstrip())]
        lead = indent + ("# " if zone[0] == "comment" else "")
        body = line[len(lead):]
        if first:
            cont = indent
        else:
            item = LIST_ITEM.match(body)
            cont = lead + (" " * len(item.group(0)) if item else "")
        cut = WIDTH + 1
        while True:  # the last space that leaves a short enough head, outside code spans (and no list marker next)
            cut = line.rfind(" ", len(lead) + 1, cut)
            if cut < 0 or not (re.match(r"[-*+#|>]|\d+\.", line[cut + 1:])
                               or len(re.findall(r"`+", line[:cut])) % 2):
                break
        if cut < 0:
            k += 1
            continue
        head, tail = line[:cut].rstrip(), line[cut + 1:]
        nxt = lines[k + 1] if k + 1 < len(lines) else None
        joins = (nxt is not None and k + 1 in zones and zones[k + 1][0] == zone and not zones[k + 1][1]
                 and nxt.startswith(cont) and nxt[len(cont):].strip() and not nxt[len(cont)].isspace()
                 and not LIST_ITEM.match(nxt[len(cont):]) and not nxt[len(cont):].startswith((">>>", "..", ":", '"""')))
        if joins:
            if start is None:
                start, before = k, list(lines)
            lines[k] = head
            lines[k + 1] = cont + tail + " " + nxt[len(cont):]
            known.discard(lines[k + 1])
        elif kind == "python":  # no new line: the paragraph stays as the rules left it
            if start is not None:
                lines, k = before, start
            start = None
        else:
            lines[k] = head
            lines.insert(k + 1, cont + tail)
            zones = {(j + 1 if j > k else j): z for j, z in zones.items()}
            zones[k + 1] = (zone, False)
            start = None
        k += 1
    return "\n".join(lines) + ("\n" if ends_with_newline else "")


def strings_of(text: str) -> set[int]:
    """The indices of the lines a multi-line string spans."""
    found = set()
    for tok in tokenize.generate_tokens(io.StringIO(mask_magics(text)).readline):
        if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
            found |= set(range(tok.start[0] - 1, tok.end[0]))
    return found


def same_code(a: str, b: str) -> bool:
    """Whether two Python texts are one program, their docstrings' whitespace aside."""
    def dump(text):
        tree = ast.parse(mask_magics(text))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                node.value = " ".join(node.value.split())
        return ast.dump(tree)
    return dump(a) == dump(b)


def wrap(text: str, width: int = WIDTH) -> list[str]:
    """``text`` wrapped at ``width``, never inside a code span (```...```)."""
    spans = re.sub(r"`+[^`]*`+", lambda m: m.group(0).replace(" ", "\0"), text)
    return [line.replace("\0", " ") for line in textwrap.wrap(spans, width=width, break_on_hyphens=False)]


# --- ama/__init__.py's lazy maps -------------------------------------------------------------------------------------
def format_dict(name: str, mapping: dict[str, str]) -> str:
    lines, current = [f"{name} = {{"], "   "
    for key, value in mapping.items():
        item = f' "{key}": "{value}",'
        if len(current) + len(item) > WIDTH and current.strip():
            lines.append(current)
            current = "   "
        current += item
    return "\n".join([*lines, current, "}"])


def init_map_edits(moves: dict[str, str], packages: list[str]):
    """The edits of ``_LAZY`` (name -> module) and ``_SUBMODULES`` (a tuple of modules -> {attribute: the module or
    subpackage it loads}) in ``ama/__init__.py``: a kept attribute that is now a package's name is the package."""
    def edits(text: str, tree: ast.Module, offsets: Offsets) -> list[tuple[int, int, str]]:
        out, found = [], set()
        for node in tree.body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id in ("_LAZY", "_SUBMODULES")):
                continue
            name, value = node.targets[0].id, ast.literal_eval(node.value)
            found.add(name)
            if name == "_LAZY":
                missing = sorted({v for v in value.values() if v not in moves})
                if missing:
                    raise RestructureError(f"ama/__init__.py: _LAZY names modules that do not exist: {missing}")
                new = format_dict(name, {k: moves[v] for k, v in value.items()})
            else:
                if not isinstance(value, (tuple, list)):
                    raise RestructureError("ama/__init__.py: _SUBMODULES is not a tuple of modules")
                mapped = {}
                for module in value:
                    if module in packages:
                        print(f"  ama.{module}: now the package ama.{module} (was the module, now ama.{moves[module]})")
                        mapped[module] = module
                    elif module in moves:
                        mapped[module] = moves[module]
                    else:
                        print(f"  ama/__init__.py: _SUBMODULES names {module!r}, which does not exist: dropped")
                mapped.update({p: p for p in packages})
                new = ("# ``ama.<name>``: the module or subpackage it loads on first use (``ama.cam``: "
                       "``ama.kernels.cam``)\n" + format_dict(name, dict(sorted(mapped.items()))))
            out.append((offsets.at(node.lineno, node.col_offset), offsets.at(node.end_lineno, node.end_col_offset),
                        new))
        if found != {"_LAZY", "_SUBMODULES"}:
            raise RestructureError(f"ama/__init__.py has no {sorted({'_LAZY', '_SUBMODULES'} - found)}")
        return out
    return edits


# --- the packages' __init__.py ---------------------------------------------------------------------------------------
def docstring(text: str) -> str:
    return "\n".join(wrap('"""' + text.replace("`", "``") + '"""'))


def package_init(package: str, modules: list[str]) -> str:
    names = ", ".join(f'"{m}"' for m in modules)
    head = "__all__ = ["
    body = wrap(names, WIDTH - len(head) - 1)
    exported = head + ("\n" + " " * len(head)).join(body) + "]"
    return (f"{docstring(PACKAGES[package])}\n{exported}\n\n\n"
            "def __getattr__(name):\n"
            f'    """A module of the package on first use (``ama.{package}.{modules[0]}`` after ``import ama``, as '
            '``ama.cam``)."""\n'
            "    if name in __all__:\n"
            "        import importlib\n\n"
            '        return importlib.import_module(f".{name}", __name__)\n'
            '    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")\n')


# --- docs/LAYOUT.md --------------------------------------------------------------------------------------------------
LAYOUT = "docs/LAYOUT.md"
TABLE_HEAD = "| module | what it is |\n| --- | --- |\n"
OLD_LAYOUT_INTRO = """\
# Layout of `ama/`

`ama/` holds one module per concept; each imports only modules above it in this table (a test builds the import
graph and fails on a cycle), and the notebooks only call them, plot and save.

**The kernel** is what the kit exists for, usable without the run machinery: `geometry`, `defaults`, `cam_model`,
`cam`, `upsampling`, `metrics`, `receptive_field`, `occlusion`, `optimizers`, `attack_result` and `attack`. Each
says what it exports (`__all__`). Importing `ama.marginal_attack` and `ama.compute_cam` loads no pandas,
matplotlib, scipy, run parameters, run store or lineage, and no kernel module imports the run machinery
(`tests/test_kernel.py`, each in a fresh interpreter). The attack counts its own calls (`ama.attack.CALLS`); the
run layer's `lineage` reads those counts, so the kernel never records a run's lineage itself.

"""
NEW_LAYOUT_INTRO = """\
# Layout of `ama/`

`ama/` holds one module per concept, in subpackages by role. The packages below are its layers, the lowest first: a
module imports only modules of its own package, of the packages above it on this page and of the top level, and the
top level imports no package (`ama/__init__.py`'s lazy attributes and `python -m ama` aside). A test builds the import
graph and fails on a cycle or on an import of a package placed below (`tests/test_house.py`, which reads the order from
this page), and the notebooks only call the modules, plot and save. Each package's `__init__.py` says what the package
is and lists its modules (`__all__`); it re-exports nothing: a function is imported from its module
(`ama.kernels.cam.compute_cam`), or from `ama`'s lazy public API (`ama.compute_cam`, `ama.marginal_attack`,
`ama.load_model`, `ama.cam(model, x)`...), which, like `ama.<package>.<module>`, imports nothing before its first use.

**The kernel** is what the kit exists for, usable without the run machinery: the packages `ama.kernels` and
`ama.attack`, with the top level's `geometry` and `defaults`. Each of their modules says what it exports (`__all__`).
Importing `ama.marginal_attack` and `ama.compute_cam` loads no pandas, matplotlib, scipy, run parameters, run store or
lineage, and no kernel module imports the run machinery (`tests/test_kernel.py`, each in a fresh interpreter). The
attack counts its own calls (`ama.attack.marginal.CALLS`); the run layer's `ama.store.lineage` reads those counts, so
the kernel never records a run's lineage itself.

"""


def layout_rows(text: str, rules: Rules) -> dict[str, list[tuple[list[str], str]]]:
    """``{package: [(new module names, description), ...]}`` from the old table's rows, in their order: a row whose
    modules land in one package stays one row; one whose modules part is split at its ``; `` (one part a module)."""
    head, sep, table = text.partition(TABLE_HEAD)
    if not sep:
        raise RestructureError(f"{LAYOUT}: no table ({TABLE_HEAD.splitlines()[0]})")
    if head != OLD_LAYOUT_INTRO:
        raise RestructureError(f"{LAYOUT}: its introduction is not the one OLD_LAYOUT_INTRO expects (rewrite "
                               "NEW_LAYOUT_INTRO for the new one, then set OLD_LAYOUT_INTRO to the old)")
    rows: dict[str, list[tuple[list[str], str]]] = {p: [] for p in PACKAGES}
    described = set()
    for line in table.splitlines():
        if not line.strip():
            continue
        m = re.fullmatch(r"\| (.+?) \| (.*) \|", line)
        if not m or not line.startswith("| `"):
            raise RestructureError(f"{LAYOUT}: not a row of its table: {line!r}")
        modules = re.findall(r"`(\w+)`", m.group(1))
        unknown = [x for x in modules if x not in MAPPING]
        if unknown:
            raise RestructureError(f"{LAYOUT}: a row names modules MAPPING does not: {unknown}")
        gone = [x for x in modules if x not in rules.moves]
        if gone:
            print(f"  note: {LAYOUT}'s row of {gone} names modules this tree does not have: left out")
        described |= set(modules)
        description = rules.rewrite_text(m.group(2))
        here = [x for x in modules if x in rules.moves]
        packages = {package_of(rules.moves[x]) for x in here}
        if len(packages) == 1:
            rows[packages.pop()].append(([leaf(rules.moves[x]) for x in here], description))
        elif packages:
            parts = description.split("; ")
            if len(parts) != len(modules):
                raise RestructureError(f"{LAYOUT}: the row of {modules} goes to several packages, and its description "
                                       f"is not one '; '-separated part per module: {description!r}")
            for x, part in zip(modules, parts):
                if x in rules.moves:
                    rows[package_of(rules.moves[x])].append(([leaf(rules.moves[x])], part))
    undescribed = sorted(set(rules.moves) - described - {"__init__", "__main__"})
    if undescribed:
        print(f"  WARNING: {LAYOUT} has no row for {undescribed}: add one (tests/test_house.py requires it)")
    return rows


def layout_text(rows: dict[str, list[tuple[list[str], str]]]) -> str:
    out = [NEW_LAYOUT_INTRO.rstrip("\n")]
    for package, role in PACKAGES.items():
        out += ["", f"## `{PKG}` (the top level)" if not package else f"## `{PKG}.{package}`", "",
                *wrap(role), "", TABLE_HEAD.rstrip("\n")]
        out += [f"| {', '.join(f'`{m}`' for m in modules)} | {description} |" for modules, description in rows[package]]
    return "\n".join(out) + "\n"


# --- hand fixes no rule expresses -------------------------------------------------------------------------------------
# (file after the move, old text after the rules, new text): each old text must occur exactly once (one of several
# lines as whole lines).
SUBSTITUTIONS = [
    # ama/__init__.py: ama.cam is a shortcut now; _SUBMODULES maps an attribute to its dotted module
    ("ama/__init__.py",
     "``ama.kernels.cam`` is the module, callable as ama.cam(model, x)",
     "``ama.cam`` is ``ama.kernels.cam``, callable as ama.cam(model, x)"),
    ("ama/__init__.py",
     'return importlib.import_module(f".{name}", __name__)',
     'return importlib.import_module(f".{_SUBMODULES[name]}", __name__)'),
    # the attack's counts are read from the module, no longer a sibling of lineage
    ("ama/store/lineage.py",
     'sys.modules.get(f"{__package__}.attack")',
     "sys.modules.get(f\"{__package__.rpartition('.')[0]}.attack.marginal\")"),
    # the code version of part files: every source file of the package, not only those of runs/
    ("ama/runs/shards.py",
     '''    """A hash of the ``ama`` package's source files (parts of another code version are never reused)."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())''',
     '''    """A hash of the ``ama`` package's source files, its subpackages' included (parts of another code version are
    never reused)."""
    h = hashlib.sha256()
    package = Path(__file__).parent.parent
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + path.read_bytes())'''),
    # ama/deps.py: the import graph of a package with subpackages
    ("ama/deps.py",
     "which ``ama/*.py`` files each notebook",
     "which ``ama/**/*.py`` files each notebook"),
    ("ama/deps.py",
     '''inside functions included (``from . import a, b``, ``from .x import y``, ``from ama import x``, ``import ama.x``,
``ama.x`` attribute uses after ``import ama``); a name the package maps lazily (``from ama import compute_cam``:
``_LAZY`` in ``ama/__init__.py``) counts as its module; ``ama/__init__.py`` belongs to every closure (Python runs it
on any import of the package). A notebook's imports are those of its code cells. A step (``runs.pipeline:select_images``)
is narrower than its module: the module's file, its imports outside functions, and those inside the named function
and the module's functions and classes it names, transitively; the closure of each imported module is then whole.''',
     '''inside functions included (``from . import a, b``, ``from ..kernels.cam import y``, ``from ama import x``,
``import ama.x.y``, ``ama.x.y`` attribute uses after ``import ama``); a name the package maps lazily (``from ama import
compute_cam``, ``ama.cam``: ``_LAZY`` and ``_SUBMODULES`` in ``ama/__init__.py``) counts as its module, a subpackage
as its ``__init__``; ``ama/__init__.py`` belongs to every closure, and a subpackage's ``__init__.py`` to the closure of
each of its modules (Python runs them on any import of one). A notebook's imports are those of its code cells. A step
(``runs.pipeline:select_images``) is narrower than its module: the module's file, its imports outside functions, and
those inside the named function and the module's functions and classes it names, transitively; the closure of each
imported module is then whole.'''),
    ("ama/deps.py",
     '''``NAME := <files>`` per named set of entries (an entry: ``module`` or ``module:function``) and ``NB_DEPS_<stem> :=
<files>`` per notebook, each a sorted list of ``ama/*.py`` paths relative to the project root.''',
     '''``NAME := <files>`` per named set of entries (an entry: ``module`` or ``module:function``, a module named by its
dotted path below ``ama``: ``runs.pipeline``) and ``NB_DEPS_<stem> := <files>`` per notebook, each a sorted list of
paths of ``ama/``'s files (``ama/kernels/cam.py``) relative to the project root.'''),
    ("ama/deps.py",
     '''def lazy_names(init_source: str) -> dict[str, str]:
    """``{name: module}`` the package resolves on first use: ``_LAZY`` of ``init_source``, the text of
    ``ama/__init__.py`` (its ``_SUBMODULES`` are modules, found by their files)."""
    for node in ast.parse(init_source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
            return dict(ast.literal_eval(node.value))
    return {}''',
     '''def lazy_names(init_source: str) -> dict[str, str]:
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
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else []'''),
    ("ama/deps.py",
     '''class Graph:
    """The modules of one package folder and the modules each one's imports name (function bodies included)."""

    def __init__(self, package_dir: str | Path = PACKAGE_DIR):
        self.dir = Path(package_dir)
        self.sources = {p.stem: p.read_text(encoding="utf-8") for p in sorted(self.dir.glob("*.py"))}
        self.lazy = lazy_names(self.sources.get(INIT, ""))
        self.trees = {name: ast.parse(text, filename=f"{PACKAGE}/{name}.py") for name, text in self.sources.items()}
        self.edges = {name: self.imported(tree) for name, tree in self.trees.items()}

    def module_of(self, name: str) -> str | None:
        """The module a name imported from the package stands for: a module itself, a lazy name's module, or None."""
        if name in self.sources:
            return name
        return self.lazy[name] if self.lazy.get(name) in self.sources else None

    def imported(self, *nodes: ast.AST) -> set[str]:
        """The package's modules that the imports and ``ama.x`` attribute uses in ``nodes`` (and below) name."""
        found = set()
        for top in nodes:
            for node in ast.walk(top):
                if isinstance(node, ast.ImportFrom) and (node.level or node.module == PACKAGE
                                                         or (node.module or "").startswith(PACKAGE + ".")):
                    path = node.module.split(".")[0 if node.level else 1:] if node.module else []
                    found |= {self.module_of(path[0])} if path else {self.module_of(a.name) for a in node.names}
                elif isinstance(node, ast.Import):
                    found |= {self.module_of(a.name.split(".")[1]) for a in node.names
                              if a.name.startswith(PACKAGE + ".")}
                elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                      and node.value.id == PACKAGE):
                    found.add(self.module_of(node.attr))
        return found - {None}

    def closure(self, modules) -> set[str]:
        """``modules`` and every module they import, transitively, with the package's ``__init__``."""
        seen, todo = set(), [*modules, INIT]
        while todo:
            name = todo.pop()
            if name in seen or name not in self.edges:
                continue
            seen.add(name)
            todo += self.edges[name]
        return seen''',
     '''class Graph:
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
        self.edges = {name: self.imported(tree, within=name) for name, tree in self.trees.items()}

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
        return seen'''),
    ("ama/deps.py",
     '''            raise DepsError(f"{PACKAGE}/{module}.py has no function {function!r} at its top level")''',
     '''            raise DepsError(f"{self.file(module)} has no function {function!r} at its top level")'''),
    ("ama/deps.py",
     '''        found |= self.imported(*[n for n in tree.body if not isinstance(n, (*FUNCTIONS, ast.ClassDef))])''',
     '''        found |= self.imported(*[n for n in tree.body if not isinstance(n, (*FUNCTIONS, ast.ClassDef))],
                               within=module)'''),
    ("ama/deps.py",
     '''            found |= self.imported(defs[name])''',
     '''            found |= self.imported(defs[name], within=module)'''),
    ("ama/deps.py",
     '''            raise DepsError(f"no module {PACKAGE}/{module}.py (entry {spec!r})")''',
     '''            raise DepsError(f"no module {self.file(module)} (entry {spec!r})")'''),
    ("ama/deps.py",
     '''        return self.closure(self.step(module, function) - {module}) | {module}  # not the module's other imports''',
     '''        # not the module's other imports
        return self.closure(self.step(module, function) - {module}) | {module, *self.parents(module)}'''),
    ("ama/deps.py",
     '''    def files(self, modules) -> list[str]:
        """``ama/<module>.py`` paths, sorted."""
        return [f"{PACKAGE}/{m}.py" for m in sorted(modules)]''',
     '''    def files(self, modules) -> list[str]:
        """The modules' files (:meth:`file`), sorted."""
        return sorted(self.file(m) for m in modules)'''),
    ("ama/deps.py",
     '''the import graph of {PACKAGE}/*.py: do not edit"]''',
     '''the import graph of {PACKAGE}/**/*.py: do not edit"]'''),
    ("ama/deps.py",
     '''[*PACKAGE_DIR.glob("*.py"), *map(Path, notebooks)]''',
     '''[*PACKAGE_DIR.rglob("*.py"), *map(Path, notebooks)]'''),
    # the Makefile: the sources in subpackages; deps.py's entries by dotted name
    ("Makefile",
     "SRC := $(wildcard ama/*.py)",
     "SRC := $(wildcard ama/*.py ama/*/*.py)"),
    ("README.md",
     "| `ama/` | the package, one module per concept of the paper ([`docs/LAYOUT.md`](docs/LAYOUT.md)) |",
     "| `ama/` | the package, one module per concept of the paper, in subpackages by role ([`docs/LAYOUT.md`](docs/LAYOUT.md)) |"),
    # a notebook cell in a string: the attack's module
    ("tests/test_open_run.py",
     """'from ama import attack\\nassert sum(attack.CALLS.values()) == 0, attack.CALLS\\nprint("no attack ran")'""",
     """'from ama.attack import marginal\\nassert sum(marginal.CALLS.values()) == 0, marginal.CALLS\\n'
        'print("no attack ran")'"""),
    # the kernel is ama.kernels and ama.attack (with the top level's geometry and defaults)
    ("tests/test_kernel.py",
     '''KERNEL = ("geometry", "defaults", "cam_model", "cam", "upsampling", "metrics", "receptive_field", "occlusion",
          "optimizers", "attack_result", "attack")''',
     '''# the kernel, dotted below ama: the packages ama.kernels and ama.attack, with the top level's geometry and defaults
KERNEL = ("geometry", "defaults", *(f"{package}.{module}" for package in ("kernels", "attack")
                                    for module in importlib.import_module(f"ama.{package}").__all__))'''),
    # tests/test_house.py: modules by dotted name, the layers at package level as docs/LAYOUT.md orders them
    ("tests/test_house.py",
     '''PACKAGE = ROOT / "ama"
''',
     '''PACKAGE = ROOT / "ama"
# every module of ama by its dotted name below the package (params, kernels.cam; a subpackage's __init__.py:
# kernels.__init__), and by its file below ama/ (kernels/cam.py)
MODULES = {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in sorted(PACKAGE.rglob("*.py"))}
FILES = {p.relative_to(PACKAGE).as_posix(): p for p in MODULES.values()}
'''),
    ("tests/test_house.py",
     '''def layer_order(text: str) -> list[str]:
    """The modules of docs/LAYOUT.md's table, top to bottom (left to right within a row)."""
    return [m for line in text.splitlines() if line.startswith("| `")
            for m in re.findall(r"`(\\w+)`", line.split("|")[1])]


def upward_imports(graph: dict[str, set[str]], order: list[str]) -> list[tuple[str, str]]:
    """``(module, imported)`` pairs where a module imports one placed below it (or one the order does not name)."""
    rank = {m: k for k, m in enumerate(order)}
    return sorted((m, d) for m, deps in graph.items() if m in rank
                  for d in deps if rank.get(d, len(order)) > rank[m])''',
     '''def layer_order(text: str) -> dict[str, list[str]]:
    """docs/LAYOUT.md's packages top to bottom, the lowest layer first (``""``: the top level, ``## `ama```; then
    ``## `ama.kernels```...), each with the modules of its table, top to bottom (left to right within a row)."""
    order, package = {}, None
    for line in text.splitlines():
        heading = re.match(r"## `ama(?:\\.(\\w+))?`", line)
        if heading:
            package = order.setdefault(heading.group(1) or "", [])
        elif line.startswith("| `") and package is not None:
            package += re.findall(r"`(\\w+)`", line.split("|")[1])
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
                  for d in deps if rank.get(package_of(d), len(packages)) > rank.get(package_of(m), -1))'''),
    ("tests/test_house.py",
     '''    """``{module: modules of ama it imports}`` from every ``import`` statement of its source, function bodies included
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
    return graph''',
     '''    """``{module: modules of ama it imports}`` from every ``import`` statement of its source, function bodies included
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
    return graph'''),
    ("tests/test_house.py",
     '''    assert layer_order("| `a` | x |\\n| `b`, `c` | y |\\n| not | a row |") == ["a", "b", "c"]
    assert upward_imports({"a": {"b"}, "b": set(), "c": {"a"}}, ["a", "b", "c"]) == [("a", "b")]
    assert upward_imports({"a": {"z"}}, ["a"]) == [("a", "z")]''',
     '''    text = "## `ama`\\n| `a` | x |\\n## `ama.p`: y\\n| `b`, `c` | y |\\n| not | a row |"
    assert layer_order(text) == {"": ["a"], "p": ["b", "c"]}
    assert upward_imports({"a": {"p.b"}, "p.b": {"a", "p.c"}, "p.c": set()}, ["", "p"]) == [("a", "p.b")]
    assert upward_imports({"p.a": {"q.z"}, "__main__": {"p.a"}}, ["", "p"]) == [("p.a", "q.z")]'''),
    ("tests/test_house.py",
     '''def test_every_module_imports_only_modules_above_it_in_the_layout():
    """docs/LAYOUT.md's table is the order (the README links it): each module imports only modules above it, and
    every module of ``ama`` has its row."""
    order = layer_order(LAYOUT.read_text())
    modules = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__")}
    assert sorted(modules - set(order)) == [] and sorted(set(order) - modules) == []
    assert upward_imports(import_graph(), order) == []''',
     '''def test_every_module_imports_only_its_package_and_those_above_it_in_the_layout():
    """docs/LAYOUT.md's packages are the order (the README links it): a module imports only modules of its own
    package, of the packages above it and of the top level (which imports no package), and every module of ``ama``
    has its row in its package's table."""
    order = layer_order(LAYOUT.read_text())
    named = {f"{package}.{m}" if package else m for package, modules in order.items() for m in modules}
    modules = {m for m in MODULES if not m.rpartition(".")[2].startswith("__")}
    assert sorted(modules - named) == [] and sorted(named - modules) == []
    assert sorted({package_of(m) for m in MODULES} - set(order)) == []  # every package has its table
    assert upward_imports(import_graph(), list(order)) == []'''),
    ("tests/test_house.py",
     '''@pytest.mark.parametrize("module", sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in LAZY_IMPORTERS))
def test_the_kit_is_imported_at_the_top_of_each_module(module):
    """Dependencies are visible at the top; only the lazy entry points import the kit inside functions."""
    assert function_level_imports((PACKAGE / f"{module}.py").read_text()) == []''',
     '''@pytest.mark.parametrize("module", sorted(m for m in MODULES if m not in LAZY_IMPORTERS))
def test_the_kit_is_imported_at_the_top_of_each_module(module):
    """Dependencies are visible at the top; only the lazy entry points import the kit inside functions."""
    assert function_level_imports(MODULES[module].read_text()) == []'''),
    ("tests/test_house.py",
     '''@pytest.mark.parametrize("module", sorted(p.name for p in PACKAGE.glob("*.py")))''',
     '''@pytest.mark.parametrize("module", sorted(FILES))'''),
    ("tests/test_house.py",
     '''    spelled = {p.name for p in PACKAGE.glob("*.py") if '".tmp"' in p.read_text() or "'.tmp'" in p.read_text()}''',
     '''    spelled = {f for f, p in FILES.items() if '".tmp"' in p.read_text() or "'.tmp'" in p.read_text()}'''),
    ("tests/test_house.py",
     '''    found = [f"ama/{p.name}:{line}: {name!r}" for p in sorted(PACKAGE.glob("*.py")) if p.name != "artifacts.py"
             for line, name in spelled_artifacts(p.read_text()) if (p.name, name) not in NOT_ARTIFACTS]''',
     '''    found = [f"ama/{f}:{line}: {name!r}" for f, p in FILES.items() if f != "artifacts.py"
             for line, name in spelled_artifacts(p.read_text()) if (f, name) not in NOT_ARTIFACTS]'''),
    ("tests/test_house.py",
     '''@pytest.mark.parametrize("module", sorted(p.stem for p in PACKAGE.glob("*.py")))
def test_public_functions_document_their_parameters(module):
    """One style: each parameter in ``code`` in its function's docstring, or in docs/API.md's shared table."""
    shared = shared_parameters((ROOT / "docs" / "API.md").read_text())
    assert undocumented_parameters((PACKAGE / f"{module}.py").read_text(), shared) == []''',
     '''@pytest.mark.parametrize("module", sorted(MODULES))
def test_public_functions_document_their_parameters(module):
    """One style: each parameter in ``code`` in its function's docstring, or in docs/API.md's shared table."""
    shared = shared_parameters((ROOT / "docs" / "API.md").read_text())
    assert undocumented_parameters(MODULES[module].read_text(), shared) == []'''),
    ("tests/test_house.py",
     '''    text = LAYOUT.read_text()
    missing = [p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__") and f"`{p.stem}`" not in text]''',
     '''    order = layer_order(LAYOUT.read_text())
    missing = [m for m in MODULES if not m.rpartition(".")[2].startswith("__")
               and m.rpartition(".")[2] not in order.get(package_of(m), [])]'''),
]


def substitute(text: str, path: str, old: str, new: str) -> str:
    """``text`` (of ``path``) with its one occurrence of ``old`` replaced by ``new``; a RestructureError otherwise."""
    # a target of several lines is whole lines: it starts a line and ends one (a line grown since does not match)
    pattern = re.escape(old) if "\n" not in old else (r"(?<![^\n])" + re.escape(old)
                                                     + ("" if old.endswith("\n") else r"(?![^\n])"))
    found = list(re.finditer(pattern, text))
    if len(found) != 1:
        raise RestructureError(f"substitution in {path}: its target occurs {len(found)} times, not once:\n{old}")
    return text[:found[0].start()] + new + text[found[0].end():]


# --- the run ---------------------------------------------------------------------------------------------------------
def old_import_graph(modules: list[str]) -> dict[str, set[str]]:
    """``{module: modules it imports}`` of the flat package (imports anywhere in a module, ``ama.x`` uses too)."""
    graph = {}
    for name in modules:
        deps = set()
        for node in ast.walk(ast.parse((ROOT / PKG / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or node.module == PKG
                                                     or (node.module or "").startswith(PKG + ".")):
                path = node.module.split(".")[0 if node.level else 1:] if node.module else []
                deps |= {path[0]} if path else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith(PKG + ".")}
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == PKG:
                deps.add(node.attr)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def layer_report(moves: dict[str, str]) -> list[str]:
    """The imports that go against the packages' order once moved (the entry points' exempt ones marked)."""
    rank = {p: k for k, p in enumerate(PACKAGES)}
    out = []
    for module, deps in sorted(old_import_graph(list(moves)).items()):
        mine = package_of(moves[module])
        for dep in sorted(deps):
            theirs = package_of(moves[dep])
            if rank[theirs] > rank[mine]:
                exempt = " (exempt: an entry point)" if module in ("__init__", "__main__") else ""
                out.append(f"{module} ({mine or 'top level'}) -> {dep} ({moves[dep]}){exempt}")
    return out


def tracked_files() -> list[str]:
    def matches(path: str, pattern: str) -> bool:
        a, b = path.split("/"), pattern.split("/")
        return len(a) == len(b) and all(fnmatch.fnmatchcase(x, y) for x, y in zip(a, b))

    return [f for f in git("ls-files", "-z").split("\0") if f and f != SELF and any(matches(f, p) for p in FILES)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 tools/restructure.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="a dry run: rewrite in memory, report, change nothing")
    args = parser.parse_args(argv)
    package_dir = ROOT / PKG
    done = [p for p in PACKAGES if p and (package_dir / p / "__init__.py").exists()]
    if done:
        raise RestructureError(f"{PKG}/ is restructured already (it has the packages {done})")
    modules = sorted(p.stem for p in package_dir.glob("*.py"))
    unmapped = [m for m in modules if m not in MAPPING]
    if unmapped:
        raise RestructureError(f"modules of {PKG}/ that MAPPING does not name (add each to MAPPING, then rerun): "
                               + ", ".join(f"{PKG}/{m}.py" for m in unmapped))
    for m in (m for m in MAPPING if m not in modules):
        print(f"skipped: MAPPING's {m!r} -> {MAPPING[m]!r}: there is no {PKG}/{m}.py")
    moves = {m: MAPPING[m] for m in modules}
    bad = sorted({package_of(new) for new in moves.values()} - set(PACKAGES))
    targets = list(moves.values())
    if bad or len(set(targets)) != len(targets):
        raise RestructureError(f"MAPPING: packages not in PACKAGES {bad} or two modules in one place")
    for line in layer_report(moves):
        print(f"against the layer order: {line}")

    rules = Rules(moves)
    packages = [p for p in PACKAGES if p and any(package_of(n) == p for n in moves.values())]
    files = tracked_files()
    for path in SCOPED_STRINGS:
        if path not in files:
            raise RestructureError(f"SCOPED_STRINGS: no file {path}")
    print(f"rewriting {len(files)} files")
    new_texts = {}
    for path in files:
        text = (ROOT / path).read_text(encoding="utf-8")
        target = path
        if path == LAYOUT:
            continue
        if path.startswith(f"{PKG}/") and path.endswith(".py"):
            old = Path(path).stem
            target = file_of(moves[old])
            extra = init_map_edits(moves, packages) if old == "__init__" else None
            new = rules.rewrite_python(text, moves[old], True, path, SCOPED_STRINGS.get(path), extra)
        elif path.endswith(".py"):
            new = rules.rewrite_python(text, None, False, path, SCOPED_STRINGS.get(path))
        elif path.endswith(".ipynb"):
            new = rules.rewrite_notebook(text, path)
        elif path.endswith(".md"):
            new = rules.rewrite_markdown(text, path)
        else:
            new = rules.rewrite_text(text, comments=path == "Makefile")
        new_texts[target] = (text, new)
    rows = layout_rows((ROOT / LAYOUT).read_text(encoding="utf-8"), rules)
    new_texts[LAYOUT] = ((ROOT / LAYOUT).read_text(encoding="utf-8"), layout_text(rows))
    for path, old, new in SUBSTITUTIONS:  # all checked before anything moves
        if path not in new_texts:
            raise RestructureError(f"substitution in {path}: no such file among those rewritten")
        new_texts[path] = (new_texts[path][0], substitute(new_texts[path][1], path, old, new))
    for path, (_, text) in new_texts.items():
        if path.endswith(".py"):
            try:
                ast.parse(mask_magics(text))
            except SyntaxError as err:
                raise RestructureError(f"{path} would not parse: {err}") from None
    if args.check:
        for m, new in moves.items():
            if new != m:
                print(f"{PKG}/{m}.py -> {file_of(new)}")
        print(f"{sum(new != old for old, new in new_texts.values())} files would change; every substitution found")
        return 0
    if git("status", "--porcelain", "--untracked-files=no").strip():
        raise RestructureError("the work tree has uncommitted changes to tracked files: commit or stash them first")

    for old, new in moves.items():
        if new != old:
            (ROOT / file_of(new)).parent.mkdir(parents=True, exist_ok=True)
            git("mv", f"{PKG}/{old}.py", file_of(new))
    for target, (old_text, new) in new_texts.items():
        if new != old_text:
            (ROOT / target).write_text(new, encoding="utf-8")
    for package in packages:
        listed = [m for ms, _ in rows[package] for m in ms]
        members = listed + sorted(leaf(n) for n in moves.values() if package_of(n) == package
                                  and leaf(n) not in listed)
        (ROOT / PKG / package / "__init__.py").write_text(package_init(package, members), encoding="utf-8")

    for file in sorted((ROOT / PKG).rglob("*.py")):
        ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    git("add", "-A", "--", PKG, *new_texts)
    print(f"moved {sum(new != old for old, new in moves.items())} modules into {len(packages)} packages; "
          f"{sum(new != old for old, new in new_texts.values())} files rewritten, {len(SUBSTITUTIONS)} substitutions; "
          "staged (git add): review with git diff --cached -M, then commit")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RestructureError as err:
        print(f"restructure: {err}", file=sys.stderr)
        sys.exit(1)
