"""Tiny random SD 1.x, SD 2.x and SDXL folders that use the real CLIP BPE tokenizer (shared by test files).

The tokenizer is built from the BPE merges the `open-clip-torch` wheel ships
(`open_clip/bpe_simple_vocab_16e6.txt.gz`, installed with `pip install --no-deps open-clip-torch`: see
.ci/run): the 49,408-token vocabulary of every SD text encoder. The package is only read as data, never
imported (it would need torchvision). Each folder is what diffusers' pipeline class of its family saves,
so `T2IPipeline.from_folder` and diffusers load the same files.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import tempfile
from pathlib import Path

import pytest
import torch

from tiny import TINY_SCHEDULER

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_MERGES = 49152 - 256 - 2  # merges CLIP uses from the file: vocabulary 2 * 256 bytes + merges + 2 specials
FAMILIES = ("sd1", "sd2", "sdxl")


def bpe_vocab_path() -> Path:
    """The open_clip wheel's BPE file, found without importing open_clip; the test fails, saying how to install
    it, when the package is missing (as tests/test_ui.py does for its browser)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("open-clip-torch is not installed: pip install --no-deps open-clip-torch (.ci/run does)")
    return Path(spec.submodule_search_locations[0]) / VOCAB_FILE


@functools.lru_cache(maxsize=1)
def _clip_files() -> tempfile.TemporaryDirectory:
    """vocab.json and merges.txt of CLIP's BPE, as an SD tokenizer folder holds them (written once a session)."""
    from t2ikit.text.tokenizer import bytes_to_unicode

    lines = gzip.open(bpe_vocab_path()).read().decode("utf-8").split("\n")
    merges = lines[1:CLIP_MERGES + 1]  # line 0 is a version header
    base = list(bytes_to_unicode().values())  # byte symbols, then the same at a word's end, then each merge
    tokens = base + [b + "</w>" for b in base] + [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder = tempfile.TemporaryDirectory(prefix="clip-bpe-")
    Path(folder.name, "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    Path(folder.name, "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def clip_tokenizer(max_length: int = 77, pad: str = "<|endoftext|>"):
    """The real CLIP tokenizer (SD 1.x pads with <|endoftext|>; SD 2.x and SDXL's second one with "!")."""
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(_clip_files().name, model_max_length=max_length, pad_token=pad)
    assert len(tok) == 49408
    return tok


def _clip_text(tokenizer, hidden: int, projection: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, projection_dim=projection or hidden)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=8, layers_per_block=1, sample_size=16, scaling_factor=0.5).eval()


def _unet(context: int, **kw):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=context, attention_head_dim=4, norm_num_groups=8, **kw).eval()


def make_family_folder(path, family: str, seed: int = 0, max_length: int = 77) -> Path:
    """A tiny random diffusers folder of `family` ("sd1", "sd2" or "sdxl") with the real CLIP tokenizer.

    sd2: v-prediction scheduler, linear-projection transformers, tokenizer padded with "!" (SD 2's layout; the
    text width stays tiny). sdxl: two text encoders (the second with a projection), pooled text and size/crop
    micro-conditioning in the UNet (addition_embed_type "text_time").
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {family!r}")
    torch.manual_seed(seed)
    schedule = dict(TINY_SCHEDULER, prediction_type="v_prediction" if family == "sd2" else "epsilon")
    vae = _vae()
    if family == "sdxl":
        tok, tok2 = clip_tokenizer(max_length), clip_tokenizer(max_length, pad="!")
        te, te2 = _clip_text(tok, 32), _clip_text(tok2, 32, projection=16)
        time_dim = 4  # addition_time_embed_dim: each of the 6 micro-conditioning numbers -> 4 features
        unet = _unet(64, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
                     projection_class_embeddings_input_dim=6 * time_dim + 16, use_linear_projection=True)
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
                                         unet=unet, scheduler=DDIMScheduler(**schedule))
    else:
        tok = clip_tokenizer(max_length, pad="!" if family == "sd2" else "<|endoftext|>")
        unet = _unet(32, use_linear_projection=family == "sd2")
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=_clip_text(tok, 32), tokenizer=tok, unet=unet,
                                       scheduler=DDIMScheduler(**schedule), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    return path
