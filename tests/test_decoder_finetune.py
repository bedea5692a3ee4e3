"""Decoder-only VAE fine-tuning: the encoder (the UNet's latent space) must not move."""

import pytest
import torch
from diffusers import AutoencoderKL

from t2ikit.train.decoder_finetune import finetune_decoder, style_balanced_batch


def tiny_vae():
    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                         sample_size=64)


def test_only_the_decoder_changes_and_the_stream_is_balanced():
    vae = tiny_vae()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    log = finetune_decoder(vae, steps=2, batch_size=4, lr=1e-2, log_every=1, echo=lambda s: None)
    after = vae.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(("decoder.", "post_quant_conv.")) for k in moved)
    assert len(log) == 2 and all(r["loss"] > 0 for r in log)
    batch = style_balanced_batch(0, 0, 8)
    assert batch.shape == (8, 3, 64, 64) and batch.min() >= -1 and batch.max() <= 1
    assert torch.equal(batch, style_balanced_batch(0, 0, 8))  # deterministic per (seed, index)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="steps must be >= 1"):
        finetune_decoder(tiny_vae(), steps=0)
    with pytest.raises(ValueError, match="batch_size >= 2"):
        finetune_decoder(tiny_vae(), steps=1, batch_size=1)


def test_encoder_option_moves_the_encoder_and_the_anchor_holds_its_latents():
    images = style_balanced_batch(0, 99, 4)

    def latent_shift(anchor):
        vae, ref = tiny_vae(), tiny_vae()
        finetune_decoder(vae, steps=3, batch_size=4, lr=1e-2, log_every=1, echo=lambda s: None, encoder=True,
                         anchor=anchor)
        moved = [k for k, v in ref.state_dict().items() if not torch.equal(v, vae.state_dict()[k])]
        assert any(k.startswith("encoder.") for k in moved)
        with torch.no_grad():
            return (vae.encode(images).latent_dist.mode() - ref.encode(images).latent_dist.mode()).abs().mean()

    assert latent_shift(1e3) < 0.5 * latent_shift(0.0)
    with pytest.raises(ValueError, match="needs encoder=True"):
        finetune_decoder(tiny_vae(), steps=1, anchor=1.0)
