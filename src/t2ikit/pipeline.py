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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from t2ikit.diffusion.loop import initial_noise, sample
from t2ikit.diffusion.samplers import DEFAULT_SAMPLER, check_sampler, make_scheduler
from t2ikit.text.check import check_prompt
from t2ikit.text.encoder import encode_prompts
from t2ikit.text.tokenizer import known_words

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
T2IKIT_CONFIG = "t2ikit.json"  # optional file in a model folder: {"defaults": {"guidance": .., ...}}

# Guidance when the folder names none: SD's customary 7.5 for a BPE (SD) text encoder; a small
# word-level model trained on Shapes World saturates colours at that scale, so it gets less.
DEFAULT_GUIDANCE_SD = 7.5
DEFAULT_GUIDANCE_WORD_LEVEL = 4.0
DEFAULT_STEPS = 20
DEFAULT_KEYS = ("steps", "guidance", "sampler", "relation_guidance")  # what t2ikit.json's "defaults" may set


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
    tok = root / "tokenizer"
    if not (tok / "tokenizer.json").is_file() and not (
        (tok / "vocab.json").is_file() and (tok / "merges.txt").is_file()
    ):
        missing.append("tokenizer/tokenizer.json (or tokenizer/vocab.json + tokenizer/merges.txt)")
    if pickles:
        raise ValueError(
            f"model folder {root} has only pickle-format weights ({', '.join(str(p.relative_to(root)) for p in pickles)}); "
            f"loading pickle runs arbitrary code, so t2ikit refuses it. Convert the weights to .safetensors"
        )
    if missing:
        raise ValueError(f"{root} is not a complete diffusers model folder; missing: {', '.join(missing)}")
    return root


def read_folder_config(root: Path) -> dict:
    """model_index.json and the optional t2ikit.json, checked to be SD-style components."""
    try:
        index = json.loads((root / "model_index.json").read_text())
        extra = json.loads((root / T2IKIT_CONFIG).read_text()) if (root / T2IKIT_CONFIG).is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"model folder {root} has a corrupt JSON file: {err}") from None
    expected = {"text_encoder": {"CLIPTextModel"}, "tokenizer": {"CLIPTokenizer", "CLIPTokenizerFast"}}
    for name, allowed in expected.items():
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] in allowed):
            raise ValueError(f"model folder {root}: {name} must be one of {sorted(allowed)}; model_index.json says {entry}")
    return {"index": index, "t2ikit": extra}


# ----------------------------------------------------------------------------------------------------
# What to generate


@dataclass
class GenerationSpec:
    """One call's request, validated before any compute; also what a PNG records."""

    prompts: list[str]  # one entry per distinct prompt
    negative_prompts: list[str] | None = None  # same length as prompts; None means "" with guidance
    steps: int = DEFAULT_STEPS  # denoising steps (scheduler.set_timesteps)
    guidance: float = DEFAULT_GUIDANCE_SD  # classifier-free guidance scale, >= 0; 1 means no guidance
    seed: int = 0  # image k uses seed + k
    n: int = 1  # images per prompt
    size: tuple[int, int] = (512, 512)  # (height, width) in pixels
    sampler: str = DEFAULT_SAMPLER  # a name in t2ikit.diffusion.SAMPLERS
    relation_guidance: float = 0.0  # step size of relation guidance (t2ikit.analysis.excite); 0 = off

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
        if not isinstance(self.guidance, (int, float)) or not math.isfinite(self.guidance) or self.guidance < 0:
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
        check_sampler(self.sampler)
        rg = self.relation_guidance
        if not isinstance(rg, (int, float)) or isinstance(rg, bool) or not math.isfinite(rg) or rg < 0:
            raise ValueError(f"relation_guidance must be a finite number >= 0 (0 = off); got {rg!r}")
        return self


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

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler_config: dict, path=None, defaults=None):
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.path = Path(path) if path is not None else None
        word_level = known_words(tokenizer) is not None
        self.defaults = {
            "steps": DEFAULT_STEPS,
            "guidance": DEFAULT_GUIDANCE_WORD_LEVEL if word_level else DEFAULT_GUIDANCE_SD,
            "sampler": DEFAULT_SAMPLER,
            "relation_guidance": 0.0,
            **(defaults or {}),
        }
        if tokenizer.model_max_length > text_encoder.config.max_position_embeddings:
            raise ValueError(
                f"tokenizer context {tokenizer.model_max_length} exceeds the text encoder's "
                f"{text_encoder.config.max_position_embeddings} positions"
            )

    # --- loading ------------------------------------------------------------------------------------

    @classmethod
    def from_folder(cls, path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        """Load a local diffusers SD folder (ours or SD 1.x/2.x); ValueError if missing, incomplete or pickle."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

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
        except (OSError, EnvironmentError, json.JSONDecodeError, RuntimeError, KeyError, TypeError) as err:
            raise ValueError(f"model folder {root} could not be loaded (corrupt or incompatible): {err}") from None
        for model in (unet, vae, text_encoder):
            model.requires_grad_(False).eval().to(device)
        defaults = config["t2ikit"].get("defaults", {})
        unknown = set(defaults) - set(DEFAULT_KEYS)
        if unknown:
            raise ValueError(f"{root / T2IKIT_CONFIG}: unknown default(s) {sorted(unknown)}; allowed: {', '.join(DEFAULT_KEYS)}")
        return cls(unet, vae, text_encoder, tokenizer, scheduler_config, path=root, defaults=defaults)

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
    ) -> GenerationSpec:
        """A validated GenerationSpec; None arguments take the model's defaults.

        relation_guidance given (> 0) asks for it: every prompt must be one the world's caption parser reads
        (ValueError names those it cannot), and a prompt that states no relation is warned about. As the
        model's default it guides the prompts it can read and leaves the rest alone.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else prompt
        if isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * (len(prompts) if isinstance(prompts, list) else 1)
        elif negative_prompt is not None:
            negative_prompt = list(negative_prompt)
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
        )
        spec = spec.validate(self.vae_scale_factor)
        if relation_guidance is not None and relation_guidance > 0:
            _check_relation_prompts(spec.prompts)
        return spec

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """(B, T, D) text embeddings, as the UNet cross-attends to them."""
        return encode_prompts(self.tokenizer, self.text_encoder, prompts)

    def _encode_each(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), T, D): each distinct text encoded once (one batch, as diffusers does), then gathered."""
        unique = list(dict.fromkeys(texts))
        rows = torch.tensor([unique.index(t) for t in texts], device=self.device)
        return self.encode_text(unique)[rows]

    @torch.no_grad()
    def run(self, spec: GenerationSpec, decode: bool = True, progress: bool = True, callback=None,
            hooks=None) -> Generation:
        """Generate from a validated spec: the lower-level call behind `generate`.

        `hooks`: attention hooks (a list of t2ikit.attention AttentionHook, or an AttentionController) that
        run inside every attention layer for this call only; their clock follows the sampling steps.
        """
        from t2ikit.attention.processor import AttentionController

        controller = hooks if isinstance(hooks, AttentionController) or hooks is None else AttentionController(hooks)
        for prompt in dict.fromkeys(spec.prompts):
            check_prompt(self.tokenizer, prompt)
        for prompt in dict.fromkeys(spec.negative_prompts or []):
            if prompt:  # an empty negative prompt is the usual unconditional branch, not worth a warning
                check_prompt(self.tokenizer, prompt)
        seeds = [spec.seed + k for k in range(spec.count)]
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        cond = self._encode_each(spec.image_prompts())  # (N, T, D)
        uncond = self._encode_each(spec.image_negatives()) if spec.guidance != 1.0 else None
        h, w = spec.size[0] // self.vae_scale_factor, spec.size[1] // self.vae_scale_factor
        noise = initial_noise((spec.count, self.unet.config.in_channels, h, w), generators, self.device, self.dtype)
        scheduler = make_scheduler(spec.sampler, self.scheduler_config)
        before_step = None
        if spec.relation_guidance > 0:
            from t2ikit.analysis.excite import ExciteConfig, LatentGuidance

            before_step = LatentGuidance(self, spec.image_prompts(), cond,  # a no-op where no relation is read
                                         ExciteConfig(objective="relation", step_size=float(spec.relation_guidance)),
                                         strict=False)  # unreadable prompts (checked in make_spec when asked for) pass
        if controller is not None:
            controller.install(self.unet)
        try:
            latents = sample(self.unet, scheduler, noise, cond, uncond, spec.steps, spec.guidance, generators,
                             progress, callback, controller, before_step)
        finally:
            if controller is not None:
                controller.uninstall()
                controller.reset_clock()
        images = self.decode(latents) if decode else None
        return Generation(latents=latents, images=images, spec=spec, seeds=seeds)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) latents -> (N, 3, H, W) images in [0, 1] (float32, CPU)."""
        config = self.vae.config
        z = latents / config.scaling_factor
        if getattr(config, "shift_factor", None):
            z = z + config.shift_factor
        images = self.vae.decode(z, return_dict=False)[0]  # (N, 3, H, W) in [-1, 1]
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
    ) -> list:
        """Images (PIL) for `prompt`: n per prompt, prompt-major; image k seeded `seed + k`.

        steps, guidance, sampler and relation_guidance default to the model's (t2ikit.json in the folder, else
        20, 7.5 for SD or 4.0 for a word-level model, dpmpp_2m, 0 = off); size defaults to the UNet's sample size.
        """
        spec = self.make_spec(prompt, negative_prompt, steps, guidance, seed, n, size, sampler, relation_guidance)
        return self.run(spec, progress=progress, hooks=hooks).pil()


def _fusion_of(root: Path) -> str:
    """The fusion strategy a t2ikit-trained folder records ("sequential", a stock UNet, otherwise)."""
    path = root / "t2ikit_train_config.json"
    if not path.is_file():
        return "sequential"
    try:
        return json.loads(path.read_text()).get("model", {}).get("fusion", "sequential")
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{path} is not a valid training record: {err}") from None


def _check_relation_prompts(prompts: list[str]) -> None:
    """Relation guidance was asked for: ValueError for prompts the caption parser cannot read, a warning for
    prompts that state no relation (nothing to guide)."""
    from t2ikit.world.caption import CaptionError, parse_caption

    unreadable, without = [], []
    for p in prompts:
        try:
            if not parse_caption(p).relations:
                without.append(p)
        except CaptionError as err:
            unreadable.append(f"{p!r} ({err})")
    if unreadable:
        raise ValueError("relation guidance reads each prompt with the Shapes World caption parser, which cannot "
                         "read " + "; ".join(unreadable))
    if without:
        warnings.warn(f"relation guidance: {', '.join(map(repr, without))} states no relation (left of, right of, "
                      "above, below); generated without it")


def write_model_defaults(folder: str | os.PathLike, **defaults) -> None:
    """Record generation defaults (DEFAULT_KEYS) in `folder`/t2ikit.json for `from_folder`."""
    unknown = set(defaults) - set(DEFAULT_KEYS)
    if unknown:
        raise ValueError(f"unknown default(s) {sorted(unknown)}; allowed: {', '.join(DEFAULT_KEYS)}")
    path = Path(folder) / T2IKIT_CONFIG
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["defaults"] = {**data.get("defaults", {}), **defaults}
    path.write_text(json.dumps(data, indent=2) + "\n")


__all__ = [
    "Generation",
    "GenerationSpec",
    "T2IPipeline",
    "check_model_folder",
    "to_pil",
    "write_model_defaults",
]
