"""Edit instructions in Shapes World's words: "change the red circle to a blue square", "make the small red
circle blue", "turn X into Y", "move the red circle to the left of the blue square" (also put, place; above,
below, ...).

`parse_instruction` reads one into the object to change and what it becomes (or its new relation to another
object); `instruction_prompts` turns it into a source and a target caption, finding the object in a source
caption when one is given. `ShapesWorldInstructions` is the core's InstructionReader (`t2ikit.text.parser`)
made of the two; the edit reaches it through Shapes World's scene support (`t2ikit.world.edit_support`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from t2ikit.world import vocab
from t2ikit.world.caption import CaptionError, decompose, parse_caption, write_caption
from t2ikit.world.spec import Group, Relation, Spec


@dataclass(frozen=True)
class Instruction:
    text: str
    source: Group  # the object to change
    target: Group  # what it becomes
    source_phrase: str
    target_phrase: str
    relation: str | None = None  # a relation instruction ("move X to the left of Y"): X's new relation to Y
    other: Group | None = None  # Y of a relation instruction


_VERBS = ("change", "turn", "make", "replace", "swap", "transform", "convert", "recolour", "recolor")
_JOINERS = (" into ", " to ", " with ", " for ")


def group_from_phrase(phrase: str, what: str) -> Group:
    """A Group from a noun phrase ("the red circle", "a small blue square", "red circles"); ValueError names
    `what` part of the instruction cannot be read."""
    words = phrase.strip().rstrip(".").split()
    if words and words[0].lower() == "the":
        words = words[1:]
    if words and words[0].lower() not in ("a", "an", "one", "two", "three", "four"):
        plural = words[-1].lower() in vocab.PLURAL_SHAPES.values()
        words = (["two"] if plural else ["a"]) + words
    try:
        spec = parse_caption(" ".join(words))
    except CaptionError as err:
        raise ValueError(f"cannot read the {what} part {phrase.strip()!r} of the instruction as a Shapes World "
                         f"object: {str(err).splitlines()[0]}") from None
    if len(spec.groups) != 1 or spec.relations:
        raise ValueError(f"the {what} part {phrase.strip()!r} of the instruction must name one object, "
                         f"it names {len(spec.groups)}")
    return spec.groups[0]


def _target_group(phrase: str, source: Group) -> Group:
    """The target: a full object phrase, or attribute words that change the source ("blue", "a square", "large")."""
    words = [w for w in phrase.strip().rstrip(".").lower().split() if w not in ("a", "an", "the", "one")]
    if not words:
        raise ValueError(f"the target part {phrase.strip()!r} of the instruction is empty")
    changes = {}
    for w in words:
        if w in vocab.COLOURS:
            changes["colour"] = w
        elif w in vocab.SHAPES:
            changes["shape"] = w
        elif w in vocab.PLURAL_SHAPES.values():
            changes["shape"] = w[:-1]
        elif w in vocab.SIZE_WORDS:
            changes["size"] = vocab.SIZE_WORDS[w]
        else:
            raise ValueError(f"cannot read {w!r} in the target part {phrase.strip()!r} of the instruction: "
                             f"expected colours ({', '.join(vocab.COLOURS)}), shapes ({', '.join(vocab.SHAPES)}) "
                             f"or sizes ({', '.join(vocab.SIZE_WORDS)})")
    return replace(source, **changes)


_MOVE_VERBS = ("move", "put", "place")
_RELATION_WORDS = (("to the left of", "left of"), ("to the right of", "right of"), ("left of", "left of"),
                   ("right of", "right of"), ("above", "above"), ("over", "above"), ("below", "below"),
                   ("under", "below"), ("beneath", "below"))


def _parse_move(text: str, rest: str) -> Instruction:
    """"move the red circle to the left of the blue square": the object, its new relation, the other object."""
    lower = f" {rest.lower()} "
    found = [(lower.find(f" {w} "), w, r) for w, r in _RELATION_WORDS if lower.find(f" {w} ") >= 0]
    if not found:
        raise ValueError(f"cannot read the instruction {text!r}: expected a relation "
                         f"({', '.join(w for w, _ in _RELATION_WORDS)}) after the object, e.g. "
                         f"'move the red circle to the left of the blue square'")
    at, words, relation = min(found, key=lambda f: (f[0], -len(f[1])))
    source_phrase, other_phrase = rest[:max(at, 0)].strip(), rest[at + len(words) + 1:].strip()
    if not source_phrase:
        raise ValueError(f"cannot read the instruction {text!r}: no object to move before {words!r}")
    if not other_phrase:
        raise ValueError(f"cannot read the instruction {text!r}: no object after {words!r} to move it {relation}")
    source = group_from_phrase(source_phrase, "source")
    other = group_from_phrase(other_phrase, "reference object")
    return Instruction(text, source, source, source_phrase, f"{relation} {other_phrase}", relation, other)


def parse_instruction(text: str) -> Instruction:
    """Read "change the red circle to a blue square" / "make the red circle blue" / "turn X into Y", or a
    relation change "move the red circle to the left of the blue square" (also put, place; above, below...).

    ValueError names the part that cannot be read (the verb, the object to change, the target, the relation).
    """
    if not isinstance(text, str):
        raise TypeError(f"instruction must be a str; got {type(text).__name__}")
    s = " ".join(text.strip().split())
    m = re.match(r"(?i)^(\w+)\s+(.*)$", s)
    if m is not None and m.group(1).lower() in _MOVE_VERBS:
        return _parse_move(text, m.group(2))
    if m is None or m.group(1).lower() not in _VERBS:
        first = m.group(1) if m else s
        raise ValueError(f"cannot read the instruction {text!r}: it must start with a verb "
                         f"({', '.join(_VERBS + _MOVE_VERBS)}), not {first!r}; e.g. 'change the red circle to a "
                         f"blue square' or 'move the red circle to the left of the blue square'")
    rest = m.group(2)
    lower = f" {rest.lower()} "
    cut = [(lower.find(j), j) for j in _JOINERS if lower.find(j) >= 0]
    if cut:
        at, joiner = min(cut)
        source_phrase, target_phrase = rest[:max(at - 1, 0)], rest[at - 1 + len(joiner):]
    else:  # "make the red circle blue": the longest object phrase, then attribute words
        words = rest.split()
        for k in range(len(words) - 1, 0, -1):
            try:
                group_from_phrase(" ".join(words[:k]), "source")
            except ValueError:
                continue
            source_phrase, target_phrase = " ".join(words[:k]), " ".join(words[k:])
            break
        else:
            raise ValueError(f"cannot read the instruction {text!r}: expected '<verb> <object> to <target>', "
                             f"e.g. 'change the red circle to a blue square'; no ' to '/' into ' found")
    source = group_from_phrase(source_phrase, "source")
    try:
        target = group_from_phrase(target_phrase, "target")
        if target.count != source.count and not re.match(r"(?i)\s*(two|three|four)\b", target_phrase):
            target = replace(target, count=source.count)
    except ValueError:
        target = _target_group(target_phrase, source)
    if target == source:
        raise ValueError(f"the instruction changes nothing: {target_phrase.strip()!r} is what the object already is")
    return Instruction(text, source, target, source_phrase.strip(), target_phrase.strip())


def write_group(group: Group) -> str:
    """The canonical phrase of one object ("a red circle")."""
    return write_caption(Spec((group,)))


def instruction_prompts(instruction: Instruction | str, source_prompt: str | None = None) -> tuple[str, str]:
    """(source prompt, target prompt) of an instruction; the object is found in `source_prompt` if given."""
    ins = parse_instruction(instruction) if isinstance(instruction, str) else instruction
    if ins.relation is not None:
        return _relation_prompts(ins, source_prompt)
    if source_prompt is None:
        return write_group(ins.source), write_group(ins.target)
    try:
        spec = parse_caption(source_prompt)
        parts = decompose(source_prompt)
    except CaptionError as err:
        raise ValueError(f"the source prompt {source_prompt!r} is not a Shapes World caption, so the "
                         f"instruction's object cannot be found in it: {str(err).splitlines()[0]}") from None
    s = ins.source
    for span in parts.objects:
        g = spec.groups[span.ref[0]]
        if (g.colour, g.shape) == (s.colour, s.shape) and (s.size is None or g.size == s.size):
            new = write_group(replace(ins.target, count=g.count))
            if g.count == 1 and span.text.split()[0].lower() == "one":
                new = "one " + new.split(" ", 1)[1]
            target = source_prompt[:span.start] + new + source_prompt[span.end:]
            return source_prompt, target
    raise ValueError(f"the instruction's object {ins.source_phrase!r} is not in the source prompt {source_prompt!r}")


def _relation_prompts(ins: Instruction, source_prompt: str | None) -> tuple[str, str]:
    """A relation instruction's prompts: the target says "<object> <relation> <other>"; the source is
    `source_prompt` (which must name both objects) or the two objects joined by "and"."""
    pair = (ins.source, ins.other)
    target = write_caption(Spec(pair, (Relation(0, ins.relation, 1),)))
    if source_prompt is None:
        return write_caption(Spec(pair)), target
    try:
        spec = parse_caption(source_prompt)
    except CaptionError as err:
        raise ValueError(f"the source prompt {source_prompt!r} is not a Shapes World caption, so the "
                         f"instruction's objects cannot be found in it: {str(err).splitlines()[0]}") from None
    seen = {(g.colour, g.shape) for g in spec.groups}
    for g in pair:
        if (g.colour, g.shape) not in seen:
            raise ValueError(f"the instruction's object '{g.colour} {g.shape}' is not in the source prompt "
                             f"{source_prompt!r}")
    if any((spec.groups[r.subject], spec.groups[r.object], r.relation) == (ins.source, ins.other, ins.relation)
           for r in spec.relations):
        raise ValueError(f"the instruction changes nothing: the source prompt {source_prompt!r} already has "
                         f"{ins.source_phrase!r} {ins.relation} the other object")
    return source_prompt, target



class ShapesWorldInstructions:
    """The InstructionReader (`t2ikit.text.parser`) of Shapes World's instructions."""

    name = "shapes-world"

    def read(self, instruction: str) -> Instruction:
        return parse_instruction(instruction)

    def prompts(self, instruction: Instruction | str, source_prompt: str | None = None) -> tuple[str, str]:
        return instruction_prompts(instruction, source_prompt)


__all__ = ["Instruction", "ShapesWorldInstructions", "group_from_phrase", "instruction_prompts", "parse_instruction",
           "write_group"]
