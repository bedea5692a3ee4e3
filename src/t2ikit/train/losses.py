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
# Draws for a data-parallel shard
# ----------------------------------------------------------------------------------------------------


def global_randn(local_shape, generator: torch.Generator | None, shard: tuple[int, int]) -> torch.Tensor:
    """Normal draws for the whole global batch, rows rank::world: the same numbers for any world size."""
    rank, world = shard
    shape = (local_shape[0] * world, *local_shape[1:])
    return torch.randn(shape, generator=generator, device="cpu" if generator is None else generator.device)[rank::world]


def global_randint(high: int, local_b: int, generator: torch.Generator, shard: tuple[int, int]) -> torch.Tensor:
    rank, world = shard
    return torch.randint(0, high, (local_b * world,), generator=generator, device=generator.device)[rank::world]


# ----------------------------------------------------------------------------------------------------
# Diffusion
# ----------------------------------------------------------------------------------------------------


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep, (B,)."""
    a = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return a / (1 - a).clamp(min=1e-12)


def min_snr_weights(snr_t: torch.Tensor, gamma: float, prediction_type: str, floor: float = 0.0) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, Eq. 9), expressed for an eps or v target.

    In x0 terms the weight is min(SNR, gamma): at the noisiest steps it goes to 0 with the SNR (2e-9 at t = 999
    of the cosine schedule), so nothing trains what the model predicts from pure noise, where the layout is
    chosen. `floor` raises that x0 weight to at least `floor` (1 gives the noisiest steps the weight of the
    plain v loss); 0 is the paper's weighting.
    """
    if gamma <= 0:
        return torch.ones_like(snr_t)
    clipped = torch.minimum(snr_t, torch.full_like(snr_t, gamma)).clamp(min=floor)
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
    shard: tuple[int, int] = (0, 1),  # (rank, world): latents are items rank::world of the global batch
    outputs: dict | None = None,  # when given, filled with pred, noisy, timesteps (for the extra loss terms)
    snr_floor: float = 0.0,  # lower bound of the min-SNR weight in x0 terms (min_snr_weights' floor)
) -> torch.Tensor:
    """Weighted MSE between the UNet output and the eps or v target at uniformly drawn timesteps."""
    b = latents.shape[0]
    n_t = noise_scheduler.config.num_train_timesteps
    timesteps = global_randint(n_t, b, generator, shard).to(latents.device)
    noise = global_randn(latents.shape, generator, shard).to(latents.device)
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
    weights = min_snr_weights(snr(noise_scheduler.alphas_cumprod, timesteps), snr_gamma, prediction_type,
                              snr_floor)
    if outputs is not None:
        outputs.update(pred=pred, noisy=noisy, timesteps=timesteps)
    return (weights * per_sample).mean()


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
