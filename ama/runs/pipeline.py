"""The ``make reproduce`` pipeline: run parameters, executing notebooks (with their experiment sharded first under
``NPROC``), ``run.json``, and the command line the Makefile calls.

``python -m ama.runs.pipeline {params,notebook,summary,check,reference}``; every function is importable for tests. A
run lives in ``results/<run>/`` with ``notebooks/``, ``figures/``, ``tables/``, ``params.json``, ``run.json`` and
``REPORT.md``; comparing it with its reference is :mod:`ama.runs.check`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

from ..params import RunParams
from ..paths import ROOT, atomic_write, resolve, shown


# --- parameters -----------------------------------------------------------------------------
def make_params(profile: str = "", **values) -> dict:
    """Run parameters as ``params.json`` holds them: :class:`ama.params.RunParams` (defaults, validation) from the
    Makefile's variables (strings; empty means the default) or Python values. ``profile``: a profile of
    :mod:`ama.params` whose values fill the empty ones."""
    strings = {k: "" if v is None else " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
               for k, v in values.items()}
    return RunParams.from_strings(profile, **strings).to_dict()


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` unless the file already holds it (keeps its mtime for Make); True if written."""
    path = Path(path)
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)
    return True


def notebook_parameters(params: dict, run_dir: str | Path, sharded: bool = False) -> dict:
    """The papermill parameters of every notebook: ``params`` (the run's :class:`~ama.params.RunParams` as a dict),
    ``out_dir``, ``recompute`` (always True: a notebook ``make`` runs computes everything, never reading back an
    earlier run's tables, :class:`ama.runs.folder.RunFolder`) and ``sharded`` (True: read the per-image tables a
    ``torchrun`` pre-step merged)."""
    return dict(params=RunParams.from_dict(params).to_dict(), out_dir=str(run_dir), recompute=True,
                sharded=bool(sharded))


def check_run_params(params: dict) -> None:
    """Fail at once, before anything is written (not an hour into a run), with one line: the device is not usable
    here, the images are missing, a model's weights are missing, or a frame width does not fit a model's input."""
    from ..geometry import check_frame_width
    from ..inputs.devices import resolve_device
    from ..inputs.images import list_images
    from ..inputs.models import run_model

    resolve_device(params["device"])
    list_images(params["images"])
    for name in params["models"]:
        size = run_model(name, device="cpu").preprocessing.crop
        for e in params["e"]:
            try:
                check_frame_width(e, size)
            except ValueError as err:
                raise ValueError(f"{err} for {name} (input {size} x {size} px)") from None


# --- run.json -------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "ama", "notebooks"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def update_run_json(run_dir: str | Path, params: dict, notebook: str | None = None, seconds: float | None = None,
                    status: str | None = None, sharded_s: float | None = None) -> Path:
    """Create or update ``<run_dir>/run.json``: parameters, versions, git commit, device, and per notebook its wall
    time (``wall_s``: the sharded pre-step included, ``sharded_s`` of it), status and the commit that ran it.
    ``notebook``: the notebook whose ``seconds``, ``status`` and ``sharded_s`` these are (None: the run's own fields
    only)."""
    from ..inputs.devices import describe_device

    run_dir = resolve(run_dir)
    path = run_dir / "run.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.update(
        run=run_dir.name,
        params=params,
        versions={"python": platform.python_version(),
                  **{d: _version(d) for d in ("torch", "torchvision", "timm", "numpy", "papermill", "ama")}},
        git_commit=git_commit(),
        # described once per device setting (the image selection does it first): a notebook's process need not import
        # torch (seconds) only to describe the machine again
        device=(info["device"] if "device" in info and info.get("params", {}).get("device") == params.get("device")
                else describe_device(params.get("device", "auto"))),
    )
    notebooks = info.setdefault("notebooks", {})
    if notebook is not None:
        total = None if seconds is None else seconds + (sharded_s or 0.0)
        notebooks[notebook] = {"wall_s": None if total is None else round(total, 1), "status": status,
                               "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "git_commit": info["git_commit"]}
        if sharded_s is not None:
            notebooks[notebook]["sharded_s"] = round(sharded_s, 1)
    write_if_changed(path, json.dumps(info, indent=2) + "\n")
    return path


# --- executing one notebook -----------------------------------------------------------------
# Kernel stderr lines shown on the terminal: progress bars (tqdm: "37%|...| 3/8 [01:02<01:40, ...]") and the kit's
# own warnings a user can act on (a skipped image file). Everything else goes only to the notebook's log file.
TERMINAL_LINES = re.compile(r"\d+%\|.*\[[^\]]*<|^skipped ")


class _KernelStderr:
    """papermill's ``stderr_file``: every chunk to the log, progress bars and actionable lines to the terminal."""

    def __init__(self, log, terminal, forward: bool):
        self.log, self.terminal, self.forward = log, terminal, forward

    def write(self, text: str) -> None:
        self.log.write(text)
        if self.forward:
            for line in re.split(r"[\r\n]+", text):
                if TERMINAL_LINES.search(line.strip()):
                    self.terminal.write(f"   {line.strip()}\n")
            self.terminal.flush()

    def flush(self) -> None:
        self.log.flush()


@contextlib.contextmanager
def _logging_to(stream):
    """Every Python log record and warning of this process (papermill, jupyter_client) to ``stream`` only."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root.handlers, root.level = [handler], logging.INFO
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield
    finally:
        logging.captureWarnings(False)
        root.handlers, root.level = saved


@contextlib.contextmanager
def _stderr_fd_to(stream):
    """Point file descriptor 2 at ``stream`` (so the kernel process, which inherits it, writes its own start-up
    warnings there); yield a writer on the terminal's stderr for what should still be shown."""
    try:
        real = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # stderr already captured (pytest): leave fd 2 alone
        real = False
    if not real:
        yield sys.stderr
        return
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    os.dup2(stream.fileno(), 2)
    try:
        yield terminal
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        terminal.close()


def _ipc_kernel_manager():
    """A Jupyter kernel manager that talks to its kernel over local Unix sockets, not TCP.

    The kernel and papermill run on one machine; TCP without encryption made every kernel log an (irrelevant
    here) eavesdropping warning, and IPC sockets are reachable only through the file system.
    """
    from jupyter_client import AsyncKernelManager

    return type("IPCKernelManager", (AsyncKernelManager,), {"transport": "ipc"})


def run_notebook(notebook: str | Path, run_dir: str | Path, params: dict, kernel: str = "ama",
                 timeout: int = 3600, progress: bool | None = None, sharded: bool = False,
                 sharded_s: float | None = None) -> Path:
    """Execute ``notebook`` with papermill into ``<run_dir>/notebooks/``; return the executed copy.

    The terminal gets one line when the notebook starts and one when it ends (with its time), the kernel's
    progress bars (``progress``; default: when stderr is a terminal, else only the log has them) and nothing
    else: papermill's and the kernel's output go to ``<run_dir>/logs/<notebook>.log``. The executed notebook is
    written under a temporary name and renamed only on success, so a killed run leaves no file under the final
    name (Make reruns it). On failure the partial notebook is kept as ``<name>.FAILED.ipynb`` and a
    ``RuntimeError`` names the notebook, the failing cell and the log file. ``sharded_s``: the seconds its
    experiment's ``torchrun`` pre-step took (counted in the notebook's wall time).
    ``kernel``: the Jupyter kernel's name; ``timeout``: seconds per cell; ``sharded``: the notebook's experiment ran
    before on several processes (:func:`shard_experiment`): the notebook reads its merged tables."""
    import papermill as pm

    notebook = resolve(notebook)
    run_dir = resolve(run_dir)
    out = run_dir / "notebooks" / notebook.name
    out.parent.mkdir(parents=True, exist_ok=True)
    failed = out.with_suffix(".FAILED.ipynb")
    partial = out.with_suffix(".running.ipynb")
    for stale in (failed, partial):
        stale.unlink(missing_ok=True)
    log_file = run_dir / "logs" / f"{notebook.stem}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    progress = sys.stderr.isatty() if progress is None else progress
    with open(log_file, "w", encoding="utf-8", buffering=1) as log, _logging_to(log):
        declared = {p for p in pm.inspect_notebook(str(notebook))}
        if not declared:
            raise RuntimeError(f"{notebook.name} has no cell tagged 'parameters'; papermill would run it silently "
                               "with its defaults")
        given = notebook_parameters(params, shown(run_dir), sharded)
        if sharded and "sharded" not in declared:
            raise RuntimeError(f"{notebook.name} declares no `sharded` parameter (papermill could not parse its "
                               "parameters cell?), so it would compute again what the shards computed")
        nb_params = {k: v for k, v in given.items() if k in declared}
        log.write(f"{notebook.name} parameters: {json.dumps(nb_params)}\n")
        print(f"== {notebook.stem}: running (log: {shown(log_file)})", flush=True)
        update_run_json(run_dir, params, notebook.stem, None, "running")  # not "ok" from an earlier run if killed
        start = time.time()
        with _stderr_fd_to(log) as terminal:
            try:
                pm.execute_notebook(str(notebook), str(partial), parameters=nb_params, kernel_name=kernel,
                                    cwd=str(notebook.parent), execution_timeout=timeout, progress_bar=False,
                                    log_output=False, stdout_file=log,
                                    stderr_file=_KernelStderr(log, terminal, progress),
                                    kernel_manager_class=_ipc_kernel_manager())
                err = None
            except KeyboardInterrupt:
                partial.unlink(missing_ok=True)
                update_run_json(run_dir, params, notebook.stem, time.time() - start, "interrupted", sharded_s)
                raise
            except Exception as caught:  # noqa: BLE001 - reported as one line below
                err = caught
                log.write(f"\n{type(err).__name__}: {err}\n")
    seconds = time.time() - start
    if err is not None:
        if partial.is_file():
            partial.replace(failed)
        update_run_json(run_dir, params, notebook.stem, seconds, "failed", sharded_s)
        detail = str(err).strip().splitlines()
        summary = next((line for line in reversed(detail) if line.strip()), type(err).__name__)
        cell = getattr(err, "exec_count", None)
        where = f" in cell [{cell}]" if cell is not None else ""
        raise RuntimeError(f"notebook {notebook.name} failed{where} after {seconds:.0f} s: {summary} "
                           f"(partial executed notebook: {shown(failed)}; log: {shown(log_file)})")
    partial.replace(out)
    update_run_json(run_dir, params, notebook.stem, seconds, "ok", sharded_s)
    pre = f" (+ {sharded_s:.0f} s on several processes before it)" if sharded_s is not None else ""
    print(f"== {notebook.stem}: done in {seconds:.0f} s{pre}", flush=True)
    return out


def shard_experiment(notebook: str | Path, params_file: str | Path, run_dir: str | Path, nproc: int) -> bool:
    """Before ``notebook``: its experiment (:data:`ama.studies.experiments.NOTEBOOK_EXPERIMENTS`) on ``nproc`` processes
    through ``torchrun`` (:mod:`ama.runs.shards`), then the merge of their parts into the run's tables. False (nothing
    done) when the notebook has no experiment. ``params_file``: the run's ``params.json``."""
    from ..studies.experiments import NOTEBOOK_EXPERIMENTS
    from . import shards

    experiment = NOTEBOOK_EXPERIMENTS.get(Path(notebook).stem)
    if experiment is None:
        return False
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", f"--nproc_per_node={int(nproc)}", "-m", "ama.runs.shards", "run", experiment,
           "--params", str(resolve(params_file)), "--run-dir", str(resolve(run_dir))]
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise RuntimeError(f"{experiment} on {nproc} processes failed (messages above); rerun: finished ranks are kept")
    params = RunParams.from_dict(json.loads(resolve(params_file).read_text()))
    tables = shards.merge(experiment, params, run_dir, int(nproc))
    print(f"== {experiment}: merged {nproc} part(s) -> {len(tables)} tables", flush=True)
    return True


def select_images(params_file: str | Path, run_dir: str | Path) -> None:
    """The run's image list (:func:`ama.inputs.protocol.write_selection`), with each model's clean accuracy on a
    labelled set printed. ``params_file``: the run's ``params.json``."""
    from ..inputs.protocol import ACCURACY, write_selection
    from ..store.tables import read_table

    params = RunParams.from_dict(json.loads(resolve(params_file).read_text()))
    table = write_selection(params, run_dir)
    update_run_json(run_dir, params.to_dict())  # the device, described while torch is loaded
    accuracy = read_table(resolve(run_dir) / "tables", ACCURACY)  # .csv or .csv.gz
    if (table.label >= 0).all() and accuracy is not None:
        for row in accuracy.itertuples():
            print(f"== {row.model}: top-1 {row.top1:.1%}, top-5 {row.top5:.1%} on {row.n_images} labelled images")
    print(f"== images: {len(table)} -> {shown(resolve(run_dir) / 'selection.csv')}", flush=True)


def print_summary(run_dir: str | Path) -> None:
    """The three claims' verdicts of a finished run and where its report is."""
    from ..studies.claims import collect_claims

    run_dir = resolve(run_dir)
    params = json.loads((run_dir / "params.json").read_text()) if (run_dir / "params.json").is_file() else {}
    smoke = " (FAST smoke run: it checks the pipeline, not the claim)" if params.get("fast") else ""
    for claim in collect_claims(run_dir):
        print(f"== claim {claim.number} ({claim.title}): {claim.verdict}{smoke}")
    html = run_dir / "04_report.html"
    print(f"== report: {shown(run_dir / 'REPORT.md')}" + (f" (HTML: {shown(html)})" if html.is_file() else ""))


# --- command line used by the Makefile ------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    parser = argparse.ArgumentParser(prog="python -m ama.runs.pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("params", help="write params.json if the parameters changed")
    p.add_argument("--out", default=None, help="params.json to write (without it: only check)")
    p.add_argument("--check", action="store_true", help="only check the parameters: print a problem as one line "
                   "on stdout (nothing when they are usable) and exit 2 on one; write nothing")
    p.add_argument("--PROFILE", dest="profile", default="", help="a profile of ama.params.PROFILES")
    for name in RunParams.names():  # the Make variables: --N_ITER=50 ...
        p.add_argument(f"--{name.upper()}", dest=name, default="")
    sel = sub.add_parser("select", help="choose the run's images (labelled: correctly classified) -> selection.csv")
    sel.add_argument("--params", required=True)
    sel.add_argument("--run-dir", required=True)
    n = sub.add_parser("notebook", help="execute one notebook of a run")
    n.add_argument("notebook")
    n.add_argument("--params", required=True)
    n.add_argument("--run-dir", required=True)
    n.add_argument("--kernel", default="ama")
    n.add_argument("--timeout", type=int, default=3600)
    n.add_argument("--nproc", type=int, default=1, help="processes for the notebook's experiment (torchrun)")
    r = sub.add_parser("summary", help="print a finished run's claim verdicts and where its report is")
    r.add_argument("--run-dir", required=True)
    c = sub.add_parser("check", help="compare a run's tables with the reference")
    c.add_argument("--run-dir", required=True)
    c.add_argument("--reference", default="results/reference")
    r = sub.add_parser("reference", help="save a finished run as the reference for its parameters")
    r.add_argument("--run-dir", required=True)
    r.add_argument("--reference", default="results/reference")
    args = parser.parse_args(argv)
    try:
        if args.command == "params" and (args.check or args.out is None):
            try:
                check_run_params(make_params(profile=args.profile,
                                             **{name: getattr(args, name) for name in RunParams.names()}))
            except Exception as err:  # noqa: BLE001 - one line, for the Makefile to end on
                print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
                return 2
        elif args.command == "params":
            params = make_params(profile=args.profile, **{name: getattr(args, name) for name in RunParams.names()})
            out = resolve(args.out)
            text = json.dumps(params, indent=2) + "\n"
            if not (out.is_file() and out.read_text() == text):
                check_run_params(params)  # stop now, before anything is written, not an hour in
                write_if_changed(out, text)
                print(f"== run parameters -> {shown(out)}")
        elif args.command == "select":
            select_images(args.params, args.run_dir)
        elif args.command == "notebook":
            params = json.loads(resolve(args.params).read_text())
            start = time.time()
            sharded = args.nproc > 1 and shard_experiment(args.notebook, args.params, args.run_dir, args.nproc)
            run_notebook(args.notebook, args.run_dir, params, args.kernel, args.timeout, sharded=sharded,
                         sharded_s=time.time() - start if sharded else None)
        elif args.command == "reference":
            from .check import save_reference

            print(f"== reference saved: {save_reference(args.run_dir, args.reference)}")
        elif args.command == "summary":
            print_summary(args.run_dir)
        elif args.command == "check":
            if not (resolve(args.run_dir) / "params.json").is_file():
                print(f"no run at {shown(resolve(args.run_dir))} yet: run make reproduce with the same parameters "
                      "first (make check compares a finished run with its reference)")
                return 0
            from .check import check_run

            ok, lines = check_run(args.run_dir, args.reference)
            print("\n".join(lines))
            return 0 if ok else 1
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume (finished notebooks and shards are kept)",
              file=sys.stderr)
        return 130
    except Exception as err:  # one line for the user, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
