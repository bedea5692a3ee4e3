"""Attend-and-Excite and relation guidance (t2ikit.diffusion.latent_guidance) on a tiny random model: object
tokens and relations from a Parser (Shapes World's, or a hand-made one), exact plain path, bad input."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tiny import make_tiny_sd_folder

from t2ikit.analysis.excite import sample_excite
from t2ikit.analysis.runner import sample_prompts
from t2ikit.diffusion.latent_guidance import (
    ExciteConfig,
    LatentGuidance,
    excite_loss,
    object_positions,
    relation_targets,
)
from t2ikit.diffusion.samplers import make_scheduler
from t2ikit.pipeline import T2IPipeline
from t2ikit.text.parser import ObjectPhrase, Parser, PromptParseError, PromptStructure, RelationPhrase
from t2ikit.text.spans import word_token_spans
from t2ikit.world.parser import ShapesWorldParser

torch.set_num_threads(1)
PROMPTS = ["a red circle to the left of a blue square", "two green triangles"]
WORLD = ShapesWorldParser()


@pytest.fixture(scope="module")
def excite_folder(tmp_path_factory):  # not conftest's: DPM-Solver and 32x32 images for the oracle
    root = make_tiny_sd_folder(tmp_path_factory.mktemp("tiny") / "model", scheduler="dpmpp_2m")
    config = root / "unet" / "config.json"  # 16x16 latents -> 32x32 images, the oracle's smallest
    config.write_text(json.dumps({**json.loads(config.read_text()), "sample_size": 16}))
    return root


@pytest.fixture(scope="module")
def pipe(excite_folder):
    return T2IPipeline.from_folder(excite_folder)


def test_object_positions_come_from_the_parser(pipe):
    tok = pipe.tokenizer
    assert object_positions(tok, WORLD, PROMPTS[0]) == [[3], [10]]  # "circle", "square" (BOS is 0)
    assert object_positions(tok, WORLD, PROMPTS[1]) == [[3]]  # the plural noun
    assert object_positions(tok, "shapes-world", PROMPTS[0]) == [[3], [10]]  # a registered name
    assert object_positions(tok, None, PROMPTS[0], ["square"]) == [[10]]  # given words need no parser
    with pytest.raises(ValueError, match="hexagon"):
        object_positions(tok, WORLD, PROMPTS[0], ["hexagon"])
    with pytest.raises(ValueError, match="at least one"):
        object_positions(tok, WORLD, PROMPTS[0], [])
    with pytest.raises(ValueError, match="parser=None"):
        object_positions(tok, None, PROMPTS[0])
    with pytest.raises(PromptParseError, match="'shapes-world' reads"):
        object_positions(tok, WORLD, "a cat to the left of a dog")


def test_no_excitation_is_the_plain_sampler(pipe):
    plain = sample_prompts(pipe, PROMPTS, [3, 4], 3, 5.0, "dpmpp_2m")
    same = sample_excite(pipe, PROMPTS, [3, 4], 3, 5.0, "dpmpp_2m", ExciteConfig(excite_steps=0))
    assert torch.equal(plain, same)


def test_excitation_changes_the_image_deterministically(pipe):
    cfg = ExciteConfig(excite_steps=2, step_size=1e4, iterations=1)
    plain = sample_prompts(pipe, PROMPTS, [3, 4], 3, 5.0, "dpmpp_2m")
    a = sample_excite(pipe, PROMPTS, [3, 4], 3, 5.0, "dpmpp_2m", cfg)
    b = sample_excite(pipe, PROMPTS[1:], [4], 3, 5.0, "dpmpp_2m", cfg)  # a batch equals its items
    assert not torch.allclose(a, plain)
    assert torch.allclose(a[1:], b, atol=1e-5)


def test_loss_is_low_when_every_object_has_a_peak():
    # 2 objects (positions 1 and 2) of a 3-token prompt (EOS at 4): a peak for each beats flat attention
    flat = torch.full((1, 4, 4, 6), 1 / 6)
    peaked = flat.clone()
    peaked[0, 0, 0, 1] = peaked[0, 3, 3, 2] = 0.9
    assert excite_loss(peaked, [[[1], [2]]], [4], 0.5) < excite_loss(flat, [[[1], [2]]], [4], 0.5)


@pytest.mark.parametrize("bad", [dict(excite_steps=-1), dict(iterations=1.5), dict(step_size=-1.0), dict(sigma=0)])
def test_bad_config_is_a_sentence(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ExciteConfig(**bad).validate()


def test_cli_bench_binding(excite_folder, capsys):
    from t2ikit.cli import main

    model = str(excite_folder)
    assert main(["bench", "binding", "--model", model, "--n-prompts", "1", "--seeds", "1", "--steps", "2",
                 "--excite-steps", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["config"]["categories"]) == {"colour_binding", "shape_binding", "spatial"}
    assert result["all"]["n"] == 3 and "diff_accuracy" in result["all"]
    assert main(["bench", "binding", "--model", model, "--excite-steps", "-2"]) == 2  # a sentence, no compute
    assert "excite_steps must be an int >= 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# Relation guidance: the relation term of t2ikit.attention.grounding as a sampling-time latent update


def test_relation_targets_come_from_the_parser(pipe):
    groups, rows = relation_targets(pipe.tokenizer, WORLD, "a red circle to the left of a blue square")
    # "a red circle" is group 0 (positions 1-3), "a blue square" group 1 (positions 8-10); BOS is 0
    assert groups[:12].tolist() == [-1, 0, 0, 0, -1, -1, -1, -1, 1, 1, 1, -1]
    assert rows.tolist() == [[0, 1, 0, 1]]  # x axis, B to the right of A
    _, below = relation_targets(pipe.tokenizer, WORLD, "a red circle below a blue square", max_relations=3)
    assert below[0].tolist() == [0, 1, 1, -1] and below.shape == (3, 4) and (below[1:] == -1).all()
    _, none = relation_targets(pipe.tokenizer, WORLD, "two green triangles")
    assert none.shape == (0, 4)  # nothing to guide: the image is left alone
    with pytest.raises(PromptParseError, match="relation guidance needs a prompt the parser 'shapes-world' reads"):
        relation_targets(pipe.tokenizer, WORLD, "a cat to the left of a dog")
    free, rows = relation_targets(pipe.tokenizer, WORLD, "a cat to the left of a dog", strict=False, max_relations=2)
    assert (free == -1).all() and rows.shape == (2, 4) and (rows == -1).all()
    with pytest.raises(ValueError, match="states 2 relations; max_relations is 1"):
        relation_targets(pipe.tokenizer, WORLD, "a red circle left of a blue square which is above a green circle",
                         max_relations=1)
    with pytest.raises(ValueError, match="parser=None"):
        relation_targets(pipe.tokenizer, None, PROMPTS[0], strict=False)


class PetParser:
    """A hand-made Parser for "a <noun> <relation> a <noun>": no Shapes World grammar involved."""

    name = "pets"
    _PATTERN = re.compile(r"(an? (\w+)) (left of|right of|above|below) (an? (\w+))")

    def parse(self, prompt: str) -> PromptStructure:
        m = self._PATTERN.fullmatch(prompt)
        if m is None:
            raise PromptParseError(f"{prompt!r} is not 'a <noun> <relation> a <noun>'")
        objects = tuple(ObjectPhrase(m.start(p), m.end(p), m.start(n), m.end(n), g)
                        for g, (p, n) in enumerate(((1, 2), (4, 5))))
        return PromptStructure(prompt, objects, (RelationPhrase(0, m.group(3), 1),))


def test_a_hand_made_parser_drives_the_core(tmp_path):
    """The core serves any Parser: a dog and a cat, read by PetParser, tokenized by a CLIP-style BPE."""
    from test_text_tokenizer import _bpe_tokenizer

    bpe, parser, prompt = _bpe_tokenizer(tmp_path), PetParser(), "a dog left of a cat"
    assert isinstance(parser, Parser)
    words = word_token_spans(bpe, prompt)  # a, dog, left, of, a, cat
    dog, cat = [p for s in words[:2] for p in s.positions], [p for s in words[4:] for p in s.positions]
    groups, rows = relation_targets(bpe, parser, prompt)
    assert rows.tolist() == [[0, 1, 0, 1]]  # the cat to the right of the dog
    assert (groups[dog] == 0).all() and (groups[cat] == 1).all() and int((groups >= 0).sum()) == len(dog + cat)
    assert object_positions(bpe, parser, prompt) == [list(words[1].positions), list(words[5].positions)]
    _, above = relation_targets(bpe, parser, "a cat above a dog")
    assert above.tolist() == [[0, 1, 1, 1]]
    with pytest.raises(PromptParseError, match="'pets' reads"):
        relation_targets(bpe, parser, "a dog and a cat")


def _relation_loss_at(pipe, guide, latents, scheduler, t):
    from t2ikit.attention.grounding import relation_loss

    capture = guide.relation_capture
    guide.controller.latent_hw = tuple(latents.shape[-2:])
    guide.controller.install(pipe.unet)
    try:
        capture.clear()
        with torch.no_grad():
            pipe.unet(scheduler.scale_model_input(latents, t), t, encoder_hidden_states=guide.cond)
        return float(relation_loss(capture.maps, guide.token_groups, guide.relations, 0.5, reduction="sum"))
    finally:
        guide.controller.uninstall()
        capture.clear()


def test_relation_guidance_lowers_the_relation_term(pipe):
    prompts = ["a red circle to the left of a blue square", "a red circle above a blue square"]
    cond = pipe.encode_text(prompts)
    guide = LatentGuidance(pipe.unet, pipe.tokenizer, WORLD, prompts, cond,
                           ExciteConfig(objective="relation", step_size=20.0, iterations=1, relation_margin=0.5))
    scheduler = make_scheduler("dpmpp_2m", pipe.scheduler_config)
    scheduler.set_timesteps(3)
    t = scheduler.timesteps[0]
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    before = _relation_loss_at(pipe, guide, latents, scheduler, t)
    moved = guide(0, t, latents, scheduler)
    after = _relation_loss_at(pipe, guide, moved, scheduler, t)
    assert before > 0 and after < before  # the step goes down the term it is asked to lower
    assert torch.equal(guide(5, t, latents, scheduler), latents)  # only the first excite_steps (5) steps


def test_latent_guidance_needs_a_parser_only_to_read_prompts(pipe):
    cond = pipe.encode_text(PROMPTS)
    scheduler = make_scheduler("dpmpp_2m", pipe.scheduler_config)
    scheduler.set_timesteps(3)
    t = scheduler.timesteps[0]
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    config = ExciteConfig(excite_steps=1, step_size=1e3, iterations=1)
    words = [["circle", "square"], ["triangles"]]
    by_words = LatentGuidance(pipe.unet, pipe.tokenizer, None, PROMPTS, cond, config, words)
    by_parser = LatentGuidance(pipe.unet, pipe.tokenizer, WORLD, PROMPTS, cond, config)
    assert by_words.positions == by_parser.positions  # the parser's nouns are the words given
    moved = by_words(0, t, latents, scheduler)
    assert not torch.allclose(moved, latents) and torch.equal(moved, by_parser(0, t, latents, scheduler))
    for objective in ("relation", "both"):
        with pytest.raises(ValueError, match=f"the '{objective}' objective reads each prompt's objects with a Parser"):
            LatentGuidance(pipe.unet, pipe.tokenizer, None, PROMPTS, cond, ExciteConfig(objective=objective))
    with pytest.raises(ValueError, match="parser=None and no words"):
        LatentGuidance(pipe.unet, pipe.tokenizer, None, PROMPTS, cond, config)
    with pytest.raises(ValueError, match="one embedding per prompt"):
        LatentGuidance(pipe.unet, pipe.tokenizer, WORLD, PROMPTS[:1], cond, config)
    with pytest.raises(PromptParseError, match="cannot read"):
        LatentGuidance(pipe.unet, pipe.tokenizer, WORLD, ["a cat sat", PROMPTS[1]], cond, config)
    lenient = LatentGuidance(pipe.unet, pipe.tokenizer, WORLD, ["a cat sat", PROMPTS[1]], cond,
                             ExciteConfig(objective="both", excite_steps=1, step_size=1e3, iterations=1), strict=False)
    assert lenient.positions == [[], [[3]]] and not bool((lenient.relations >= 0).any())
    moved = lenient(0, t, latents, scheduler)
    assert torch.equal(moved[0], latents[0]) and not torch.allclose(moved[1], latents[1])  # unread: unguided


def test_relation_guidance_in_the_pipeline(pipe, recwarn):
    prompts = ["a red circle to the left of a blue square", "two green triangles"]
    plain = pipe.run(pipe.make_spec(prompts, steps=3, seed=5), progress=False).images
    off = pipe.run(pipe.make_spec(prompts, steps=3, seed=5, relation_guidance=0), progress=False).images
    assert torch.equal(plain, off)
    spec = pipe.make_spec(prompts, steps=3, seed=5, relation_guidance=1e4)
    guided = pipe.run(spec, progress=False).images
    assert not torch.allclose(guided[0], plain[0], atol=1e-3)  # the relation prompt moves
    assert torch.allclose(guided[1], plain[1], atol=1e-5)  # the one without a relation does not
    alone = pipe.run(pipe.make_spec(prompts[0], steps=3, seed=5, relation_guidance=1e4), progress=False).images
    assert torch.allclose(alone[0], guided[0], atol=1e-5)  # a batch equals its items
    assert "states no relation" in str(recwarn.pop(UserWarning).message)


@pytest.mark.parametrize("bad,match", [(-1.0, "relation_guidance must be"), (float("nan"), "relation_guidance must be")])
def test_relation_guidance_bad_values(pipe, bad, match):
    with pytest.raises(ValueError, match=match):
        pipe.make_spec("a red circle to the left of a blue square", relation_guidance=bad)


def test_relation_guidance_needs_world_captions_only_when_asked(excite_folder, tmp_path):
    import shutil

    from t2ikit.pipeline import write_model_defaults

    with pytest.raises(ValueError, match="cannot read 'a cat sat'"):
        T2IPipeline.from_folder(excite_folder).make_spec("a cat sat", relation_guidance=50.0)
    folder = tmp_path / "model"
    shutil.copytree(excite_folder, folder)
    write_model_defaults(folder, relation_guidance=1e4)
    pipe = T2IPipeline.from_folder(folder)
    assert pipe.make_spec("a cat sat").relation_guidance == 1e4  # the default guides what it can read ...
    plain = T2IPipeline.from_folder(excite_folder)
    free = pipe.run(pipe.make_spec("a cat sat", steps=2), progress=False).images
    assert torch.equal(free, plain.run(plain.make_spec("a cat sat", steps=2), progress=False).images)  # ... only
    with pytest.raises(ValueError, match="unknown default"):
        write_model_defaults(folder, relation_guidence=1.0)


def test_cli_relation_guidance(excite_folder, tmp_path, capsys):
    from PIL import Image

    from t2ikit.cli import main

    out = tmp_path / "x.png"
    prompt = "a red circle to the left of a blue square"
    assert main(["generate", prompt, "--model", str(excite_folder), "--steps", "2", "--relation-guidance", "30",
                 "--out", str(out), "--quiet"]) == 0
    assert "Relation guidance: 30.0" in Image.open(out).text["parameters"]
    assert main(["generate", prompt, "--model", str(excite_folder), "--steps", "2", "--relation-guidance", "30",
                 "--region", "0,0,16,16:a red circle", "--out", str(out), "--quiet", "--overwrite"]) == 0  # they compose
    text = Image.open(out).text["parameters"]
    assert "Relation guidance: 30.0" in text and 'Regions: "0,0,16,16:a red circle"' in text
    with pytest.raises(SystemExit):  # argparse lists the choices
        main(["bench", "binding", "--model", str(excite_folder), "--objective", "sideways"])
    assert "invalid choice: 'sideways'" in capsys.readouterr().err
    assert main(["bench", "compbench", "--generator", "noise", "--relation-guidance", "5"]) == 2
    assert "--generator model only" in capsys.readouterr().err


def test_relation_targets_with_a_bpe_tokenizer(tmp_path):
    """Stable Diffusion's CLIP BPE splits words into several tokens: every token of a phrase joins its group."""
    from test_text_tokenizer import _bpe_tokenizer

    bpe = _bpe_tokenizer(tmp_path)
    prompt = "a red circle to the left of a blue square"
    groups, rows = relation_targets(bpe, WORLD, prompt)
    spans = {s.start: s.positions for s in word_token_spans(bpe, prompt)}
    first = [p for start in (0, 2, 6) for p in spans[start]]  # a, red, circle (cir + cle)
    second = [p for start in (28, 30, 35) for p in spans[start]]  # a, blue, square
    assert len(first) == 4 and torch.equal(groups[first], torch.zeros(4, dtype=torch.int64))
    assert (groups[second] == 1).all() and int((groups >= 0).sum()) == len(first) + len(second)
    assert rows[0].tolist() == [0, 1, 0, 1]
    assert object_positions(bpe, WORLD, prompt) == [list(spans[6]), list(spans[35])]  # every token of the noun


def test_encoder_layers_is_the_whole_pass_restricted_to_the_encoders_maps(pipe):
    """layers="encoder" stops the guidance pass after the mid block: its step equals the step of a whole pass whose
    objective reads only the maps of the down and mid blocks, and no up block runs."""
    from dataclasses import replace

    prompts = ["a red circle to the left of a blue square", "a red circle above a blue square"]
    cond = pipe.encode_text(prompts)
    config = ExciteConfig(objective="relation", step_size=20.0, iterations=2, relation_margin=0.5, layers="encoder")
    scheduler = make_scheduler("dpmpp_2m", pipe.scheduler_config)
    scheduler.set_timesteps(3)
    t = scheduler.timesteps[0]
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    up_calls = []
    handle = pipe.unet.up_blocks[0].register_forward_pre_hook(lambda m, a: up_calls.append(1))
    try:
        encoder = LatentGuidance(pipe.unet, pipe.tokenizer, WORLD, prompts, cond, config)(0, t, latents, scheduler)
    finally:
        handle.remove()
    assert not up_calls
    n = sum(1 for name, _ in pipe.unet.named_modules() if name.endswith("attn2") and not name.startswith("up_blocks"))
    whole = LatentGuidance(pipe.unet, pipe.tokenizer, WORLD, prompts, cond, replace(config, layers="all"))
    loss = whole.loss

    def encoder_loss(hw):
        del whole.relation_capture.maps[n:]  # the maps of the up blocks, captured after the encoder's
        return loss(hw)

    whole.loss = encoder_loss
    assert torch.allclose(encoder, whole(0, t, latents, scheduler), atol=1e-6)
    all_layers = LatentGuidance(pipe.unet, pipe.tokenizer, WORLD, prompts, cond, replace(config, layers="all"))
    assert not torch.allclose(encoder, all_layers(0, t, latents, scheduler), atol=1e-4)  # a different objective
    with pytest.raises(ValueError, match="layers must be one of all, encoder"):
        ExciteConfig(layers="decoder").validate()
