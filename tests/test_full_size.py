"""Slow, opt-in (`bash scripts/test.sh -m slow tests/test_full_size.py`): a folder of the full-size SD 1.5
architecture (860M-parameter UNet, CLIP ViT-L/14 text encoder, the real 49,408-token CLIP tokenizer; random
weights, nothing downloaded) through every CLI verb that runs a model, at 128x128 with 2 steps, as a new user
would try it: English prompts, relation guidance, Attend-and-Excite, regions, hierarchical attention, an
instruction edit, inversion, attribution maps and the prompt analysis."""

import json

import pytest
import torch
from families import clip_tokenizer

from t2ikit.cli import main

SIZE = "128x128"


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    """SD 1.5's configuration (diffusers' UNet2DConditionModel and AutoencoderKL defaults are SD 1.x's) with
    random weights, saved in fp16 as SD folders are."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tok = clip_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id))
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=512,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2)
    assert 859e6 < sum(p.numel() for p in unet.parameters()) < 860e6
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    folder = tmp_path_factory.mktemp("sd15") / "sd15"
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.mark.slow
def test_every_verb_on_full_size_sd15(sd15, tmp_path, capsys):
    model = ["--model", str(sd15), "--steps", "2", "--device", "cpu", "--dtype", "fp32"]
    quiet = model + ["--quiet"]
    img = tmp_path / "horse.png"

    def run(*args):
        code = main(list(args))
        out = capsys.readouterr()
        assert code == 0, f"t2ikit {' '.join(args)} -> {code}: {out.err[-2000:]}"
        return out.out

    run("generate", "a horse in a field", *quiet, "--size", SIZE, "--out", str(img))
    for i, extra in enumerate([
        ["--negative", "blurry, low quality"],
        ["--relation-guidance", "5"],
        ["--excite", "5"],
        ["--attention", "hier:1/1/1"],
        ["--region", "0,0,64,128:a red car", "--region-mode", "noise"],
        ["--sampler", "euler_a", "--weighting", "a1111"],
    ]):
        prompt = "a cat to the left of a dog" if i in (1, 2) else "a (red:1.3) car next to a blue house"
        run("generate", prompt, *quiet, "--size", SIZE, "--out", str(tmp_path / f"g{i}.png"), *extra)
    run("edit", str(img), "--source", "a horse in a field", "--instruction", "change the horse to a zebra",
        *model, "--out", str(tmp_path / "zebra.png"))
    run("invert", str(img), "--prompt", "a horse in a field", *quiet, "--uncond", "negative-prompt",
        "--out", str(tmp_path / "horse.safetensors"))
    run("explain", "a red car next to a blue house", *quiet, "--size", SIZE, "--out", str(tmp_path / "maps.png"))
    report = json.loads(run("analyze", "a red car", *quiet, "--size", SIZE, "--seeds", "1", "--no-interactions",
                            "--json"))
    assert report
    parsed = json.loads(run("parse", "a cat to the left of a dog", "--json"))
    assert parsed["relations"][0]["relation"] == "left_of"
    assert "Size: 128x128" in run("info", str(img))  # the PNG records what acted
    for name in ("zebra.png", "maps.png", "horse.safetensors", "g5.png"):
        assert (tmp_path / name).is_file()
