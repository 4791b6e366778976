"""How readable a Markdown report is: its words, and each paragraph's words and numbers (issue 41's limits).

A paragraph is a block of prose between blank lines, each list item counted alone; tables, figures, headings, code
blocks and HTML comments are not prose. A number is a figure standing alone (``12``, ``0.83``, ``+12``, ``40%``), not
part of a name (``lite0``, ``e1``). :func:`check` states each limit a text breaks, one line each; the tests hold the
committed references' reports to :data:`LIMITS` (the default run's) and :data:`OTHER_LIMITS` (the others').
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["LIMITS", "OTHER_LIMITS", "Limits", "check", "numbers", "paragraphs", "words"]

NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?%?(?![\w])")


@dataclass(frozen=True)
class Limits:
    """At most ``words`` words in the whole text (None: no limit), ``paragraph_words`` words and ``paragraph_numbers``
    numbers in a paragraph."""

    words: int | None
    paragraph_words: int
    paragraph_numbers: int


LIMITS = Limits(2500, 120, 12)  # the default run's REPORT.md
OTHER_LIMITS = Limits(None, 150, 12)  # the other references' reports


def words(text: str) -> int:
    """The words of ``text``, tables' cells included: the whitespace-separated tokens that hold a letter or a digit
    (a table's ``|`` and ``---`` rules are not words; ``wc -w`` counts them)."""
    return sum(1 for token in text.split() if re.search(r"[A-Za-z0-9]", token))


def numbers(text: str) -> int:
    """How many numbers ``text`` holds (see the module's docstring)."""
    return len(NUMBER.findall(text))


def paragraphs(markdown: str) -> list[str]:
    """The prose paragraphs of ``markdown`` (each list item alone), in order."""
    out, block, fenced = [], [], False

    def flush():
        if block:
            out.append(" ".join(block).strip())
            block.clear()

    for line in markdown.splitlines():
        s = line.strip()
        if s.startswith("```"):
            flush()
            fenced = not fenced
            continue
        if fenced:
            continue
        if not s or s.startswith(("|", "![", "#", "<!--")):
            flush()
            continue
        if re.match(r"^([-*]|\d+\.)\s", s):
            flush()
        block.append(s)
    flush()
    return [p for p in out if p]


def check(markdown: str, limits: Limits = LIMITS) -> list[str]:
    """Every limit of ``limits`` that ``markdown`` breaks, one line each (the paragraph's start quoted); empty when
    it keeps them all."""
    problems = []
    if limits.words is not None and words(markdown) > limits.words:
        problems.append(f"{words(markdown)} words (at most {limits.words})")
    for p in paragraphs(markdown):
        w, n = words(p), numbers(p)
        if w > limits.paragraph_words or n > limits.paragraph_numbers:
            problems.append(f"a paragraph of {w} words and {n} numbers (at most {limits.paragraph_words} and "
                            f"{limits.paragraph_numbers}): {p[:80]}...")
    return problems
