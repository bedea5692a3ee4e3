"""Our pipeline equals diffusers' StableDiffusionPipeline on the same folder, sampler, seed and steps."""

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, StableDiffusionPipeline

from tiny import make_tiny_sd_folder
from t2ikit.pipeline import T2IPipeline

TOL = 1e-4
SCHEDULERS = {"ddim": DDIMScheduler, "dpmpp_2m": DPMSolverMultistepScheduler, "euler_a": EulerAncestralDiscreteScheduler}


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    folder = make_tiny_sd_folder(tmp_path_factory.mktemp("parity") / "model")
    ref = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    ref.set_progress_bar_config(disable=True)
    return T2IPipeline.from_folder(folder), ref


def _reference(ref, sampler, prompt, negative, generator, output_type, **kw):
    ref.scheduler = SCHEDULERS[sampler].from_config(ref.scheduler.config)
    out = ref(prompt, negative_prompt=negative, num_inference_steps=4, guidance_scale=6.0, generator=generator,
              output_type=output_type, **kw)
    return out.images


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "euler_a"])
@pytest.mark.parametrize("negative", [None, "blue square"])
def test_parity_single_image(pipes, sampler, negative):
    ours, ref = pipes
    got = ours.run(ours.make_spec("a red circle", negative, steps=4, guidance=6.0, seed=3, sampler=sampler),
                   progress=False)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    latents = _reference(ref, sampler, "a red circle", negative, gen(), "latent")
    images = _reference(ref, sampler, "a red circle", negative, gen(), "pt")
    assert (got.latents - latents).abs().max() <= TOL
    assert (got.images - images).abs().max() <= TOL
    assert 0 < got.images.std()  # not a blank image that would match anything


def test_guidance_rescale_equals_diffusers_and_changes_the_image(pipes):
    """guidance_rescale=phi is diffusers' guidance_rescale (Lin et al. 2024) on the same folder and seed; at a
    scale far from 1 it changes the latents (so the equality is not that of a no-op)."""
    ours, ref = pipes
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    got = ours.run(ours.make_spec("a red circle", "blue square", steps=4, guidance=6.0, seed=3,
                                  guidance_rescale=0.7), decode=False, progress=False)
    latents = _reference(ref, "dpmpp_2m", "a red circle", "blue square", gen(), "latent", guidance_rescale=0.7)
    assert (got.latents - latents).abs().max() <= TOL
    plain = _reference(ref, "dpmpp_2m", "a red circle", "blue square", gen(), "latent")
    assert (got.latents - plain).abs().max() > 100 * TOL


def test_parity_batch_with_per_image_generators(pipes):
    """diffusers draws a batch from ONE generator; given one generator per image it matches ours."""
    ours, ref = pipes
    got = ours.run(ours.make_spec("a red circle", "green", steps=4, guidance=6.0, seed=5, n=3), progress=False)
    gens = [torch.Generator().manual_seed(5 + k) for k in range(3)]
    latents = _reference(ref, "dpmpp_2m", "a red circle", "green", gens, "latent", num_images_per_prompt=3)
    assert (got.latents - latents).abs().max() <= TOL
    one = _reference(ref, "dpmpp_2m", "a red circle", "green", torch.Generator().manual_seed(5), "latent",
                     num_images_per_prompt=3)
    assert (got.latents[1:] - one[1:]).abs().max() > TOL  # one shared generator: a different batch


def test_word_level_tokenizer_at_32_round_trips_through_diffusers(tmp_path):
    """The shipped model's tokenizer (caption words, context 32) saved in a folder loads in diffusers."""
    from t2ikit.text import known_words, token_positions
    from t2ikit.world.vocab import caption_words

    folder = make_tiny_sd_folder(tmp_path / "m32", max_length=32)
    ref = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    ours = T2IPipeline.from_folder(folder)
    prompt = "two small blue squares to the left of a red circle on a gray background"
    assert ref.tokenizer.model_max_length == ours.tokenizer.model_max_length == 32
    assert ref.tokenizer(prompt)["input_ids"] == ours.tokenizer(prompt)["input_ids"]
    assert len(ref.tokenizer(prompt)["input_ids"]) == len(prompt.split()) + 2  # one token per word
    assert known_words(ref.tokenizer) >= set(caption_words())
    assert token_positions(ref.tokenizer, prompt, "red circle") == [10, 11]
    ref.set_progress_bar_config(disable=True)
    out = ref(prompt, num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert out.images.shape == (1, 4, 8, 8)
