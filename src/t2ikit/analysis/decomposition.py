"""Prompt decomposition with timestep weighting: tau = global + objects + relations + style, w(component, t).

Each word of the prompt belongs to its most specific component (style > relation > object > global),
from `world.caption.decompose`; a prompt the Shapes World grammar cannot read is read by the model's prompt
parser (`text.parser`, English for a Stable Diffusion folder), else it is all global. EOS and
padding tokens, which summarise the whole prompt, are global; BOS is left at weight 1. A schedule
w(component, s), s = step / (steps - 1) in [0, 1] (0 = the first, noisiest step), scales the component's
token embeddings at each step. It is applied inside cross-attention: the UNet's key and value projections
of the text are linear without bias (checked), so scaling embedding row e_i by w scales k_i and v_i by
w exactly; only the conditional half of a guided batch is scaled.

The default linear schedule follows the seed: early steps weight global and style up, late steps
objects and relations: w = 1 + a * (1 - 2 s) for global/style, 1 - a * (1 - 2 s) for objects/relations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from t2ikit.analysis.paired import markdown_table, paired_compbench
from t2ikit.analysis.runner import sample_prompts
from t2ikit.attention.processor import AttentionHook
from t2ikit.text.parser import PromptParseError, get_parser
from t2ikit.text.spans import word_token_spans
from t2ikit.world.caption import decompose

COMPONENTS = ("global", "object", "relation", "style")
_PRIORITY = {"global": 0, "object": 1, "relation": 2, "style": 3}


def component_of_words(prompt: str, spans, parser=None) -> list[str]:
    """The component of each word span (WordSpan) of `prompt`: from the Shapes World grammar, else from `parser`
    (a text.parser.Parser or a registered name: its `PromptStructure.components()`), else all global."""
    try:
        parts = [(p.start, p.end, p.kind) for p in decompose(prompt).spans()]
    except ValueError:
        parts = _parsed_parts(prompt, parser)
    out = []
    for s in spans:
        best = "global"
        for start, end, kind in parts:
            if start <= s.start and s.end <= end and _PRIORITY[kind] > _PRIORITY[best]:
                best = kind
        out.append(best)
    return out


def _parsed_parts(prompt: str, parser) -> list[tuple[int, int, str]]:
    """(start, end, component) spans of `prompt` read by `parser`; none when there is none or it cannot read."""
    parser = get_parser(parser)
    if parser is None:
        return []
    try:
        components = parser.parse(prompt).components()
    except PromptParseError:
        return []
    kinds = {"objects": "object", "relations": "relation", "style": "style"}
    return [(a, b, kinds[k]) for k, spans in components.items() if k in kinds for a, b in spans]


def token_components(tokenizer, prompt: str, parser=None) -> dict[str, list[int]]:
    """{component: token positions} of `prompt` (words: `component_of_words` with `parser`).

    Word tokens go to their word's component. EOS and padding are global too: after the causal text
    encoder they summarise the whole prompt (CLIP's pooled output is the EOS row). BOS (position 0) is
    the same for every prompt and belongs to no component (weight 1).
    """
    spans = word_token_spans(tokenizer, prompt)
    out: dict[str, list[int]] = {c: [] for c in COMPONENTS}
    for s, c in zip(spans, component_of_words(prompt, spans, parser)):
        out[c] += [p for p in s.positions if p < tokenizer.model_max_length]
    taken = {p for ps in out.values() for p in ps}
    out["global"] += [p for p in range(1, tokenizer.model_max_length) if p not in taken]
    return out


@dataclass(frozen=True)
class LinearSchedule:
    """w(component, s) = 1 + sign(component) * amplitude * (1 - 2 s); sign +1 for global/style, -1 else."""

    amplitude: float = 0.3  # weight swing; early global/style at 1 + a, objects/relations at 1 - a

    def __post_init__(self):
        if not isinstance(self.amplitude, (int, float)) or not math.isfinite(self.amplitude) or not 0 <= self.amplitude < 1:
            raise ValueError(f"amplitude must be a number in [0, 1) (weights stay positive), got {self.amplitude!r}")

    def __call__(self, component: str, s: float) -> float:
        sign = 1.0 if component in ("global", "style") else -1.0
        return 1.0 + sign * self.amplitude * (1.0 - 2.0 * s)


class ComponentWeighting(AttentionHook):
    """Scale each component's text tokens by schedule(component, s) in every cross-attention layer.

    token_components: one {component: positions} per conditional image of the batch (same order).
    """

    name = "component-weighting"

    def __init__(self, token_components: list[dict[str, list[int]]], schedule=None):
        if not token_components:
            raise ValueError("need the token components of at least one prompt")
        unknown = {c for tc in token_components for c in tc} - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown component(s) {sorted(unknown)}; allowed: {', '.join(COMPONENTS)}")
        self.token_components = token_components
        self.schedule = schedule or LinearSchedule()
        self._cache: tuple[int, int, int, torch.Tensor] | None = None

    def applies(self, ctx) -> bool:
        return ctx.cross and ctx.num_steps > 0

    def weights(self, step: int, num_steps: int, n_tokens: int) -> torch.Tensor:
        """(B, Nk) per-token weights at `step`."""
        s = step / (num_steps - 1) if num_steps > 1 else 0.0
        w = torch.ones(len(self.token_components), n_tokens)
        for b, tc in enumerate(self.token_components):
            for comp, positions in tc.items():
                if positions:
                    w[b, positions] = self.schedule(comp, s)
        return w

    def on_qkv(self, ctx, query, key, value):
        B = key.shape[0]
        n_cond = B // 2 if ctx.guided else B
        if n_cond != len(self.token_components):
            raise ValueError(f"component weighting was built for {len(self.token_components)} prompts, "
                             f"the batch has {n_cond}")
        if self._cache is None or self._cache[:3] != (ctx.step, ctx.num_steps, key.shape[2]):
            self._cache = (ctx.step, ctx.num_steps, key.shape[2], self.weights(ctx.step, ctx.num_steps, key.shape[2]))
        w = self._cache[3].to(key.device, key.dtype)  # (n_cond, Nk)
        if ctx.guided:
            w = torch.cat([torch.ones_like(w), w])
        w = w[:, None, :, None]  # (B, 1, Nk, 1) over (B, heads, Nk, d)
        return query, key * w, value * w


def check_linear_text_projections(unet) -> None:
    """ValueError unless every cross-attention has bias-free to_k/to_v and no norm of the text."""
    for name, m in unet.named_modules():
        if name.endswith("attn2") and (getattr(m, "norm_cross", None) is not None
                                       or m.to_k.bias is not None or m.to_v.bias is not None):
            raise ValueError(f"{name}: keys/values of the text are not a bias-free linear map of the embeddings, "
                             "so scaling keys and values is not scaling embeddings")


def generate_decomposed(pipe, prompts: list[str], seeds: list[int], schedule=None, steps: int | None = None,
                        guidance: float | None = None, sampler: str | None = None) -> torch.Tensor:
    """(N, 3, H, W) images of `prompts` (image i seeded seeds[i]) with component timestep weighting."""
    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of str")
    spec = pipe.make_spec(list(prompts), None, steps, guidance, 0, 1, None, sampler)
    check_linear_text_projections(pipe.unet)
    hook = ComponentWeighting([token_components(pipe.tokenizer, p, getattr(pipe, "parser", None)) for p in prompts],
                              schedule)
    return sample_prompts(pipe, list(prompts), seeds, spec.steps, spec.guidance, spec.sampler, hooks=[hook],
                          batch_size=len(prompts))


def decomposed_generator(pipe, schedule=None, steps: int = 20, **kwargs):
    """A CompBench generator (prompts, seeds) -> images using component timestep weighting."""

    def generate(prompts, seeds):
        return list(generate_decomposed(pipe, list(prompts), [int(s) for s in seeds], schedule, steps, **kwargs))

    generate.bench_name = f"decomposed:{getattr(pipe, 'name', 'pipeline')}"
    return generate


def plain_generator(pipe, steps: int = 20, **kwargs):
    """The same runner without the hook: the baseline for `decomposed_generator` (same noise per seed)."""
    def generate(prompts, seeds):
        spec = pipe.make_spec(list(prompts), None, steps, kwargs.get("guidance"), 0, 1, None, kwargs.get("sampler"))
        return list(sample_prompts(pipe, list(prompts), [int(s) for s in seeds], spec.steps, spec.guidance,
                                   spec.sampler, batch_size=len(prompts)))

    generate.bench_name = f"plain:{getattr(pipe, 'name', 'pipeline')}"
    return generate


def compare_compbench(pipe, amplitude: float = 0.3, n_prompts: int = 20, seeds: int = 2,
                      categories=("colour_binding", "spatial", "complex"), steps: int = 20,
                      split: str = "train") -> dict:
    """CompBench subset: plain prompt vs component timestep weighting, same noise per item (`paired_compbench`)."""
    schedule = LinearSchedule(amplitude)
    result = paired_compbench(plain_generator(pipe, steps), decomposed_generator(pipe, schedule, steps), n_prompts,
                              seeds, categories, split)
    result["config"].update({"amplitude": amplitude, "steps": steps, "model": getattr(pipe, "name", None)})
    return result


def markdown(result: dict) -> str:
    """A table of `compare_compbench`'s result."""
    c = result["config"]
    return markdown_table(result, f"Component timestep weighting (amplitude {c['amplitude']}) vs plain prompt, "
                                  f"{c['n_prompts']} prompts x {c['seeds']} seeds per category, {c['steps']} steps, "
                                  f"model {c['model']}")
