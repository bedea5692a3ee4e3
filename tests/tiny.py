"""Tiny random components and model folders for fast tests (shared: other test files import this).

`make_tiny_sd_folder(path)` writes a complete diffusers Stable Diffusion folder (random weights, our
word-level tokenizer) that both `T2IPipeline.from_folder` and `StableDiffusionPipeline.from_pretrained`
load. Everything is small enough that a 4-step generation takes tens of milliseconds on a CPU.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the hub

from pathlib import Path

import torch

# Tiny models are dominated by thread start-up: one thread is 100x faster than two on a busy 2-core box.
torch.set_num_threads(1)

TINY_SCHEDULER = dict(  # SD's noise schedule
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


def tiny_tokenizer(max_length: int = 16):
    from t2ikit.text import build_tokenizer
    from t2ikit.world.vocab import caption_words

    return build_tokenizer(caption_words(), max_length)


def tiny_components(seed: int = 0, max_length: int = 16, text_dim: int = 32) -> dict:
    """unet, vae, text_encoder, tokenizer: random, a few channels each. Latents 4x8x8, images 16x16."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from t2ikit.text import text_encoder_for

    tokenizer = tiny_tokenizer(max_length)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_dim,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=16,
        scaling_factor=0.5,  # deliberately not SD's 0.18215: the pipeline must read it from the config
    )
    text_encoder = text_encoder_for(tokenizer, hidden_size=text_dim, layers=2, heads=4)
    for model in (unet, vae, text_encoder):
        model.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}


def make_tiny_sd_folder(path, scheduler: str = "ddim", seed: int = 0, max_length: int = 16) -> Path:
    """Write a tiny random SD 1.x-style diffusers folder to `path` (safetensors weights) and return it."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler, StableDiffusionPipeline

    from t2ikit.text import save_tokenizer

    classes = {"ddim": DDIMScheduler, "dpmpp_2m": DPMSolverMultistepScheduler, "pndm": PNDMScheduler}
    parts = tiny_components(seed, max_length)
    pipe = StableDiffusionPipeline(
        **parts,
        scheduler=classes[scheduler](**TINY_SCHEDULER) if scheduler != "dpmpp_2m" else classes[scheduler](
            **{k: v for k, v in TINY_SCHEDULER.items() if k not in ("clip_sample", "set_alpha_to_one")}
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    save_tokenizer(parts["tokenizer"], path / "tokenizer")  # adds vocab.json + merges.txt
    (path / "t2ikit.json").write_text('{"parser": "shapes-world"}\n')  # its words are Shapes World captions'
    return path


def generate_with(pipe, prompt, decode: bool = True, hooks=None, callback=None, **settings):
    """A Generation of one `T2IPipeline.run` with any GenerationSpec settings (no progress bar)."""
    return pipe.run(pipe.make_spec(prompt, **settings), decode=decode, progress=False, hooks=hooks, callback=callback)
