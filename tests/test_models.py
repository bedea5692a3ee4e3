"""Named sizes, builders, weight init, cost report and the training losses, on tiny components."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from t2ikit.models.sizes import (
    MODEL_SIZES,
    VAE_SIZES,
    build_unet,
    build_vae,
    count_params,
    model_size,
    unet_flops,
    vae_size,
)
from t2ikit.diffusion.losses import min_snr_weights
from t2ikit.diffusion.schedules import training_scheduler
from t2ikit.train.losses import diffusion_loss, edge_map, vae_loss


def test_size_table_names_and_order():
    assert list(MODEL_SIZES) == ["xs", "s", "m", "l"]
    widths = [s.block_out_channels[-1] * s.layers_per_block for s in MODEL_SIZES.values()]
    assert widths == sorted(widths)
    for name, s in MODEL_SIZES.items():
        assert all(c % s.norm_num_groups == 0 for c in s.block_out_channels), name
        assert s.text_hidden % s.text_heads == 0, name


def test_xs_unet_is_test_sized_and_params_grow():
    assert count_params(build_unet("xs")) < 100_000
    assert count_params(build_unet("xs")) < count_params(build_unet("s"))


@pytest.mark.parametrize("bad", ["xl", "", "S"])
def test_unknown_size_is_an_error(bad):
    with pytest.raises(ValueError, match="unknown model size"):
        model_size(bad)
    with pytest.raises(ValueError, match="unknown VAE size"):
        vae_size(bad)


def test_unet_init_is_seeded_and_output_starts_at_zero():
    a = build_unet("xs", seed=1)
    torch.manual_seed(123)  # the caller's global RNG state must not matter (biases included)
    b, c = build_unet("xs", seed=1), build_unet("xs", seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.conv_in.weight, c.conv_in.weight)
    x = torch.randn(2, 4, 16, 16)
    out = a(x, torch.tensor([10, 900]), encoder_hidden_states=torch.randn(2, 5, 16)).sample
    assert out.shape == x.shape and torch.count_nonzero(out) == 0  # zero-init conv_out


@pytest.mark.parametrize("name,res,latent", [("xs", 32, 16), ("f4", 64, 16)])
def test_vae_factor_and_round_trip_shape(name, res, latent):
    vae = build_vae(name, sample_size=res)
    assert vae_size(name).factor == res // latent
    x = torch.rand(1, 3, res, res) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        assert z.shape == (1, VAE_SIZES[name].latent_channels, latent, latent)
        assert vae.decode(z).sample.shape == x.shape


def test_flops_grow_with_latent_size():
    unet = build_unet("xs", sample_size=16)
    small, large = unet_flops(unet, (4, 8, 8)), unet_flops(unet, (4, 16, 16))
    assert 0 < small < large


def test_min_snr_weights():
    snr = torch.tensor([0.5, 5.0, 50.0])
    eps = min_snr_weights(snr, 5.0, "epsilon")
    v = min_snr_weights(snr, 5.0, "v_prediction")
    assert torch.allclose(eps, torch.tensor([1.0, 1.0, 0.1]))
    assert torch.allclose(v, torch.tensor([0.5 / 1.5, 5 / 6, 5 / 51]))
    assert torch.equal(min_snr_weights(snr, 0.0, "epsilon"), torch.ones(3))
    # the floor lifts only the noisy end: x0 weight max(min(SNR, 5), 1), so v weight 1 / 1.5 at SNR 0.5
    floored = min_snr_weights(torch.tensor([0.0, 0.5, 5.0, 50.0]), 5.0, "v_prediction", floor=1.0)
    assert torch.allclose(floored, torch.tensor([1.0, 1 / 1.5, 5 / 6, 5 / 51]))
    assert min_snr_weights(torch.tensor([0.0]), 5.0, "v_prediction")[0] == 0  # without it pure noise never trains
    with pytest.raises(ValueError, match="prediction_type"):
        min_snr_weights(snr, 5.0, "sample")


def test_edge_map_marks_both_sides_of_a_boundary():
    img = torch.zeros(1, 3, 4, 4)
    img[..., 1, 1] = 1.0
    edges = edge_map(img)[0, 0]
    assert edges[1, 1] == 1 and edges[0, 1] == 1 and edges[1, 0] == 1 and edges[3, 3] == 0


def test_losses_are_functions_of_the_generator():
    from t2ikit.train.config import DiffusionConfig
    unet, sched = build_unet("xs", sample_size=8, seed=3), training_scheduler(asdict(DiffusionConfig()))
    torch.nn.init.normal_(unet.conv_out.weight, std=0.1)
    lat, txt = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 16)
    l1 = diffusion_loss(unet, lat, txt, sched, torch.Generator().manual_seed(0), 5.0)
    l2 = diffusion_loss(unet, lat, txt, sched, torch.Generator().manual_seed(0), 5.0)
    l3 = diffusion_loss(unet, lat, txt, sched, torch.Generator().manual_seed(1), 5.0)
    assert torch.equal(l1, l2) and not torch.equal(l1, l3)
    vae = build_vae("xs", sample_size=16)
    img = torch.rand(2, 3, 16, 16) * 2 - 1
    a = vae_loss(vae, img, 1e-6, 1.0, torch.Generator().manual_seed(0))
    b = vae_loss(vae, img, 1e-6, 0.0, torch.Generator().manual_seed(0))
    assert a > b > 0  # the edge term adds to plain L1


def test_a_timestep_range_draws_only_its_steps_and_the_whole_range_is_the_default_draw():
    from t2ikit.diffusion.losses import noised_batch
    from t2ikit.train.config import DiffusionConfig
    sched, lat = training_scheduler(asdict(DiffusionConfig())), torch.zeros(256, 4, 2, 2)
    t, _, _ = noised_batch(lat, sched, torch.Generator().manual_seed(0), timestep_range=(0, 300))
    assert 0 <= t.min() and t.max() < 300 and t.max() > 250  # every low step can be drawn, no noisier one
    t, _, _ = noised_batch(lat, sched, torch.Generator().manual_seed(0), timestep_range=(700, 1000))
    assert t.min() >= 700
    whole = noised_batch(lat, sched, torch.Generator().manual_seed(0), timestep_range=(0, 1000))[0]
    assert torch.equal(whole, noised_batch(lat, sched, torch.Generator().manual_seed(0))[0])  # old runs reproduce
    for bad in [(300, 300), (-1, 10), (0, 1001), (0.0, 300), (0, 300, 5)]:
        with pytest.raises(ValueError, match="timestep range must be"):
            noised_batch(lat, sched, torch.Generator().manual_seed(0), timestep_range=bad)
