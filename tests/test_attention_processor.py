"""The hooked attention processor: same output as diffusers' default, hooks compose, capture is bounded."""

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from t2ikit.attention.capture import AttentionStore
from t2ikit.attention.processor import AttentionController, AttentionHook


def tiny_unet():
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, attention_head_dim=4, norm_num_groups=8,
    ).eval()


def run(unet, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    text = torch.randn(2, 6, 24, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500]), encoder_hidden_states=text).sample


def test_no_hooks_equals_default_processor_and_uninstall_restores():
    unet = tiny_unet()
    unet.set_attn_processor(AttnProcessor2_0())
    reference = run(unet)
    controller = AttentionController().install(unet)
    assert torch.equal(run(unet), reference)  # the same fused kernel, the same numbers
    controller.uninstall()
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())


def test_nested_installs_restore_each_layers_own_processor_also_through_a_compiled_wrapper():
    unet = tiny_unet()
    before = dict(unet.attn_processors)  # diffusers' default: one processor object per layer
    outer = AttentionController().install(unet)
    inner = AttentionController().install(torch.compile(unet))  # the wrapper's layers are the model's own
    assert all(p.controller is inner for p in unet.attn_processors.values())
    inner.uninstall()
    assert all(p.controller is outer for p in unet.attn_processors.values())
    outer.uninstall()
    assert all(unet.attn_processors[name] is p for name, p in before.items())
    with pytest.raises(TypeError, match="diffusers model with attention processors"):
        AttentionController().install(torch.nn.Linear(2, 2))


class Scale(AttentionHook):
    name = "scale"

    def __init__(self, factor):
        self.factor = factor

    def on_output(self, ctx, out):
        return out * self.factor if ctx.cross else out


def test_probability_path_matches_fused_path_and_hooks_compose():
    unet = tiny_unet()
    reference = run(unet)
    store = AttentionStore()
    with AttentionController([store]).install(unet):
        captured = run(unet)
    assert torch.allclose(captured, reference, atol=1e-5)
    assert store.sums and all(".attn2." in k for k in store.sums)
    maps = store.mean_maps((8, 8))  # (B, Nk, H, W): probabilities over the 6 text tokens
    assert maps.shape == (2, 6, 8, 8)
    assert torch.allclose(maps.sum(dim=1), torch.ones(2, 8, 8), atol=1e-5)
    # two hooks at once: capture still sees every layer, and the scaling changes the output
    store2 = AttentionStore()
    with AttentionController([store2, Scale(0.0)]).install(unet):
        changed = run(unet)
    assert store2.sums.keys() == store.sums.keys()
    assert not torch.allclose(changed, reference, atol=1e-3)


def test_capture_selects_layers_heads_steps_and_stays_bounded():
    unet = tiny_unet()
    store = AttentionStore(layers=["up_blocks"], heads=[0], steps=[1])
    controller = AttentionController([store]).install(unet)
    controller.set_step(0, 2)
    run(unet)
    assert not store.sums  # step 0 not selected
    controller.set_step(1, 2)
    run(unet)
    run(unet)
    assert list(store.sums) and all(k.startswith("up_blocks") for k in store.sums)
    assert store.nbytes == sum(2 * 8 * 8 * 6 * 4 for _ in store.sums)  # one running sum per layer, any step count
    words = store.word_maps({"red": [1], "circle": [2, 3]}, (8, 8))
    assert set(words) == {"red", "circle"} and words["red"].shape == (8, 8)
    with pytest.raises(ValueError, match="outside"):
        store.word_maps({"x": [9]}, (8, 8))
    controller.uninstall()


def test_bad_hooks_are_refused():
    class A(AttentionHook):
        name = "a"

        def incompatible_with(self, other):
            return "both replace the keys" if isinstance(other, A) else None

    controller = AttentionController([A()])
    with pytest.raises(ValueError, match="cannot combine hook 'a' with 'a': both replace the keys"):
        controller.add(A())
    with pytest.raises(TypeError):
        controller.add(object())
    with pytest.raises(TypeError, match="diffusers model"):
        controller.install(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="layers"):
        AttentionStore(layers=[3])


def test_pipeline_runs_hooks_with_the_sampling_clock(tmp_path):
    from t2ikit.pipeline import T2IPipeline
    import numpy as np
    from tiny import make_tiny_sd_folder

    folder = make_tiny_sd_folder(tmp_path / "m")
    pipe = T2IPipeline.from_folder(folder)
    plain = pipe.generate("a red circle", steps=3, progress=False)[0]
    seen = []

    class Clock(AttentionHook):
        name = "clock"

        def on_output(self, ctx, out):
            seen.append((ctx.step, ctx.num_steps, ctx.guided, ctx.query_hw))
            return out

    store = AttentionStore(steps=[2])
    hooked = pipe.generate("a red circle", steps=3, progress=False, hooks=[Clock(), store])[0]
    assert {s[0] for s in seen} == {0, 1, 2} and all(s[1] == 3 and s[2] for s in seen)
    assert store.sums and all(c == 1 for c in store.counts.values())  # step 2 only, once per layer
    diff = np.abs(np.asarray(hooked, dtype=np.int16) - np.asarray(plain, dtype=np.int16)).max()
    assert diff <= 2  # the probabilities path equals the fused one up to float rounding
    assert not any("Hooked" in type(p).__name__ for p in pipe.unet.attn_processors.values())  # uninstalled
