"""Every technique composes with every other in one `generate` call (tiny SD folder, random adapters).

For each pair (and once for all of them together): the call runs, both techniques act (the image
differs from each technique alone) and both are in the settings a PNG records; a pair that cannot run
is refused before compute with a sentence that says why.
"""

import itertools

import numpy as np
import pytest
import torch
from tiny import make_tiny_sd_folder

from t2ikit.attention.capture import AttentionStore
from t2ikit.control.adapters import ConditionAdapter, adapter_config_for
from t2ikit.control.encoders import CONDITIONS
from t2ikit.control.reference import ReferenceAdapter, ReferenceConfig
from t2ikit.pipeline import T2IPipeline

PROMPT = "a small red circle to the left of a blue square"
SIZE = 16  # the tiny folder's images are 16x16


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return T2IPipeline.from_folder(make_tiny_sd_folder(tmp_path_factory.mktemp("compose") / "m", "dpmpp_2m"))


@pytest.fixture(scope="module")
def bpe_pipe(pipe, tmp_path_factory):
    """The same tiny model reading prompts through a CLIP BPE tokenizer (words split into several tokens)."""
    from test_text_tokenizer import _bpe_tokenizer

    from t2ikit.text import text_encoder_for

    tokenizer = _bpe_tokenizer(tmp_path_factory.mktemp("bpe"))
    torch.manual_seed(0)
    text_encoder = text_encoder_for(tokenizer, hidden_size=pipe.unet.config.cross_attention_dim, layers=2,
                                    heads=4).eval()
    return T2IPipeline(pipe.unet, pipe.vae, text_encoder, tokenizer, pipe.scheduler_config, parser="shapes-world")


def _adapter(pipe, name):
    torch.manual_seed(len(name))
    if name == "reference":
        adapter = ReferenceAdapter(pipe.unet, ReferenceConfig(token_dim=pipe.unet.config.cross_attention_dim,
                                                              gated=False))
    else:
        adapter = ConditionAdapter(adapter_config_for(pipe.unet, pipe.vae_scale_factor, name, CONDITIONS[name]))
    for p in adapter.parameters():  # zero-initialised outputs would make an untrained adapter a no-op
        torch.nn.init.normal_(p, std=0.1)
    return adapter


def _map(name):
    rng = np.random.default_rng(len(name))
    return (rng.random((CONDITIONS[name], SIZE, SIZE)) > 0.7).astype(np.float32)


def techniques(pipe) -> dict:
    """name -> (make_spec settings, PNG setting keys it must add, uses the capture hook)."""
    out = {
        "weighting": ({"prompt": "a small (red:1.5) circle to the left of a [blue] square"}, []),
        "negative": ({"negative_prompt": "a (green:1.3) triangle"}, []),
        "regions": ({"regions": [f"0,0,8,{SIZE}:a red circle"]}, ["Regions"]),
        "regions_noise": ({"regions": [f"8,0,16,{SIZE}:a blue square"], "region_mode": "noise"}, ["Region mode"]),
        "topk": ({"attention": "topk:3"}, ["Attention"]),
        "hier": ({"attention": "hier:1/1/0"}, ["Attention"]),
        "relation": ({"relation_guidance": 500.0}, ["Relation guidance"]),
        "excite": ({"excite": 500.0}, ["Attend and excite"]),
        "scales": ({"scales": {"text": 2.5}}, ["Condition scales"]),
        "capture": ({}, []),
        "boxes": ({"boxes": ["0,0,8,16:red circle"], "box_guidance": 200.0}, ["Boxes"]),
        "layout": ({"layout": "auto", "box_guidance": 200.0}, ["Layout"]),
        "regions_auto": ({"region_layout": "auto"}, ["Region layout"]),
        "cfg_interval": ({"guidance_interval": (0.0, 0.5)}, ["Guidance interval"]),
        "shared_pass": ({"relation_guidance": 500.0, "latent_pass": "shared"}, ["Latent pass"]),
        "rescale": ({"guidance_rescale": 0.7}, ["Guidance rescale"]),
    }
    for name in CONDITIONS:
        out[name] = ({name: _map(name), "adapters": {name: _adapter(pipe, name)}}, [f"{name.capitalize()} image"])
    return out


def _merge(a: dict, b: dict) -> dict:
    merged = {**a, **b}
    for key in ("adapters", "scales"):
        if key in a and key in b:
            merged[key] = {**a[key], **b[key]}
    if "regions" in a and "regions" in b:
        merged["regions"] = a["regions"] + b["regions"]
    return merged


# pairs that cannot run, and the words the refusal must say
SELF_COMPUTED = "computes the cross-attention itself"  # sparse attention leaves no probabilities to reweigh or read
OWN_TOKENS = "reads each row's own prompt tokens"  # hierarchical attention binds rows to their prompts
INCOMPATIBLE = {
    frozenset({"regions", "topk"}): SELF_COMPUTED,
    frozenset({"topk", "capture"}): SELF_COMPUTED,
    frozenset({"hier", "capture"}): SELF_COMPUTED,
    frozenset({"regions", "hier"}): OWN_TOKENS,
    frozenset({"regions_auto", "topk"}): SELF_COMPUTED,
    frozenset({"regions_auto", "hier"}): OWN_TOKENS,
    frozenset({"regions_noise", "cfg_interval"}): "one unmasked text condition",  # MultiDiffusion's masked ones
    # a shared guidance pass serves the step's prediction: the prompt's own, read by the captures
    frozenset({"shared_pass", "regions"}): "does not combine with regions",
    frozenset({"shared_pass", "regions_noise"}): "does not combine with regions",
    frozenset({"shared_pass", "regions_auto"}): "does not combine with regions",
    frozenset({"shared_pass", "topk"}): SELF_COMPUTED,
    frozenset({"shared_pass", "hier"}): SELF_COMPUTED,
}
# two values of one setting, not a pair (shared_pass is relation guidance with its pass shared)
SAME_SETTING = [{"regions", "regions_noise"}, {"topk", "hier"}, {"boxes", "layout"}, {"relation", "shared_pass"}]


def _run(pipe, names, table):
    settings = {"prompt": PROMPT, "steps": 2, "guidance": 3.0, "seed": 7, "n": 1, "relation_guidance": 0.0}
    for name in names:
        settings = _merge(settings, table[name][0])
    prompt = settings.pop("prompt")
    negative = settings.pop("negative_prompt", None)
    spec = pipe.make_spec(prompt, negative, **settings)
    store = AttentionStore() if "capture" in names else None
    gen = pipe.run(spec, decode=False, progress=False, hooks=[store] if store else None)
    return gen.latents, spec, store


_ALONE: dict = {}  # a technique's latents alone, computed once per module (runs are deterministic)


def _alone(pipe, names, table):
    key = (id(pipe), tuple(names))
    if key not in _ALONE:
        _ALONE[key] = _run(pipe, names, table)[0]
    return _ALONE[key]


def _pairs():
    names = ["weighting", "negative", "regions", "regions_noise", "topk", "hier", "relation", "excite", "scales",
             "capture", "boxes", "layout", "regions_auto", "cfg_interval", "shared_pass", "rescale", *CONDITIONS]
    return [p for p in itertools.combinations(names, 2) if set(p) not in SAME_SETTING]


@pytest.mark.parametrize("pair", _pairs(), ids=lambda p: "+".join(p))
def test_every_pair_composes(pipe, pair):
    table = techniques(pipe)
    reason = INCOMPATIBLE.get(frozenset(pair), "")
    if reason:
        with pytest.raises(ValueError, match=reason):
            _run(pipe, pair, table)
        return
    both, spec, store = _run(pipe, pair, table)
    assert torch.isfinite(both).all()
    for name in pair:
        if name == "capture":
            assert store.sums, "the capture hook saw no attention"
            continue
        alone = _alone(pipe, [n for n in pair if n != name], table)
        assert not torch.equal(both, alone), f"{name} did not act next to {[n for n in pair if n != name]}"
        for key in table[name][1]:
            assert key in spec.settings(), f"{name}: {key!r} missing from the PNG settings"


@pytest.mark.parametrize("tokenizer", ["word-level", "bpe"])
@pytest.mark.parametrize("variant", ["topk", "hier", "capture", "regions", "regions_auto", "shared_pass"])
def test_everything_at_once(pipe, bpe_pipe, variant, tokenizer):
    """All techniques in one call; sparse or hierarchical attention, map capture, attention-mode regions (given
    or planned from the prompt) and a shared guidance pass take turns; on the word-level model and with a CLIP BPE
    tokenizer."""
    pipe = bpe_pipe if tokenizer == "bpe" else pipe
    table = techniques(pipe)
    extra = {"topk": ["regions_noise", "topk"], "hier": ["regions_noise", "hier"], "capture": ["regions_noise", "capture"],
             "regions": ["regions"], "regions_auto": ["regions_auto"], "shared_pass": ["capture"]}
    guidance = "shared_pass" if variant == "shared_pass" else "relation"
    names = ["weighting", "negative", guidance, "excite", "scales", "boxes", "rescale", *CONDITIONS, *extra[variant]]
    if "regions_noise" not in names:  # a guidance interval reads one unmasked text condition
        names.append("cfg_interval")
    everything, spec, store = _run(pipe, names, table)
    assert torch.isfinite(everything).all() and (store is None or store.sums)
    settings = spec.settings()
    for name in names:
        for key in table[name][1]:
            assert key in settings
    again = _run(pipe, names, table)[0]
    assert torch.equal(everything, again)  # same seed, same image
