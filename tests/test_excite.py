"""Attend-and-Excite on a tiny random model: object words from the parser, exact plain path, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import make_tiny_sd_folder

from t2ikit.analysis.excite import ExciteConfig, excite_loss, object_words, sample_excite
from t2ikit.analysis.runner import sample_prompts
from t2ikit.pipeline import T2IPipeline

torch.set_num_threads(1)
PROMPTS = ["a red circle to the left of a blue square", "two green triangles"]


@pytest.fixture(scope="module")
def excite_folder(tmp_path_factory):  # not conftest's: DPM-Solver and 32x32 images for the oracle
    root = make_tiny_sd_folder(tmp_path_factory.mktemp("tiny") / "model", scheduler="dpmpp_2m")
    config = root / "unet" / "config.json"  # 16x16 latents -> 32x32 images, the oracle's smallest
    config.write_text(json.dumps({**json.loads(config.read_text()), "sample_size": 16}))
    return root


@pytest.fixture(scope="module")
def pipe(excite_folder):
    return T2IPipeline.from_folder(excite_folder)


def test_object_words_come_from_the_parser(pipe):
    tok = pipe.tokenizer
    assert object_words(tok, PROMPTS[0]) == [[3], [10]]  # "circle", "square" (BOS is 0)
    assert object_words(tok, PROMPTS[1]) == [[3]]  # the plural noun
    assert object_words(tok, PROMPTS[0], ["square"]) == [[10]]
    with pytest.raises(ValueError, match="hexagon"):
        object_words(tok, PROMPTS[0], ["hexagon"])
    with pytest.raises(ValueError, match="at least one"):
        object_words(tok, PROMPTS[0], [])


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
