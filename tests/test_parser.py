"""The Parser interface (t2ikit.text.parser) and Shapes World's caption grammar behind it (t2ikit.world.parser)."""

import pytest

from t2ikit.text.parser import (
    ObjectPhrase,
    Parser,
    PromptParseError,
    RelationPhrase,
    get_parser,
    parser_names,
    register_parser,
)
from t2ikit.world.parser import ShapesWorldParser


def _texts(structure):
    p = structure.prompt
    return [(p[o.start:o.end], p[o.noun_start:o.noun_end], o.group) for o in structure.objects]


def test_importing_t2ikit_registers_the_shapes_world_parser():
    import t2ikit  # noqa: F401  (the composition root)

    assert "shapes-world" in parser_names()
    parser = get_parser("shapes-world")
    assert isinstance(parser, ShapesWorldParser) and isinstance(parser, Parser) and parser.name == "shapes-world"
    assert get_parser(parser) is parser and get_parser(None) is None


@pytest.mark.parametrize("prompt, objects, relations", [
    ("a red circle", [("a red circle", "circle", 0)], []),
    ("a small red circle to the left of two big blue squares, on a white background",
     [("a small red circle", "circle", 0), ("two big blue squares", "squares", 1)], [(0, "left of", 1)]),
    ("A green triangle over a pink diamond, which is beneath an orange circle, drawn in outline.",
     [("A green triangle", "triangle", 0), ("a pink diamond", "diamond", 1), ("an orange circle", "circle", 2)],
     [(0, "above", 1), (1, "below", 2)]),
    ("three yellow squares and a cyan circle",
     [("three yellow squares", "squares", 0), ("a cyan circle", "circle", 1)], []),
])
def test_captions_are_read_into_object_noun_and_relation_spans(prompt, objects, relations):
    s = ShapesWorldParser().parse(prompt)
    assert s.prompt == prompt and _texts(s) == objects and s.groups == len(objects)
    assert [(r.subject, r.relation, r.object) for r in s.relations] == relations
    assert all(isinstance(o, ObjectPhrase) for o in s.objects)
    assert all(isinstance(r, RelationPhrase) for r in s.relations)


def test_a_reference_back_is_a_second_mention_of_its_group():
    s = ShapesWorldParser().parse("red circle left of 2 tiny blue squares and a green triangle above the blue squares")
    assert _texts(s) == [("red circle", "circle", 0), ("2 tiny blue squares", "squares", 1),
                         ("a green triangle", "triangle", 2), ("the blue squares", "squares", 1)]
    assert s.groups == 3
    assert [(o.noun, o.count, o.attributes) for o in s.objects] == [
        ("circle", 1, ("red",)), ("square", 2, ("tiny", "blue")), ("triangle", 1, ("green",)),
        ("square", 2, ("blue",))]
    assert [(r.subject, r.relation, r.object) for r in s.relations] == [(0, "left of", 1), (2, "above", 1)]


@pytest.mark.parametrize("prompt, where", [
    ("a red blob", "expected a shape"),
    ("a shiny circle", "expected a colour"),
    ("", "empty caption"),
    ("a red circle left of", "'a', 'an' or a number word"),
    ("a red circle and a red circle", "impossible scene"),
    ("a red circle above the blue square", "no blue square was named before"),
])
def test_unreadable_captions_are_prompt_parse_errors(prompt, where):
    with pytest.raises(PromptParseError, match=where):
        ShapesWorldParser().parse(prompt)
    assert issubclass(PromptParseError, ValueError)


def test_the_registry_builds_by_name_and_refuses_unknown_names(monkeypatch):
    import t2ikit.text.parser as parser_module

    monkeypatch.setattr(parser_module, "_PARSERS", dict(parser_module._PARSERS))
    register_parser("mine", ShapesWorldParser)
    assert "mine" in parser_names() and isinstance(get_parser("mine"), ShapesWorldParser)
    with pytest.raises(ValueError, match="unknown prompt parser 'nope'; registered: .*shapes-world"):
        get_parser("nope")
    with pytest.raises(ValueError, match="non-empty str"):
        register_parser("", ShapesWorldParser)
