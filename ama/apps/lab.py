"""``make lab``: start JupyterLab on the notebooks with the kit's kernel, whoever runs it, and print its URL last.

``python -m ama.apps.lab [--port 8888] [--notebook-dir notebooks] [--open 00_explore.ipynb] [jupyter lab options ...]``

* ``--allow-root`` when the user is root (Docker, cloud machines), ``--no-browser`` when there is no display
  (no ``$DISPLAY`` / ``$WAYLAND_DISPLAY``, except on macOS and Windows);
* the ``ama`` kernel is the server's default, so a new notebook gets it too (the kit's notebooks name it);
* the kit's JupyterLab settings (``jupyter-config/``, put on ``JUPYTER_CONFIG_PATH`` after the user's own): no
  "get notified about official Jupyter news?" prompt on first start (Settings can turn the news on), and no
  autosave, so exploring does not write outputs into the kit's committed notebooks (save by hand to keep them);
* the server logs only warnings; once it answers, the last line printed is its URL with the token, read from
  the server's own runtime file (``jpserver-<pid>.json``), so it is right whatever options were added.

Extra options go to ``jupyter lab`` after the kit's, so they win (``--log-level=INFO``, ``--ServerApp.ip=...``).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..paths import ROOT

KERNEL = "ama"
DEFAULT_PORT = 8888
DEFAULT_NOTEBOOK = "00_explore.ipynb"
START_TIMEOUT_S = 120
LAB_CONFIG = ROOT / "jupyter-config"  # labconfig/default_setting_overrides.json: JupyterLab defaults of the kit


def has_display(env=None) -> bool:
    """Whether a browser can open here: a desktop session (``$DISPLAY``/``$WAYLAND_DISPLAY``), macOS or Windows.
    ``env``: a mapping in place of ``os.environ``."""
    env = os.environ if env is None else env
    return sys.platform in ("darwin", "win32") or bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def lab_command(port: int = DEFAULT_PORT, notebook_dir: str | os.PathLike = ROOT / "notebooks",
                open_notebook: str | None = DEFAULT_NOTEBOOK, extra=(), *, is_root: bool | None = None,
                display: bool | None = None) -> list[str]:
    """The ``jupyter lab`` command line (a list) for this user and machine; ``extra`` options come last. ``port``: the
    server's port; ``notebook_dir``: the folder it serves; ``open_notebook``: the notebook to open first (None: the file
    browser); ``is_root``: run as root (``--allow-root``; default: detected); ``display``: a browser can open here
    (default: :func:`has_display`; without one, no browser is started)."""
    is_root = (hasattr(os, "geteuid") and os.geteuid() == 0) if is_root is None else is_root
    display = has_display() if display is None else display
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={notebook_dir}", f"--port={int(port)}",
           "--log-level=WARN", f"--MultiKernelManager.default_kernel_name={KERNEL}"]
    if open_notebook:
        cmd.append(f"--LabApp.default_url=/lab/tree/{open_notebook}")
    if is_root:
        cmd.append("--allow-root")
    if not display:
        cmd.append("--no-browser")
    return cmd + list(extra)


def lab_env(env=None) -> dict:
    """The server's environment: ``env`` (default ``os.environ``) with the kit's config dir last on
    ``JUPYTER_CONFIG_PATH`` (the user's own config wins over it)."""
    env = dict(os.environ if env is None else env)
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([*filter(None, [env.get("JUPYTER_CONFIG_PATH")]), str(LAB_CONFIG)])
    return env


def runtime_dir() -> Path:
    """Where Jupyter servers write their ``jpserver-<pid>.json`` files."""
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir())


def server_url(info: dict, open_notebook: str | None = DEFAULT_NOTEBOOK) -> str:
    """The URL a user opens, with the token, from a server's runtime info (``url``, ``token``). ``info``: the server's
    runtime info; ``open_notebook``: the notebook the URL opens (None: the file browser)."""
    page = f"lab/tree/{open_notebook}" if open_notebook else "lab"
    token = info.get("token")
    return f"{info['url'].rstrip('/')}/{page}" + (f"?token={token}" if token else "")


def wait_for_server(proc: subprocess.Popen, timeout: float = START_TIMEOUT_S) -> dict:
    """The runtime info of the server ``proc`` once it answers HTTP; ``RuntimeError`` if it exits or times out.
    ``timeout``: seconds to wait."""
    info_file = runtime_dir() / f"jpserver-{proc.pid}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with status {proc.returncode} before it answered (messages above)")
        if info_file.is_file():
            try:
                info = json.loads(info_file.read_text())
                status = urllib.request.Request(f"{info['url'].rstrip('/')}/api/status",
                                                headers={"Authorization": f"token {info.get('token', '')}"})
                with urllib.request.urlopen(status, timeout=5):
                    return info
            except (OSError, ValueError):
                pass  # file half-written or server not listening yet
        time.sleep(0.25)
    raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s (no {info_file.name} that answers)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ama.apps.lab", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="first port to try (default 8888)")
    parser.add_argument("--notebook-dir", default=str(ROOT / "notebooks"))
    parser.add_argument("--open", default=DEFAULT_NOTEBOOK, help="notebook the URL opens on ('' for none)")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    cmd = lab_command(args.port, args.notebook_dir, args.open or None, extra)
    print(f"== starting JupyterLab (port {args.port}; server warnings below; Ctrl-C twice to stop)", flush=True)
    proc = subprocess.Popen(cmd, env=lab_env())
    # Ctrl-C reaches the server too (same terminal); it asks and shuts down, and we wait for it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        info = wait_for_server(proc)
    except RuntimeError as err:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        print(f"== {err}", file=sys.stderr, flush=True)
        return 1
    print(f"== JupyterLab is running, serving {args.notebook_dir}; from another machine: ssh -L "
          f"{info.get('port', args.port)}:localhost:{info.get('port', args.port)} user@this-host", flush=True)
    print("== notebooks 01-05 open the default reference (results/reference/) in seconds: run all cells; set "
          "out_dir and params in their first cell for another run", flush=True)
    print(server_url(info, args.open or None), flush=True)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
