"""Rewrite the documents' generated blocks from the committed references (after ``make reference``): every block of
:data:`ama.report.evidence.BLOCKS` (the README's *What the kit found*; docs/EVIDENCE.md's table of the references' claims,
the evidence run's findings and the padding study's; docs/ATTACK.md's optimiser table and ingredient study).

    .venv/bin/python tools/update_generated_docs.py

``tests/test_readme.py`` fails while a block differs from what this writes.
"""
from __future__ import annotations

from ama.paths import ROOT, atomic_write
from ama.report.evidence import BLOCKS, replace_block

if __name__ == "__main__":
    for (page, marker), make in BLOCKS.items():
        path = ROOT / page
        old = path.read_text()
        new = replace_block(old, marker, make())
        if new != old:
            atomic_write(path, new)
        print(f"{page} ({marker}): {'updated' if new != old else 'unchanged'}")
