"""Inversion and editing on SDXL: every pass carries the UNet's added conditioning (pooled text, size/crop time
ids) of its rows, as generation does (tests/families.py builds the tiny SDXL folder with the real CLIP tokenizer)."""

import pytest
import torch
from families import make_family_folder
from safetensors.torch import load_file

from t2ikit.diffusion.inversion import ddim_denoise, invert, reconstruct
from t2ikit.edit import edit
from t2ikit.pipeline import T2IPipeline

PROMPT, TARGET = "a red square", "a blue square"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_family_folder(tmp_path_factory.mktemp("sdxl") / "sdxl", "sdxl")


@pytest.fixture(scope="module")
def xl(folder):
    return T2IPipeline.from_folder(folder)


def _image(seed=0, size=(16, 16)):
    return torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed))


def test_sdxl_inversion_agrees_with_diffusers_and_round_trips(xl):
    """x_T equals diffusers' DDIMInverseScheduler run on the UNet with StableDiffusionXLPipeline's own prompt
    embeddings, pooled embedding and time ids (not square: time ids are (height, width)); sampled back from it, the
    image's latents come back far closer than from fresh noise (a random tiny UNet's prediction changes fast with
    its input, so DDIM inversion is loose on it and the bound is relative; tests/test_inversion.py holds the shipped
    model to PSNR)."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler, StableDiffusionXLPipeline

    image = _image(0, (16, 24))
    inv = invert(xl, image, PROMPT, steps=10)
    enc = xl.text_encoder  # diffusers' pipeline on the same modules (loading the folder again costs seconds)
    ref = StableDiffusionXLPipeline(xl.vae, enc.text_encoder, enc.text_encoder_2, xl.tokenizer, enc.tokenizer_2,
                                    xl.unet, DDIMScheduler.from_config(xl.scheduler_config))
    embeds, _, pooled, _ = ref.encode_prompt(PROMPT, do_classifier_free_guidance=False)
    time_ids = ref._get_add_time_ids((16, 24), (0, 0), (16, 24), embeds.dtype,
                                     text_encoder_projection_dim=ref.text_encoder_2.config.projection_dim)
    config = {k: v for k, v in xl.scheduler_config.items() if not k.startswith("_")}
    sched = DDIMInverseScheduler.from_config({**config, "clip_sample": False, "set_alpha_to_one": True})
    sched.set_timesteps(10)
    x = inv.trajectory[-1]
    with torch.no_grad():
        for t in sched.timesteps:
            out = ref.unet(x, t, encoder_hidden_states=embeds, added_cond_kwargs={"text_embeds": pooled,
                                                                                  "time_ids": time_ids}).sample
            x = sched.step(out, t, x).prev_sample
    assert (inv.noise - x).abs().max() <= 1e-4 * max(1.0, float(x.abs().max()))
    x0 = inv.trajectory[-1]
    back = reconstruct(xl, inv, decode=False)
    noise = torch.randn(inv.noise.shape, generator=torch.Generator().manual_seed(0))
    fresh = ddim_denoise(xl.unet, inv.schedule, noise, inv.cond, added=inv.added)
    assert (fresh - x0).norm() > 5 * (back - x0).norm()  # measured 8.1x
    assert reconstruct(xl, inv).shape == image.shape


def test_sdxl_guided_inversion_keeps_its_unconditional_rows(xl):
    """negative-prompt inversion gives the unconditional rows the prompt's own pooled text too (cfg(c, c, s) = c:
    the guidance-1 reconstruction); null-text optimises the text states and keeps the negative's pooled text, the
    same each run."""
    image = _image(1)
    plain = reconstruct(xl, invert(xl, image, PROMPT, steps=3), decode=False)
    neg = invert(xl, image, PROMPT, steps=3, guidance=5.0, uncond="negative-prompt")
    assert neg.uncond_added is neg.added
    torch.testing.assert_close(reconstruct(xl, neg, decode=False), plain)
    a, b = (invert(xl, image, PROMPT, steps=3, guidance=3.0, uncond="null-text", null_text_iters=2) for _ in range(2))
    assert torch.equal(a.uncond_added["text_embeds"], xl.sdxl_added([""], (16, 16))["text_embeds"])
    assert len(a.uncond) == 3 and not torch.equal(a.uncond[0], xl.encode_text([""]))
    assert torch.equal(reconstruct(xl, a, decode=False), reconstruct(xl, b, decode=False))


@pytest.mark.parametrize("method,mask", [("p2p", None), ("swap", None), ("blend", "auto"), ("p2p", "attention")])
def test_sdxl_edits_change_the_image_and_repeat(xl, method, mask):
    image = _image(2)
    a = edit(xl, image, PROMPT, TARGET, method=method, mask=mask, steps=3)
    b = edit(xl, image, PROMPT, TARGET, method=method, mask=mask, steps=3, inversion=a.inversion)
    assert torch.equal(a.images, b.images)  # same inputs, same image (the inversion repeats: the test above)
    assert torch.isfinite(a.images).all() and not torch.equal(a.images, image)
    other = edit(xl, image, PROMPT, "a green square", method=method, mask=mask, steps=3, inversion=a.inversion)
    assert not torch.equal(a.images, other.images)  # the target prompt acts


def test_sdxl_edit_batch_equals_its_items(xl):
    """Each image's rows carry its own prompts' pooled text through inversion, null-text, the DiffEdit mask and
    the p2p batch [sources; targets]: image b of a batch is image b edited alone with seed + b."""
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    sources = [PROMPT, "a green circle"]
    inverted = [invert(xl, im, src, steps=3, guidance=4.0, uncond="null-text", null_text_iters=2)
                for im, src in ((images, sources), (images[1:], sources[1]))]
    options = dict(method="p2p", mask="auto", steps=3, guidance=4.0, uncond="null-text")
    both = edit(xl, images, sources, [TARGET, "a green square"], inversion=inverted[0], **options).images
    alone = edit(xl, images[1:], sources[1], "a green square", seed=1, inversion=inverted[1], **options).images
    assert (both[1:] - alone).abs().max() < 1e-4  # measured 1.1e-5: batched sums in another order


def test_sdxl_cli_invert_and_edit(folder, tmp_path):
    from PIL import Image

    from t2ikit.cli import main

    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "red.png")
    model = ["--model", str(folder), "--quiet"]
    assert main(["invert", str(tmp_path / "red.png"), "--prompt", PROMPT, "--out", str(tmp_path / "red.safetensors"),
                 "--steps", "2", "--guidance", "3", "--uncond", "null-text", *model]) == 0
    saved = load_file(str(tmp_path / "red.safetensors"))
    assert saved["latents"].shape == (1, 4, 8, 8) and saved["time_ids"].tolist() == [[16, 16, 0, 0, 16, 16]]
    assert saved["pooled"].shape == saved["uncond_pooled"].shape == (1, 16)
    assert main(["edit", str(tmp_path / "red.png"), "--source", PROMPT, "--target", TARGET, "--steps", "2",
                 "--out", str(tmp_path / "blue.png"), *model]) == 0
    assert Image.open(tmp_path / "blue.png").size == (16, 16)


def test_sdxl_analyses_sample_states_with_their_prompts_pooled_text(xl):
    """The analyses' runner samples precomputed states; on SDXL each row's pooled text is its prompt's, so the
    plain prompt's row reproduces generate (the runner's promise), and it differs from the empty prompt's."""
    from t2ikit.analysis.runner import sample_embeds, sample_prompts

    ours = sample_prompts(xl, [PROMPT], [3], steps=2, guidance=5.0, sampler="ddim")
    plain = xl.run(xl.make_spec(PROMPT, "", steps=2, guidance=5.0, seed=3, sampler="ddim", size=(16, 16),
                                relation_guidance=0.0), progress=False).images
    assert torch.equal(ours, plain)
    empty = sample_embeds(xl, xl.encode_text([PROMPT]), [3], 2, 5.0, "ddim")  # no prompts: the empty one's
    assert not torch.equal(ours, empty)


def test_soft_prompt_learning_refuses_sdxl_with_a_sentence(xl):
    from t2ikit.analysis.soft_prompt import diffusion_eval_loss, learn_token

    with pytest.raises(ValueError, match="does not run on SDXL"):
        learn_token(xl, "zorb", _image())
    with pytest.raises(ValueError, match="does not run on SDXL"):
        diffusion_eval_loss(xl, torch.zeros(1, 4, 2, 2), xl.encode_text([PROMPT]))
