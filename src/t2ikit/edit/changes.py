"""What an edit changes: the words of the source prompt the target replaces or drops, and those it brings in."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection

_WORD = re.compile(r"[a-z]+")


def changed_spans(source: str, target: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Char spans (start, end) of the words of `source` that the target replaces or drops, and of the words
    the target brings in ("a" and "an" count as one word: "a red circle" -> "an orange circle" changes only
    the colour)."""
    ms, mt = (list(_WORD.finditer(p.lower())) for p in (source, target))
    a, b = ([{"an": "a"}.get(m.group(), m.group()) for m in ms_] for ms_ in (ms, mt))
    removed, added = [], []
    for op, i0, i1, j0, j1 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op != "equal":
            removed += [m.span() for m in ms[i0:i1]]
            added += [m.span() for m in mt[j0:j1]]
    return removed, added


def changed_words(source: str, target: str) -> tuple[list[str], list[str]]:
    """The words of `source` that the target replaces or drops, and the words the target brings in
    (`changed_spans`' words, lower case, "an" read as "a")."""
    removed, added = changed_spans(source, target)
    word = lambda p, i, j: {"an": "a"}.get(p[i:j].lower(), p[i:j].lower())  # noqa: E731
    return [word(source, i, j) for i, j in removed], [word(target, i, j) for i, j in added]


def outlines_kept(source: str, target: str, colours: Collection[str]) -> bool:
    """True when the edit changes only words of `colours` (a scene support's colour words), so every
    outline of the source stays right."""
    removed, added = changed_words(source, target)
    return bool(removed or added) and all(w in colours for w in removed + added)


__all__ = ["changed_spans", "changed_words", "outlines_kept"]
