"""In a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``, ``make browser``) driven by
selenium, as a person meets the kit.

* the explorer: ``make lab`` on a free port, ``00_explore.ipynb`` opened from the printed URL, Run > Run All Cells;
  the widgets render (no "Error displaying widget", no "Loading widget..." left, no raw ``VBox(...)`` text), clicking a
  CAM cell changes the IRF / ERF pane, a short attack (e = 2, 3 steps) from the controls shows its result line with
  class names, and JupyterLab does not ask about its news;
* the report: ``04_report.html`` of the shared ``FAST=1`` run shows every figure and its sections as headings.

Marked ``browser`` (``pytest -m "not browser"`` leaves them out). Without Chromium, chromedriver or selenium they are
skipped with the reason, or fail when ``AMA_BROWSER_REQUIRED=1`` (CI, where ``make browser`` installs them).
Screenshots go to the test's temporary folder; ``AMA_SCREENSHOT_DIR=docs`` also writes the README's ``explorer.png``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ama.paths import ROOT
from conftest import stop_process_group

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,2400")
LAB_START_S = 90     # make lab prints its URL (about 5 s here)
KERNEL_S = 60        # the notebook opens and its kernel is idle (about 10 s)
RUN_ALL_S = 240      # Run All Cells: model, CAM, receptive fields and a 10-step attack (about 25 s on 2 cores)
ACTION_S = 60        # one click: a cell's receptive fields, a 3-step attack (a few seconds)
NEWS_PROMPT = "Would you like to get notified about official Jupyter news?"
SCREENSHOT_WIDTH = 720  # px of docs/explorer.png (128 colours: about 150 KB)


def _need(reason: str):
    if os.environ.get("AMA_BROWSER_REQUIRED") == "1":
        pytest.fail(f"{reason} (AMA_BROWSER_REQUIRED=1)")
    pytest.skip(reason)


def _chromium() -> tuple[str, str]:
    """Paths of Chromium and chromedriver; skip (or fail where required) without them or without selenium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path]
    if missing:
        _need(f"no {' and no '.join(missing)} on PATH: `make browser` installs Debian's chromium and chromium-driver "
              "(root, apt-get)")
    if importlib.util.find_spec("selenium") is None:
        _need("selenium is not installed (it is in requirements-lock.txt: `make env`)")
    return chromium, driver


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium with a fresh profile in ``tmp_path``; quit at the end whatever happens."""
    chromium, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def _evidence(driver, folder: Path):
    """On failure: a screenshot, the page's text and the browser console into ``folder`` (named in the error)."""
    try:
        yield
    except BaseException as err:
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(folder / "failure.png"))
            (folder / "failure.txt").write_text(driver.execute_script("return document.body.innerText"))
            (folder / "console.json").write_text(json.dumps(driver.get_log("browser"), indent=1))
        if hasattr(err, "add_note"):  # Python >= 3.11
            err.add_note(f"screenshots, page text and browser console in {folder}")
        raise


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _make_lab(tmp_path: Path):
    """``make lab`` on a free loopback port as a new user would start it (no saved JupyterLab settings or workspace);
    yields the URL it prints last; stops the server by its process group at the end, also on failure.

    It serves a copy of ``00_explore.ipynb`` in ``tmp_path``: JupyterLab autosaves a notebook that ran (every 2 min),
    and the checkout's copy must stay as committed."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    shutil.copy(ROOT / "notebooks" / "00_explore.ipynb", notebooks)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MAKEFLAGS")}
    env.update(JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
               # the kernel imports the `ama` of this checkout, whichever one the environment has installed
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    port = _free_port()
    # -o: use the environment and samples as they are (never rebuild them from a test)
    cmd = ["make", "--no-print-directory", "-o", ".venv/.ama-env-installed", "-o", "data/samples/manifest.csv",
           "lab", f"PORT={port}", f"NOTEBOOKS={notebooks}", "LAB_ARGS=--ServerApp.ip=127.0.0.1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + LAB_START_S
        while not (lines and lines[-1].startswith("http")):
            assert proc.poll() is None, "make lab exited:\n" + "".join(lines)
            assert time.monotonic() < deadline, f"no URL within {LAB_START_S} s:\n" + "".join(lines)
            time.sleep(0.2)
        yield lines[-1].strip()
    finally:
        stop_process_group(proc)
        (tmp_path / "lab.log").write_text("".join(lines))


def _wait(driver, timeout: float, what: str, condition):
    """``condition(driver)`` once truthy; else a failure naming ``what``."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)
    except TimeoutException:
        pytest.fail(f"after {timeout:.0f} s: {what}")


# The explorer's widget area, read in one go: the output that holds the grid of CAM cells.
READ_EXPLORER = """
const grid = document.querySelector('.widget-gridbox');
const area = grid && grid.closest('.jp-OutputArea-output');
if (!area) return null;
const imgs = Array.from(area.querySelectorAll('img.widget-image')).map(i => ({
  src: i.src, width: i.naturalWidth, shown: i.offsetParent !== null && i.naturalWidth > 0}));
const html = Array.from(area.querySelectorAll('.widget-html-content'));
const sliders = {};
for (const s of area.querySelectorAll('.widget-slider')) {
  sliders[s.querySelector('.widget-label').textContent] = s.querySelector('.widget-readout').textContent;}
const bar = area.querySelector('.progress > .progress-bar');
return {
  cells: Array.from(grid.querySelectorAll('button')).map(b => ({
    text: b.innerText.trim(), bold: ['bold', '700'].includes(getComputedStyle(b).fontWeight)})),
  selects: Array.from(area.querySelectorAll('select')).map(s => ({
    value: s.value, options: Array.from(s.options).map(o => o.text)})),
  buttons: Array.from(area.querySelectorAll('button')).map(b => b.innerText.trim()).filter(t => t),
  images: imgs, sliders: sliders, progress: bar ? bar.style.width : null,
  status: html.length ? html[html.length - 1].innerText : null};
"""


def _explorer(driver):
    return driver.execute_script(READ_EXPLORER)


def widget_problems(driver) -> list[str]:
    """What a person would see instead of working widgets, in every output of the page (empty: none)."""
    texts = driver.execute_script(
        "return Array.from(document.querySelectorAll('.jp-OutputArea-output')).map(e => e.innerText)")
    page = driver.execute_script("return document.body.innerText")
    problems = []
    if "Error displaying widget" in page:
        problems.append("'Error displaying widget' on the page (jupyterlab_widgets / ipywidgets mismatch?)")
    if "Loading widget..." in page:
        problems.append("'Loading widget...' still shown (no widget manager in JupyterLab?)")
    raw = [t[:80] for t in texts if re.search(r"\b[HV]Box\(children=|\bGridBox\(|\bIntSlider\(", t)]
    if raw:
        problems.append(f"a widget shown as text, not rendered (lab extension missing?): {raw}")
    return problems


def _set_slider(driver, label: str, value: int) -> None:
    """Type ``value`` into the slider's readout, as a person does, and press Enter."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    readout = driver.find_element(By.XPATH, f"//div[contains(@class,'widget-slider')][.//label[text()='{label}']]"
                                            "//div[contains(@class,'widget-readout')]")
    readout.click()
    readout.send_keys(Keys.CONTROL, "a")
    readout.send_keys(str(value), Keys.ENTER)
    _wait(driver, 10, f"slider {label!r} shows {value}", lambda d: _explorer(d)["sliders"].get(label) == str(value))


def _click_button(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//button[normalize-space()='{text}']").click()


def save_explorer_png(driver, path: Path, width: int = SCREENSHOT_WIDTH) -> Path:
    """The explorer's widget area as a small PNG (``width`` px wide, 128 colours) at ``path``."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    area = driver.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output:has(.widget-gridbox)")
    driver.execute_script("arguments[0].scrollIntoView(true)", area)
    shot = Image.open(io.BytesIO(area.screenshot_as_png)).convert("RGB")
    shot = shot.resize((width, round(shot.height * width / shot.width)), Image.LANCZOS)
    shot.quantize(128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def test_explorer_works_in_the_browser(browser, tmp_path):
    """`make lab`, 00_explore.ipynb, Run All Cells, then a cell and an attack from the controls, as a person would."""
    from selenium.webdriver.common.by import By

    driver = browser
    with _make_lab(tmp_path) as url, _evidence(driver, tmp_path):
        driver.get(url)
        _wait(driver, KERNEL_S, "00_explore.ipynb open with the ama kernel idle",
              lambda d: len(d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")) == 5
              and "Python (ama) | Idle" in d.find_element(By.ID, "jp-main-statusbar").text)
        driver.save_screenshot(str(tmp_path / "1-opened.png"))

        # Run > Run All Cells
        driver.find_element(By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][normalize-space()='Run']").click()
        _wait(driver, 10, "the Run menu's 'Run All Cells'", lambda d: d.find_element(
            By.CSS_SELECTOR, "#jp-mainmenu-run li[data-command='runmenu:run-all']")).click()
        _wait(driver, RUN_ALL_S, "all three code cells run, kernel idle",
              lambda d: [p.text for p in d.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]
              == ["[1]:", "[2]:", "[3]:"] and "| Idle" in d.find_element(By.ID, "jp-main-statusbar").text)
        _wait(driver, 30, "no 'Loading widget...' left", lambda d: "Loading widget..." not in d.find_element(
            By.TAG_NAME, "body").text)
        driver.save_screenshot(str(tmp_path / "2-run-all.png"))
        assert widget_problems(driver) == []
        ui = _explorer(driver)
        assert ui is not None, "no grid of CAM cells on the page (the explorer's widget did not render)"
        # the controls
        assert [s["value"] for s in ui["selects"]] == ["lite0", "chelsea"]
        assert {"lite0", "lite1", "lite2"} <= set(ui["selects"][0]["options"])
        assert {"run attack", "upload (0)"} <= set(ui["buttons"]), ui["buttons"]
        assert ui["sliders"] == {"e (px)": "2", "steps": "10"}
        # the CAM: 7 x 7 cells for lite0 (224 px), each labelled with its value in [0, 1]; the CAM figure shown
        assert len(ui["cells"]) == 49, ui["cells"]
        assert all(0 <= float(c["text"]) <= 1 for c in ui["cells"]), [c["text"] for c in ui["cells"]]
        cam, rf_view, attack_view = ui["images"]
        assert cam["shown"], "the CAM figure is not shown"
        # the notebook's last cell selected a cell (shown bold) and ran an attack from code
        assert [c["bold"] for c in ui["cells"]].count(True) == 1
        assert rf_view["shown"] and attack_view["shown"]
        outputs = driver.execute_script(
            "return Array.from(document.querySelectorAll('.jp-OutputArea-output')).map(e => e.innerText)")
        assert any(re.search(r"attack e = 2, 10 steps: .+ -> ", t) for t in outputs), outputs

        # click another cell: its IRF / ERF pane replaces the one shown
        k = next(i for i, c in enumerate(ui["cells"]) if not c["bold"])
        driver.find_elements(By.CSS_SELECTOR, ".widget-gridbox button")[k].click()
        cell_line = f"cell {k} = ({k // 7}, {k % 7}): ERF mass outside the IRF support"
        _wait(driver, ACTION_S, f"cell {k}'s receptive fields in the status line",
              lambda d: cell_line in (_explorer(d)["status"] or ""))
        after = _explorer(driver)
        assert after["images"][1]["src"] != rf_view["src"] and after["images"][1]["shown"], \
            "the IRF / ERF pane did not change after a click on another cell"
        assert after["cells"][k]["bold"] and [c["bold"] for c in after["cells"]].count(True) == 1
        driver.save_screenshot(str(tmp_path / "3-cell.png"))

        # a short attack from the controls: e = 2, 3 steps
        _set_slider(driver, "e (px)", 2)
        _set_slider(driver, "steps", 3)
        _click_button(driver, "run attack")
        line = _wait(driver, ACTION_S, "the attack's result line (e = 2, 3 steps) in the status line",
                     lambda d: re.search(r"attack e = 2, 3 steps: (.+?) \([\d.]+%\) -> (.+?) \([\d.]+%\) "
                                         r"\((not )?fooled", _explorer(d)["status"] or ""))
        assert all(re.search(r"[a-z]{3}", name) for name in line.groups()[:2]), line.group(0)
        done = _explorer(driver)
        assert done["progress"] == "100%", done["progress"]
        assert done["images"][2]["src"] != attack_view["src"] and done["images"][2]["shown"]
        assert widget_problems(driver) == []
        assert NEWS_PROMPT not in driver.find_element(By.TAG_NAME, "body").text, \
            "JupyterLab asks about its news (the kit's lab settings should turn the prompt off)"
        driver.save_screenshot(str(tmp_path / "4-attack.png"))
        png = save_explorer_png(driver, tmp_path / "explorer.png")
        widget_errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "widget" in
                         e["message"].lower()]
        assert not widget_errors, widget_errors
    if os.environ.get("AMA_SCREENSHOT_DIR"):
        shutil.copy(png, Path(os.environ["AMA_SCREENSHOT_DIR"]) / "explorer.png")


def test_report_html_shows_every_figure_and_section(browser, fast_run, tmp_path):
    """04_report.html of the FAST=1 run in the browser: no broken image, the sections of REPORT.md as headings."""
    from selenium.webdriver.common.by import By

    html = fast_run.dir / "04_report.html"
    report = (fast_run.dir / "REPORT.md").read_text().splitlines()
    sections = [line[3:].strip() for line in report if line.startswith("## ")]
    figures = [line for line in report if re.match(r"!\[[^\]]*\]\([^)]+\)$", line.strip())]
    assert html.is_file() and sections and figures
    driver = browser
    with _evidence(driver, tmp_path):
        driver.get(html.as_uri())
        _wait(driver, 60, "the report loaded", lambda d: d.execute_script("return document.readyState") == "complete")
        images = _wait(driver, 30, "every image loaded or failed", lambda d: d.execute_script(
            "const imgs = Array.from(document.images);"
            "return imgs.every(i => i.complete) && imgs.map(i => ({src: i.src.slice(0, 80), width: i.naturalWidth}))"))
        driver.save_screenshot(str(tmp_path / "report.png"))
        assert images, "the report shows no image"
        broken = [i["src"] for i in images if not i["width"]]
        assert not broken, f"{len(broken)} of {len(images)} images do not load: {broken}"
        assert len(images) == len(figures), f"REPORT.md has {len(figures)} figures, the HTML {len(images)} images"
        headings = [h.text.replace("\u00b6", "").strip() for h in driver.find_elements(By.TAG_NAME, "h2")]
        assert headings == sections
