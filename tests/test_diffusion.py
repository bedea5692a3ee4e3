"""Guidance, samplers by name, and the denoising loop."""

import pytest
import torch

from tiny import TINY_SCHEDULER
from t2ikit.diffusion import SAMPLERS, cfg, make_scheduler
from t2ikit.diffusion.conditioning import Conditioning
from t2ikit.diffusion.denoisers import unet_denoiser
from t2ikit.diffusion.guidance import Condition, combine, rescale
from t2ikit.diffusion.loop import initial_noise, sample


def test_cfg_is_the_guidance_formula():
    u, c = torch.randn(2, 4), torch.randn(2, 4)
    assert torch.allclose(cfg(u, c, 1.0), c)
    assert torch.equal(cfg(u, c, 0.0), u)
    assert torch.allclose(cfg(u, c, 7.5), u + 7.5 * (c - u))


def test_guidance_rescale_matches_each_images_spread_to_the_scale_one_prediction():
    torch.manual_seed(0)
    u, c = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    guided = cfg(u, c, 7.5)
    assert torch.equal(rescale(guided, c, 0.0), guided)
    full = rescale(guided, c, 1.0)
    assert torch.allclose(full.std(dim=(1, 2, 3)), c.std(dim=(1, 2, 3)))  # per image, not over the batch
    assert torch.allclose(full / guided, (full / guided)[:, :1, :1, :1].expand_as(full))  # a scale per image
    assert torch.allclose(rescale(guided, c, 0.7), 0.7 * full + 0.3 * guided)
    # through combine: one condition's reference is its own prediction; two composed ones', their sum at scale 1
    one = [Condition(torch.zeros(2, 1, 1), 7.5)]
    assert torch.allclose(combine(u, [c], one, 0, 1, guidance_rescale=0.7), rescale(guided, c, 0.7))
    c2 = torch.randn(2, 4, 3, 3)
    two = [Condition(torch.zeros(2, 1, 1), 3.0), Condition(torch.zeros(2, 1, 1), 2.0)]
    got = combine(u, [c, c2], two, 0, 1, guidance_rescale=1.0)
    assert torch.allclose(got.std(dim=(1, 2, 3)), (c + c2 - u).std(dim=(1, 2, 3)))


@pytest.mark.parametrize("phi", [-0.1, 1.5, "0.7", True, float("nan")])
def test_a_bad_guidance_rescale_is_refused_before_compute(phi):
    c = Conditioning.text(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), guidance=4.0, guidance_rescale=phi)
    with pytest.raises(ValueError, match="guidance_rescale must be a number in"):
        c.check((4, 4))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_builds_fresh_from_config(name):
    a, b = make_scheduler(name, TINY_SCHEDULER), make_scheduler(name, TINY_SCHEDULER)
    assert a is not b and type(a).__name__ == SAMPLERS[name][0]
    assert a.config.beta_schedule == "scaled_linear"


def test_ddim_does_not_clip_the_latent_unless_the_folder_asks():
    dpm_folder = {k: v for k, v in TINY_SCHEDULER.items() if k != "clip_sample"}  # a DPM++ config has no such key
    assert make_scheduler("ddim", dpm_folder).config.clip_sample is False
    assert make_scheduler("ddim", {**dpm_folder, "clip_sample": True}).config.clip_sample is True


def test_ddim_euler_unipc_and_dpmpp_draw_the_shipped_models_object_and_heun_is_refused():
    """DDIM with its clipped x0 drew noise on the shipped model (its folder's DPM++ config has no clip_sample)."""
    from t2ikit.models.registry import shipped_model_path
    from t2ikit.pipeline import T2IPipeline
    from t2ikit.world.caption import parse_caption
    from t2ikit.world.oracle import score

    pipe = T2IPipeline.from_folder(shipped_model_path())
    for name in ("ddim", "dpmpp_2m", "euler", "unipc"):
        image = pipe.generate("a red circle", seed=5, sampler=name, progress=False)[0]
        assert score(image, parse_caption("a red circle")).all_passed, name
    # Heun's correction from sigma 2e4 draws noise: refused before any compute, the alternatives named
    with pytest.raises(ValueError, match="cannot sample this model's noise schedule.*sigma 20291.*use euler"):
        pipe.make_spec("a red circle", sampler="Heun")
    assert make_scheduler("heun", TINY_SCHEDULER).config.beta_schedule == "scaled_linear"  # SD's schedule: fine


def test_unknown_sampler_lists_valid_names():
    with pytest.raises(ValueError, match="ddim, dpmpp_2m, dpmpp_2m_karras, .*, unipc"):
        make_scheduler("nope", TINY_SCHEDULER)


def test_initial_noise_rows_come_from_their_generators():
    gens = lambda: [torch.Generator().manual_seed(s) for s in (5, 6)]  # noqa: E731
    batch = initial_noise((2, 4, 3, 3), gens(), "cpu", torch.float32)
    single = initial_noise((1, 4, 3, 3), [torch.Generator().manual_seed(6)], "cpu", torch.float32)
    assert torch.equal(batch[1:], single)
    with pytest.raises(ValueError, match="one generator per image"):
        initial_noise((3, 4, 3, 3), gens(), "cpu", torch.float32)


class _Echo(torch.nn.Module):
    """A fake UNet: predicts eps = mean of the text embedding, so guidance is visible in the output."""

    def forward(self, x, t, encoder_hidden_states, return_dict=False):
        return (x * 0 + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1),)


def _scheduler(name: str, steps: int):
    sched = make_scheduler(name, TINY_SCHEDULER)
    sched.set_timesteps(steps)
    return sched


def test_loop_skips_uncond_at_guidance_one_and_uses_it_otherwise():
    noise = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    cond, uncond = torch.ones(1, 3, 2), torch.zeros(1, 3, 2)

    def run(g, u):
        return sample(unet_denoiser(_Echo()), _scheduler("ddim", 3), noise, Conditioning.text(cond, u, g),
                      progress=False)

    assert torch.equal(run(1.0, uncond), run(1.0, None))
    assert not torch.allclose(run(3.0, uncond), run(1.0, uncond))
    steps, order = [], []
    c = Conditioning.text(cond, uncond, 2.0, before_step=[lambda i, t, x, s: order.append(("before", i)) or x],
                          after_step=[lambda i, t, x: order.append(("after", i)) or x])
    sample(unet_denoiser(_Echo()), _scheduler("euler", 4), noise, c, progress=False,
           callback=lambda i, t, x: steps.append(i))
    assert steps == [0, 1, 2, 3]
    assert order[:4] == [("before", 0), ("after", 0), ("before", 1), ("after", 1)]


def test_conditioning_refuses_what_cannot_run():
    cond = torch.ones(1, 3, 2)
    with pytest.raises(ValueError, match="unknown guidance mode"):
        Conditioning.text(cond, cond, 2.0, mode="sideways").check((2, 2))
    with pytest.raises(ValueError, match="needs unconditional states"):
        Conditioning([Condition(cond, 2.0), Condition(cond, 1.0)]).check((2, 2))


def test_rows_run_as_one_batch_or_one_call_each_with_the_same_prediction():
    """batch_rows=False (one UNet call per block, as null-text inversion optimises against) predicts what the
    batched [uncond; c_1; c_2] call predicts, with several conditions and negative states."""
    calls = []

    class Counting(_Echo):
        def forward(self, x, t, encoder_hidden_states, return_dict=False):
            calls.append(x.shape[0])
            return super().forward(x, t, encoder_hidden_states)

    noise = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    conds = [Condition(torch.rand(2, 3, 2), 3.0, name="a"), Condition(torch.rand(2, 3, 2), 1.5, name="b")]

    def run(batch_rows):
        c = Conditioning(conds, torch.rand(2, 3, 2, generator=torch.Generator().manual_seed(2)),
                         batch_rows=batch_rows)
        return sample(unet_denoiser(Counting()), _scheduler("ddim", 2), noise, c, progress=False)

    batched = run(True)
    assert calls == [6, 6]
    calls.clear()
    assert torch.allclose(run(False), batched, atol=1e-6)
    assert calls == [2] * 6  # uncond, a, b per step
