"""Rewrite the documents' generated blocks from the committed references (after ``make reference``):
the README's *Results at a glance*, docs/EVIDENCE.md's table of the references' claims and its lines on the padding
variants (the ``PROFILE=models`` reference).

    .venv/bin/python tools/update_generated_docs.py

``tests/test_readme.py`` fails while a block differs from what this writes.
"""
from __future__ import annotations

from ama.causes import padding_summary
from ama.claims import glance_runs, glance_table, reference_runs
from ama.params import RunParams
from ama.paths import ROOT, atomic_write

MODELS_REFERENCE = ROOT / "results" / "reference" / RunParams.from_strings("models").run_name()
BLOCKS = {("README.md", "results-at-a-glance"): lambda: glance_table(glance_runs()),
          ("docs/EVIDENCE.md", "reference-claims"): lambda: glance_table(reference_runs()),
          ("docs/EVIDENCE.md", "padding-variants"): lambda: "\n".join(f"- {line}" for line in
                                                                   padding_summary(MODELS_REFERENCE))}


def replace_block(text: str, marker: str, content: str) -> str:
    """``text`` with what lies between ``<!-- marker: start -->`` and ``<!-- marker: end -->`` replaced."""
    start, end = f"<!-- {marker}: start -->\n", f"\n<!-- {marker}: end -->"
    head, rest = text.split(start, 1)
    return head + start + content + end + rest.split(end, 1)[1]


if __name__ == "__main__":
    for (page, marker), make in BLOCKS.items():
        path = ROOT / page
        old = path.read_text()
        new = replace_block(old, marker, make())
        if new != old:
            atomic_write(path, new)
        print(f"{page} ({marker}): {'updated' if new != old else 'unchanged'}")
