"""`make lab`: JupyterLab starts for root and for ordinary users, serves the notebooks with the `ama` kernel, and
prints its URL last. The end-to-end test starts the real server through `make lab` on a free loopback port."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from urllib.parse import parse_qs, urlparse

import pytest

from ama.apps import lab
from ama.paths import ROOT
from conftest import stop_process_group

START_TIMEOUT_S = 90


@pytest.mark.parametrize("is_root", [True, False])
@pytest.mark.parametrize("display", [True, False])
def test_lab_command_allows_root_and_skips_the_browser_without_a_display(is_root, display):
    cmd = lab.lab_command(9999, "nb", extra=["--foo=1"], is_root=is_root, display=display)
    assert ("--allow-root" in cmd) == is_root
    assert ("--no-browser" in cmd) == (not display)
    assert "--port=9999" in cmd and "--notebook-dir=nb" in cmd
    assert "--MultiKernelManager.default_kernel_name=ama" in cmd
    assert cmd[-1] == "--foo=1"  # the user's options come last, so they win


def test_has_display_reads_the_desktop_variables(monkeypatch):
    monkeypatch.setattr(lab.sys, "platform", "linux")
    assert not lab.has_display({})
    assert lab.has_display({"DISPLAY": ":0"}) and lab.has_display({"WAYLAND_DISPLAY": "wayland-0"})


def test_server_url_opens_the_explorer_with_the_token():
    info = {"url": "http://localhost:8890/", "token": "abc"}
    assert lab.server_url(info) == "http://localhost:8890/lab/tree/00_explore.ipynb?token=abc"
    assert lab.server_url({"url": "http://localhost:8890/", "token": ""}, None) == "http://localhost:8890/lab"


def test_lab_env_puts_the_kits_settings_after_the_users():
    assert lab.lab_env({"JUPYTER_CONFIG_PATH": "/mine"})["JUPYTER_CONFIG_PATH"].split(os.pathsep) == [
        "/mine", str(lab.LAB_CONFIG)]
    assert lab.lab_env({})["JUPYTER_CONFIG_PATH"] == str(lab.LAB_CONFIG)
    overrides = json.loads((lab.LAB_CONFIG / "labconfig" / "default_setting_overrides.json").read_text())
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    assert overrides["@jupyterlab/docmanager-extension:plugin"]["autosave"] is False  # the kit's notebooks stay clean


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str):
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


@pytest.mark.slow
def test_make_lab_serves_the_notebooks_with_the_ama_kernel(tmp_path):
    """`make lab` as whoever runs the tests (CI: root): the last line is the URL, the API lists the kit's kernel and
    notebooks; the server is stopped by its process group whatever happens."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MAKEFLAGS")}
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")  # this server's files only
    port = _free_port()
    # -o: use the environment and samples as they are (never rebuild them from a test)
    cmd = ["make", "--no-print-directory", "-o", ".venv/.ama-env-installed", "-o", "data/samples/manifest.csv",
           "lab", f"PORT={port}", "LAB_ARGS=--ServerApp.ip=127.0.0.1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (lines and lines[-1].startswith("http")):
            assert proc.poll() is None, "make lab exited:\n" + "".join(lines)
            assert time.monotonic() < deadline, f"no URL within {START_TIMEOUT_S} s:\n" + "".join(lines)
            time.sleep(0.2)
        time.sleep(2)
        assert lines[-1].startswith("http"), "the URL must be the last line printed: " + "".join(lines[-3:])
        url = urlparse(lines[-1].strip())
        assert url.hostname in ("127.0.0.1", "localhost", "::1") and url.path == "/lab/tree/00_explore.ipynb"
        token = parse_qs(url.query)["token"][0]
        base = f"http://127.0.0.1:{url.port}"

        specs = _get(f"{base}/api/kernelspecs", token)
        assert "ama" in specs["kernelspecs"] and specs["default"] == "ama"
        names = {c["name"] for c in _get(f"{base}/api/contents", token)["content"]}
        assert {"00_explore.ipynb", "01_occlusion.ipynb", "02_receptive_field_misalignment.ipynb",
                "03_adversarial_marginal_attack.ipynb", "04_report.ipynb"} <= names
        explorer = _get(f"{base}/api/contents/00_explore.ipynb", token)
        assert explorer["content"]["metadata"]["kernelspec"]["name"] == "ama"
        # the kit's default: no first-start question about JupyterLab's news feed
        notification = _get(f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification", token)
        assert notification["schema"]["properties"]["fetchNews"]["default"] == "false"
    finally:
        stop_process_group(proc)
    assert not list((tmp_path / "runtime").glob("jpserver-*.json")), "the server did not shut down cleanly"
