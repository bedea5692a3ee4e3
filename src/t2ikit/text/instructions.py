"""Edit instructions in English, read with the English prompt parser (`t2ikit.text.english`).

    change / turn / transform / convert X to / into Y     "change the horse to a zebra"
    replace X with / by Y, swap X for / with Y           "replace the cat with a dog"
    make / recolor X Y                                   "make the car red" (Y: attribute words)
    move / put / place X <relation> Z                    "move the cup to the left of the plate"

`EnglishInstructions` is the core's InstructionReader (`t2ikit.text.parser`), registered for the "english"
parser with `register_instruction_reader`: an edit on a model that reads English prompts reads its
instructions with it. `prompts(instruction, source_prompt)` finds the instruction's object in the source
prompt (by its noun, and its attributes when the instruction names some) and rewrites that phrase; without a
source prompt the two prompts are the object's phrase before and after.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from t2ikit.text import lexicon as lx
from t2ikit.text.english import EnglishParser
from t2ikit.text.parser import ObjectPhrase, PromptParseError, register_instruction_reader

_CHANGE = ("change", "turn", "transform", "convert", "replace", "swap", "make", "recolor", "recolour")
_MOVE = ("move", "put", "place")
_JOINERS = {"change": ("into", "to"), "turn": ("into", "to"), "transform": ("into", "to"), "convert": ("into", "to"),
            "replace": ("with", "by"), "swap": ("for", "with"), "recolor": ("to",), "recolour": ("to",),
            "make": ("into",)}
_PARSER = EnglishParser()


@dataclass(frozen=True)
class EnglishInstruction:
    text: str
    verb: str
    source_phrase: str  # "the horse"
    noun: str  # the source object's noun lemma ("horse")
    attributes: tuple[str, ...]  # the source phrase's attributes ("red" of "the red car")
    target_phrase: str = ""  # "a zebra", or attribute words ("red") of a make / recolor
    relation: str | None = None  # a move: the new relation (text.parser.RELATIONS) to `other_phrase`
    other_phrase: str = ""
    other_noun: str = ""  # the reference object's noun lemma

    @property
    def attribute_only(self) -> bool:
        """The target is attribute words only ("make the car red"): the object keeps its noun."""
        return self.relation is None and not _objects(self.target_phrase)


def _objects(text: str) -> tuple[ObjectPhrase, ...]:
    try:
        return _PARSER.parse(text).objects if text.strip() else ()
    except PromptParseError:
        return ()


def _one_object(text: str, phrase: str, what: str) -> ObjectPhrase:
    objects = _objects(phrase)
    if len(objects) != 1:
        raise ValueError(f"cannot read the instruction {text!r}: the {what} part {phrase!r} must name one object, "
                         f"it names {len(objects)}")
    return objects[0]


def read_instruction(text: str) -> EnglishInstruction:
    """Read an English edit instruction (module docstring); ValueError names the part that cannot be read."""
    if not isinstance(text, str):
        raise TypeError(f"instruction must be a str; got {type(text).__name__}")
    s = " ".join(text.strip().rstrip(".").split())
    m = re.match(r"^(\w+)\s+(.+)$", s)
    verb = m.group(1).lower() if m else s.lower()
    if m is None or verb not in _CHANGE + _MOVE:
        raise ValueError(f"cannot read the instruction {text!r}: it must start with one of "
                         f"{', '.join(_CHANGE + _MOVE)}, not {verb!r}; e.g. 'change the horse to a zebra', "
                         "'make the car red', 'move the cup to the left of the plate'")
    rest = m.group(2)
    if verb in _MOVE:
        return _read_move(text, verb, rest)
    words = rest.split()
    cut = next((i for i, w in enumerate(words) if w.lower() in _JOINERS[verb] and i > 0), None)
    if cut is not None:
        source_phrase, target_phrase = " ".join(words[:cut]), " ".join(words[cut + 1:])
    elif verb in ("make", "recolor", "recolour"):  # "make the car red": the object, then attribute words
        source_phrase, target_phrase = _split_attributes(text, words)
    else:
        raise ValueError(f"cannot read the instruction {text!r}: expected '{verb} <object> "
                         f"{_JOINERS[verb][0]} <target>', e.g. 'change the horse to a zebra'")
    if not target_phrase:
        raise ValueError(f"cannot read the instruction {text!r}: nothing after the object says what it becomes")
    source = _one_object(text, source_phrase, "object")
    targets = _objects(target_phrase)
    if len(targets) > 1:
        raise ValueError(f"cannot read the instruction {text!r}: the target part {target_phrase!r} must name one "
                         f"object or attributes, it names {len(targets)}")
    return EnglishInstruction(text, verb, source_phrase, source.noun, source.attributes, target_phrase)


def _split_attributes(text: str, words: list[str]) -> tuple[str, str]:
    """"the red car blue" -> ("the red car", "blue"): the longest leading object phrase the words after which are
    all attribute words."""
    for k in range(len(words) - 1, 0, -1):
        tail = [w.lower() for w in words[k:]]
        if all(w in lx.ADJECTIVES or w in lx.PARTICIPLE_ADJECTIVES or w == "and" for w in tail) \
                and len(_objects(" ".join(words[:k]))) == 1:
            return " ".join(words[:k]), " ".join(words[k:])
    raise ValueError(f"cannot read the instruction {text!r}: expected 'make <object> <attributes>', e.g. 'make the "
                     "car red'; no attribute word (a colour, size, material, ...) ends it")


def _read_move(text: str, verb: str, rest: str) -> EnglishInstruction:
    s = _PARSER.parse(rest) if rest.strip() else None
    if s is None or not s.relations:
        raise ValueError(f"cannot read the instruction {text!r}: expected '{verb} <object> <relation> <object>' "
                         "with a relation (left of, right of, above, below, near, in front of, behind), e.g. "
                         "'move the cup to the left of the plate'")
    r = s.relations[0]
    first = {}
    for o in s.objects:
        first.setdefault(o.group, o)
    source, other = first[r.subject], first[r.object]
    return EnglishInstruction(text, verb, rest[source.start:source.end], source.noun, source.attributes,
                              relation=r.relation, other_phrase=rest[other.start:other.end], other_noun=other.noun)


def _indefinite(phrase: str) -> str:
    """"the horse" -> "a horse": a phrase as it stands in a prompt of its own."""
    words = phrase.split()
    if words and words[0].lower() in ("the", "this", "that"):
        words = words[1:]
    if not words:
        return phrase
    if words[0].lower() in lx.DETERMINERS or words[0].lower() in lx.NUMBERS or words[0].isdigit():
        return " ".join(words)
    return ("an " if words[0][0].lower() in "aeiou" else "a ") + " ".join(words)


def _recoloured(prompt: str, o: ObjectPhrase, attributes: str) -> str:
    """The phrase of `o` with `attributes` before its noun; the words of the same kind it had (its colour, for a
    new colour) are dropped."""
    new = [w.lower() for w in attributes.split() if w.lower() != "and"]
    kinds = [k for k in (lx.COLOURS, lx.SIZES, lx.MATERIALS, lx.TEXTURES, lx.SHAPES) if any(w in k for w in new)]
    head = prompt[o.start:o.noun_start].split()
    kept = [w for w in head if not any(w.lower() in k for k in kinds) and w.lower() not in new]
    return " ".join(kept + attributes.split() + [prompt[o.noun_start:o.noun_end]])


def _find(source_prompt: str, ins: EnglishInstruction) -> tuple[ObjectPhrase, object]:
    """The object of `source_prompt` the instruction names (its noun; its attributes when it names some)."""
    try:
        s = _PARSER.parse(source_prompt)
    except PromptParseError as err:
        raise ValueError(f"the source prompt {source_prompt!r} cannot be read: {err}") from None
    found = [o for o in s.objects if o.noun == ins.noun and set(ins.attributes) <= set(o.attributes)]
    if not found:
        nouns = ", ".join(dict.fromkeys(o.noun for o in s.objects)) or "none"
        raise ValueError(f"the instruction's object {ins.source_phrase!r} is not in the source prompt "
                         f"{source_prompt!r} (its objects: {nouns})")
    if len({o.group for o in found}) > 1:
        raise ValueError(f"the instruction's object {ins.source_phrase!r} names {len(found)} objects of the source "
                         f"prompt {source_prompt!r}; name its attributes too ('the red car')")
    return found[0], s


def instruction_prompts(ins: EnglishInstruction, source_prompt: str | None = None) -> tuple[str, str]:
    """(source prompt, target prompt) of an instruction (module docstring)."""
    if ins.relation is not None:
        return _move_prompts(ins, source_prompt)
    if source_prompt is None:
        source = _indefinite(ins.source_phrase)
        if ins.attribute_only:
            s = _PARSER.parse(source)
            return source, _recoloured(source, s.objects[0], ins.target_phrase)
        return source, _indefinite(ins.target_phrase)
    o, _ = _find(source_prompt, ins)
    if ins.attribute_only:
        phrase = _recoloured(source_prompt, o, ins.target_phrase)
    else:  # a target with its own count keeps it ("two dogs"); else it takes the old object's: "two cats" -> "two dogs"
        t = _objects(ins.target_phrase)[0]
        words = ins.target_phrase[t.start:t.end].split()
        own = words[0].lower()
        if own in ("a", "an", "the") or not (own in lx.DETERMINERS or own in lx.NUMBERS or own.isdigit()):
            words = words[1:] if own in ("a", "an", "the") else words
            words[-1] = plural(t.noun.split()[-1]) if o.count != 1 else t.noun.split()[-1]
            determiner = source_prompt[o.start:o.noun_start].split()[:1]
            if determiner and (determiner[0].lower() in lx.DETERMINERS or determiner[0].lower() in lx.NUMBERS
                               or determiner[0].isdigit()):
                words = determiner + words
            elif o.count == 1:
                words = ["a"] + words
            if words[0].lower() in ("a", "an"):
                words[0] = "an" if words[1][0].lower() in "aeiou" else "a"
        phrase = " ".join(words)
    return source_prompt, source_prompt[:o.start] + phrase + source_prompt[o.end:]


def plural(noun: str) -> str:
    """"dog" -> "dogs", "box" -> "boxes", "puppy" -> "puppies", "mouse" -> "mice" (the irregular table)."""
    low = noun.lower()
    irregular = {lemma: form for form, lemma in lx.IRREGULAR_PLURALS.items()}
    if low in irregular:
        return irregular[low]
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _move_prompts(ins: EnglishInstruction, source_prompt: str | None) -> tuple[str, str]:
    words = next(p for p, r in lx.RELATION_PHRASES.items() if r == ins.relation and p.startswith(
        "to the" if ins.relation in ("left of", "right of") else ""))
    if source_prompt is None:
        source = f"{_indefinite(ins.source_phrase)} and {_indefinite(ins.other_phrase)}"
        return source, f"{_indefinite(ins.source_phrase)} {words} {_indefinite(ins.other_phrase)}"
    o, s = _find(source_prompt, ins)
    other = [x for x in s.objects if x.noun == ins.other_noun and x.group != o.group]
    if not other:
        raise ValueError(f"the instruction's reference object {ins.other_phrase!r} is not in the source prompt "
                         f"{source_prompt!r}")
    for r in s.relations:  # a stated relation between the two: its words change
        if {r.subject, r.object} == {o.group, other[0].group} and r.start is not None:
            if r.subject == o.group and r.relation == ins.relation:
                raise ValueError(f"the instruction changes nothing: {source_prompt!r} already has "
                                 f"{ins.source_phrase!r} {ins.relation} {ins.other_phrase!r}")
            if r.subject == o.group:
                return source_prompt, source_prompt[:r.start] + words + source_prompt[r.end:]
    return source_prompt, (f"{source_prompt}, {source_prompt[o.start:o.end]} {words} "
                           f"{source_prompt[other[0].start:other[0].end]}")


class EnglishInstructions:
    """The InstructionReader (`t2ikit.text.parser`) of English edit instructions."""

    name = "english"

    def read(self, instruction: str) -> EnglishInstruction:
        return read_instruction(instruction)

    def prompts(self, instruction: EnglishInstruction | str, source_prompt: str | None = None) -> tuple[str, str]:
        if isinstance(instruction, str):
            instruction = read_instruction(instruction)
        return instruction_prompts(instruction, source_prompt)


register_instruction_reader("english", EnglishInstructions)

__all__ = ["EnglishInstruction", "EnglishInstructions", "instruction_prompts", "plural", "read_instruction"]
