"""Shapes World's caption grammar as the core's Parser (`t2ikit.text.parser`), registered as "shapes-world".

Each object phrase of a caption ("a small red circle") is one group, in the order the caption names them;
its noun is the shape word ("circle", "circles"). Relations are the caption's, with canonical names
("to the left of" reads as "left of").
"""

from __future__ import annotations

from t2ikit.text.parser import ObjectPhrase, PromptParseError, PromptStructure, RelationPhrase, register_parser
from t2ikit.world.caption import CaptionError, decompose, parse_caption
from t2ikit.world.vocab import NUMBER_WORDS


# determiners and counts
_NOT_ATTRIBUTES = frozenset({"a", "an", "the", *NUMBER_WORDS.values(), *map(str, NUMBER_WORDS)})


class ShapesWorldParser:
    """Reads Shapes World captions (`t2ikit.world.caption`); PromptParseError points at the first unreadable word."""

    name = "shapes-world"

    def parse(self, prompt: str) -> PromptStructure:
        try:
            spec = parse_caption(prompt)
        except CaptionError as err:
            raise PromptParseError(str(err)) from None
        objects = []
        for span in decompose(prompt).objects:  # the noun phrase ends with its shape word
            words = span.text.split()
            group = spec.groups[span.ref[0]]
            attributes = tuple(w for w in words[:-1] if w.lower() not in _NOT_ATTRIBUTES)
            objects.append(ObjectPhrase(span.start, span.end, span.end - len(words[-1]), span.end, span.ref[0],
                                        noun=group.shape, count=group.count, attributes=attributes))
        relations = tuple(RelationPhrase(r.subject, r.relation, r.object) for r in spec.relations)
        return PromptStructure(prompt, tuple(objects), relations)


register_parser("shapes-world", ShapesWorldParser)

__all__ = ["ShapesWorldParser"]
