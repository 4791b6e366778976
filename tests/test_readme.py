"""Every Python block of the README and of ``docs/`` runs as written: the blocks of one file in order, in one
namespace, from the project root; so does every line of a block fenced as ```` ```bash runnable ````.

The documented fixture (the README says so): ``ama.load_images`` keeps the first image of what it is given and
``ama.marginal_attack`` runs at most 5 passes, so that the blocks run in seconds on the real model; a runnable shell
line has ``results/`` pointed into a temporary folder, and its ``python -m ama attack`` at most 2 passes (``--n_iter``
appended: the last value wins) and ``attack``/``cam`` without ``--out`` an ``--out`` there; nothing else is changed.
A snippet that breaks (a renamed argument, an undefined name, a missing file) fails ``make test``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

import ama
from ama.paths import ROOT
from ama.report.evidence import BLOCKS, block_of

pytestmark = pytest.mark.slow
DOCUMENTS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def python_blocks(path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / path).read_text(), re.S)


def runnable_lines(path) -> list[str]:
    """The commands of the ```` ```bash runnable ```` blocks of ``path``: comments dropped, continuations joined."""
    lines = []
    for block in re.findall(r"```bash runnable\n(.*?)```", (ROOT / path).read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def with_fixture(line: str, tmp) -> str:
    line = re.sub(r"(?<![\w/])results/", f"{tmp}/results/", line)
    command = re.search(r"-m ama (attack|cam)\b", line)
    if command and "--out" not in line:
        line += f" --out {tmp}/results/cli/{command.group(1)}"
    if command and command.group(1) == "attack":
        line += " --n_iter 2"
    return line


def test_the_readme_has_python_blocks_and_runnable_lines():
    assert len(runnable_lines("README.md")) >= 4
    assert python_blocks("README.md") and sum(len(python_blocks(d)) for d in DOCUMENTS) >= 5


def test_the_generated_block_is_found_and_replaced():
    from ama.report.evidence import replace_block

    page = "a\n<!-- x: start -->\nkept\n<!-- x: end -->\nb"
    assert block_of(page, "x") == "kept" and replace_block(page, "x", "new") == page.replace("kept", "new")
    with pytest.raises(ValueError, match="add the block's two marker lines"):
        block_of(page, "y")


def test_the_listed_references_are_committed():
    """docs/EVIDENCE.md's table quotes every full reference; the README the evidence reference."""
    from ama.report.evidence import EVIDENCE_PROFILE, profile_reference
    from ama.studies.claims import reference_runs

    assert (profile_reference(EVIDENCE_PROFILE) / "run.json").is_file()
    runs = reference_runs()
    assert len(runs) >= 3 and all((path / "run.json").is_file() for path in runs.values())


@pytest.mark.parametrize("page, marker", list(BLOCKS))
def test_every_generated_block_is_what_its_reference_gives(page, marker):
    """A page's generated block (the README's claims at a glance, docs/EVIDENCE.md's claims, evidence run and padding
    lines, docs/ATTACK.md's optimiser table and ingredient study) is ``ama.report.evidence.BLOCKS``' function of the
    committed references, not typed: after ``make reference``, ``tools/update_generated_docs.py`` writes it again."""
    assert block_of((ROOT / page).read_text(), marker) == BLOCKS[page, marker]()


def test_the_evidence_run_block_quotes_every_claim_and_its_time():
    from ama.report.evidence import EVIDENCE_PROFILE, evidence_lines, profile_reference

    from ama.studies.registry import studies

    run = profile_reference(EVIDENCE_PROFILE)
    text = "\n".join(evidence_lines(run))
    assert all(f"**Claim {n}.**" in text for n in (1, 2, 3)) and "03_adversarial_marginal_attack" in text
    computed = json.loads((run / "params.json").read_text())["studies"]
    assert computed and all(f"**{studies()[name].question}**" in text for name in computed
                            if studies()[name].section and studies()[name].section(run) is not None)


def test_the_fixture_only_shortens_and_redirects(tmp_path):
    line = ".venv/bin/python -m ama attack --images data/imagenet --e 1 2 --out results/attack-run"
    assert with_fixture(line, tmp_path) == (f".venv/bin/python -m ama attack --images data/imagenet --e 1 2 --out "
                                            f"{tmp_path}/results/attack-run --n_iter 2")
    assert with_fixture(".venv/bin/python -m ama cam --image a.jpg", tmp_path).endswith(
        f"--out {tmp_path}/results/cli/cam")


@pytest.mark.parametrize("document", [d for d in DOCUMENTS if runnable_lines(d)])
def test_every_runnable_shell_line_runs(document, tmp_path):
    for line in runnable_lines(document):
        proc = subprocess.run(["bash", "-c", with_fixture(line, tmp_path)], cwd=ROOT, capture_output=True, text=True,
                              timeout=600)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        assert proc.returncode == 0, f"{document}: `{line}` fails (exit {proc.returncode}): {' / '.join(tail)}"
    assert any((tmp_path / "results").rglob("*.json"))  # they wrote their outputs, into the temporary folder


@pytest.mark.parametrize("document", [d for d in DOCUMENTS if python_blocks(d)])
def test_every_python_block_runs(document, monkeypatch):
    load_images, attack = ama.load_images, ama.marginal_attack

    def one_image(source, model=None, n=None, **kw):
        return load_images(source, model, n=1, **kw)

    def few_passes(model, x, *args, n_iter=100, **kw):
        return attack(model, x, *args, n_iter=min(n_iter, 5), **kw)

    monkeypatch.setattr(ama, "load_images", one_image)
    monkeypatch.setattr(ama, "marginal_attack", few_passes)
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    for k, block in enumerate(python_blocks(document)):
        try:
            exec(compile(block, f"{document} python block {k + 1}", "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - the block and its error, for the reader
            pytest.fail(f"{document}, python block {k + 1} fails: {type(err).__name__}: {err}\n{block}")
    assert os.getcwd() == str(ROOT)


def test_the_evidence_pages_models_block_is_the_models_reference():
    """docs/EVIDENCE.md's block on the models run: the *Across models* table and the across_models study's paired
    comparisons on the ``PROFILE=models`` reference, written by ``tools/update_generated_docs.py``; SCIENCE.md's
    accuracies of the padding variants are the padding study's reference's (the 700 images its -recal models were not
    re-estimated on)."""
    import pandas as pd

    from ama.params import RunParams
    from ama.report.evidence import models_block

    run = ROOT / "results" / "reference" / RunParams.from_strings("models").run_name()
    block = models_block(run)
    assert "3 models" in block and "lite0 vs lite2" in block
    padding = ROOT / "results" / "reference" / RunParams.from_strings("padding_leverage").run_name()
    acc = pd.read_csv(padding / "tables" / "clean_accuracy.csv").set_index("model").top1
    science = " ".join((ROOT / "docs" / "SCIENCE.md").read_text().split())
    quoted = ", ".join(f"{100 * acc[m]:.1f}% {w}" for m, w in (("lite0-zero-pad", "symmetric zeros"),
                                                             ("lite0-reflect-pad", "reflect"),
                                                             ("lite0-replicate-pad", "replicate")))
    assert f"{100 * acc['lite0']:.1f}% top-1 as trained, {quoted}" in science


def test_every_reference_a_page_names_is_committed():
    """A path under ``results/reference/`` that README.md or a page of ``docs/`` names (a link, a path) exists, and a
    run's folder holds its ``run.json``: a regenerated reference under a new name cannot leave a page pointing at the
    old one."""
    named = {(doc, m.rstrip("./")) for doc in DOCUMENTS
             for m in re.findall(r"results/reference/([A-Za-z0-9_./-]+)", (ROOT / doc).read_text())}
    assert named
    reference = ROOT / "results" / "reference"

    def committed(path: str) -> bool:  # a run's folder (no file named in it) holds its run.json
        return (reference / path).exists() and ("/" in path or (reference / path / "run.json").is_file())

    missing = [f"{doc}: results/reference/{path}" for doc, path in sorted(named) if not committed(path)]
    assert not missing, "named but not committed: " + "; ".join(missing)


def minutes(text: str) -> float:
    """``"1 h 27 min 18 s"``, ``"1 h 52 min"``, ``"87 min"`` -> minutes."""
    parts = dict((unit, float(value)) for value, unit in re.findall(r"(\d+) (h|min|s)\b", text))
    return 60 * parts.get("h", 0) + parts.get("min", 0) + parts.get("s", 0) / 60


def test_minutes_reads_the_pages_durations():
    assert (minutes("1 h 27 min 18 s"), minutes("1 h 52 min"), minutes("87 min")) == (87.3, 112, 87)


def test_a_profiles_quoted_size_and_time_are_its_references():
    """The README's commented profile commands (``# ...: 150 images, 1 h 20 min here``) and docs/EVIDENCE.md's
    measured times (``time make reference PROFILE=...``: **...**) quote the committed reference of that profile: its
    image count, and its notebooks' wall times from ``run.json`` plus at most 6 minutes (the image selection and make's
    own steps, which ``run.json`` does not time)."""
    from ama.params import PROFILES
    from ama.report.evidence import profile_reference

    quoted = re.findall(r"make (?:reproduce|study) PROFILE=(\w+).*# [^\n]*?(\d+) images, ([\dhmins ]+?) here",
                        (ROOT / "README.md").read_text())
    quoted += [(profile, None, when) for profile, when in re.findall(
        r"`time make (?:reference|study) PROFILE=(\w+)[^`]*`[^*]*?\*\*([\dhmins ]+?)[*:]",
        (ROOT / "docs/EVIDENCE.md").read_text())]
    assert {profile for profile, _, _ in quoted} == set(PROFILES), quoted
    for profile, n, when in quoted:
        run = json.loads((profile_reference(profile) / "run.json").read_text())
        if n is not None:
            assert int(n) == run["params"]["n_images"], (profile, n)
        notebooks = sum(v["wall_s"] for v in run["notebooks"].values()) / 60
        assert notebooks - 1 <= minutes(when) <= notebooks + 6, (profile, when, f"notebooks {notebooks:.1f} min")
