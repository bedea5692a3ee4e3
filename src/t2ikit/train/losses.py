"""Training losses as plain functions: the VAE reconstruction loss and the denoising loss with min-SNR.

Each is a short callable `loss(model(s), batch, ...) -> scalar`, in the manner of EDM's training/loss.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
) -> torch.Tensor:
    """L1 reconstruction of a posterior sample (+ edge-weighted L1) + kl_weight * KL(q(z|x) || N(0, I))."""
    posterior = vae.encode(images).latent_dist
    z = posterior.mean + posterior.std * torch.randn(
        posterior.mean.shape, generator=generator, device="cpu" if generator is None else generator.device
    ).to(posterior.mean.device, posterior.mean.dtype)
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


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep, (B,)."""
    a = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return a / (1 - a).clamp(min=1e-12)


def min_snr_weights(snr_t: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, Eq. 9), expressed for an eps or v target."""
    if gamma <= 0:
        return torch.ones_like(snr_t)
    clipped = torch.minimum(snr_t, torch.full_like(snr_t, gamma))
    if prediction_type == "epsilon":
        return clipped / snr_t.clamp(min=1e-12)
    if prediction_type == "v_prediction":
        return clipped / (snr_t + 1)
    raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")


def diffusion_loss(
    unet,
    latents: torch.Tensor,  # (B, C, h, w), already multiplied by the VAE scaling factor
    text_states: torch.Tensor,  # (B, T, D) text-encoder hidden states
    noise_scheduler,  # a diffusers DDPMScheduler: the training noise schedule
    generator: torch.Generator,  # draws timesteps and noise, so a step is a function of its seed
    snr_gamma: float,  # min-SNR gamma; 0 disables the weighting
) -> torch.Tensor:
    """Weighted MSE between the UNet output and the eps or v target at uniformly drawn timesteps."""
    b = latents.shape[0]
    n_t = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, n_t, (b,), generator=generator, device=generator.device).to(latents.device)
    noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    pred = unet(noisy, timesteps, encoder_hidden_states=text_states).sample
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))  # (B,)
    weights = min_snr_weights(snr(noise_scheduler.alphas_cumprod, timesteps), snr_gamma, prediction_type)
    return (weights * per_sample).mean()
