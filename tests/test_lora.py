"""Loading what users have: LoRA files (diffusers and kohya key formats) and textual-inversion embeddings, in
Python and through `--lora` / `--embedding`; pickle refused; `--device` / `--dtype` resolved before loading."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from t2ikit.models.device import resolve_device, resolve_dtype
from t2ikit.pipeline import T2IPipeline

PROMPT = "a red circle"


def _latents(pipe, prompt=PROMPT, **kw):
    return pipe.run(pipe.make_spec(prompt, steps=2, seed=0, **kw), decode=False, progress=False).latents


@pytest.fixture(scope="module")
def lora_path(folder, tmp_path_factory):
    return _lora_file(folder, tmp_path_factory.mktemp("lora") / "style.safetensors")


def _lora_file(folder, path, text_encoder=True):
    """A random rank-2 LoRA on the UNet's attention projections (and the text encoder's), diffusers' format."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    fresh = T2IPipeline.from_folder(folder)
    config = LoraConfig(r=2, lora_alpha=2, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    torch.manual_seed(0)
    fresh.unet.add_adapter(config)
    layers = {"unet_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(fresh.unet))}
    if text_encoder:
        from peft import inject_adapter_in_model

        te = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=2, init_lora_weights=False,
                                                target_modules=["q_proj", "v_proj"]), fresh.text_encoder)
        layers["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(te))
    StableDiffusionLoraLoaderMixin.save_lora_weights(path.parent, weight_name=path.name, safe_serialization=True,
                                                     **layers)
    return path


@pytest.fixture
def fresh(folder):
    return T2IPipeline.from_folder(folder)


def test_lora_changes_the_image_at_its_scale_and_leaves_no_layers(fresh, lora_path):
    path = lora_path
    base = _latents(fresh)
    assert fresh.load_lora(path, scale=0.0) == ["unet", "text_encoder"]
    assert torch.equal(_latents(fresh), base)  # scale 0 merges nothing
    assert fresh.load_lora(path, scale=1.0) == ["unet", "text_encoder"]
    styled = _latents(fresh)
    assert not torch.equal(styled, base)
    assert not any("lora" in name for name, _ in fresh.unet.named_modules())  # fused: plain modules only
    assert not any("lora" in name for name, _ in fresh.text_encoder.named_modules())
    again = T2IPipeline.from_folder(fresh.path)
    again.load_lora(path, scale=1.0)
    assert torch.equal(_latents(again), styled)  # same file, same scale, same image


def test_kohya_lora_keys_are_read(fresh, tmp_path):
    """AUTOMATIC1111 / kohya key names (lora_unet_..., lora_down/lora_up, alpha) through diffusers' converter."""
    attn = fresh.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    torch.manual_seed(1)
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    state = {f"{key}.lora_down.weight": torch.randn(2, attn.in_features),
             f"{key}.lora_up.weight": torch.randn(attn.out_features, 2), f"{key}.alpha": torch.tensor(2.0)}
    save_file(state, tmp_path / "kohya.safetensors")
    before = attn.weight.clone()
    fresh.load_lora(tmp_path / "kohya.safetensors", 0.5)
    delta = 0.5 * state[f"{key}.lora_up.weight"] @ state[f"{key}.lora_down.weight"]  # alpha / rank = 1
    assert torch.allclose(attn.weight, before + delta, atol=1e-5)


def _kohya_pair(prefix: str, module, seed: int, alpha: float) -> dict:
    """A kohya-format rank-2 LoRA of one Linear: down, up and alpha (its delta is scaled alpha / rank)."""
    g = torch.Generator().manual_seed(seed)
    return {f"{prefix}.lora_down.weight": torch.randn(2, module.in_features, generator=g),
            f"{prefix}.lora_up.weight": torch.randn(module.out_features, 2, generator=g),
            f"{prefix}.alpha": torch.tensor(alpha)}


def test_kohya_sdxl_lora_with_both_text_encoders(tmp_path):
    """An A1111/kohya SDXL file: `lora_te1_` (first encoder), `lora_te2_` (second) and `lora_unet_` keys, the
    encoders' attention without out_proj and an MLP layer beside it (the two layouts diffusers' text-encoder loader
    misread: models/lora.py), and one alpha unlike the others' (ignored on transformers 5's flattened
    CLIPTextModel before). Each named layer gets exactly its delta; at scale 0 every weight is bitwise the base
    model's."""
    from families import make_family_folder

    folder = make_family_folder(tmp_path / "sdxl", "sdxl")
    pipe = T2IPipeline.from_folder(folder)
    models = {"te1": pipe.text_encoder.text_encoder, "te2": pipe.text_encoder.text_encoder_2, "unet": pipe.unet}
    layers = {  # kohya name -> (model, module path)
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj":
            ("te1", "text_model.encoder.layers.0.self_attn.q_proj"),
        "lora_te1_text_model_encoder_layers_1_mlp_fc1": ("te1", "text_model.encoder.layers.1.mlp.fc1"),
        "lora_te2_text_model_encoder_layers_0_self_attn_v_proj":
            ("te2", "text_model.encoder.layers.0.self_attn.v_proj"),
        "lora_te2_text_model_encoder_layers_2_mlp_fc2": ("te2", "text_model.encoder.layers.2.mlp.fc2"),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k":
            ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"),
    }

    def module(prefix):  # looked up each time: loading swaps in LoRA layers and fusing swaps them out
        model, path = layers[prefix]
        if not hasattr(models[model], "text_model"):  # transformers 5's CLIPTextModel has no text_model.
            path = path.removeprefix("text_model.")
        return models[model].get_submodule(path)

    def weight(prefix):
        return module(prefix).weight.detach().clone()

    state = {}
    alphas = {prefix: 2.0 if k == 0 else 1.0 for k, prefix in enumerate(layers)}  # the first encoder's q_proj differs
    for seed, prefix in enumerate(layers):
        state.update(_kohya_pair(prefix, module(prefix), seed, alphas[prefix]))
    save_file(state, tmp_path / "xl.safetensors")

    def every_weight():
        return {(m, k): v.clone() for m, model in models.items() for k, v in model.state_dict().items()}

    base, before = every_weight(), {prefix: weight(prefix) for prefix in layers}
    assert pipe.load_lora(tmp_path / "xl.safetensors", 0.0) == ["unet", "text_encoder", "text_encoder_2"]
    after = every_weight()
    assert after.keys() == base.keys() and all(torch.equal(after[k], base[k]) for k in base)  # scale 0: bitwise
    assert pipe.load_lora(tmp_path / "xl.safetensors", 0.8) == ["unet", "text_encoder", "text_encoder_2"]
    for prefix in layers:
        delta = 0.8 * alphas[prefix] / 2 * state[f"{prefix}.lora_up.weight"] @ state[f"{prefix}.lora_down.weight"]
        assert torch.allclose(weight(prefix), before[prefix] + delta, atol=1e-5), prefix


def test_embedding_adds_a_word_that_acts(fresh, tmp_path):
    width = fresh.text_encoder.get_input_embeddings().weight.shape[1]
    torch.manual_seed(2)
    save_file({"<shiny>": torch.randn(width) * 3}, tmp_path / "shiny.safetensors")  # diffusers' format
    save_file({"emb_params": torch.randn(3, width) * 3}, tmp_path / "glow.safetensors")  # A1111's, 3 vectors
    base = _latents(fresh, "a red <shiny> circle")
    assert fresh.load_embedding(tmp_path / "shiny.safetensors") == "<shiny>"
    shiny = _latents(fresh, "a red <shiny> circle")
    assert not torch.equal(shiny, base)
    assert fresh.load_embedding(tmp_path / "glow.safetensors") == "glow"
    spec = fresh.make_spec("a glow circle", steps=2)
    assert spec.prompts == ["a glow glow_1 glow_2 circle"]  # the word stands for its three tokens
    ids = fresh.tokenizer(spec.prompts[0])["input_ids"]
    assert fresh.tokenizer.convert_tokens_to_ids(["glow", "glow_1", "glow_2"]) == ids[2:5]
    with pytest.raises(ValueError, match="already a token"):
        fresh.load_embedding(tmp_path / "glow.safetensors")
    save_file({"emb_params": torch.randn(1, width + 1)}, tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match="do not fit a text encoder of width"):
        fresh.load_embedding(tmp_path / "wide.safetensors")


def test_pickle_and_missing_files_are_refused(fresh, tmp_path):
    for suffix in (".bin", ".pt", ".ckpt"):
        path = tmp_path / f"weights{suffix}"
        path.write_bytes(b"not read")
        with pytest.raises(ValueError, match="pickle"):
            fresh.load_lora(path)
        with pytest.raises(ValueError, match="pickle"):
            fresh.load_embedding(path)
    with pytest.raises(ValueError, match="does not exist"):
        fresh.load_lora(tmp_path / "none.safetensors")
    save_file({"foo": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="no weights for the unet or the text encoder"):
        fresh.load_lora(tmp_path / "other.safetensors")


def test_cli_lora_embedding_device_and_dtype(folder, lora_path, tmp_path, capsys):
    from t2ikit.cli import main

    lora = lora_path
    width = T2IPipeline.from_folder(folder).text_encoder.get_input_embeddings().weight.shape[1]
    save_file({"<dot>": torch.ones(width)}, tmp_path / "dot.safetensors")
    args = ["generate", "a red circle <dot>", "--model", str(folder), "--steps", "2", "--quiet", "--device", "auto"]
    assert main(args + ["--out", str(tmp_path / "a.png"), "--lora", f"{lora}:0.7", "--embedding",
                        str(tmp_path / "dot.safetensors"), "--dtype", "fp32"]) == 0
    from PIL import Image

    from t2ikit.cli.info import PNG_KEY

    record = Image.open(tmp_path / "a.png").text[PNG_KEY]
    assert f"LoRA: {lora}:0.7" in record and f"Embeddings: {tmp_path / 'dot.safetensors'}" in record
    # --from loads the same LoRA at its scale and the same embedding: the same image
    assert main(["generate", "--from", str(tmp_path / "a.png"), "--model", str(folder), "--out",
                 str(tmp_path / "again.png"), "--quiet"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), np.asarray(Image.open(tmp_path / "a.png")))
    assert main(args + ["--out", str(tmp_path / "b.png"), "--lora", str(tmp_path / "x.pt")]) == 2
    assert "pickle" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(args + ["--out", str(tmp_path / "c.png"), "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_device_and_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu) == torch.float32 and resolve_dtype(None, torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_device("auto") == (torch.device("cuda") if torch.cuda.is_available() else
                                      torch.device("mps") if torch.backends.mps.is_available() else cpu)
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("fp8", cpu)


def test_bf16_on_the_cpu_runs_close_to_fp32(folder):
    full = T2IPipeline.from_folder(folder)
    half = T2IPipeline.from_folder(folder, dtype="bf16")
    assert half.unet.dtype == torch.bfloat16 and half.text_encoder.dtype == torch.bfloat16
    a, b = _latents(full), _latents(half).float()
    assert torch.isfinite(b).all() and (a - b).abs().max() < 0.25 * a.abs().max()
