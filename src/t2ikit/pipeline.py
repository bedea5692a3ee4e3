"""Load a diffusers model folder and generate images: `T2IPipeline.from_folder(path).generate(prompt)`.

A model is a diffusers Stable Diffusion folder (model_index.json, unet/, vae/, text_encoder/,
tokenizer/, scheduler/, safetensors weights): the shipped Shapes World model and any local SD 1.x/2.x
folder alike. Nothing is downloaded; pickle weights are refused.

Seeds: image k of a call (prompt p, copy j, k = p * n + j) is drawn from its own CPU generator seeded
`seed + k`, for the initial noise and for any step noise. So a batch equals its items generated one by
one, and the same seed gives the same image on any device. diffusers' StableDiffusionPipeline given
`generator=torch.Generator().manual_seed(seed)` draws the whole batch from one generator: it matches
this pipeline for a single image, and for batches when given the list `[Generator(seed + k) ...]`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from t2ikit.attention.processor import AttentionController
from t2ikit.attention.variants import hooks_from_spec
from t2ikit.control.boxes import DEFAULT_BOX_GUIDANCE, DEFAULT_MASK_FRACTION, BoxAttentionHook, BoxGuidance, \
    box_targets, parse_box
from t2ikit.control.compose import WHITE, bootstrap_step, parse_scales, resolve_adapter
from t2ikit.control.encoders import CONDITIONS, load_condition, to_batch
from t2ikit.control.layout import CHOOSING, LAYOUTS, boxed, check_gap, check_sides, plan_layout
from t2ikit.control.reference import ReferenceAdapter
from t2ikit.control.regions import REGION_MODES, Region, RegionAttentionHook, batch_regions, layout_regions, \
    parse_region, region_context
from t2ikit.diffusion.cache import BRANCHES, cached_denoiser, check_interval
from t2ikit.diffusion.conditioning import Conditioning, check_guidance_interval
from t2ikit.diffusion.guidance import DEFAULT_MODE, MODES, Condition, check_rescale
from t2ikit.diffusion.latent_guidance import LAYERS as LATENT_LAYERS
from t2ikit.diffusion.latent_guidance import PASSES as LATENT_PASSES
from t2ikit.diffusion.latent_guidance import ExciteConfig, JointGuidance, LatentGuidance
from t2ikit.diffusion.loop import initial_noise, sample
from t2ikit.diffusion.samplers import (DEFAULT_SAMPLER, check_sampler, check_sampler_fits, make_scheduler,
                                      sampler_display_name)
from t2ikit.models.device import resolve_device, resolve_dtype
from t2ikit.models.memory import check_memory
from t2ikit.models.sdxl import DualTextEncoder, added_conditioning, is_sdxl_index
from t2ikit.text.encoder import encode_prompts
from t2ikit.text import instructions as _english  # noqa: F401  (registers the "english" parser, the default, and its instructions)
from t2ikit.text.parser import RELATION_AXES, PromptParseError, get_parser, parser_names
from t2ikit.text.tokenizer import known_words
from t2ikit.text.weighting import DEFAULT_WEIGHTING, check_weighted_prompt, check_weighting, encode_prompt_pair, \
    plain_text

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
T2IKIT_CONFIG = "t2ikit.json"  # optional file in a model folder: {"defaults": {...}, "parser": ..., "layout_sides": ...}
DEFAULT_PARSER = "english"  # the prompt parser of a folder whose t2ikit.json names none (any SD folder)

# Guidance when the folder names none: SD's customary 7.5 for a BPE (SD) text encoder; a small
# word-level model trained on Shapes World saturates colours at that scale, so it gets less.
DEFAULT_GUIDANCE_SD = 7.5
DEFAULT_GUIDANCE_WORD_LEVEL = 4.0
DEFAULT_STEPS = 20
# what t2ikit.json's "defaults" may set
DEFAULT_KEYS = ("steps", "guidance", "sampler", "relation_guidance", "layout", "box_guidance", "guidance_rescale")
# the plain sampler: no sampling-time latent guidance and no planned layout, whatever a model's defaults turn on
PLAIN = {"relation_guidance": 0.0, "layout": "none"}
# fast=True: the settings benchmarks/fast.py measured as the best speed at CompBench within 2 points of the
# default on both splits (docs/FAST.md: CFG on the first 70% of the steps; the first half lost held-out single
# objects); each is also its own switch, and one given explicitly wins over fast's.
FAST_SETTINGS = {"guidance_interval": (0.0, 0.7)}


# ----------------------------------------------------------------------------------------------------
# Checking a model folder before loading anything


def _weights(folder: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, pickle files) directly in `folder`."""
    if not folder.is_dir():
        return [], []
    files = sorted(folder.iterdir())
    return [f for f in files if f.suffix == ".safetensors"], [f for f in files if f.suffix in PICKLE_SUFFIXES]


def check_model_folder(path: str | os.PathLike) -> Path:
    """`path` as a Path if it is a loadable diffusers SD folder, else ValueError naming what is wrong."""
    root = Path(path).expanduser()
    if root.is_file():
        if root.suffix in PICKLE_SUFFIXES + (".safetensors",):
            raise ValueError(
                f"{root} is a single-file checkpoint; t2ikit loads diffusers folders (model_index.json, "
                f"unet/, vae/, ...). Convert it with diffusers' conversion scripts first"
            )
        raise ValueError(f"model path {root} is a file, not a diffusers model folder")
    if not root.is_dir():
        raise ValueError(f"model folder {root} does not exist")
    missing, pickles = [], []
    if not (root / "model_index.json").is_file():
        missing.append("model_index.json")
    for name, config in [
        ("unet", "config.json"),
        ("vae", "config.json"),
        ("text_encoder", "config.json"),
        ("scheduler", "scheduler_config.json"),
    ]:
        if not (root / name / config).is_file():
            missing.append(f"{name}/{config}")
        if name == "scheduler":
            continue
        safe, pickle = _weights(root / name)
        if not safe:
            pickles += pickle
            missing.append(f"{name}/*.safetensors")
    xl = is_sdxl_index(_index_of(root))  # SDXL: a second text encoder and tokenizer
    if xl:
        safe, pickle = _weights(root / "text_encoder_2")
        pickles += [] if safe else pickle
        missing += [] if (root / "text_encoder_2" / "config.json").is_file() else ["text_encoder_2/config.json"]
        missing += [] if safe else ["text_encoder_2/*.safetensors"]
    for tok in [root / "tokenizer"] + ([root / "tokenizer_2"] if xl else []):
        if not (tok / "tokenizer.json").is_file() and not (
            (tok / "vocab.json").is_file() and (tok / "merges.txt").is_file()
        ):
            missing.append(f"{tok.name}/tokenizer.json (or {tok.name}/vocab.json + {tok.name}/merges.txt)")
    if pickles:
        raise ValueError(
            f"model folder {root} has only pickle-format weights ({', '.join(str(p.relative_to(root)) for p in pickles)}); "
            f"loading pickle runs arbitrary code, so t2ikit refuses it. Convert the weights to .safetensors"
        )
    if missing:
        raise ValueError(f"{root} is not a complete diffusers model folder; missing: {', '.join(missing)}")
    return root


def _index_of(root: Path) -> dict:
    """model_index.json of `root` ({} when missing or unreadable: check_model_folder names that)."""
    try:
        return json.loads((root / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def read_folder_config(root: Path) -> dict:
    """model_index.json and the optional t2ikit.json, checked to be SD-style components."""
    try:
        index = json.loads((root / "model_index.json").read_text())
        extra = json.loads((root / T2IKIT_CONFIG).read_text()) if (root / T2IKIT_CONFIG).is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"model folder {root} has a corrupt JSON file: {err}") from None
    expected = {"text_encoder": {"CLIPTextModel"}, "tokenizer": {"CLIPTokenizer", "CLIPTokenizerFast"}}
    if is_sdxl_index(index):
        expected.update({"text_encoder_2": {"CLIPTextModelWithProjection"},
                         "tokenizer_2": {"CLIPTokenizer", "CLIPTokenizerFast"}})
    for name, allowed in expected.items():
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] in allowed):
            raise ValueError(f"model folder {root}: {name} must be one of {sorted(allowed)}; model_index.json says {entry}")
    return {"index": index, "t2ikit": extra}


# ----------------------------------------------------------------------------------------------------
# What to generate


@dataclass
class GenerationSpec:
    """One call's request, validated before any compute; also what a PNG records (`settings`)."""

    prompts: list[str]  # one entry per distinct prompt (weighting syntax allowed, see `weighting`)
    negative_prompts: list[str] | None = None  # same length as prompts; None means "" with guidance
    steps: int = DEFAULT_STEPS  # denoising steps (scheduler.set_timesteps)
    guidance: float = DEFAULT_GUIDANCE_SD  # classifier-free guidance scale, >= 0; 1 means no guidance
    seed: int = 0  # image k uses seed + k
    n: int = 1  # images per prompt
    size: tuple[int, int] = (512, 512)  # (height, width) in pixels
    sampler: str = DEFAULT_SAMPLER  # a name in t2ikit.diffusion.SAMPLERS
    relation_guidance: float = 0.0  # step size of relation guidance (diffusion.latent_guidance); 0 = off
    excite: float = 0.0  # step size of Attend-and-Excite on the prompt's object nouns; 0 = off
    weighting: str = DEFAULT_WEIGHTING  # prompt weighting syntax: "a1111", "compel" or "none" (text.weighting)
    attention: str | None = None  # sparse / hierarchical cross-attention: "topk:K", "topp:P", "prune", "hier:W/P/S"
    conditions: dict = field(default_factory=dict)  # sketch / depth / mask / reference -> image (or one per prompt)
    adapters: dict = field(default_factory=dict)  # condition -> adapter folder or module (default: the shipped one)
    scales: dict = field(default_factory=dict)  # "text", "regions" or a condition name -> its scale
    regions: list = field(default_factory=list)  # control.regions.Region or "x0,y0,x1,y1:prompt" / "mask.png:prompt"
    region_mode: str = "attention"  # "attention" (masked cross-attention) or "noise" (MultiDiffusion)
    bootstrap: float = 0.0  # with regions: fraction of steps the latents outside all regions are reset
    background: tuple = WHITE  # the bootstrap's plain background colour, RGB in [0, 1]
    guidance_mode: str = DEFAULT_MODE  # how N conditions combine: "composed" or "nested"
    boxes: list = field(default_factory=list)  # control.boxes.Box or "x0,y0,x1,y1:phrase": each phrase in its box(es)
    box_guidance: float = DEFAULT_BOX_GUIDANCE  # step size of the boxes' latent update; 0 = off
    box_mask: float = DEFAULT_MASK_FRACTION  # fraction of the steps with the boxes' attention masking; 0 = off
    layout: str | None = None  # "auto": boxes planned from the parsed prompt per image (control.layout), seeded;
    # "many": only for the prompts naming several objects, which then take no relation guidance; "many+relations":
    # also for the prompts stating a relation, relation guidance staying on wherever one is stated (control.layout)
    region_layout: str | None = None  # "auto": a region per object phrase, placed as layout="auto" (control.regions)
    cache_interval: int = 1  # DeepCache (diffusion.cache): the whole UNet every N-th step, its shallow branch between
    cache_branch: str = BRANCHES[0]  # which shallow branch runs between ("layer" or "block", diffusion.cache)
    latent_steps: int = ExciteConfig.excite_steps  # first sampling steps with a latent-guidance update (relation, excite)
    latent_iterations: int = ExciteConfig.iterations  # gradient steps per latent-guided step
    latent_layers: str = ExciteConfig.layers  # maps the latent guidance reads: "all", or "encoder" (a truncated pass)
    latent_pass: str = "separate"  # "shared": one pass for every latent update (relation, excite, boxes) gives the prediction
    fast: bool = False  # FAST_SETTINGS for the settings not given (make_spec); recorded in the PNG
    compile: bool = False  # denoising calls through torch.compile'd UNet (T2IPipeline.compiled_unet); recorded
    # CFG on the steps i of n with start <= i / n < end only; outside, the prompt's prediction alone (one UNet row)
    guidance_interval: tuple = (0.0, 1.0)
    # phi of guidance rescale (diffusion.guidance.rescale, Lin et al. 2024): 0 = off, 0.7 the paper's
    guidance_rescale: float = 0.0

    @property
    def count(self) -> int:
        return len(self.prompts) * self.n

    def image_prompts(self) -> list[str]:
        return [p for p in self.prompts for _ in range(self.n)]

    def image_negatives(self) -> list[str]:
        negatives = self.negative_prompts or [""] * len(self.prompts)
        return [p for p in negatives for _ in range(self.n)]

    def validate(self, size_multiple: int) -> GenerationSpec:
        def is_int(x):
            return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

        def is_number(x):
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        if not self.prompts or not all(isinstance(p, str) for p in self.prompts):
            raise ValueError(f"prompt must be a str or a non-empty list of str; got {self.prompts!r}")
        if self.negative_prompts is not None:
            if not all(isinstance(p, str) for p in self.negative_prompts):
                raise ValueError(f"negative_prompt must be a str or a list of str; got {self.negative_prompts!r}")
            if len(self.negative_prompts) != len(self.prompts):
                raise ValueError(
                    f"negative_prompt has {len(self.negative_prompts)} entries for {len(self.prompts)} prompts"
                )
        if not is_int(self.steps) or self.steps < 1:
            raise ValueError(f"steps must be an int >= 1; got {self.steps!r}")
        if not is_number(self.guidance) or self.guidance < 0:
            raise ValueError(f"guidance must be a finite number >= 0 (1 = no guidance); got {self.guidance!r}")
        if not is_int(self.n) or self.n < 1:
            raise ValueError(f"n (images per prompt) must be an int >= 1; got {self.n!r}")
        if not is_int(self.seed) or not 0 <= self.seed < 2**63 - self.count:
            raise ValueError(f"seed must be an int in [0, 2**63); got {self.seed!r}")
        if (
            not isinstance(self.size, (tuple, list))
            or len(self.size) != 2
            or not all(is_int(s) and s > 0 and s % size_multiple == 0 for s in self.size)
        ):
            raise ValueError(
                f"size must be (height, width), positive multiples of {size_multiple} "
                f"(the VAE's downsampling factor); got {self.size!r}"
            )
        self.sampler = check_sampler(self.sampler)  # a key or an AUTOMATIC1111 name -> the key
        for name in ("relation_guidance", "excite"):
            value = getattr(self, name)
            if not is_number(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0 (0 = off); got {value!r}")
        check_weighting([*self.prompts, *(self.negative_prompts or [])], self.weighting)
        if self.attention is not None:
            hooks_from_spec(self.attention)
        unknown = set(self.conditions) - set(CONDITIONS)
        if unknown:
            raise ValueError(f"unknown condition(s) {sorted(unknown)}; allowed: {', '.join(CONDITIONS)}")
        for name in self.adapters:
            if name not in self.conditions:
                raise ValueError(f"an adapter for {name!r} was given without a {name} condition image")
        self.scales = parse_scales(self.scales)
        for name in self.scales:
            if name in CONDITIONS and name not in self.conditions:
                raise ValueError(f"scale {name}=... given without a {name} condition image")
        if "regions" in self.scales and not self.regions and self.region_layout is None:
            raise ValueError("scale regions=... given without regions")
        if self.region_mode not in REGION_MODES:
            raise ValueError(f"unknown region mode {self.region_mode!r}; allowed: {', '.join(REGION_MODES)}")
        if not is_number(self.bootstrap) or not 0 <= self.bootstrap <= 1:
            raise ValueError(f"bootstrap must be a fraction of the steps in [0, 1]; got {self.bootstrap!r}")
        if self.bootstrap > 0 and not self.regions and self.region_layout is None:
            raise ValueError("bootstrap resets the latents outside the regions: give regions too")
        if len(self.background) != 3 or not all(is_number(v) and 0 <= v <= 1 for v in self.background):
            raise ValueError(f"background must be an RGB triple in [0, 1]; got {self.background!r}")
        if self.guidance_mode not in MODES:
            raise ValueError(f"unknown guidance mode {self.guidance_mode!r}; allowed: {', '.join(MODES)}")
        if not isinstance(self.boxes, (list, tuple)):
            raise ValueError(f"boxes must be a list of Box or 'x0,y0,x1,y1:phrase'; got {self.boxes!r}")
        self.boxes = [parse_box(b, self.size) for b in self.boxes]
        if not is_number(self.box_guidance) or not 0 <= self.box_guidance < 1e6:
            raise ValueError(f"box_guidance must be a finite number >= 0 (0 = off); got {self.box_guidance!r}")
        if not is_number(self.box_mask) or not 0 <= self.box_mask <= 1:
            raise ValueError(f"box_mask must be a fraction of the steps in [0, 1]; got {self.box_mask!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(map(str, LAYOUTS))}; got {self.layout!r}")
        if self.layout is not None and self.boxes:
            raise ValueError(f"give boxes or layout={self.layout!r} (boxes planned from the prompt), not both")
        if self.region_layout not in (None, "auto"):
            raise ValueError(f"region_layout must be None or 'auto'; got {self.region_layout!r}")
        check_interval(self.cache_interval)
        if self.cache_branch not in BRANCHES:
            raise ValueError(f"unknown cache_branch {self.cache_branch!r}; allowed: {', '.join(BRANCHES)}")
        for name in ("latent_steps", "latent_iterations"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int >= 0; got {getattr(self, name)!r}")
        if self.latent_layers not in LATENT_LAYERS:
            raise ValueError(f"latent_layers must be one of {', '.join(LATENT_LAYERS)}; got {self.latent_layers!r}")
        if self.latent_pass not in LATENT_PASSES:
            raise ValueError(f"latent_pass must be one of {', '.join(LATENT_PASSES)}; got {self.latent_pass!r}")
        if self.latent_pass == "shared":
            clash = {"latent_layers='encoder' (a truncated pass makes no prediction)": self.latent_layers != "all",
                     "cache_interval > 1 (the cache needs every step's whole batch)": self.cache_interval != 1,
                     "regions (the step's prediction is not the prompt's alone)": bool(self.regions)
                     or self.region_layout is not None}
            for what, on in clash.items():
                if on:
                    raise ValueError(f"latent_pass='shared' does not combine with {what}; choose one")
        if not isinstance(self.fast, bool):
            raise ValueError(f"fast must be True or False; got {self.fast!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False; got {self.compile!r}")
        if self.compile and self.cache_interval != 1:
            raise ValueError("compile and cache_interval > 1 do not combine: the cache runs the UNet's blocks one by "
                             "one, outside the compiled graph; choose one")
        self.guidance_interval = check_guidance_interval(self.guidance_interval)
        self.guidance_rescale = check_rescale(self.guidance_rescale)
        return self

    def settings(self) -> dict:
        """The settings that acted, AUTOMATIC1111-style names -> values (what a PNG's parameters record)."""
        out = {"Steps": self.steps, "Sampler": sampler_display_name(self.sampler), "CFG scale": self.guidance,
               "Seed": self.seed, "Size": f"{self.size[1]}x{self.size[0]}"}
        if self.weighting != DEFAULT_WEIGHTING:
            out["Weighting"] = self.weighting
        if self.relation_guidance > 0:
            out["Relation guidance"] = self.relation_guidance
        if self.excite > 0:
            out["Attend and excite"] = self.excite
        if self.attention is not None:
            out["Attention"] = self.attention
        for name, source in self.conditions.items():
            out[f"{name.capitalize()} image"] = _describe_source(source)
        for name, adapter in self.adapters.items():
            out[f"{name.capitalize()} adapter"] = _describe_source(adapter)
        if self.scales:
            out["Condition scales"] = " ".join(f"{k}={v:g}" for k, v in self.scales.items())
        if self.regions:
            out["Regions"] = "; ".join(r if isinstance(r, str) else f"{r.box}:{r.prompt}" for r in self.regions)
        if self.region_layout is not None:
            out["Region layout"] = self.region_layout  # the regions are a function of the prompt and the image's seed
        if self.regions or self.region_layout is not None:
            out["Region mode"] = self.region_mode
        if self.bootstrap > 0:
            out["Bootstrap"] = self.bootstrap
            out["Background"] = ",".join(f"{v:g}" for v in self.background)
        if self.guidance_mode != DEFAULT_MODE:
            out["Guidance mode"] = self.guidance_mode
        if self.boxes:
            out["Boxes"] = "; ".join(b.spec() for b in self.boxes)
        if self.layout is not None:
            out["Layout"] = self.layout  # the plan is a function of the prompt and the image's seed
        if self.boxes or self.layout is not None:
            out["Box guidance"] = self.box_guidance
            out["Box mask"] = self.box_mask
        if self.fast:
            out["Fast"] = True
        if self.compile:
            out["Compile"] = True  # the compiled graph's sums may differ from eager's in the last bits
        if self.cache_interval != 1:
            out["Cache interval"] = self.cache_interval
            out["Cache branch"] = self.cache_branch
        if self.guidance_interval != (0.0, 1.0):
            out["Guidance interval"] = "{:g},{:g}".format(*self.guidance_interval)
        if self.guidance_rescale > 0:
            out["Guidance rescale"] = self.guidance_rescale
        if self.relation_guidance > 0 or self.excite > 0:
            if self.latent_steps != ExciteConfig.excite_steps or self.latent_iterations != ExciteConfig.iterations:
                out["Latent guidance steps"] = f"{self.latent_steps}x{self.latent_iterations}"
            if self.latent_layers != ExciteConfig.layers:
                out["Latent layers"] = self.latent_layers
        boxed = self.box_guidance > 0 and bool(self.boxes or self.layout)
        if self.latent_pass != "separate" and (self.relation_guidance > 0 or self.excite > 0 or boxed):
            out["Latent pass"] = self.latent_pass  # boxes alone take the shared pass too
        return out


def _describe_source(source) -> str:
    """A condition image or adapter as a PNG records it: its path, else its kind."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (list, tuple)):
        return ", ".join(_describe_source(s) for s in source)
    return f"<{type(source).__name__}>"


@dataclass
class Generation:
    """What a call produced: latents, decoded images as tensors, and the spec that made them."""

    latents: torch.Tensor  # (N, C, h, w) clean latents, before the VAE scaling factor is undone
    images: torch.Tensor | None  # (N, 3, H, W) in [0, 1], float32 on CPU; None if not decoded
    spec: GenerationSpec
    seeds: list[int] = field(default_factory=list)  # seed of each image

    def pil(self) -> list:
        return to_pil(self.images)


def to_pil(images: torch.Tensor) -> list:
    """(N, 3, H, W) in [0, 1] -> PIL images, rounded as diffusers' VaeImageProcessor does."""
    from PIL import Image

    arr = (images.permute(0, 2, 3, 1).float().numpy() * 255).round().astype("uint8")  # (N, H, W, 3)
    return [Image.fromarray(a) for a in arr]


# ----------------------------------------------------------------------------------------------------
# The pipeline


class T2IPipeline:
    """The loaded components of a model folder and the calls that use them."""

    zero_unconditional = False  # SDXL (force_zeros_for_empty_prompt): no negative prompt -> zero unconditional states
    embedding_words: dict = {}  # textual-inversion word -> its tokens (load_embedding); several are expanded
    loaded_files: tuple = ()  # ("LoRA", "FILE:SCALE") / ("Embeddings", "FILE") in load order, for the records
    _compiled = None  # compiled_unet's torch.compile of self.unet, made on first use

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler_config: dict, path=None, defaults=None,
                 parser=None, layout_sides=None, layout_gap=None):
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.path = Path(path) if path is not None else None
        self.parser = get_parser(parser)  # reads objects and relations for latent guidance (text.parser); or None
        self.layout_sides = check_sides(layout_sides)  # the planner's box side per size class (control.layout)
        self.layout_gap = check_gap(layout_gap)  # ... and its least distance between boxes
        word_level = known_words(tokenizer) is not None
        self.defaults = {
            "steps": DEFAULT_STEPS,
            "guidance": DEFAULT_GUIDANCE_WORD_LEVEL if word_level else DEFAULT_GUIDANCE_SD,
            "sampler": DEFAULT_SAMPLER,
            "relation_guidance": 0.0,
            "layout": None,
            "box_guidance": DEFAULT_BOX_GUIDANCE,
            "guidance_rescale": 0.0,
            **(defaults or {}),
        }
        if tokenizer.model_max_length > text_encoder.config.max_position_embeddings:
            raise ValueError(
                f"tokenizer context {tokenizer.model_max_length} exceeds the text encoder's "
                f"{text_encoder.config.max_position_embeddings} positions"
            )

    def compiled_unet(self):
        """The UNet through `torch.compile` (inductor), made on the first call and kept: the first image pays the
        compilation, later ones run faster (docs/FAST.md). It shares the UNet's weights; attention hooks installed
        on the UNet act in it too."""
        if self._compiled is None or self._compiled._orig_mod is not self.unet:
            self._compiled = torch.compile(self.unet)
        return self._compiled

    # --- loading ------------------------------------------------------------------------------------

    @classmethod
    def from_folder(cls, path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
                    parser=None):
        """Load a local diffusers folder (ours, SD 1.x/2.x or SDXL); ValueError if missing, incomplete or pickle.

        `device`: "cpu", "cuda", "mps" or "auto" (CUDA when present); `dtype`: "fp32", "fp16", "bf16" or a
        torch dtype; None: fp16 on CUDA/MPS, fp32 on the CPU (t2ikit.models.device).

        `parser`: a text.parser.Parser or a registered name; default: the one the folder's t2ikit.json names,
        else DEFAULT_PARSER ("english").
        """
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        root = check_model_folder(path)
        config = read_folder_config(root)
        load = {"local_files_only": True, "use_safetensors": True, "torch_dtype": dtype}
        try:
            if _fusion_of(root) != "sequential":  # a stock loader would silently drop the fusion weights
                from t2ikit.models.retrofit import load_fused_unet

                unet = load_fused_unet(root).to(dtype)
            else:
                unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", **load)
            vae = AutoencoderKL.from_pretrained(root, subfolder="vae", **load)
            text_encoder = CLIPTextModel.from_pretrained(root / "text_encoder", **load)
            tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
            scheduler_config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
            xl = is_sdxl_index(config["index"])
            if xl:  # SDXL: the two encoders read as one (t2ikit.models.sdxl)
                from transformers import CLIPTextModelWithProjection

                text_encoder = DualTextEncoder(
                    text_encoder, CLIPTextModelWithProjection.from_pretrained(root / "text_encoder_2", **load),
                    tokenizer, CLIPTokenizer.from_pretrained(root / "tokenizer_2", local_files_only=True))
        except (OSError, EnvironmentError, json.JSONDecodeError, RuntimeError, KeyError, TypeError) as err:
            raise ValueError(f"model folder {root} could not be loaded (corrupt or incompatible): {err}") from None
        if xl and dtype == torch.float16 and vae.config.get("force_upcast", False):
            vae = vae.float()  # SDXL's VAE overflows in fp16 (diffusers upcasts it the same way)
        for model in (unet, vae, text_encoder):
            model.requires_grad_(False).eval().to(device)
        defaults = config["t2ikit"].get("defaults", {})
        check_defaults(defaults, str(root / T2IKIT_CONFIG))
        parser = default_parser_name(config) if parser is None else parser
        try:
            sides = check_sides(config["t2ikit"].get("layout_sides"))
            gap = check_gap(config["t2ikit"].get("layout_gap"))
        except ValueError as err:
            raise ValueError(f"{root / T2IKIT_CONFIG}: {err}") from None
        pipe = cls(unet, vae, text_encoder, tokenizer, scheduler_config, path=root, defaults=defaults, parser=parser,
                   layout_sides=sides, layout_gap=gap)
        # diffusers' SDXL default: no negative prompt means zero unconditional states, not the empty prompt's
        pipe.zero_unconditional = xl and config["index"].get("force_zeros_for_empty_prompt", True)
        return pipe

    # --- geometry -----------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_size(self) -> tuple[int, int]:
        s = self.unet.config.sample_size
        h, w = (s, s) if isinstance(s, int) else s
        return h * self.vae_scale_factor, w * self.vae_scale_factor

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else "unnamed"

    # --- generation ---------------------------------------------------------------------------------

    def make_spec(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        n: int = 1,
        size: tuple[int, int] | None = None,
        sampler: str | None = None,
        relation_guidance: float | None = None,
        **techniques,
    ) -> GenerationSpec:
        """A validated GenerationSpec; None arguments take the model's defaults.

        `techniques`: any other GenerationSpec field (excite, weighting, attention, sketch / depth / mask /
        reference images or `conditions`, adapters, scales, regions, region_layout, region_mode, bootstrap,
        background, guidance_mode). relation_guidance given (> 0) asks for it: every prompt must be one the model's
        parser reads (ValueError names those it cannot), and a prompt that states no relation is warned
        about. As the model's default it guides the prompts it can read and leaves the rest alone.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else prompt
        if self.embedding_words:  # a multi-vector embedding's word stands for its tokens
            from t2ikit.models.embeddings import expand

            prompts = [expand(p, self.embedding_words) if isinstance(p, str) else p for p in prompts]
            if isinstance(negative_prompt, str):
                negative_prompt = expand(negative_prompt, self.embedding_words)
            elif isinstance(negative_prompt, (list, tuple)):
                negative_prompt = [expand(p, self.embedding_words) if isinstance(p, str) else p for p in negative_prompt]
        if isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * (len(prompts) if isinstance(prompts, list) else 1)
        elif negative_prompt is not None:
            negative_prompt = list(negative_prompt)
        conditions = dict(techniques.pop("conditions", None) or {})
        for name in CONDITIONS:
            if techniques.get(name) is not None:
                conditions[name] = techniques.pop(name)
            techniques.pop(name, None)
        unknown = set(techniques) - {f.name for f in fields(GenerationSpec)}
        if unknown:
            raise TypeError(f"unknown generation setting(s) {sorted(unknown)}")
        techniques = {k: v for k, v in techniques.items() if v is not None}
        layout_given = "layout" in techniques  # "none" turns a model's default layout off; boxes given replace it
        layout = techniques.pop("layout", None if techniques.get("boxes") else self.defaults["layout"])
        techniques["layout"] = None if layout == "none" else layout
        techniques.setdefault("box_guidance", self.defaults["box_guidance"])
        techniques.setdefault("guidance_rescale", self.defaults["guidance_rescale"])
        if techniques.get("fast") is True:  # fast's settings where the call gives none (FAST_SETTINGS)
            steps = FAST_SETTINGS.get("steps") if steps is None else steps
            techniques = {**{k: v for k, v in FAST_SETTINGS.items() if k != "steps"}, **techniques}
        techniques["adapters"] = dict(techniques.get("adapters") or {})
        techniques["scales"] = techniques.get("scales") or {}  # a dict or ["sketch=0.8", ...]: validate parses it
        techniques["regions"] = list(techniques.get("regions") or [])
        spec = GenerationSpec(
            prompts=prompts,
            negative_prompts=negative_prompt,
            steps=self.defaults["steps"] if steps is None else steps,
            guidance=self.defaults["guidance"] if guidance is None else guidance,
            seed=seed,
            n=n,
            size=self.default_size if size is None else tuple(size),
            sampler=self.defaults["sampler"] if sampler is None else sampler,
            relation_guidance=self.defaults["relation_guidance"] if relation_guidance is None else relation_guidance,
            conditions=conditions,
            **techniques,
        )
        spec = spec.validate(self.vae_scale_factor)
        check_sampler_fits(spec.sampler, self.scheduler_config)  # a sampler this noise schedule breaks: refused now
        if (relation_guidance is not None and relation_guidance > 0) or spec.excite > 0:
            self._check_parsed(spec, relation=relation_guidance is not None and relation_guidance > 0)
        if layout_given and spec.layout in CHOOSING:  # "auto" is checked as it plans; as a default they are lenient
            self._check_parsed(spec, relation=False, what=f"layout={spec.layout!r}")
        return spec

    def _check_parsed(self, spec: GenerationSpec, relation: bool, what: str | None = None) -> None:
        """Latent guidance (or `what`) was asked for: ValueError without a parser or for prompts it cannot read; a
        warning for prompts that state no relation (nothing to guide)."""
        what = what or ("relation guidance" if relation else "Attend-and-Excite")
        if self.parser is None:
            raise ValueError(f"{what} reads the objects of each prompt with a prompt parser, and this model names "
                             f"none: pass parser=... to T2IPipeline.from_folder (registered: "
                             f"{', '.join(parser_names()) or 'none'})")
        unreadable, without = [], []
        for p in spec.prompts:
            try:
                relations = self.parser.parse(plain_text(p, spec.weighting)).relations
                if not any(r.relation in RELATION_AXES for r in relations):
                    without.append(p)
            except PromptParseError as err:
                unreadable.append(f"{p!r} ({err})")
        if unreadable:
            raise ValueError(f"{what} reads each prompt with the {self.parser.name} parser, which cannot read "
                             + "; ".join(unreadable))
        if relation and without:
            warnings.warn(f"relation guidance: {', '.join(map(repr, without))} states no relation it can guide "
                          f"({', '.join(RELATION_AXES)}); generated without it")

    @property
    def is_sdxl(self) -> bool:
        """True for SDXL: two text encoders, and a UNet that reads pooled text and size/crop per row."""
        return isinstance(self.text_encoder, DualTextEncoder)

    def sdxl_added(self, prompts: list[str], size: tuple[int, int], zero: bool = False) -> dict:
        """SDXL's added_cond_kwargs for one image per plain prompt at `size` (H, W)."""
        return added_conditioning(self.text_encoder, prompts, size, self.dtype, zero)

    def load_lora(self, path: str | os.PathLike, scale: float = 1.0) -> list[str]:
        """Merge a LoRA .safetensors file into the UNet and text encoder(s) at `scale` (t2ikit.models.lora)."""
        from t2ikit.models.lora import load_lora

        merged = load_lora(self, path, scale)
        self.loaded_files = (*self.loaded_files, ("LoRA", f"{path}:{scale:g}"))
        return merged

    def load_embedding(self, path: str | os.PathLike, token: str | None = None) -> str:
        """Add a textual-inversion .safetensors embedding; the word that writes it in prompts (t2ikit.models.embeddings)."""
        from t2ikit.models.embeddings import load_embedding

        word, tokens = load_embedding(self, path, token)
        self.embedding_words = {**self.embedding_words, word: tokens}
        self.loaded_files = (*self.loaded_files, ("Embeddings", str(path)))
        return word

    def weights_settings(self) -> dict:
        """The LoRA and embedding files loaded into this pipeline as PNG settings ("LoRA": "a.safetensors:0.8;
        b.safetensors:1"); `t2ikit generate --from` loads them again. Empty when none were loaded."""
        out = {}
        for kind, value in self.loaded_files:
            out[kind] = f"{out[kind]}; {value}" if kind in out else value
        return out

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """(B, T, D) text embeddings of plain prompts, as the UNet cross-attends to them."""
        return encode_prompts(self.tokenizer, self.text_encoder, prompts)

    def _encode_each(self, texts: list[str], weighting: str = "none") -> torch.Tensor:
        """(len(texts), T, D): each distinct text encoded once (one batch, as diffusers does), then gathered.

        `weighting`: the syntax the texts are read with (text.weighting); "none" encodes them as written.
        """
        if weighting != "none":
            return encode_prompt_pair(self.tokenizer, self.text_encoder, list(texts), None, weighting)[0]
        unique = list(dict.fromkeys(texts))
        rows = torch.tensor([unique.index(t) for t in texts], device=self.device)
        return self.encode_text(unique)[rows]

    @torch.no_grad()
    def run(self, spec: GenerationSpec, decode: bool = True, progress: bool = True, callback=None,
            hooks=None, embeds: tuple | None = None, seeds: list[int] | None = None, updates=()) -> Generation:
        """Generate from a validated spec: the one place that draws noise and runs the loop.

        `hooks`: attention hooks (a list of t2ikit.attention AttentionHook, or an AttentionController) that
        run inside every attention layer for this call only; their clock follows the sampling steps.
        `embeds`: (cond, uncond) text states (N, T, D) used instead of encoding the prompts (soft prompts,
        analyses); uncond may be None for no guidance. `seeds`: one per image instead of seed + k.
        `updates`: extra before-step latent updates (f(i, t, latents, scheduler) -> latents), after the spec's own.
        Everything is read and checked (condition images, adapters, regions, memory) before any compute.
        """
        if seeds is None:
            seeds = [spec.seed + k for k in range(spec.count)]
        elif len(seeds) != spec.count or not all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds):
            raise ValueError(f"seeds must be {spec.count} ints in [0, 2**63), one per image; got {seeds!r}")
        plan = self._plan(spec, hooks, seeds)
        if embeds is not None:
            if not isinstance(embeds[0], torch.Tensor) or embeds[0].ndim != 3 or embeds[0].shape[0] != spec.count:
                raise ValueError(f"embeds[0] must be a ({spec.count}, T, D) tensor of text states; got "
                                 f"{getattr(embeds[0], 'shape', type(embeds[0]).__name__)}")
            plan["embeds"] = embeds
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        h, w = spec.size[0] // self.vae_scale_factor, spec.size[1] // self.vae_scale_factor
        noise = initial_noise((spec.count, self.unet.config.in_channels, h, w), generators, self.device, self.dtype)
        scheduler = make_scheduler(spec.sampler, self.scheduler_config, seeds)
        scheduler.set_timesteps(spec.steps, device=self.device)
        c = self._conditioning(spec, plan, scheduler, (h, w))
        c.before_step.extend(updates)
        if c.controller is not None:
            c.controller.install(self.unet)
        try:
            unet = self.compiled_unet() if spec.compile else self.unet
            denoiser = cached_denoiser(unet, spec.cache_interval, spec.cache_branch)  # 1: plain unet_denoiser
            latents = sample(denoiser, scheduler, noise, c, generators, progress, callback)
        finally:
            if c.controller is not None:
                c.controller.uninstall()
                c.controller.reset_clock()
        images = self.decode(latents) if decode else None
        return Generation(latents=latents, images=images, spec=spec, seeds=seeds)

    def plan_boxes(self, prompts: list[str], size: tuple[int, int], seeds: list[int],
                   what: str = "layout='auto'", only: list[bool] | None = None) -> list[list]:
        """The layout planner's boxes (control.layout) of each plain prompt with its image's seed, read by this
        model's parser; ValueError naming the prompt the parser cannot read or whose relations no layout holds.
        `what`: the setting that asked for the plan, as the errors name it; `only`: plan the prompts marked True
        (`boxed_prompts`), the others get no boxes."""
        plans = []
        for prompt, seed in zip(prompts, seeds):
            if only is not None and not only[len(plans)]:
                plans.append([])
                continue
            if self.parser is None:
                raise ValueError(f"{what} plans boxes from the objects a prompt parser reads, and this model names "
                                 f"none; give boxes=, or a parser ({', '.join(parser_names())})")
            try:
                structure = self.parser.parse(prompt)
            except PromptParseError as err:
                raise ValueError(f"{what} reads the prompt with the {self.parser.name} parser, which cannot "
                                 f"read {prompt!r}: {err}") from None
            plans.append(plan_layout(structure, size, seed, self.layout_sides, self.layout_gap))
        return plans

    def boxed_prompts(self, prompts: list[str], layout: str) -> list[bool]:
        """Per plain prompt: does `layout` (one of control.layout.CHOOSING) box it (control.layout.boxed), as this
        model's parser reads it; False for a prompt it cannot read and for every prompt of a model without a parser."""
        out = []
        for prompt in prompts:
            try:
                out.append(self.parser is not None and boxed(self.parser.parse(prompt), layout))
            except PromptParseError:
                out.append(False)
        return out

    def _plan(self, spec: GenerationSpec, hooks, seeds: list[int]) -> dict:
        """Read and check everything a request names (text, hooks, maps, adapters, regions) before compute."""
        for text in dict.fromkeys(spec.prompts):
            check_weighted_prompt(self.tokenizer, text, spec.weighting)
        for text in dict.fromkeys(spec.negative_prompts or []):
            if text:  # an empty negative prompt is the usual unconditional branch, not worth a warning
                check_weighted_prompt(self.tokenizer, text, spec.weighting)
        controller = hooks if isinstance(hooks, AttentionController) else AttentionController(hooks or [])
        named = hooks_from_spec(spec.attention) if spec.attention else []  # bound to this request's prompts
        for hook in named:
            controller.add(hook)
        maps = {}  # name -> one (C, H, W) map per prompt
        for name, src in spec.conditions.items():
            if isinstance(src, (list, tuple)):
                if len(src) != len(spec.prompts):
                    raise ValueError(f"{name}: {len(src)} maps for {len(spec.prompts)} prompts; give one per prompt "
                                     f"or one")
                maps[name] = [load_condition(x, name, spec.size) for x in src]
            else:
                maps[name] = [load_condition(src, name, spec.size)] * len(spec.prompts)
        given = [r if isinstance(r, Region) else parse_region(r, spec.size) for r in spec.regions]
        texts = [plain_text(p, spec.weighting) for p in spec.image_prompts()]  # what parsers and the planner read
        plans = None  # one layout per image, shared by layout="auto" (boxes) and region_layout="auto" (regions)
        chosen = self.boxed_prompts(texts, spec.layout) if spec.layout in CHOOSING else None  # the images it boxes
        if spec.layout is not None or spec.region_layout is not None:
            what = "region_layout='auto'" if spec.layout is None else f"layout={spec.layout!r}"
            plans = self.plan_boxes(texts, spec.size, seeds, what, chosen if spec.region_layout is None else None)
        planned = None if spec.region_layout is None else [layout_regions(b, spec.size) for b in plans]
        regions = batch_regions(given, spec.size, spec.count, planned) if given or planned else None
        adapters = {name: resolve_adapter(self, name, spec.adapters.get(name)) for name in maps}
        if regions and any(isinstance(a, ReferenceAdapter) and a.concat for a in adapters.values()):
            raise ValueError("a concat-fusion reference adapter lengthens the text context, which region prompts do "
                             "not share: use a reference or regions, not both")
        text_bound = [h for h in controller.hooks if hasattr(h, "bind")]  # hooks that read each row's prompt
        if text_bound and regions and spec.region_mode == "attention":
            raise ValueError(f"{text_bound[0].name} attention reads each row's own prompt tokens, and attention-mode "
                             "regions append other prompts' tokens to every row: use region_mode='noise' with it")
        box_targets_ = None
        if spec.boxes or spec.layout is not None:  # phrases found in the prompts (before compute); masking is a hook
            boxes = [spec.boxes] * len(texts) if spec.layout is None else \
                plans if chosen is None else [p if m else [] for p, m in zip(plans, chosen)]
            box_targets_ = box_targets(self.tokenizer, texts, boxes, spec.size)
            if not box_targets_[2].any():  # a choosing layout boxed no image of this batch: no box guidance or mask
                box_targets_ = None
            elif spec.box_mask > 0:
                controller.add(BoxAttentionHook(box_targets_[0], box_targets_[1], spec.box_mask))
        region_hook = None
        if regions and spec.region_mode == "attention":  # added here so that a hook it cannot run with is refused now
            region_hook = controller.add(RegionAttentionHook(regions.masks, regions.weights, 0))
        if text_bound and any(isinstance(a, ReferenceAdapter) and a.concat for a in adapters.values()):
            raise ValueError(f"{text_bound[0].name} attention chooses among the prompt's tokens, and a concat-fusion "
                             "reference adapter appends image tokens to them: use one of the two")
        rows = 1 + max(1, len(regions or ()) if spec.region_mode == "noise" else 1)
        check_memory(self, spec.count, spec.size, rows_per_image=rows, hooks=controller.hooks,
                     grad=spec.relation_guidance > 0 or spec.excite > 0, what="generate")
        return {"controller": controller, "maps": maps, "regions": regions, "boxes": box_targets_,
                "region_hook": region_hook, "adapters": adapters,
                "to_bind": [h for h in named if hasattr(h, "bind")],
                "boxes_only": chosen if spec.layout == "many" else None}  # images whose relations the boxes take over

    def _conditioning(self, spec: GenerationSpec, plan: dict, scheduler, latent_hw) -> Conditioning:
        """One Conditioning of everything the request names (the data flow of docs/ARCHITECTURE.md)."""
        if "embeds" in plan:
            cond, uncond = (e.to(self.device, self.dtype) if e is not None else None for e in plan["embeds"])
        else:
            cond, uncond = encode_prompt_pair(self.tokenizer, self.text_encoder, spec.image_prompts(),
                                              spec.image_negatives(), spec.weighting)[:2]  # (N, T, D) each
        text = cond
        controller = plan["controller"]
        prompts = [plain_text(p, spec.weighting) for p in spec.image_prompts()]  # what hooks and parsers read
        added = uncond_added = None
        if self.is_sdxl:  # pooled text and size/crop per row (t2ikit.models.sdxl)
            added = self.sdxl_added(prompts, spec.size)
            zero = self.zero_unconditional and spec.negative_prompts is None and "embeds" not in plan
            if uncond is not None:
                uncond = torch.zeros_like(uncond) if zero else uncond
                uncond_added = self.sdxl_added([plain_text(p, spec.weighting) for p in spec.image_negatives()],
                                           spec.size, zero)
        regions = plan["regions"]  # a control.regions.RegionBatch, or None
        region_prompts = regions.prompts if regions else []  # R lists of a prompt per image
        region_names = [f"region {i}: {texts[0]}" for i, texts in enumerate(region_prompts)]  # noise mode: its rows
        for hook in plan["to_bind"]:
            hook.bind(self, prompts, [plain_text(p, spec.weighting) for p in spec.image_negatives()],
                      {name: [plain_text(t, spec.weighting) for t in texts]
                       for name, texts in zip(region_names, region_prompts)})
        residuals = None
        for name, adapter in plan["adapters"].items():
            image = to_batch([m for m in plan["maps"][name] for _ in range(spec.n)], self.device, self.dtype)
            scale = spec.scales.get(name, 1.0)
            if isinstance(adapter, ReferenceAdapter) and adapter.concat:  # image tokens after the text's
                cond = adapter.context(cond, image, scale)
                uncond = adapter.null_context(uncond, self.encode_text([""]))  # guidance amplifies the reference
            elif isinstance(adapter, ReferenceAdapter):  # decoupled attention fusion: a hook on cross-attention
                controller.add(adapter.hook(image, scale))
            else:  # additive fusion: residuals into the down blocks
                res = adapter(image, scale)
                residuals = res if residuals is None else [a + b for a, b in zip(residuals, res)]
        text_scale = spec.scales.get("text", spec.guidance)
        region_states = [encode_prompt_pair(self.tokenizer, self.text_encoder, texts, None, spec.weighting)[0]
                         for texts in region_prompts]
        if regions and spec.region_mode == "attention":
            conditions = [Condition(region_context(cond, region_states), text_scale, name="text+regions",
                                    added=added)]
            uncond = region_context(uncond, [uncond] * len(regions))
            plan["region_hook"].tokens = cond.shape[1]  # tokens per prompt block, known once the text is encoded
        elif regions:  # noise space: one condition per region, the base prompt outside them
            lm = regions.latent(latent_hw).to(self.device, self.dtype)  # (R, h, w), or (R, N, 1, h, w) per image
            outside = (1 - lm.sum(0)).clamp(min=0)
            region_scale = spec.scales.get("regions", text_scale)
            conditions = [Condition(cond, text_scale, mask=outside, name="text", added=added)] + [
                Condition(states, region_scale, mask=m, priority=weight, name=name,
                          added=self.sdxl_added([plain_text(t, spec.weighting) for t in texts], spec.size)
                          if self.is_sdxl else None)
                for name, texts, weight, states, m in zip(region_names, region_prompts, regions.weights,
                                                          region_states, lm)]
        else:
            conditions = [Condition(cond, text_scale, name="text", added=added)]
        before = []
        # layout="many": the images with boxes take box guidance in place of relation guidance (docs/BOXES.md)
        relate = None if plan["boxes_only"] is None else [not m for m in plan["boxes_only"]]
        for objective, size in (("relation", spec.relation_guidance), ("excite", spec.excite)):
            if size > 0 and self.parser is not None:  # unreadable prompts (checked in make_spec when asked) pass
                before.append(LatentGuidance(self.unet, self.tokenizer, self.parser, prompts, text,
                                             ExciteConfig(objective=objective, step_size=float(size),
                                                          excite_steps=spec.latent_steps,
                                                          iterations=spec.latent_iterations,
                                                          layers=spec.latent_layers), strict=False,
                                             added=added, relate_rows=relate))
        if plan["boxes"] is not None and spec.box_guidance > 0:
            before.append(BoxGuidance(self.unet, self.tokenizer, prompts, text, spec.boxes, spec.size,
                                      spec.box_guidance, targets=plan["boxes"], added=added))
        if spec.latent_pass == "shared" and before:  # one pass per gradient step for all of them, serving the step
            before = [JointGuidance(before, shared=True)]
        after = []
        if regions and spec.bootstrap > 0:
            gens = [torch.Generator("cpu").manual_seed(spec.seed + k) for k in range(spec.count)]
            masks = regions.masks[:, :, None] if regions.per_image else regions.masks  # (R, N, 1, H, W) per image
            after.append(bootstrap_step(self, scheduler, masks, latent_hw, spec.background, spec,
                                        spec.bootstrap, gens))
        c = Conditioning(conditions, uncond, spec.guidance_mode, residuals, controller if controller.hooks else None,
                         before, after, uncond_added, guidance_interval=spec.guidance_interval,
                         guidance_rescale=spec.guidance_rescale)
        if spec.latent_pass == "shared" and before:
            before[0].share(c)
        return c.check(latent_hw)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) latents -> (N, 3, H, W) images in [0, 1] (float32, CPU)."""
        config = self.vae.config
        z = latents / config.scaling_factor
        if getattr(config, "shift_factor", None):
            z = z + config.shift_factor
        images = self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0]  # (N, 3, H, W) in [-1, 1]
        return (images / 2 + 0.5).clamp(0, 1).float().cpu()

    def generate(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        n: int = 1,
        size: tuple[int, int] | None = None,
        sampler: str | None = None,
        progress: bool = True,
        hooks=None,
        relation_guidance: float | None = None,
        callback=None,
        **techniques,
    ) -> list:
        """Images (PIL) for `prompt`: n per prompt, prompt-major; image k seeded `seed + k`.

        steps, guidance, sampler and relation_guidance default to the model's (t2ikit.json in the folder, else
        20, 7.5 for SD or 4.0 for a word-level model, dpmpp_2m, 0 = off); size defaults to the UNet's sample size.
        `techniques`: any GenerationSpec field, all in one call: weighting, excite, attention, sketch=, depth=,
        mask=, reference=, adapters, scales, regions, region_layout, region_mode, bootstrap, background,
        guidance_mode.
        """
        spec = self.make_spec(prompt, negative_prompt, steps, guidance, seed, n, size, sampler, relation_guidance,
                              **techniques)
        return self.run(spec, progress=progress, hooks=hooks, callback=callback).pil()


def default_parser_name(config: dict) -> str:
    """The parser a folder's prompts are read with: its t2ikit.json "parser", else DEFAULT_PARSER."""
    return config["t2ikit"].get("parser", DEFAULT_PARSER)


def _fusion_of(root: Path) -> str:
    """The fusion strategy a t2ikit-trained folder records ("sequential", a stock UNet, otherwise)."""
    path = root / "t2ikit_train_config.json"
    if not path.is_file():
        return "sequential"
    try:
        return json.loads(path.read_text()).get("model", {}).get("fusion", "sequential")
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{path} is not a valid training record: {err}") from None


def check_defaults(defaults: dict, where: str) -> None:
    """ValueError, naming `where`, for a generation default a model folder may not set (DEFAULT_KEYS), a layout
    that is not one of control.layout.LAYOUTS ("none" too) or a guidance rescale outside [0, 1]; the other values
    are checked by GenerationSpec."""
    unknown = set(defaults) - set(DEFAULT_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown default(s) {sorted(unknown)}; allowed: {', '.join(DEFAULT_KEYS)}")
    if defaults.get("layout") not in (*LAYOUTS, "none"):
        raise ValueError(f"{where}: default layout must be one of none, {', '.join(map(str, LAYOUTS[1:]))}; got "
                         f"{defaults['layout']!r}")
    if "guidance_rescale" in defaults:
        try:
            check_rescale(defaults["guidance_rescale"])
        except ValueError as err:
            raise ValueError(f"{where}: default {err}") from None


def write_model_defaults(folder: str | os.PathLike, layout_sides: dict | None = None, layout_gap: float | None = None,
                         **defaults) -> None:
    """Record generation defaults (DEFAULT_KEYS) and the layout planner's box sides and gap
    (control.layout.check_sides, check_gap) in `folder`/t2ikit.json for `from_folder`."""
    check_defaults(defaults, "model defaults")
    path = Path(folder) / T2IKIT_CONFIG
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["defaults"] = {**data.get("defaults", {}), **defaults}
    if layout_sides:
        check_sides(layout_sides)
        data["layout_sides"] = dict(layout_sides)
    if layout_gap is not None:
        data["layout_gap"] = check_gap(layout_gap)
    path.write_text(json.dumps(data, indent=2) + "\n")


__all__ = [
    "Generation",
    "GenerationSpec",
    "T2IPipeline",
    "check_model_folder",
    "to_pil",
    "write_model_defaults",
    "PLAIN",
]
