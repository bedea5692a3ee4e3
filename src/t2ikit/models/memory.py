"""Will a request fit? A conservative estimate of a generation's peak memory, checked before any compute.

`check_memory(pipe, count, size)` runs after the model has loaded and before anything is sampled, and refuses
with a one-sentence ValueError what the machine cannot hold: without it a 100000x100000 image allocates until
the kernel kills the process (exit 137). Model weights are already resident, so they are not counted.

The parts (bytes; a "row" is one image's slot in a UNet batch: 2 per image with classifier-free guidance):

    latents    the sampler's state: noise, latents, the doubled guidance batch, predictions, a multistep
               solver's history: LATENT_COPIES tensors of (N, C, h, w)
    unet       one UNet call at its widest point: the skip connections the up path still holds, plus the
               working set of a transformer block (its GEGLU feed-forward is 8C wide) or of an up-path
               resnet (its input concatenates the skip). With gradients (null-text inversion, latent
               guidance: one row per image) every activation is kept for the backward pass as well
    attention  attention scores, (rows, heads, hw, hw) per self-attention layer, where they are
               materialised: when a hook reads self-attention probabilities (Prompt-to-Prompt), or when the
               device's scaled_dot_product_attention has no fused kernel for it. We assume the fused kernel
               where torch reports one (`sdpa_fused`): torch >= 2.2 has a flash kernel on CPU and CUDA has
               flash / memory-efficient ones, none of which builds the score matrix (tests/test_memory.py:
               a whole 64x64 generation of the tiny model peaks at 6 MB, its 4096-token scores alone would
               take 67 MB). Cross-attention scores (hw x T text tokens) are small, counted where a hook reads them
    vae        the decoder's widest activations at full resolution for every image at once: T2IPipeline.decode
               decodes the whole batch in one call (SD's VAE: 256 channels at H x W, the largest part at SD
               sizes); the encoder's when images are encoded (edit, invert)
    maps       captured cross-attention maps: AttentionStore keeps a float32 (rows, h, w, T) sum per layer

peak = latents + maps + max(unet + attention, vae): the UNet and the VAE never run at the same time.

Checked against measured peak resident memory on CPU (torch 2.13), estimate / measured: 0.8-1.5 for whole
generations of the tiny test model (tests/test_memory.py); at SD 1.5's architecture 1.25-1.51 for a VAE decode
and 0.91-1.23 for a guided UNet call at 256-512 px (`python benchmarks/memory_estimate.py`). On CUDA the same
widths are assumed (cuDNN workspaces and the caching allocator's slack in place of oneDNN's reorders).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from t2ikit.attention.processor import AttentionContext

# Live (hw, C) tensors at the peak of each block, counted from diffusers' forward code. A no-grad forward frees
# each intermediate as soon as the next one exists.
TRANSFORMER_WIDTH = 20  # residual + LayerNorm + GEGLU projection (8C) + GELU(gate) (4C) + product (4C) + block in/out
RESNET_WIDTH = 3  # input (the concatenated skip on the up path) + GroupNorm/SiLU output + conv output
SCORE_COPIES = 2  # q k^T scaled, then its softmax: two (rows, heads, Nq, Nk) tensors at once
VAE_WIDTH = 3  # a resnet's input, its norm/SiLU output and its conv output (or an upsample's input and conv output)
IMAGE_COPIES = 4  # (N, 3, H, W) decoded images: VAE output, rescaled, clamped, float32 on the CPU
LATENT_COPIES = 8  # noise, latents, [x; x], eps (2 rows), guided eps, the solver's history
# Tensors saved for the backward pass, per block, as multiples of (hw, C): GroupNorm, SiLU and conv inputs
# of a resnet; norms, q/k/v/out, projections and the 4C-wide GEGLU pieces of a transformer block.
RESNET_SAVED = 6
TRANSFORMER_SAVED = 30
# Peak resident memory over the peak of live tensor bytes, 1.5-2.0 for the tiny model's UNet and VAE on CPU:
# oneDNN convolutions reorder their input and output into blocked layouts, and malloc keeps freed blocks.
# Attention scores and captured maps are plain tensors, counted as they are.
RESIDENT_OVERHEAD = 2.0
SAFETY = 0.9  # refuse when the estimate exceeds this share of the free memory

HINTS = {  # what the user can change, per verb
    "generate": "use a smaller --size or --n",
    "edit": "edit a smaller image",
    "invert": "invert a smaller image",
    "explain": "use a model with a smaller default size",
    "analyze": "use a shorter prompt or --no-interactions",
}


# ----------------------------------------------------------------------------------------------------
# The estimate


def _per_level(value, levels: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * levels


def _unet_row(config: dict, hw: list[int], text_tokens: int, fused: bool, self_probs: bool,
              cross_probs: bool) -> dict:
    """Elements per UNet batch row: "forward" (skips + widest working set), "saved" (what a backward pass keeps),
    "scores" (the largest materialised attention scores), "saved_scores" (every layer's, kept for backward) and
    "maps" (captured cross-attention sums)."""
    channels = list(config["block_out_channels"])
    levels = len(channels)
    layers = _per_level(config.get("layers_per_block", 2), levels)
    # diffusers reads attention_head_dim as the number of heads when num_attention_heads is unset
    heads = _per_level(config.get("num_attention_heads") or config.get("attention_head_dim") or 8, levels)
    depth = _per_level(config.get("transformer_layers_per_block", 1) or 1, levels)
    attn = ["Attn" in name for name in config["down_block_types"]]
    skips = channels[0] * hw[0]  # conv_in's output
    work = saved = scores = saved_scores = maps = 0
    for lv, (c, n) in enumerate(zip(channels, hw)):
        up_in = c + channels[min(lv + 1, levels - 1)]  # the up path concatenates the skip
        skips += layers[lv] * c * n + (c * hw[lv + 1] if lv + 1 < levels else 0)
        blocks = 2 * layers[lv] + 1  # resnets (and transformers) of the down and up paths at this level
        work = max(work, RESNET_WIDTH * up_in * n)
        saved += RESNET_SAVED * (blocks * c + up_in) * n
        if attn[lv] or lv == levels - 1:  # the mid block attends at the lowest level
            tf = blocks * depth[lv] if attn[lv] else depth[lv]
            work = max(work, TRANSFORMER_WIDTH * c * n)
            saved += TRANSFORMER_SAVED * tf * c * n
            self_scores = heads[lv] * n * n if (self_probs or not fused) else 0
            cross_scores = heads[lv] * n * text_tokens if (cross_probs or not fused) else 0
            scores = max(scores, SCORE_COPIES * (self_scores + cross_scores))
            saved_scores += tf * (self_scores + cross_scores)
            maps += tf * n * text_tokens if cross_probs else 0
    return {"forward": skips + work, "saved": saved, "scores": scores, "saved_scores": saved_scores, "maps": maps}


def _vae_part(config: dict, count: int, height: int, width: int, decode: bool, encode: bool, fused: bool) -> int:
    """Elements of the widest VAE activations for `count` images of height x width pixels."""
    channels = list(config["block_out_channels"])
    levels = len(channels)
    pixels = [math.ceil(height / 2**lv) * math.ceil(width / 2**lv) for lv in range(levels)]  # level 0: full res
    widest = 0
    if decode:  # decoder level i runs at pixels[levels - 1 - i] with reversed channels, after an upsample
        rev = channels[::-1]
        for i in range(levels):
            widest = max(widest, max(rev[max(i - 1, 0)], rev[i]) * pixels[levels - 1 - i])
    if encode:
        for i in range(levels):
            widest = max(widest, max(channels[max(i - 1, 0)], channels[i]) * pixels[i])
    total = VAE_WIDTH * RESIDENT_OVERHEAD * widest + (IMAGE_COPIES * 3 * pixels[0] if decode else 0)
    if not fused and config.get("mid_block_add_attention", True):  # one head over the latent grid
        total = max(total, SCORE_COPIES * pixels[-1] ** 2 + 2 * channels[-1] * pixels[-1])
    return count * total


def estimate_bytes(unet_config, vae_config, text_tokens: int, count: int, size: tuple[int, int],
                   rows_per_image: int = 2, dtype_bytes: int = 4, attention_maps: bool = False, decode: bool = True,
                   *, encode: bool = False, self_attention_probs: bool = False, grad: bool = False,
                   fused_attention: bool = True) -> dict:
    """Peak bytes of generating `count` images of `size` = (height, width) pixels, weights excluded (module doc).

    unet_config, vae_config: the models' diffusers configs (any mapping). rows_per_image: UNet batch rows per
    image (2 with classifier-free guidance; more for Prompt-to-Prompt's source rows or DiffEdit's draws).
    attention_maps: cross-attention maps are captured (AttentionStore). encode: the images are VAE-encoded
    (edit, invert). self_attention_probs: a hook reads self-attention probabilities (Prompt-to-Prompt).
    grad: the UNet runs with gradients (null-text inversion, latent guidance). fused_attention: the device's
    SDPA runs without materialising scores (`sdpa_fused`).
    Returns {"latents", "unet", "attention", "vae", "maps", "total"} in bytes.
    """
    unet_config, vae_config = dict(unet_config), dict(vae_config)
    factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    height, width = (int(s) for s in size)
    h, w = math.ceil(height / factor), math.ceil(width / factor)  # latent grid
    levels = len(unet_config["block_out_channels"])
    hw = [math.ceil(h / 2**lv) * math.ceil(w / 2**lv) for lv in range(levels)]
    rows = count * rows_per_image
    row = _unet_row(unet_config, hw, text_tokens, fused_attention, self_attention_probs, attention_maps)
    unet, attention = RESIDENT_OVERHEAD * rows * row["forward"], rows * row["scores"]
    if grad:  # one row per image runs with gradients, its cross-attention read (latent guidance captures it)
        g = _unet_row(unet_config, hw, text_tokens, fused_attention, self_attention_probs, True)
        unet = max(unet, RESIDENT_OVERHEAD * count * (g["forward"] + g["saved"]))
        attention = max(attention, count * (g["scores"] + g["saved_scores"]))
    parts = {
        "latents": LATENT_COPIES * count * unet_config.get("in_channels", 4) * h * w * dtype_bytes,
        "unet": unet * dtype_bytes,
        "attention": attention * dtype_bytes,
        "vae": _vae_part(vae_config, count, height, width, decode, encode, fused_attention) * dtype_bytes,
        "maps": rows * row["maps"] * 4,  # AttentionStore sums in float32
    }
    parts = {k: int(math.ceil(v)) for k, v in parts.items()}
    parts["total"] = parts["latents"] + parts["maps"] + max(parts["unet"] + parts["attention"], parts["vae"])
    return parts


# ----------------------------------------------------------------------------------------------------
# What the device has free


def _cgroup_free() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2, else v1), reclaimable file cache counted free."""
    for limit, usage, stat, inactive in [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat", "inactive_file"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
         "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"),
    ]:
        try:
            text = Path(limit).read_text().strip()
            if text == "max" or int(text) >= 2**60:  # no limit
                return None
            used = int(Path(usage).read_text())
            stats = dict(line.split() for line in Path(stat).read_text().splitlines() if line.count(" ") == 1)
            return max(0, int(text) - used + int(stats.get(inactive, 0)))
        except (OSError, ValueError):
            continue
    return None


def _system_free() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def available_bytes(device) -> int:
    """Bytes a new allocation on `device` can use: for CUDA the driver's free memory plus torch's cached blocks;
    otherwise the system's MemAvailable (psutil or sysconf where /proc is missing), capped by a cgroup limit."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    free = _system_free()
    limited = _cgroup_free()
    return free if limited is None else min(free, limited)


def sdpa_fused(device, dtype: torch.dtype, heads: int = 1, head_dim: int = 64) -> bool:
    """Whether torch's scaled_dot_product_attention picks a fused kernel (flash, memory-efficient, cuDNN), which
    never materialises the (Nq, Nk) score matrix, for this device, dtype and head shape. False when unsure."""
    try:
        q = torch.zeros(1, heads, 8, head_dim, device=device, dtype=dtype)
        return int(torch._fused_sdp_choice(q, q, q)) > 0  # 0 is the math path, -1 no kernel
    except (AttributeError, RuntimeError, TypeError):
        return False


# ----------------------------------------------------------------------------------------------------
# The check


def format_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as free memory is usually quoted)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def probs_read(unet, hooks) -> tuple[bool, bool]:
    """(cross, self): whether attention hooks read cross- and self-attention probabilities, which then leave the
    fused attention path. Asked of each hook's `applies` at every attention layer of the UNet at step 0."""
    read = {True: False, False: False}
    readers = [h for h in hooks or [] if getattr(h, "needs_probs", False)]
    for layer in getattr(unet, "attn_processors", {}) if readers else []:
        cross = ".attn2." in layer
        ctx = AttentionContext(layer, cross, 0, 1, None, 64, (8, 8))
        for hook in readers:
            try:
                read[cross] |= bool(hook.applies(ctx))
            except Exception:  # a hook that cannot answer a made-up context: assume it reads
                read[cross] = True
    return read[True], read[False]


def check_memory(pipe, count: int, size: tuple[int, int], rows_per_image: int = 2, attention_maps: bool = False,
                 what: str = "generate", *, hooks=None, encode: bool = False, decode: bool = True,
                 self_attention_probs: bool = False, grad: bool = False, hint: str | None = None,
                 safety: float = SAFETY) -> dict:
    """The estimate (`estimate_bytes` with "available" added) if it fits in `safety` of the free memory of the
    pipeline's device, else a one-sentence ValueError naming the estimate, its parts and what is free.

    Call it after the model has loaded and before any compute. `hooks`: attention hooks about to be installed;
    those that read probabilities set attention_maps / self_attention_probs. `what` names the verb in the message,
    `hint` what to change (default: HINTS[what]).
    """
    if hooks:
        cross, self_ = probs_read(pipe.unet, getattr(hooks, "hooks", hooks))
        attention_maps, self_attention_probs = attention_maps or cross, self_attention_probs or self_
    unet_config = dict(pipe.unet.config)
    dtype_bytes = torch.empty((), dtype=pipe.dtype).element_size()
    channels = unet_config["block_out_channels"]
    heads = _per_level(unet_config.get("num_attention_heads") or unet_config.get("attention_head_dim") or 8,
                       len(channels))[0]
    fused = sdpa_fused(pipe.device, pipe.dtype, heads, max(1, channels[0] // heads))
    est = estimate_bytes(unet_config, pipe.vae.config, pipe.tokenizer.model_max_length, count, size, rows_per_image,
                         dtype_bytes, attention_maps, decode, encode=encode, self_attention_probs=self_attention_probs,
                         grad=grad, fused_attention=fused)
    free = available_bytes(pipe.device)
    if est["total"] > safety * free:
        names = {"latents": "latents", "unet": "UNet activations", "attention": "attention scores",
                 "vae": "VAE decode" if decode else "VAE encode", "maps": "attention maps"}
        parts = ", ".join(f"{names[k]} {format_bytes(est[k])}" for k in names if est[k] >= 0.01 * est["total"])
        images = f"{count} image{'s' if count != 1 else ''} of {size[1]}x{size[0]}"
        raise ValueError(f"{what}: {images} needs about {format_bytes(est['total'])} ({parts}) but only "
                         f"{format_bytes(free)} is free on {pipe.device}; {hint or HINTS.get(what, 'ask for less')}")
    return {**est, "available": free}


__all__ = ["available_bytes", "check_memory", "estimate_bytes", "format_bytes", "probs_read", "sdpa_fused"]
