"""Prompt weighting: syntax, errors that point at the character, token weights and embeddings."""

import pytest
import torch
from tiny import make_tiny_sd_folder

from t2ikit.text.weighting import (
    PromptSyntaxError,
    apply_token_weights,
    encode_weighted,
    generate_weighted,
    parse_weighted,
    token_weights,
)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from t2ikit.pipeline import T2IPipeline

    return T2IPipeline.from_folder(make_tiny_sd_folder(tmp_path_factory.mktemp("tiny") / "model"))


def test_weights_nesting_escapes_and_bare_parens():
    part = parse_weighted(r"a ((red:2) circle:1.5) and \(a\) (blue) square").parts[0]
    assert part.text == "a red circle and (a) blue square"
    assert part.runs() == [("a ", 1.0), ("red", 3.0), (" circle", 1.5), (" and (a) ", 1.0), ("blue", 1.1),
                           (" square", 1.0)]
    assert parse_weighted("a (red circle:0.8)").parts[0].runs()[1] == ("red circle", 0.8)


def test_blend_parses_parts_and_weights():
    p = parse_weighted('("a red circle", "a (blue:1.2) square").blend(0.7, 0.3)')
    assert [x.text for x in p.parts] == ["a red circle", "a blue square"]
    assert p.blend == (0.7, 0.3)


@pytest.mark.parametrize("prompt,position", [
    ("a (red:abc) circle", 7), ("a (red circle", 2), ("a red) circle", 5), ("a (red:-1) circle", 7),
    ("a ()", 2), ("a red\\", 5), ('("a", "b").blend(1)', 18), ('("a", "b").blend(0, 0)', 21),
])
def test_malformed_prompt_points_at_the_character(prompt, position):
    with pytest.raises(PromptSyntaxError) as err:
        parse_weighted(prompt)
    assert err.value.position == position
    assert "\n  " + " " * position + "^" in str(err.value)


def test_token_weights_land_on_the_words_tokens(pipe):
    from t2ikit.text.spans import token_positions

    w = token_weights(pipe.tokenizer, parse_weighted("a (red:1.5) circle").parts[0])
    red = token_positions(pipe.tokenizer, "a red circle", "red")
    assert [w[p] for p in red] == [1.5]
    assert sum(x != 1.0 for x in w) == 1


def test_unknown_or_split_weighted_word_is_an_error(pipe):
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        token_weights(pipe.tokenizer, parse_weighted("a (zebra:1.3) circle").parts[0])
    with pytest.raises(ValueError, match="splits the word"):
        token_weights(pipe.tokenizer, parse_weighted("a (re:1.3)d circle").parts[0])


def test_modes_scale_rows_and_a1111_restores_the_mean():
    e = torch.randn(5, 4) + 1.0
    w = [1.0, 2.0, 1.0, 0.5, 1.0]
    m = apply_token_weights(e, w, "multiply")
    assert torch.allclose(m[1], 2 * e[1]) and torch.allclose(m[0], e[0])
    a = apply_token_weights(e, w, "a1111")
    assert torch.allclose(a.mean(), e.mean(), atol=1e-5)
    assert torch.allclose(a, m * (e.mean() / m.mean()))
    with pytest.raises(ValueError, match="unknown weighting mode"):
        apply_token_weights(e, w, "compel")


def test_encode_weighted_unit_weight_equals_plain_and_blend_is_weighted_mean(pipe):
    plain = pipe.encode_text(["a red circle", "a blue square"])
    assert torch.equal(encode_weighted(pipe.tokenizer, pipe.text_encoder, "a (red:1) circle"), plain[:1])
    blend = encode_weighted(pipe.tokenizer, pipe.text_encoder, '("a red circle", "a blue square").blend(3, 1)')
    assert torch.allclose(blend[0], 0.75 * plain[0] + 0.25 * plain[1], atol=1e-6)
    up = encode_weighted(pipe.tokenizer, pipe.text_encoder, "a (red:2) circle", mode="multiply")
    assert torch.allclose(up[0, 2], 2 * plain[0, 2]) and torch.allclose(up[0, 3], plain[0, 3])


def test_generate_weighted_matches_pipeline_and_weights_change_the_image(pipe):
    ref = pipe.run(pipe.make_spec("a red circle", seed=5, n=2, steps=2), progress=False).images
    same = generate_weighted(pipe, "a red circle", seed=5, n=2, steps=2)
    assert torch.equal(ref, same)
    heavy = generate_weighted(pipe, "a (red:3) circle", seed=5, n=2, steps=2)
    assert not torch.allclose(ref, heavy)
