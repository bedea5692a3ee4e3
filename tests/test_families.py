"""SD 1.x, SD 2.x and SDXL folders with the real CLIP tokenizer: parity with diffusers' pipeline of each family,
`t2ikit models` telling them apart, and every technique acting on each (tests/families.py builds the folders)."""

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from families import FAMILIES, make_family_folder
from test_compose import _run, techniques

from t2ikit.models.registry import describe
from t2ikit.pipeline import T2IPipeline

TOL = 1e-4
PROMPT = "a small red circle to the left of a blue square"
REFERENCE = {"sd1": StableDiffusionPipeline, "sd2": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {f: make_family_folder(root / f, f) for f in FAMILIES}


@pytest.fixture(scope="module")
def pipes(folders):
    return {f: T2IPipeline.from_folder(folders[f]) for f in FAMILIES}


def test_models_tells_the_families_apart(folders, pipes):
    kinds = {f: describe(folders[f]) for f in FAMILIES}
    assert {f: e.kind for f, e in kinds.items()} == {"sd1": "sd1", "sd2": "sd2", "sdxl": "sdxl"}
    assert kinds["sd2"].prediction == "v_prediction" and kinds["sd1"].prediction == "epsilon"
    assert kinds["sdxl"].params > kinds["sd1"].params  # the second text encoder is counted
    assert pipes["sdxl"].is_sdxl and not pipes["sd2"].is_sdxl
    assert len(pipes["sd1"].tokenizer) == 49408 and pipes["sd2"].tokenizer.pad_token == "!"


@pytest.mark.parametrize("family,sampler,negative,size", [
    ("sd2", "dpmpp_2m", "a green triangle", (16, 24)),  # v-prediction
    ("sdxl", "ddim", None, (16, 16)),  # no negative prompt: SDXL's zero unconditional states
    ("sdxl", "dpmpp_2m", "a green triangle", (24, 16)),  # not square: time ids are (height, width)
])
def test_parity_with_diffusers(folders, pipes, family, sampler, negative, size):
    ours = pipes[family]
    ref = REFERENCE[family].from_pretrained(folders[family], local_files_only=True)
    ref.set_progress_bar_config(disable=True)
    if sampler == "dpmpp_2m":
        ref.scheduler = DPMSolverMultistepScheduler.from_config(ref.scheduler.config)
    got = ours.run(ours.make_spec(PROMPT, negative, steps=3, guidance=6.0, seed=3, n=2, sampler=sampler, size=size),
                   progress=False)
    out = ref(PROMPT, negative_prompt=negative, num_inference_steps=3, guidance_scale=6.0, height=size[0],
              width=size[1], generator=[torch.Generator().manual_seed(3 + k) for k in range(2)], output_type="pt",
              num_images_per_prompt=2).images
    assert got.images.shape == out.shape
    assert (got.images - out).abs().max() <= TOL
    assert got.images.std() > 0  # not a blank image that would match anything


def test_sdxl_without_pooled_or_size_conditioning_differs(pipes):
    """The added conditioning acts: other sizes' time ids or another negative prompt change the image."""
    pipe = pipes["sdxl"]
    base = pipe.run(pipe.make_spec(PROMPT, steps=2, seed=1, size=(16, 16)), decode=False, progress=False).latents
    empty = pipe.run(pipe.make_spec(PROMPT, "", steps=2, seed=1, size=(16, 16)), decode=False, progress=False).latents
    assert not torch.equal(base, empty)  # "" is encoded; no negative means zeros (force_zeros_for_empty_prompt)


SINGLE = ["weighting", "negative", "regions", "regions_noise", "topk", "hier", "relation", "excite", "scales",
          "sketch", "reference"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_technique_acts_on_each_family(pipes, family):
    """Each technique changes the image (on SDXL, the family whose UNet reads more than text states; SD 1.x's are
    in tests/test_compose.py), and all of them run in one call on each family, twice the same (real tokenizer,
    English parser)."""
    pipe = pipes[family]
    table = techniques(pipe)
    if family == "sdxl":
        plain = _run(pipe, [], table)[0]
        for name in SINGLE:
            out = _run(pipe, [name], table)[0]
            assert torch.isfinite(out).all() and not torch.equal(out, plain), f"{family}: {name} did not act"
    names = ["weighting", "negative", "relation", "excite", "scales", "sketch", "reference", "regions_noise", "hier"]
    everything = _run(pipe, names, table)[0]
    assert torch.isfinite(everything).all() and torch.equal(everything, _run(pipe, names, table)[0])


def test_sdxl_loads_lora_and_embeddings_into_both_encoders(folders, tmp_path):
    from safetensors.torch import save_file

    pipe = T2IPipeline.from_folder(folders["sdxl"])
    base = _latents(pipe, "a red <glint> circle")
    enc = pipe.text_encoder
    torch.manual_seed(0)
    widths = [e.get_input_embeddings().weight.shape[1] for e in (enc.text_encoder, enc.text_encoder_2)]
    save_file({"clip_l": torch.randn(2, widths[0]), "clip_g": torch.randn(2, widths[1])}, tmp_path / "glint.safetensors")
    assert pipe.load_embedding(tmp_path / "glint.safetensors", token="<glint>") == "<glint>"
    ids = enc.tokenizer_2.convert_tokens_to_ids(["<glint>", "<glint>_1"])
    assert ids == pipe.tokenizer.convert_tokens_to_ids(["<glint>", "<glint>_1"]) and min(ids) >= 49408
    glint = _latents(pipe, "a red <glint> circle")
    assert not torch.equal(glint, base)
    key = "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj"  # diffusers' (peft) names, second encoder
    q = enc.text_encoder_2.text_model.encoder.layers[0].self_attn.q_proj
    lora = {f"{key}.lora_A.weight": torch.randn(2, q.in_features), f"{key}.lora_B.weight": torch.randn(q.out_features, 2)}
    save_file(lora, tmp_path / "te2.safetensors")
    before = q.weight.clone()
    assert pipe.load_lora(tmp_path / "te2.safetensors", 0.5) == ["text_encoder_2"]
    q = enc.text_encoder_2.text_model.encoder.layers[0].self_attn.q_proj  # a plain Linear again, LoRA fused
    delta = 0.5 * lora[f"{key}.lora_B.weight"] @ lora[f"{key}.lora_A.weight"]
    assert type(q) is torch.nn.Linear and torch.allclose(q.weight, before + delta, atol=1e-5)
    assert not torch.equal(_latents(pipe, "a red <glint> circle"), glint)


def _latents(pipe, prompt):
    return pipe.run(pipe.make_spec(prompt, steps=2, seed=0), decode=False, progress=False).latents
