"""Edit masks: where an edit may change the image.

    load_mask       a user mask (path, PIL, array, tensor; nonzero = edit)
    diffedit_mask   DiffEdit (Couairon et al. 2022, Sec. 3.1): where the noise predictions under the source
                    and the target prompts differ
    attention_mask  the source's cross-attention to the edited words (P2P's local blend, Hertz et al. 2022,
                    Sec. 3.3)

A mask from a detector that knows the image's objects (mask="detect") comes from a scene support
(`t2ikit.edit.support`); `t2ikit.edit.outlines.snap_mask` snaps a rough mask to the image's objects.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from PIL import Image, UnidentifiedImageError

from t2ikit.attention.capture import AttentionStore
from t2ikit.attention.processor import AttentionController
from t2ikit.diffusion.conditioning import cat_added
from t2ikit.diffusion.denoisers import unet_call
from t2ikit.diffusion.inversion import Inversion, ddim_denoise, item_noise, split_output
from t2ikit.edit.changes import changed_words
from t2ikit.edit.options import ATTENTION_THRESHOLD, MASK_SAMPLES, MASK_STRENGTH, MASK_THRESHOLD
from t2ikit.text.phrases import phrase_token_spans
from t2ikit.text.spans import word_token_spans


def load_mask(mask, shape: tuple[int, int], batch: int) -> torch.Tensor:
    """A user mask (path, PIL, (H, W) array/tensor, (B, 1, H, W) tensor; nonzero = edit) -> (B, 1, H, W) float."""
    if isinstance(mask, (str, bytes)) or hasattr(mask, "__fspath__"):
        try:
            with Image.open(mask) as im:
                mask = np.asarray(im.convert("L"))
        except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
            raise ValueError(f"mask {str(mask)!r} cannot be read as an image: {err}") from None
    if type(mask).__module__.startswith("PIL"):
        mask = np.asarray(mask.convert("L"))
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask.astype(np.float32) / (255.0 if mask.dtype == np.uint8 else 1.0))
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be 'auto', a path, PIL image, array or tensor; got {type(mask).__name__}")
    m = mask.float()
    while m.ndim < 4:
        m = m[None]
    if tuple(m.shape[-2:]) != tuple(shape) or m.shape[1] != 1 or m.shape[0] not in (1, batch):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; it must be {shape[0]}x{shape[1]} pixels, "
                         f"the size of the image")
    return (m > 0.5).float().expand(batch, 1, *shape).clone()


@torch.no_grad()
def diffedit_mask(pipe, latents: torch.Tensor, source_cond: torch.Tensor, target_cond: torch.Tensor,
                  schedule_config: dict, samples: int = MASK_SAMPLES, strength: float = MASK_STRENGTH,
                  threshold: float = MASK_THRESHOLD, seed: int = 0, source_added: dict | None = None,
                  target_added: dict | None = None) -> torch.Tensor:
    """DiffEdit's mask (Couairon et al. 2022, Sec. 3.1): (B, 1, h, w) in {0, 1} at latent resolution.

    Noise the image latents to `strength` of the schedule `samples` times; |eps(target) - eps(source)|,
    averaged over channels and draws, normalised to [0, 1] per image, thresholded at `threshold`.
    `source_added`, `target_added`: SDXL's added conditioning of each image's source and target prompt (or None).
    """
    config = {k: v for k, v in schedule_config.items() if not k.startswith("_")}
    sched = DDPMScheduler.from_config(config)
    t = torch.tensor(min(int(strength * sched.config.num_train_timesteps), sched.config.num_train_timesteps - 1))
    alpha = float(sched.alphas_cumprod[t])
    b = latents.shape[0]
    noise = item_noise((samples, *latents.shape[1:]), b, seed, dim=1).to(latents)  # (S, B, C, h, w)
    x = (alpha ** 0.5 * latents[None] + (1 - alpha) ** 0.5 * noise).flatten(0, 1)  # (S*B, C, h, w)
    embeds = torch.cat([source_cond.repeat(samples, 1, 1), target_cond.repeat(samples, 1, 1)])
    added = cat_added([_repeat(source_added, samples), _repeat(target_added, samples)])  # rows as `embeds`'
    out = unet_call(pipe.unet, torch.cat([x, x]), t, embeds, added=added)
    eps_s, eps_t = (split_output(o, x, alpha, sched.config.prediction_type)[0] for o in out.chunk(2))
    diff = (eps_t - eps_s).abs().mean(1).view(samples, b, *latents.shape[-2:]).mean(0)  # (B, h, w)
    diff = diff / diff.flatten(1).amax(1).clamp_min(1e-8)[:, None, None]
    return (diff >= threshold).float()[:, None]


def _repeat(added: dict | None, times: int) -> dict | None:
    """Added conditioning of B rows repeated as `Tensor.repeat` repeats text states: (times * B, ...)."""
    return None if added is None else {k: v.repeat(times, *[1] * (v.ndim - 1)) for k, v in added.items()}


def edited_positions(tokenizer, source: str, target: str) -> list[int]:
    """Token positions (BOS is 0) in `source` of the object the edit changes: its changed words and its noun.

    ValueError if the target changes no word of the source (nothing to locate).
    """
    removed, _ = changed_words(source, target)
    if not removed:
        raise ValueError(f"the attention mask needs a word of the source prompt {source!r} that the target "
                         f"{target!r} changes; it only adds words (use mask='auto')")
    words = [w for w in word_token_spans(tokenizer, source) if not w.truncated]
    positions = []
    for ps in phrase_token_spans(tokenizer, source):
        if any(w.lower() in removed for w in ps.phrase.words):
            positions += [p for w in words if ps.phrase.start <= w.start < ps.phrase.end
                          and (w.word.lower() in removed or w.word == ps.phrase.head) for p in w.positions]
    if not positions:  # a changed word outside any noun phrase
        positions = [p for w in words if w.word.lower() in removed for p in w.positions]
    return sorted(set(positions))


@torch.no_grad()
def attention_mask(pipe, inversion: Inversion, positions: list[list[int]],
                   threshold: float = ATTENTION_THRESHOLD) -> torch.Tensor:
    """The source's cross-attention to the edited words (P2P's local blend): (B, 1, h, w) in {0, 1}.

    The inverted noise is sampled back under the source prompt (guidance 1) while an AttentionStore sums
    the cross-attention of every layer below the full latent resolution (the full-resolution layers of this
    model spread over the whole image); per image the map of `positions[b]` is min-max normalised and
    thresholded at `threshold`.
    """
    last = len(pipe.unet.config.up_block_types) - 1
    store = AttentionStore(layers=lambda name: not name.startswith(("down_blocks.0.", f"up_blocks.{last}.")))
    with AttentionController([store]).install(pipe.unet) as controller:
        ddim_denoise(pipe.unet, inversion.schedule, inversion.noise, inversion.cond, controller=controller,
                     added=inversion.added)
    maps = store.mean_maps(tuple(inversion.noise.shape[-2:]))  # (B, Nk, h, w)
    m = torch.stack([maps[b, pos].sum(0) for b, pos in enumerate(positions)])  # (B, h, w)
    lo, hi = m.flatten(1).amin(1)[:, None, None], m.flatten(1).amax(1)[:, None, None]
    return ((m - lo) / (hi - lo).clamp_min(1e-8) >= threshold).float()[:, None]


def to_latent_mask(pixel_mask: torch.Tensor, factor: int) -> torch.Tensor:
    """A latent pixel is edited if any of its image pixels is."""
    return F.max_pool2d(pixel_mask, factor)


__all__ = ["attention_mask", "diffedit_mask", "edited_positions", "load_mask", "to_latent_mask"]
