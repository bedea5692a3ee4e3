"""The English prompt parser (t2ikit.text.english) behind the Parser interface, `t2ikit parse`, and the
techniques that read prompt structure on an SD folder with a CLIP BPE tokenizer and no "parser" key."""

import json
import shutil
import time
import warnings

import pytest
import torch

from t2ikit.text.english import EnglishParser, singular
from t2ikit.text.parser import RELATION_NAMES, Parser, PromptParseError, get_parser, parser_names

PARSER = EnglishParser()


def _read(prompt):
    s = PARSER.parse(prompt)
    objects = [(prompt[o.start:o.end], o.noun, o.count, list(o.attributes)) for o in s.objects]
    nouns = {}
    for o in s.objects:
        nouns.setdefault(o.group, o.noun)
    relations = [(nouns[r.subject], r.relation, nouns[r.object]) for r in s.relations]
    return objects, relations, [prompt[t.start:t.end] for t in s.style]


@pytest.mark.parametrize("prompt, objects, relations, style", [
    ("a cat to the left of a dog", [("a cat", "cat", 1, []), ("a dog", "dog", 1, [])], [("cat", "left of", "dog")],
     []),
    ("two small red cubes on top of a wooden table, oil painting",
     [("two small red cubes", "cube", 2, ["small", "red"]), ("a wooden table", "table", 1, ["wooden"])],
     [("cube", "above", "table")], ["oil painting"]),
    ("a photo of three mice beneath a teddy bear",
     [("three mice", "mouse", 3, []), ("a teddy bear", "teddy bear", 1, [])], [("mouse", "below", "teddy bear")],
     ["a photo of"]),
    ("A man in a gray jacket standing in a kitchen next to a black dog.",
     [("A man", "man", 1, []), ("a gray jacket", "jacket", 1, ["gray"]), ("a kitchen", "kitchen", 1, []),
      ("a black dog", "dog", 1, ["black"])], [("man", "near", "dog")], []),
    ("a black and white cat sits in a white sink",
     [("a black and white cat", "cat", 1, ["black", "white"]), ("a white sink", "sink", 1, ["white"])], [], []),
    ("A long, narrow yellow kitchen with puppies", [("A long, narrow yellow kitchen", "kitchen", 1,
                                                    ["long", "narrow", "yellow"]), ("puppies", "puppy", None, [])],
     [], []),
    ("the car is red", [("the car", "car", 1, ["red"])], [], []),
    ("a pair of shoes in front of a bed", [("a pair of shoes", "shoe", 2, []), ("a bed", "bed", 1, [])],
     [("shoe", "in front of", "bed")], []),
    ("a chair hidden by a mouse", [("a chair", "chair", 1, []), ("a mouse", "mouse", 1, [])],
     [("chair", "behind", "mouse")], []),
    ("a castle in the style of Van Gogh, highly detailed, 4k", [("a castle", "castle", 1, [])], [],
     ["in the style of Van Gogh", "highly detailed", "4k"]),
    ("a red cube and a blue cube, the red cube is below the blue cube",
     [("a red cube", "cube", 1, ["red"]), ("a blue cube", "cube", 1, ["blue"]), ("the red cube", "cube", 1, ["red"]),
      ("the blue cube", "cube", 1, ["blue"])], [("cube", "below", "cube")], []),
    ("next to the lamp, a cat sleeps", [("the lamp", "lamp", 1, []), ("a cat", "cat", 1, [])],
     [("cat", "near", "lamp")], []),
    ("a sleeping cat and a man riding a horse, the waves crashing below",
     [("a sleeping cat", "cat", 1, ["sleeping"]), ("a man", "man", 1, []), ("a horse", "horse", 1, []),
      ("the waves", "wave", None, [])], [], []),
])
def test_english_prompts_are_read_into_objects_relations_and_style(prompt, objects, relations, style):
    assert _read(prompt) == (objects, relations, style)


def test_every_relation_and_its_synonyms():
    cases = {"left of": ["left of", "to the left of", "on the left of", "on the left side of"],
             "right of": ["right of", "to the right of", "on the right of"],
             "above": ["above", "on top of", "over", "on the top of"],
             "below": ["below", "under", "beneath", "underneath", "on the bottom of"],
             "near": ["near", "next to", "beside", "close to", "on side of"],
             "in front of": ["in front of"], "behind": ["behind", "hidden by"]}
    assert set(cases) == set(RELATION_NAMES)
    for relation, phrases in cases.items():
        for phrase in phrases:
            assert _read(f"a red ball {phrase} the green box")[1] == [("ball", relation, "box")], phrase
    assert RELATION_NAMES == {"left of": "left_of", "right of": "right_of", "above": "above", "below": "below",
                              "near": "near", "in front of": "in_front_of", "behind": "behind"}


def test_which_refers_back_and_each_clause_has_its_subject():
    s = PARSER.parse("A green triangle over a pink diamond, which is beneath an orange circle")
    assert [(r.subject, r.relation, r.object) for r in s.relations] == [(0, "above", 1), (1, "below", 2)]
    s = PARSER.parse("a cup on top of a book, and a lamp to the right of the book")
    assert [(r.subject, r.relation, r.object) for r in s.relations] == [(0, "above", 1), (2, "right of", 1)]
    assert [o.group for o in s.objects] == [0, 1, 2, 1]  # "the book" is the book named before


def test_unknown_words_are_read_by_position_not_rejected():
    objects, relations, _ = _read("a glorbish zumwat next to two frindles")
    assert objects == [("a glorbish zumwat", "zumwat", 1, ["glorbish"]), ("two frindles", "frindle", 2, [])]
    assert relations == [("zumwat", "near", "frindle")]


@pytest.mark.parametrize("word, lemma", [("dogs", ("dog", True)), ("mice", ("mouse", True)),
                                         ("buses", ("bus", True)), ("bus", ("bus", False)),
                                         ("cherries", ("cherry", True)), ("gloves", ("glove", True)),
                                         ("knives", ("knife", True)), ("boxes", ("box", True)),
                                         ("glass", ("glass", False)), ("sheep", ("sheep", True))])
def test_plurals_read_as_singular_nouns(word, lemma):
    assert singular(word) == lemma


@pytest.mark.parametrize("prompt, match", [
    ("", "empty prompt"),
    ("   ", "empty prompt"),
    ("a red circle left of", r"'left of' has no object phrase after it\n  a red circle left of\n {15}\^{7}"),
    ("a cat to the left of. A dog", "'to the left of' has no object phrase"),
    ("to the left of a dog", "'to the left of' has no subject"),
])
def test_unreadable_parts_are_prompt_parse_errors_with_a_caret(prompt, match):
    with pytest.raises(PromptParseError, match=match):
        PARSER.parse(prompt)


def test_the_registry_and_the_json_of_a_parse_with_token_positions(tmp_path):
    from test_text_tokenizer import _bpe_tokenizer

    import t2ikit  # noqa: F401  (the composition root registers both parsers)

    assert {"english", "shapes-world"} <= set(parser_names())
    assert isinstance(get_parser("english"), EnglishParser) and isinstance(PARSER, Parser)
    bpe = _bpe_tokenizer(tmp_path)  # "circle" is two tokens: cir + cle</w>
    d = PARSER.parse("a photo of a red circle to the left of a cat").to_json(bpe)
    assert d["style"] == [{"text": "a photo of", "span": [0, 10], "tokens": list(range(1, 9))}]
    red = d["objects"][0]
    assert (red["text"], red["noun"], red["count"], red["attributes"], red["span"]) == (
        "a red circle", "circle", 1, ["red"], [11, 23])
    assert red["tokens"] == [9, 10, 11, 12]  # a, red, cir, cle</w>
    assert d["relations"] == [{"subject": 0, "relation": "left_of", "object": 1, "text": "to the left of",
                               "span": [24, 38], "tokens": list(range(13, 24))}]  # to, the, left, of: 2 + 3 + 4 + 2
    assert [c["text"] for c in d["components"]["objects"]] == ["a red circle", "a cat"]
    assert d["components"]["global"][0]["span"] == [0, 44]


def test_shapes_world_captions_read_the_same_by_both_parsers():
    import numpy as np

    from t2ikit.world.caption import write_caption
    from t2ikit.world.scene import sample_scene

    world = get_parser("shapes-world")
    for seed in range(200):
        caption = write_caption(sample_scene(0, seed).spec, np.random.default_rng(seed))
        w, e = world.parse(caption), PARSER.parse(caption)
        assert [(o.start, o.end, o.group) for o in e.objects] == [(o.start, o.end, o.group) for o in w.objects], caption
        assert [(r.subject, r.relation, r.object) for r in e.relations] == [
            (r.subject, r.relation, r.object) for r in w.relations], caption


def test_any_word_salad_is_read_or_refused_with_a_parse_error():
    import random

    words = ("a the two mice teddy bear red dark cat dog photo of left right to on top near next by Van Gogh , . and "
             "which that is in style pair it them background 2 - ( ) ! oil painting hidden sitting behind front over "
             "under as with").split()
    rng = random.Random(0)
    for _ in range(2000):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(1, 14)))
        try:
            s = PARSER.parse(prompt)
        except PromptParseError:
            continue
        for o in s.objects:
            assert 0 <= o.start <= o.noun_start < o.noun_end <= o.end <= len(prompt), prompt
        for r in s.relations:
            assert 0 <= r.subject < s.groups and 0 <= r.object < s.groups and r.subject != r.object, prompt
        json.dumps(s.to_json())


def test_a_thousand_prompts_in_well_under_two_seconds():
    prompts = [f"{n} small red cubes to the left of a wooden table near a cat, oil painting" for n in
               ("two", "three", "a", "four")] * 250
    t0 = time.perf_counter()
    for p in prompts:
        PARSER.parse(p)
    assert time.perf_counter() - t0 < 2.0  # benchmarks/parser.py measures it: ~0.15 s per 1,000 prompts


def test_t2ikit_parse_prints_one_json_object_per_prompt(capsys):
    from t2ikit.cli import main

    assert main(["parse", "--json", "a cat to the left of a dog", "three blue cups near a plate, watercolor"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert [(o["noun"], o["count"]) for o in first["objects"]] == [("cat", 1), ("dog", 1)]
    assert first["relations"][0]["relation"] == "left_of"
    assert second["objects"][0]["attributes"] == ["blue"] and second["style"][0]["text"] == "watercolor"
    assert set(second["components"]) == {"global", "objects", "relations", "style"}
    assert main(["parse", "a cat left of"]) == 2
    assert "cannot read 'a cat left of'" in capsys.readouterr().err
    assert main(["parse", "--parser", "nope", "a cat"]) == 2
    assert "unknown prompt parser 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# The techniques on an SD folder with a CLIP BPE tokenizer and no "parser" key: the English parser
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_folder(folder, tmp_path_factory):
    """conftest's tiny SD folder with a CLIP BPE tokenizer (words split into several tokens) and a t2ikit.json
    that names no parser, as a Stable Diffusion folder has it."""
    from test_text_tokenizer import _bpe_tokenizer

    from t2ikit.text import text_encoder_for

    root = tmp_path_factory.mktemp("english") / "m"
    shutil.copytree(folder, root)
    tokenizer = _bpe_tokenizer(tmp_path_factory.mktemp("bpe"))
    torch.manual_seed(0)
    encoder = text_encoder_for(tokenizer, hidden_size=32, layers=2, heads=4).eval()
    shutil.rmtree(root / "tokenizer")
    shutil.rmtree(root / "text_encoder")
    tokenizer.save_pretrained(root / "tokenizer")
    encoder.save_pretrained(root / "text_encoder", safe_serialization=True)
    (root / "t2ikit.json").unlink()
    return root


@pytest.fixture(scope="module")
def bpe_pipe(bpe_folder):
    from t2ikit.pipeline import T2IPipeline

    return T2IPipeline.from_folder(bpe_folder)


def test_an_sd_folder_without_a_parser_key_reads_english(bpe_pipe):
    assert bpe_pipe.parser.name == "english"


def test_relation_guidance_and_excite_on_a_cat_to_the_left_of_a_dog(bpe_pipe):
    from t2ikit.diffusion.latent_guidance import object_positions, relation_targets

    prompt = "a cat to the left of a dog"
    positions = object_positions(bpe_pipe.tokenizer, bpe_pipe.parser, prompt)
    words = {w: p for w, p in zip(prompt.split(), range(1, 99))}
    assert len(positions) == 2 and all(positions)  # each noun: its BPE tokens (characters here)
    groups, rows = relation_targets(bpe_pipe.tokenizer, bpe_pipe.parser, prompt)
    assert rows.tolist() == [[0, 1, 0, 1]]  # cat (group 0) left of dog (group 1): along x
    assert set(groups[groups >= 0].tolist()) == {0, 1} and words  # both phrases' tokens are grouped
    settings = {"steps": 2, "seed": 3, "size": (16, 16)}
    plain = bpe_pipe.run(bpe_pipe.make_spec(prompt, **settings), progress=False).images
    for technique in ({"relation_guidance": 1e4}, {"excite": 1e4}):
        moved = bpe_pipe.run(bpe_pipe.make_spec(prompt, **settings, **technique), progress=False).images
        assert not torch.allclose(moved, plain, atol=1e-4), technique


def test_relations_without_an_axis_are_guided_where_they_can_be_and_named_where_not(bpe_pipe):
    from t2ikit.diffusion.latent_guidance import relation_targets

    prompt = "a cat near a dog, and a bird above the dog"
    with pytest.warns(UserWarning, match=r"leaves 'a cat' near 'a dog' unguided and guides 'a bird' above 'a dog'"):
        _, rows = relation_targets(bpe_pipe.tokenizer, bpe_pipe.parser, prompt)
    assert rows.tolist() == [[2, 1, 1, 1]]  # only "above" (y axis), the bird over the dog
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bpe_pipe.make_spec("a cat behind a dog", steps=2, relation_guidance=10.0)
    assert any("states no relation it can guide" in str(w.message) for w in caught)


# ---------------------------------------------------------------------------------------------------
# English edit instructions (t2ikit.text.instructions), the reader of a model that reads English
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("instruction, source, prompts", [
    ("change the horse to a zebra", None, ("a horse", "a zebra")),
    ("change the horse to a zebra", "a brown horse in a field", ("a brown horse in a field", "a zebra in a field")),
    ("turn the horses into zebras.", "three horses near a barn",
     ("three horses near a barn", "three zebras near a barn")),
    ("make the car red", "a blue car next to a tree", ("a blue car next to a tree", "a red car next to a tree")),
    ("make the car red", None, ("a car", "a red car")),
    ("make the red car blue", "a small red car and a big green car",
     ("a small red car and a big green car", "a small blue car and a big green car")),
    ("replace the cat with a dog", "two cats on a sofa", ("two cats on a sofa", "two dogs on a sofa")),
    ("replace the cat with an owl", "a cat on a sofa", ("a cat on a sofa", "an owl on a sofa")),
    ("move the cup to the left of the plate", "a cup to the right of a plate",
     ("a cup to the right of a plate", "a cup to the left of a plate")),
    ("move the cup to the left of the plate", None, ("a cup and a plate", "a cup to the left of a plate")),
    ("put the lamp behind the sofa", "a lamp and a sofa",
     ("a lamp and a sofa", "a lamp and a sofa, a lamp behind a sofa")),
])
def test_english_instructions_become_source_and_target_prompts(instruction, source, prompts):
    from t2ikit.text.parser import get_instruction_reader

    reader = get_instruction_reader("english")
    assert reader.name == "english" and get_instruction_reader("shapes-world") is None
    assert reader.prompts(reader.read(instruction), source) == prompts


@pytest.mark.parametrize("instruction, source, match", [
    ("paint the horse", None, "must start with one of change, turn"),
    ("change the horse", None, "expected 'change <object> into <target>'"),
    ("make the car", None, "no attribute word"),
    ("move the cup", None, "with a relation"),
    ("change the horse to a zebra and a lion", None, "the target part 'a zebra and a lion' must name one object"),
    ("change the horse to a zebra", "a cat on a sofa", r"'the horse' is not in the source prompt .* cat, sofa"),
    ("make the car red", "a red car and a blue car", "names 2 objects of the source prompt"),
    ("move the cup to the left of the plate", "a cup to the left of a plate", "changes nothing"),
])
def test_unreadable_instructions_name_the_part(instruction, source, match):
    from t2ikit.text.instructions import EnglishInstructions

    reader = EnglishInstructions()
    with pytest.raises(ValueError, match=match):
        reader.prompts(reader.read(instruction), source)


def test_edit_with_an_english_instruction_on_the_sd_folder(bpe_pipe, bpe_folder, tmp_path, capsys):
    from t2ikit.cli import main
    from t2ikit.edit import edit

    image = bpe_pipe.generate("a brown horse in a field", steps=2, seed=1)[0]
    result = edit(bpe_pipe, image, "a brown horse in a field", instruction="change the horse to a zebra", steps=2)
    assert (result.source_prompts, result.target_prompts) == (["a brown horse in a field"], ["a zebra in a field"])
    result = edit(bpe_pipe, image, instruction="make the car red", steps=2)
    assert (result.source_prompts, result.target_prompts) == (["a car"], ["a red car"])
    image.save(tmp_path / "in.png")
    assert main(["edit", str(tmp_path / "in.png"), "--model", str(bpe_folder), "--instruction", "paint the horse",
                 "--out", str(tmp_path / "out.png")]) == 2  # read before the model loads
    assert "cannot read the instruction 'paint the horse'" in capsys.readouterr().err


def test_decomposition_reads_english_components_on_the_sd_folder(bpe_pipe):
    from t2ikit.analysis.decomposition import generate_decomposed, token_components

    prompt = "a cat to the left of a dog, oil painting"
    tc = token_components(bpe_pipe.tokenizer, prompt, bpe_pipe.parser)
    assert tc["object"] and tc["relation"] and tc["style"]  # the English parse's components
    assert max(tc["object"]) < min(tc["style"]) and 0 not in tc["global"]
    assert not token_components(bpe_pipe.tokenizer, prompt)["object"]  # no parser: not a caption, all global
    images = generate_decomposed(bpe_pipe, [prompt], [0], steps=2)
    assert images.shape[0] == 1 and torch.isfinite(images).all()


def test_attribution_maps_per_english_phrase_on_the_sd_folder(bpe_pipe):
    from t2ikit.analysis.attribution import explain

    attr = explain(bpe_pipe, "a red circle to the left of a small cat", steps=2, parser=bpe_pipe.parser)
    assert {"a red circle", "a small cat"} <= set(attr.maps)  # one map per object phrase, beside the words'
    assert all(torch.isfinite(m).all() for m in attr.maps.values())


def test_cli_explain_draws_phrase_maps_and_names_what_it_cannot_read(bpe_folder, tmp_path, capsys):
    from t2ikit.cli import main

    maps = tmp_path / "maps.json"
    assert main(["explain", "a red circle to the left of a small cat", "--model", str(bpe_folder), "--steps", "2",
                 "--phrases", "--out", str(tmp_path / "maps.png"), "--maps", str(maps), "--quiet"]) == 0
    assert {"a red circle", "a small cat"} <= set(json.loads(maps.read_text()))
    capsys.readouterr()
    assert main(["explain", "a cat to the left of", "--model", str(bpe_folder), "--steps", "2", "--phrases",
                 "--out", str(tmp_path / "bad.png")]) == 2
    assert "to the left of" in capsys.readouterr().err and not (tmp_path / "bad.png").exists()
