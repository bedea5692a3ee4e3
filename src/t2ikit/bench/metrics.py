"""Image similarity for the inversion and edit measurements: SSIM by torchmetrics, next to the project's PSNR.

SSIM (Wang et al. 2004) is computed by `torchmetrics.functional.image.structural_similarity_index_measure`
(11-pixel Gaussian window, sigma 1.5, data range 1); over a mask, it is the mean of torchmetrics' SSIM map
over the masked pixels (all channels). PSNR stays `t2ikit.diffusion.inversion.psnr` (capped at 60 dB and
maskable, which torchmetrics' PSNR is not); `tests/test_progress_plots.py` checks it against torchmetrics'
on unmasked images.
"""

from __future__ import annotations

import numpy as np
import torch


def _as_batch(x) -> torch.Tensor:
    """(B, 3, H, W) float tensor from a tensor of that shape or (H, W, 3) / (B, H, W, 3) arrays in [0, 1]."""
    if isinstance(x, torch.Tensor):
        t = x.float()
    else:
        a = np.asarray(x, dtype=np.float32)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"images must be (H, W, 3) or (B, H, W, 3) arrays; got shape {a.shape}")
        t = torch.from_numpy(a).permute(0, 3, 1, 2)
    if t.ndim != 4:
        raise ValueError(f"images must be (B, 3, H, W) tensors; got shape {tuple(t.shape)}")
    return t


def ssim(a, b, mask=None) -> torch.Tensor:
    """SSIM per image, (B,), of images in [0, 1]: (B, 3, H, W) tensors or (B, H, W, 3) / (H, W, 3) arrays.

    `mask`: (H, W) or (B or 1, 1, H, W) bool, the pixels averaged over (the SSIM map's mean there).
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = _as_batch(a), _as_batch(b)
    if a.shape != b.shape:
        raise ValueError(f"ssim needs images of the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    value, ssim_map = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none",
                                                          return_full_image=True)  # (B,), (B, 3, H, W)
    if mask is None:
        return value
    m = torch.as_tensor(np.asarray(mask)).bool()
    m = m.reshape(1, 1, *m.shape[-2:]) if m.ndim == 2 else m
    m = m.expand(a.shape[0], a.shape[1], *a.shape[-2:]).float()
    return (ssim_map * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)


__all__ = ["ssim"]
