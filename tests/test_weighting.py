"""Prompt weighting: syntax, errors that point at the character, token weights and embeddings."""

import json

import pytest
import torch
from tiny import make_tiny_sd_folder

from t2ikit.text.encoder import encode_prompts, text_encoder_for
from t2ikit.text.weighting import (
    PromptSyntaxError,
    apply_token_weights,
    check_weighted_prompt,
    check_weighting,
    edit_prompt,
    encode_prompt_pair,
    encode_weighted,
    parse_prompt,
    parse_weighted,
    plain_text,
    token_weights,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_sd_folder(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def pipe(folder):
    from t2ikit.pipeline import T2IPipeline

    return T2IPipeline.from_folder(folder)


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
    ("a [red circle", 2), ("a (red] circle", 6), ("a [red:blue:0.5] circle", 6), ("a [red|blue]", 6),
    ("a (red:) circle", 7), ("a (red:1.2.3) circle", 7), ("a ] circle", 2), ("[]", 0),
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


def test_weights_in_generate_change_the_image_and_none_reads_literally(pipe):
    ref = pipe.run(pipe.make_spec("a red circle", seed=5, n=2, steps=2), progress=False).images
    same = pipe.run(pipe.make_spec("a (red:1) circle", seed=5, n=2, steps=2), progress=False).images
    assert torch.equal(ref, same)
    heavy = pipe.run(pipe.make_spec("a (red:3) circle", seed=5, n=2, steps=2), progress=False).images
    assert not torch.allclose(ref, heavy)
    neg = pipe.run(pipe.make_spec("a red circle", "a (blue:3) square", seed=5, n=2, steps=2), progress=False).images
    plain_neg = pipe.run(pipe.make_spec("a red circle", "a blue square", seed=5, n=2, steps=2), progress=False).images
    assert not torch.allclose(neg, plain_neg)  # the negative prompt's weights act too


# ----------------------------------------------------------------------------------------------------
# AUTOMATIC1111 syntax: square brackets, escapes, BREAK


def test_square_brackets_escapes_and_break():
    part = parse_weighted(r"a [red] ([big] circle) \[x\] a\:b \\ BREAK  blue BREAKfast").parts[0]
    assert part.text == r"a red big circle [x] a:b \ blue BREAKfast"
    runs = dict((t.strip(), w) for t, w in part.runs())
    assert runs["red"] == pytest.approx(1 / 1.1) and runs["big"] == pytest.approx(1.1 / 1.1)
    assert runs["circle"] == pytest.approx(1.1)
    assert part.breaks == (part.text.index(" blue"),)
    assert [part.text[a:b] for a, b in part.segments()] == ["a red big circle [x] a:b \\", "blue BREAKfast"]
    assert parse_weighted("BREAK a").parts[0].segments() == [(0, 0), (1, 2)]  # a BREAK first: an empty chunk
    assert plain_text("a (red:1.5) circle BREAK b", "a1111") == "a red circle b"
    assert plain_text("a red+ (circle)0.5", "compel") == "a red circle"
    assert plain_text("a (red:1.5) circle", "none") == "a (red:1.5) circle"
    with pytest.raises(ValueError, match="unknown weighting mode"):
        check_weighting(["a"], "A1111")
    with pytest.raises(PromptSyntaxError):
        check_weighting(["a red circle", "a (blue square"], "a1111")


# ----------------------------------------------------------------------------------------------------
# encode_prompt_pair on the word-level model and on a real CLIP BPE tokenizer


@pytest.fixture(scope="module")
def bpe():
    """A CLIP BPE tokenizer (tests/test_text_tokenizer.py's: "circle" is cir + cle</w>) and a tiny encoder."""
    from test_text_tokenizer import _bpe_tokenizer

    tok = _bpe_tokenizer(None)
    torch.manual_seed(0)
    return tok, text_encoder_for(tok, hidden_size=32, layers=2, heads=4).eval()


class _NoCompute(torch.nn.Module):
    """A text encoder that fails if called: errors must come before any compute."""

    config = type("Config", (), {})()
    device = torch.device("cpu")
    dtype = torch.float32

    def forward(self, *args, **kwargs):
        raise AssertionError("the text encoder ran before the prompts were checked")


def test_unweighted_prompts_equal_encode_prompts_bitwise(pipe, bpe):
    for tok, te in [(pipe.tokenizer, pipe.text_encoder), bpe]:
        prompts = ["a red circle", "a blue square left of a circle", "a red circle", ""]
        negatives = ["", "blurry", "", "blurry"]
        for mode in ("a1111", "multiply", "compel", "none"):
            cond, uncond, plain = encode_prompt_pair(tok, te, prompts, negatives, mode)
            assert torch.equal(cond, encode_prompts(tok, te, prompts)), mode
            assert torch.equal(uncond, encode_prompts(tok, te, negatives)), mode
            assert plain == prompts
        assert encode_prompt_pair(tok, te, prompts, None)[1] is None
        literal = "a (red:1.5) circle"  # mode none: parentheses are text
        assert torch.equal(encode_prompt_pair(tok, te, [literal], None, "none")[0], encode_prompts(tok, te, [literal]))


def test_errors_come_before_any_compute(pipe):
    with pytest.raises(PromptSyntaxError):
        encode_prompt_pair(pipe.tokenizer, _NoCompute(), ["a red circle"], ["a (blue"], "a1111")
    with pytest.raises(PromptSyntaxError):
        encode_prompt_pair(pipe.tokenizer, _NoCompute(), ["a (red circle"], None, "compel")
    with pytest.raises(ValueError, match="BREAK"):  # the word-level model encodes one chunk
        encode_prompt_pair(pipe.tokenizer, _NoCompute(), ["a red circle BREAK a blue square"], None)
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        encode_prompt_pair(pipe.tokenizer, _NoCompute(), ["a circle"], ["a (zebra:1.2)"])
    with pytest.raises(ValueError, match="2 prompts"):
        encode_prompt_pair(pipe.tokenizer, _NoCompute(), ["a", "b"], ["c"])


def _encode_ids(tok, te, ids):
    """The encoder's rows for lists of token ids (no BOS/EOS), each padded to one chunk."""
    m = tok.model_max_length
    rows = [[tok.bos_token_id, *x, tok.eos_token_id] + [tok.pad_token_id] * (m - len(x) - 2) for x in ids]
    with torch.no_grad():
        return te(torch.tensor(rows))[0]


def test_long_prompts_are_encoded_in_chunks_and_paired_with_empty_chunks(bpe):
    tok, te = bpe
    words = " ".join(["red"] * 90)  # 90 tokens: a 75-token chunk and a 15-token one
    ids = tok(words, add_special_tokens=False)["input_ids"]
    assert len(ids) == 90
    cond, uncond, _ = encode_prompt_pair(tok, te, [words, "a red circle"], ["", "blurry"])
    assert cond.shape == uncond.shape == (2, 154, 32)
    expect = _encode_ids(tok, te, [ids[:75], ids[75:]])
    assert torch.allclose(cond[0], expect.reshape(154, 32), atol=1e-6)
    empty = encode_prompts(tok, te, [""])[0]
    assert torch.allclose(cond[1], torch.cat([encode_prompts(tok, te, ["a red circle"])[0], empty]), atol=1e-6)
    assert torch.allclose(uncond[0], torch.cat([empty, empty]), atol=1e-6)
    # BREAK ends a chunk; a weighted chunk has its own mean restored
    cond = encode_weighted(tok, te, "a red circle BREAK a (blue:1.5) square")
    a, b = encode_prompts(tok, te, ["a red circle", "a blue square"])
    assert cond.shape == (1, 154, 32) and torch.allclose(cond[0, :77], a, atol=1e-6)
    assert not torch.allclose(cond[0, 77:], b) and torch.allclose(cond[0, 77:].mean(), b.mean(), atol=1e-5)


def test_comma_backtrack_moves_the_last_phrase_to_the_next_chunk(bpe):
    tok, te = bpe
    prompt = "red " * 70 + ", " + "blue " * 10  # the comma is token 70: tokens 71.. move to chunk 2
    cond = encode_weighted(tok, te, prompt)
    first = encode_prompts(tok, te, ["red " * 70 + ","])[0]
    second = encode_prompts(tok, te, ["blue " * 10])[0]
    assert torch.allclose(cond[0], torch.cat([first, second]), atol=1e-6)


def test_weights_land_on_every_token_of_a_multi_token_word(bpe):
    tok, _ = bpe
    w = token_weights(tok, parse_weighted("a (circle:1.5) red").parts[0])
    assert w[:6] == [1.0, 1.0, 1.5, 1.5, 1.0, 1.0]  # BOS a cir cle red EOS
    with pytest.raises(ValueError, match="splits the word"):
        token_weights(tok, parse_weighted("a (cir:1.5)cle").parts[0])


def test_truncation_warnings_only_where_the_mode_truncates(pipe, bpe):
    from t2ikit.text.check import PromptWarning

    tok, _ = bpe
    long = " ".join(["red"] * 80)
    assert check_weighted_prompt(tok, long, "a1111", warn=False).ok  # chunks: nothing dropped
    with pytest.warns(PromptWarning, match="dropped"):
        check_weighted_prompt(tok, long, "compel")
    with pytest.warns(PromptWarning, match="dropped: 'blue square'"):
        check = check_weighted_prompt(pipe.tokenizer, "a (red:1.2) circle " * 4 + "a red blue square", "a1111")
    assert check.dropped_words == ["blue", "square"]


# ----------------------------------------------------------------------------------------------------
# compel: the parser reads like compel's, the embeddings equal compel's


COMPEL_PROMPTS = [
    "a red+ circle", "a red++ circle--", "a red- circle", "a (red circle)0.5 on a square",
    "a ((red)1.5 circle)0.8 and (blue square)1.3", "(a (b (red)1.2)0.5)1.1 circle-", "a red- big blue- square, left",
    '("a red circle", "a blue+ square").blend(0.7, 0.3)', '("a red- circle", "a blue square").blend(1, 2, no_normalize)',
    "a red circle (blue)0", "red+circle", "foo(bar)1.3 x", "a,red+", "(red)-1", "(red).5 x", "red.attend(1.3) x",
    '"red circle"1.2 x', "(red, blue)1.2 x", "a \\(b\\) c", "(a,.)1.2", "(cat, dog).blend()", " ".join(["red"] * 80) + " blue-",
]


def test_compel_parser_reads_like_compel():
    pytest.importorskip("compel")
    from compel.prompt_parser import Blend, PromptParser

    reader = PromptParser()
    for prompt in COMPEL_PROMPTS:
        (theirs,) = reader.parse_conjunction(prompt).prompts
        ours = parse_prompt(prompt, "compel")
        parts = theirs.prompts if isinstance(theirs, Blend) else [theirs]
        assert [tuple((f.text, f.weight) for f in p.children) for p in parts] == list(ours.fragments), prompt
        if isinstance(theirs, Blend):
            assert list(ours.blend) == theirs.weights and ours.normalize == theirs.normalize_weights


@pytest.mark.parametrize("prompt,position", [("a (red circle", 2), ("(a - b)1.2", 3), ("a ()", 2), ('a "red', 2),
                                             ("red.swap(blue)", 3), ('("a", "b").and()', 0), ("a ) b", 2)])
def test_compel_malformed_prompt_points_at_the_character(prompt, position):
    with pytest.raises(PromptSyntaxError) as err:
        parse_prompt(prompt, "compel")
    assert err.value.position == position


def test_compel_mode_equals_the_compel_library(pipe, bpe):
    compel = pytest.importorskip("compel")
    for tok, te in [bpe, (pipe.tokenizer, pipe.text_encoder)]:
        reference = compel.Compel(tokenizer=tok, text_encoder=te)
        ours = encode_weighted(tok, te, COMPEL_PROMPTS, "compel")  # one batch
        for prompt, row in zip(COMPEL_PROMPTS, ours):
            theirs = reference(prompt)[0]
            assert (row - theirs).abs().max() <= 1e-5, prompt
    plain = encode_prompts(*bpe, ["a red circle"])
    assert not torch.allclose(encode_weighted(*bpe, "a red- circle", "compel"), plain)


# ----------------------------------------------------------------------------------------------------
# Editing the words of a weighted prompt (what the analyses do)


def test_edit_prompt_keeps_the_other_words_weights():
    p = "a (red:1.5) [circle] BREAK a blue square"
    out = edit_prompt(p, "a1111", [(2, 5, "")], collapse_spaces=True)  # drop "red"
    back = parse_weighted(out).parts[0]
    assert back.text == "a circle a blue square" and len(back.breaks) == 1
    assert dict(back.runs())["circle"] == pytest.approx(1 / 1.1)
    out = edit_prompt(p, "a1111", [(2, 5, "green")])
    assert dict(parse_weighted(out).parts[0].runs())["green"] == 1.5
    assert edit_prompt("a  red   circle", "none", [(3, 6, "")], collapse_spaces=True) == "a circle"
    assert parse_weighted(edit_prompt("(red :1.5)circle", "a1111", [])).parts[0].text == "red circle"
    out = edit_prompt("a red+ (big circle)0.5", "compel", [(2, 5, "")], collapse_spaces=True)
    assert parse_prompt(out, "compel").fragments == ((("a", 1.0), ("big circle", 0.5)),)
    with pytest.raises(ValueError, match="blend"):
        edit_prompt('("a", "b").blend(1, 1)', "a1111", [])


def test_analyze_and_explain_read_the_weighting(pipe, folder, tmp_path, capsys):
    from t2ikit.analysis.sensitivity import analyze
    from t2ikit.cli import main

    report = analyze(pipe, "a (red:1.5) circle", seeds=[0], steps=1, interactions=False, size=(16, 16))
    assert report["words"] == ["a", "red", "circle"]
    assert {c["prompt"] for c in report["length_curve"]} >= {"", "a (red:1.5) circle"}  # variants keep weights
    assert main(["analyze", "a red++ circle", "--weighting", "compel", "--model", str(folder), "--steps", "1",
                 "--seeds", "1", "--no-interactions", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["words"] == ["a", "red", "circle"]
    assert main(["analyze", "a (red circle", "--weighting", "compel", "--model", str(folder)]) == 2
    assert "character 2" in capsys.readouterr().err
    out = tmp_path / "maps.png"
    assert main(["explain", "a red- circle", "--weighting", "compel", "--model", str(folder), "--steps", "1",
                 "--out", str(out)]) == 0
    assert out.is_file()
