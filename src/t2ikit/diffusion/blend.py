"""Blended latent editing: regenerate only inside a mask, under the target prompt at real guidance.

    x_k  = the source at level k (SDEdit, Meng et al. 2022: the image partially noised to `strength` of
           the schedule): the inverted trajectory's latent, or inside the mask the encoded image noised
           with fresh, seeded noise
    for i = k .. N-1: x = DDIM step of x under the target prompt (CFG against `uncond`)
                      x = m * x + (1 - m) * trajectory[i + 1]        (Blended Latent Diffusion,
                                                                      Avrahami et al. 2023, Alg. 1)

Outside the mask the latents are the inverted source's at every level, so the edited region is drawn in
the context of the untouched image. Optionally a condition adapter (the shipped sketch adapter,
`t2ikit.control`) holds the source's outlines: `image_sketch` computes a Shapes-World-style sketch (outer
contours of the objects) from the image itself; a colour edit keeps every outline, a shape edit keeps
only those outside the mask (`sketch_for_edit`).
"""

from __future__ import annotations

import difflib
import math
import re

import numpy as np
import torch

from t2ikit.diffusion.inversion import Schedule, ddim_denoise, item_noise

STARTS = ("inverted", "noise")  # what the masked region starts from at level k
BACKGROUND_TOL = 0.08  # max |rgb - background| (per channel) of a background pixel in `image_sketch`


# ----------------------------------------------------------------------------------------------------
# Outlines from the image itself


def foreground(image: torch.Tensor, tol: float = BACKGROUND_TOL) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W) bool: pixels not of the background colour, holes filled.

    The background is the most common colour of the image's border (Shapes World's flat backgrounds);
    filling holes makes an outlined object's silhouette whole.
    """
    from scipy import ndimage

    rgb = image.float().clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, 3)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # (4(H + W), 3)
    keys, counts = np.unique(np.round(border * 255).astype(np.int32), axis=0, return_counts=True)
    background = keys[counts.argmax()] / 255.0
    return ndimage.binary_fill_holes(np.abs(rgb - background).max(-1) > tol)


def image_sketch(images: torch.Tensor, tol: float = BACKGROUND_TOL) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 1, H, W) in {0, 1}: the outer contour of every object, one pixel wide.

    The form of Shapes World's sketch (`t2ikit.world.render`): an object pixel with a 4-neighbour outside
    the object (`foreground`).
    """
    from scipy import ndimage

    out = []
    for im in images:
        fg = foreground(im, tol)
        inner = ndimage.binary_erosion(np.pad(fg, 1))[1:-1, 1:-1]
        out.append(torch.from_numpy((fg & ~inner).astype(np.float32))[None])
    return torch.stack(out)


def snap_mask(pixel_mask: torch.Tensor, images: torch.Tensor, pad: int = 2, share: float = 0.8,
              tol: float = BACKGROUND_TOL) -> torch.Tensor:
    """A rough edit mask (B, 1, H, W) snapped to the image's objects: (B, 1, H, W) in {0, 1}.

    The objects are the connected components of `foreground`; an object is edited when the rough mask
    covers at least `share` of the best-covered object's fraction; the mask becomes those objects'
    bounding boxes grown by `pad` px (room for a new outline). An image whose rough mask touches no object
    keeps its rough mask.
    """
    from scipy import ndimage

    out = pixel_mask.clone()
    for b, im in enumerate(images):
        labels, count = ndimage.label(foreground(im, tol))
        rough = pixel_mask[min(b, len(pixel_mask) - 1), 0].numpy() > 0
        cover = np.asarray([rough[labels == k + 1].mean() for k in range(count)])
        if not count or cover.max() <= 0:
            continue
        m = np.zeros(rough.shape, dtype=np.float32)
        for k in np.flatnonzero(cover >= share * cover.max()):
            ys, xs = np.nonzero(labels == k + 1)
            m[max(0, ys.min() - pad):ys.max() + pad + 1, max(0, xs.min() - pad):xs.max() + pad + 1] = 1
        out[b, 0] = torch.from_numpy(m)
    return out


_WORD = re.compile(r"[a-z]+")


def changed_spans(source: str, target: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Char spans (start, end) of the words of `source` that the target replaces or drops, and of the words
    the target brings in ("a" and "an" count as one word: "a red circle" -> "an orange circle" changes only
    the colour)."""
    ms, mt = (list(_WORD.finditer(p.lower())) for p in (source, target))
    a, b = ([{"an": "a"}.get(m.group(), m.group()) for m in ms_] for ms_ in (ms, mt))
    removed, added = [], []
    for op, i0, i1, j0, j1 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op != "equal":
            removed += [m.span() for m in ms[i0:i1]]
            added += [m.span() for m in mt[j0:j1]]
    return removed, added


def changed_words(source: str, target: str) -> tuple[list[str], list[str]]:
    """The words of `source` that the target replaces or drops, and the words the target brings in
    (`changed_spans`' words, lower case, "an" read as "a")."""
    removed, added = changed_spans(source, target)
    word = lambda p, i, j: {"an": "a"}.get(p[i:j].lower(), p[i:j].lower())  # noqa: E731
    return [word(source, i, j) for i, j in removed], [word(target, i, j) for i, j in added]


def outlines_kept(source: str, target: str) -> bool:
    """True when the edit changes only colour words, so every outline of the source stays right."""
    from t2ikit.world import vocab

    removed, added = changed_words(source, target)
    return bool(removed or added) and all(w in vocab.COLOURS for w in removed + added)


def sketch_for_edit(images: torch.Tensor, pixel_mask: torch.Tensor | None, sources: list[str],
                    targets: list[str]) -> torch.Tensor:
    """(B, 1, H, W) sketch condition: the image's outlines, removed inside the mask unless only colours change."""
    sketch = image_sketch(images)
    for k, (s, t) in enumerate(zip(sources, targets)):
        if pixel_mask is not None and not outlines_kept(s, t):
            sketch[k] = sketch[k] * (1 - pixel_mask[min(k, len(pixel_mask) - 1)])
    return sketch


# ----------------------------------------------------------------------------------------------------
# The sampler


class ResidualUNet:
    """A UNet call with adapter residuals added (T2I-Adapter, Mou et al. 2023): wraps, does not change, the UNet.

    `residuals` are per image (B, C_k, h_k, w_k); a CFG batch of 2B rows gets them on every row, as
    diffusers' T2I-Adapter pipeline and `t2ikit.control.guidance.sample_conditions` do.
    """

    def __init__(self, unet, residuals: list[torch.Tensor]):
        self.unet, self.residuals = unet, residuals

    def __call__(self, x, t, encoder_hidden_states=None, return_dict=False):
        reps = x.shape[0] // self.residuals[0].shape[0]
        res = [torch.cat([r] * reps) for r in self.residuals]
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states, down_intrablock_additional_residuals=res,
                         return_dict=return_dict)


def start_level(steps: int, strength: float) -> int:
    """The trajectory level k an edit of `strength` starts from: strength 1 is x_T (k = 0), 0 is x_0 (k = steps)."""
    if not (isinstance(strength, (int, float)) and not isinstance(strength, bool) and 0.0 < strength <= 1.0):
        raise ValueError(f"strength must be a number in (0, 1] (the fraction of the schedule re-noised); got {strength!r}")
    return steps - max(1, round(strength * steps))


@torch.no_grad()
def blended_denoise(unet, schedule: Schedule, trajectory: torch.Tensor, cond: torch.Tensor, uncond, guidance: float,
                    latent_mask: torch.Tensor | None, strength: float = 0.8, start: str = "inverted",
                    seed: int | list[int] = 0, controller=None) -> torch.Tensor:
    """(B, C, h, w) edited latents; see the module docstring. `latent_mask` (B or 1, 1, h, w), None = everywhere.
    start="noise": item b's fresh noise is drawn with seed `seed + b`, or `seed[b]` for a list (a batch equals
    its items one by one).

    trajectory: (N + 1, B, C, h, w) from `invert` ([0] = x_T, [N] = x_0).
    """
    if start not in STARTS:
        raise ValueError(f"start must be one of {', '.join(STARTS)}; got {start!r}")
    k = start_level(schedule.steps, strength)
    m = None if latent_mask is None else latent_mask.to(trajectory)
    x = trajectory[k]
    if start == "noise":
        a = float(schedule.levels[k])
        eps = item_noise(x.shape[1:], x.shape[0], seed).to(x)
        fresh = math.sqrt(a) * trajectory[-1] + math.sqrt(1 - a) * eps
        x = fresh if m is None else m * fresh + (1 - m) * x
    sub = Schedule(schedule.timesteps[k:], schedule.levels[k:], schedule.prediction_type)

    def keep_outside(i, z):  # level k + i + 1
        return z if m is None else m * z + (1 - m) * trajectory[k + i + 1]

    return ddim_denoise(unet, sub, x, cond, uncond, guidance, controller=controller, after_step=keep_outside)


__all__ = ["ResidualUNet", "blended_denoise", "changed_spans", "changed_words", "foreground", "image_sketch", "snap_mask", "outlines_kept", "sketch_for_edit",
           "start_level"]
