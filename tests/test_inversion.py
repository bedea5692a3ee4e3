"""DDIM inversion: input checks, agreement with diffusers' DDIMInverseScheduler, reconstruction, null-text."""

import numpy as np
import pytest
import torch
from PIL import Image

from t2ikit.diffusion.inversion import (
    ddim_denoise,
    ddim_invert,
    ddim_schedule,
    encode_image,
    invert,
    load_image,
    psnr,
    reconstruct,
    save_inversion,
)
from t2ikit.pipeline import T2IPipeline

SHIPPED = "src/t2ikit/weights/shapes-v6b"


@pytest.fixture(scope="module")
def shipped():
    from pathlib import Path

    return T2IPipeline.from_folder(Path(__file__).resolve().parents[1] / SHIPPED)


def _scene_image(index=0):
    from t2ikit.world.render import render_rgb
    from t2ikit.world.caption import write_caption
    from t2ikit.world.scene import sample_scene

    scene = sample_scene(3, index, category="colour_binding")
    return torch.from_numpy(render_rgb(scene)).permute(2, 0, 1)[None], write_caption(scene.spec)


# --- bad input, before any compute ------------------------------------------------------------------


def test_unreadable_missing_and_wrongly_sized_images_are_refused(tmp_path, pipe):
    junk = tmp_path / "junk.png"
    junk.write_text("not a png")
    with pytest.raises(ValueError, match="cannot be read as an image"):
        invert(pipe, junk, "a red circle")
    with pytest.raises(ValueError, match="does not exist"):
        invert(pipe, tmp_path / "missing.png", "a red circle")
    Image.fromarray(np.zeros((18, 18, 3), np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match="18x18 is not a multiple of 4"):
        invert(pipe, tmp_path / "odd.png", "a red circle")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        load_image(torch.full((3, 16, 16), 2.0))
    with pytest.raises(ValueError, match="uncond must be one of"):
        invert(pipe, torch.rand(3, 16, 16), "a red circle", guidance=3.0, uncond="zero")
    with pytest.raises(ValueError, match="one prompt"):
        invert(pipe, torch.rand(2, 3, 16, 16), ["a red circle"])


def test_png_from_disk_is_inverted_like_the_tensor(tmp_path, pipe):
    arr = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    a = invert(pipe, tmp_path / "x.png", "a red circle", steps=3)
    b = invert(pipe, torch.from_numpy(arr).permute(2, 0, 1).float() / 255, "a red circle", steps=3)
    torch.testing.assert_close(a.trajectory, b.trajectory)
    assert a.trajectory.shape == (4, 1, 4, 8, 8)


# --- peer agreement: diffusers' DDIMInverseScheduler --------------------------------------------------


def _peer_invert(p, x0, cond, steps):
    from diffusers import DDIMInverseScheduler

    config = {k: v for k, v in p.scheduler_config.items() if not k.startswith("_")}
    sched = DDIMInverseScheduler.from_config({**config, "clip_sample": False, "set_alpha_to_one": True})
    sched.set_timesteps(steps)
    x = x0
    for t in sched.timesteps:
        out = p.unet(x, t, encoder_hidden_states=cond, return_dict=False)[0]
        x = sched.step(out, t, x, return_dict=False)[0]
    return x


@pytest.mark.parametrize("which", ["tiny", "shipped"])  # epsilon/leading and v-prediction/trailing
def test_inversion_agrees_with_diffusers_ddim_inverse_scheduler(which, pipe, shipped):
    p = pipe if which == "tiny" else shipped
    image = torch.rand(1, 3, 16, 16) if which == "tiny" else _scene_image()[0]
    cond = p.encode_text(["a red circle"])
    x0 = encode_image(p, image)
    ours = ddim_invert(p.unet, ddim_schedule(p.scheduler_config, 10), x0, cond)[0]
    with torch.no_grad():
        peer = _peer_invert(p, x0, cond, 10)
    assert (ours - peer).abs().max() < 1e-4 * max(1.0, float(peer.abs().max()))


# --- reconstruction ------------------------------------------------------------------------------------


def test_shipped_model_reconstructs_a_shapes_world_image_at_guidance_one(shipped):
    image, prompt = _scene_image(1)
    inv = invert(shipped, image, prompt, steps=20)
    assert inv.trajectory.shape[0] == 21
    rec = reconstruct(shipped, inv)
    vae_only = shipped.decode(encode_image(shipped, image))
    assert float(psnr(rec, image)[0]) > 18.0  # shapes-v2: 20.4 dB on this scene (shapes-v1 gave 22-31 dB; edit.md)
    assert float(psnr(vae_only, image)[0]) > float(psnr(rec, image)[0])  # the VAE bounds it
    noise_only = shipped.decode(ddim_denoise(shipped.unet, inv.schedule, torch.randn_like(inv.noise), inv.cond))
    assert float(psnr(noise_only, image)[0]) < float(psnr(rec, image)[0]) - 5


def test_null_text_keeps_guided_reconstruction_on_the_trajectory(pipe):
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    errors = {}
    for mode in ("none", "null-text", "negative-prompt"):
        inv = invert(pipe, image, "a red circle", steps=4, guidance=6.0, uncond=mode)
        z = reconstruct(pipe, inv, decode=False)
        errors[mode] = float(((z - inv.trajectory[-1]) ** 2).mean())
    assert errors["null-text"] < 0.6 * errors["none"]  # measured 0.97 vs 2.11
    assert errors["negative-prompt"] < 0.5 * errors["none"]  # it is the guidance-1 reconstruction
    plain = invert(pipe, image, "a red circle", steps=4)
    torch.testing.assert_close(reconstruct(pipe, plain, decode=False),
                               reconstruct(pipe, invert(pipe, image, "a red circle", steps=4, guidance=6.0,
                                                        uncond="negative-prompt"), decode=False))


def test_inversion_is_deterministic_and_saved_as_safetensors(tmp_path, pipe):
    from safetensors.torch import load_file

    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    a = invert(pipe, image, "a blue square", steps=3, guidance=3.0, uncond="null-text", null_text_iters=2)
    b = invert(pipe, image, "a blue square", steps=3, guidance=3.0, uncond="null-text", null_text_iters=2)
    torch.testing.assert_close(a.trajectory, b.trajectory, rtol=0, atol=0)
    # Each step keeps its own optimised embedding (once, every entry was one tensor that Adam kept updating, so a
    # reconstruction used the last step's embedding at every step).
    assert len({u.data_ptr() for u in a.uncond}) == 3
    assert not torch.equal(a.uncond[0], a.uncond[-1])
    path = save_inversion(a, tmp_path / "inv.safetensors")
    data = load_file(str(path))
    assert data["latents"].shape == (1, 4, 8, 8) and data["uncond"].shape[0] == 3
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_inversion(a, tmp_path / "inv.pt")
