"""Redraw every figure of a committed reference from its committed tables with today's code, without computing its
experiments again (the evidence and models references take about 90 minutes each to compute; drawing, seconds to
minutes).

    .venv/bin/python tools/redraw_figures.py results/reference/<run> [--scratch results/redraw/<run>] [--keep]

The reference's tables, ``params.json``, ``run.json`` and ``REPORT.md`` are copied to a scratch run folder under
``results/`` (not a reference: :class:`ama.runs.folder.RunFolder` writes there), without its figures; the code cells of
notebooks 01, 02, 03 and 05 run there in this process. The folder is finished, so each notebook reads its tables back
and draws only its missing figures, that is all of them; opened to redraw (:data:`ama.runs.folder.REDRAW`), it attacks
again the few example images the attack figures show. Each figure the reference held, or its ``REPORT.md`` links, is
then copied back as :func:`ama.runs.check.save_reference` saves one (:func:`ama.store.tables.save_reference_png`: full
colour, capped in size); one that today's code no longer draws (e.g. a figure that would rest on one image) is removed
from the reference and named. A table the notebooks compute from the reference's own tables and the reference lacks (a summary added
since, e.g. claim 3's tau curve) is copied into it. The reference's ``run.json`` records the redraw
(``figures_redrawn``: commit, date, figures drawn and removed, tables added). ``REPORT.md`` is left as it is unless ``--write-report`` (then
:func:`write_report` writes it again from the scratch folder and copies it back).

``--resummarise`` computes the tables over images again from the reference's per-image tables with today's code
before the notebooks run (:func:`resummarise`: e.g. after a change of how an interval is computed) and copies those
that changed back into the reference (``tables_resummarised`` in ``run.json``); the per-image tables, which the
attacks made, are never touched.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import sys
import time
from pathlib import Path

NOTEBOOKS = ("01_occlusion", "02_receptive_field_misalignment", "03_adversarial_marginal_attack", "05_beyond_the_paper")


def scratch_copy(reference: Path, scratch: Path) -> Path:
    """``reference``'s tables, ``params.json``, ``run.json`` and ``REPORT.md`` copied to ``scratch`` (emptied first), a
    finished run folder without figures; return ``scratch``."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    shutil.copytree(reference / "tables", scratch / "tables")
    for name in ("params.json", "run.json", "REPORT.md"):
        if (reference / name).is_file():
            shutil.copy2(reference / name, scratch / name)
    return scratch


def notebook_code(notebook: Path, out_dir: Path) -> list[str]:
    """The code cells of ``notebook``, its parameters cell replaced by the scratch folder's (``params`` None: the
    folder's own ``params.json``; not recomputed, not sharded). ``out_dir``: the scratch folder."""
    cells = json.loads(notebook.read_text())["cells"]
    code = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = f"params = None\nout_dir = {str(out_dir)!r}\nrecompute = False\nsharded = False\n"
        code.append(source)
    return code


def run_notebooks(scratch: Path, notebooks=NOTEBOOKS, quiet: bool = True) -> None:
    """Run the code cells of ``notebooks`` on ``scratch`` in this process, opened to redraw (matplotlib's Agg
    backend); ``quiet``: their printed output is dropped."""
    import matplotlib

    matplotlib.use("Agg")
    from ama.paths import ROOT
    from ama.runs import folder

    folder.REDRAW = True
    try:
        for name in notebooks:
            started = time.time()
            namespace = {"__name__": f"redraw_{name}"}
            sink = io.StringIO() if quiet else sys.stdout
            with contextlib.redirect_stdout(sink):
                for k, source in enumerate(notebook_code(ROOT / "notebooks" / f"{name}.ipynb", scratch)):
                    exec(compile(source, f"{name}.ipynb[cell {k}]", "exec"), namespace)
            print(f"{name}: drawn in {time.time() - started:.0f} s")
    finally:
        folder.REDRAW = False


def resummarise(scratch: Path) -> list[str]:
    """Every experiment's summaries (:func:`ama.studies.experiments.summaries`, the studies' included) computed again
    from the per-image tables in ``scratch`` and written over the old ones there; their names."""
    from ama.store.tables import read_table, save_tables, table_files, table_name
    from ama.studies.experiments import summaries

    folder = scratch / "tables"
    tables = {table_name(p): read_table(folder, table_name(p)) for p in table_files(folder)}
    out = {k: v for k, v in summaries({k: v for k, v in tables.items() if v is not None}).items() if v is not None}
    for name in out:
        for old in folder.glob(f"{name}.csv*"):
            old.unlink()
    save_tables(out, scratch)
    return sorted(out)


def replace_tables(scratch: Path, reference: Path, names) -> list[str]:
    """The tables ``names`` of ``scratch`` copied over ``reference``'s where their contents differ, stored as the
    reference stores its tables (:func:`ama.store.tables.compress_tables`); the names replaced."""
    from ama.store.tables import compress_tables, read_table

    replaced = []
    for name in names:
        new, old = read_table(scratch / "tables", name), read_table(reference / "tables", name)
        if new is None or (old is not None and _equal(new, old)):
            continue
        for path in (reference / "tables").glob(f"{name}.csv*"):
            path.unlink()
        shutil.copy2(scratch / "tables" / f"{name}.csv", reference / "tables" / f"{name}.csv")
        replaced.append(name)
    if replaced:
        compress_tables(reference / "tables")
    return replaced


def _equal(a, b) -> bool:
    import pandas as pd

    try:
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
        return True
    except AssertionError:
        return False


def add_tables(scratch: Path, reference: Path) -> list[str]:
    """The tables the notebooks computed in ``scratch`` from the reference's own tables (a summary today's code adds,
    e.g. claim 3's tau curve) that ``reference`` lacks, copied into it as it stores tables
    (:func:`ama.store.tables.compress_tables`); their names."""
    from ama.store.tables import compress_tables, table_name

    held = {table_name(p) for p in (reference / "tables").glob("*.csv*")}
    added = []
    for path in sorted((scratch / "tables").glob("*.csv")):
        if table_name(path) not in held:
            shutil.copy2(path, reference / "tables" / path.name)
            added.append(table_name(path))
    if added:
        shutil.copy2(scratch / "tables" / "lineage.json", reference / "tables" / "lineage.json")
        compress_tables(reference / "tables")
    return added


def report_figures(reference: Path) -> set[str]:
    """The figure files (``figures/<name>.png``) the reference holds or its ``REPORT.md`` links."""
    held = {f"figures/{p.name}" for p in (reference / "figures").glob("*.png")}
    report = reference / "REPORT.md"
    linked = set(re.findall(r"\]\((figures/[^)]+\.png)\)", report.read_text())) if report.is_file() else set()
    return held | linked


def write_report(scratch: Path, reference: Path) -> None:
    """The report written again from the scratch folder (:func:`ama.report.markdown.write_report`), copied into
    ``reference`` with the ``verdicts.csv`` it wrote first (stored as the reference stores its tables,
    :func:`ama.store.tables.compress_tables`), so that the report and its verdicts stay one. ``scratch``: the redrawn
    run folder; ``reference``: the committed reference."""
    from ama.artifacts import TABLES
    from ama.report.markdown import write_report as write
    from ama.store.tables import compress_tables

    shutil.copy2(write(scratch), reference / "REPORT.md")
    for old in (reference / "tables").glob(f"{TABLES.verdicts}.csv*"):
        old.unlink()
    shutil.copy2(scratch / "tables" / f"{TABLES.verdicts}.csv", reference / "tables" / f"{TABLES.verdicts}.csv")
    compress_tables(reference / "tables")


def _not_drawn_by(notebooks, figures) -> set[str]:
    """Of ``figures`` (``figures/<name>.png``), those that none of ``notebooks`` draws (by the notebook each figure is
    declared for, :data:`ama.artifacts.FIGURES`; the report's own, notebook 04's, count as drawn)."""
    from ama.artifacts import FIGURES
    from ama.studies.registry import studies

    studies()  # the studies declare their figures
    ran = {nb[:2] for nb in notebooks} | {"04"}
    owner = {str(a): a.notebook for a in FIGURES}
    return {f for f in figures if owner.get(re.sub(r"_\d+$", "", Path(f).stem), "04") not in ran}


def redraw(reference: Path, scratch: Path, notebooks=NOTEBOOKS, keep: bool = False, report: bool = False,
           quiet: bool = True, summaries: bool = False) -> dict:
    """Redraw ``reference``'s figures in ``scratch`` and copy them back (see the module docstring); return what
    ``run.json`` records (``figures_redrawn``). ``notebooks``: those to run; ``keep``: leave the scratch folder;
    ``report``: write ``REPORT.md`` again (:func:`write_report`); ``quiet``: drop the notebooks' printed output;
    ``summaries``: compute the tables over images again first (:func:`resummarise`) and replace those that changed."""
    from ama.paths import is_reference, shown
    from ama.runs.pipeline import git_commit
    from ama.store.tables import save_reference_png

    if is_reference(scratch):
        raise SystemExit(f"{shown(scratch)}: the scratch folder must not be a reference")
    wanted = report_figures(reference)
    scratch_copy(reference, scratch)
    resummarised = resummarise(scratch) if summaries else []
    run_notebooks(scratch, notebooks, quiet)
    kept = _not_drawn_by(notebooks, wanted)  # figures of notebooks not run: left as they are, and shown in the report
    (scratch / "figures").mkdir(exist_ok=True)
    for figure in kept:
        if (reference / figure).is_file():
            shutil.copy2(reference / figure, scratch / figure)
    resummarised = replace_tables(scratch, reference, resummarised)
    if report:  # the new report's figures too: it may link figures the old one did not
        from ama.report.markdown import write_report as write

        linked = re.findall(r"\]\((figures/[^)]+\.png)\)", write(scratch).read_text())
        wanted = set(linked) | report_figures(reference)  # what the new report links; the rest is removed
    added = add_tables(scratch, reference)
    (reference / "figures").mkdir(exist_ok=True)
    drawn, removed = [], []
    for figure in sorted(wanted - kept):
        source, dest = scratch / figure, reference / figure
        if report and figure not in linked:  # the new report does not show it
            if dest.is_file():
                dest.unlink()
                removed.append(Path(figure).stem)
        elif source.is_file():
            save_reference_png(source, dest)
            drawn.append(Path(figure).stem)
        elif dest.is_file():
            dest.unlink()
            removed.append(Path(figure).stem)
    if report:
        write_report(scratch, reference)  # written again: the same tables, the same report
    record = {"commit": git_commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "tool": "tools/redraw_figures.py",
              "drawn": drawn, "removed": removed, "tables_added": added, "report_rewritten": bool(report)}
    if summaries:
        record["tables_resummarised"] = resummarised
    info_path = reference / "run.json"
    info = json.loads(info_path.read_text())
    before = info.get("figures_redrawn")
    if before:  # the earlier redraws stay on record, newest first
        record["earlier"] = [{k: v for k, v in before.items() if k != "earlier"}] + before.get("earlier", [])
    info["figures_redrawn"] = record
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    if not keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return record


def main(argv=None) -> int:
    """The command line (the module docstring). ``argv``: its arguments (default ``sys.argv[1:]``)."""
    from ama.paths import resolve, shown

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", help="a committed reference folder, results/reference/<run>")
    parser.add_argument("--scratch", help="the scratch run folder (default results/redraw/<run>)")
    parser.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS), help="the notebooks whose figures to draw")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--write-report", action="store_true", help="write REPORT.md again too (default: left as is)")
    parser.add_argument("--resummarise", action="store_true",
                        help="compute the tables over images again from the per-image tables first")
    parser.add_argument("--verbose", action="store_true", help="show the notebooks' printed output")
    args = parser.parse_args(argv)
    reference = resolve(args.reference)
    if not (reference / "run.json").is_file() or not (reference / "tables").is_dir():
        parser.error(f"{args.reference}: not a run folder with run.json and tables/")
    scratch = resolve(args.scratch) if args.scratch else resolve("results/redraw") / reference.name
    record = redraw(reference, scratch, args.notebooks, args.keep, args.write_report, not args.verbose,
                    args.resummarise)
    print(f"{shown(reference)}: {len(record['drawn'])} figures redrawn ({', '.join(record['drawn'])})"
          + (f"; tables computed again: {', '.join(record['tables_resummarised'])}" if args.resummarise else "")
          + (f"; no longer drawn, removed: {', '.join(record['removed'])} (REPORT.md may still link them)"
             if record["removed"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
