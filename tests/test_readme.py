"""Every Python block of the README and of ``docs/`` runs as written: the blocks of one file in order, in one
namespace, from the project root.

The documented fixture (the README says so): ``ama.load_images`` keeps the first image of what it is given and
``ama.marginal_attack`` runs at most 5 passes, so that the blocks run in seconds on the real model; nothing else is
changed. A snippet that breaks (a renamed argument, an undefined name) fails ``make test``.
"""
from __future__ import annotations

import os
import re

import pytest

import ama
from ama.paths import ROOT

pytestmark = pytest.mark.slow
DOCUMENTS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def python_blocks(path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / path).read_text(), re.S)


def test_the_readme_has_python_blocks():
    assert len(python_blocks("README.md")) >= 3


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
