"""Training losses as plain functions: the VAE reconstruction loss, the UNet's denoising loss with min-SNR
(its math in t2ikit.diffusion.losses, shared with the adapter trainers) and the extra terms.

Each is a short callable `loss(model(s), batch, ...) -> scalar`, in the manner of EDM's training/loss.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t2ikit.diffusion.losses import denoising_loss, global_randn

# ----------------------------------------------------------------------------------------------------
# VAE
# ----------------------------------------------------------------------------------------------------


def edge_map(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) in {0, 1}: 1 where a pixel differs from a 4-neighbour (object edges, small shapes)."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().amax(1, keepdim=True) > 1e-3  # (B, 1, H, W-1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().amax(1, keepdim=True) > 1e-3  # (B, 1, H-1, W)
    edges = torch.zeros_like(images[:, :1], dtype=torch.bool)
    edges[..., :, 1:] |= dx
    edges[..., :, :-1] |= dx
    edges[..., 1:, :] |= dy
    edges[..., :-1, :] |= dy
    return edges.to(images.dtype)


def vae_loss(
    vae,
    images: torch.Tensor,  # (B, 3, H, W) in [-1, 1]
    kl_weight: float,  # weight of the KL term; tiny, so the latent keeps exact colours
    edge_weight: float,  # extra L1 weight on edge pixels (0 = plain L1)
    generator: torch.Generator | None = None,  # draws the posterior sample
    shard: tuple[int, int] = (0, 1),  # (rank, world): images are items rank::world of the global batch
) -> torch.Tensor:
    """L1 reconstruction of a posterior sample (+ edge-weighted L1) + kl_weight * KL(q(z|x) || N(0, I))."""
    posterior = vae.encode(images).latent_dist
    eps = global_randn(posterior.mean.shape, generator, shard)
    z = posterior.mean + posterior.std * eps.to(posterior.mean.device, posterior.mean.dtype)
    recon = vae.decode(z).sample
    err = (recon.float() - images.float()).abs()  # (B, 3, H, W)
    loss = err.mean()
    if edge_weight > 0:
        loss = loss + edge_weight * (err * edge_map(images)).mean()
    kl = posterior.kl().mean() / images[0].numel()  # per pixel-channel, comparable to the L1 term
    return loss + kl_weight * kl


# ----------------------------------------------------------------------------------------------------
# Diffusion
# ----------------------------------------------------------------------------------------------------


def diffusion_loss(
    unet,
    latents: torch.Tensor,  # (B, C, h, w), already multiplied by the VAE scaling factor
    text_states: torch.Tensor,  # (B, T, D) text-encoder hidden states
    noise_scheduler,  # a diffusers DDPMScheduler: the training noise schedule
    generator: torch.Generator,  # draws timesteps and noise, so a step is a function of its seed
    snr_gamma: float,  # min-SNR gamma; 0 disables the weighting
    shard: tuple[int, int] = (0, 1),  # (rank, world): latents are items rank::world of the global batch
    outputs: dict | None = None,  # when given, filled with pred, noisy, timesteps (for the extra loss terms)
    snr_floor: float = 0.0,  # lower bound of the min-SNR weight in x0 terms (min_snr_weights' floor)
    timestep_range: tuple[int, int] | None = None,  # train on t in [lo, hi) only; None = all
) -> torch.Tensor:
    """The text-conditioned UNet's denoising loss (t2ikit.diffusion.losses.denoising_loss)."""
    return denoising_loss(lambda x, t: unet(x, t, encoder_hidden_states=text_states).sample, latents,
                          noise_scheduler, generator, snr_gamma, snr_floor, shard, outputs, timestep_range)


# ----------------------------------------------------------------------------------------------------
# Extra terms: text alignment and image quality
# ----------------------------------------------------------------------------------------------------


def predicted_x0(noise_scheduler, noisy: torch.Tensor, pred: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The clean latent implied by an eps or v prediction: x0 = sqrt(a) x_t - sqrt(1-a) v = (x_t - sqrt(1-a) eps) / sqrt(a)."""
    a = noise_scheduler.alphas_cumprod.to(noisy.device)[timesteps].float().view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    if noise_scheduler.config.prediction_type == "v_prediction":
        return a.sqrt() * noisy.float() - (1 - a).sqrt() * pred.float()
    return (noisy.float() - (1 - a).sqrt() * pred.float()) / a.sqrt().clamp(min=1e-4)


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Per-channel Sobel gradient magnitude, (B, C, H, W) -> (B, C, H, W) (zero padding)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype)
    b, c, h, w = x.shape
    g = F.conv2d(x.reshape(b * c, 1, h, w), torch.stack([kx, kx.T]).unsqueeze(1), padding=1)  # (BC, 2, H, W)
    gx, gy = g[:, 0].view(b, c, h, w), g[:, 1].view(b, c, h, w)
    return (gx.square() + gy.square() + 1e-8).sqrt()


def edge_l1_loss(pred_x0: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Image-quality term: L1 between Sobel edges of the predicted and the true clean latents."""
    return (sobel(pred_x0.float()) - sobel(latents.float())).abs().mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP, Radford et al. 2021) between paired rows of a (B, D) and b (B, D)."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature  # (B, B)
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
