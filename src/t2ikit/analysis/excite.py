"""Attend-and-Excite and relation guidance as experiments: seeded sampling with the latent update, and the paired
CompBench comparison against the plain sampler (part 6).

The technique itself (ExciteConfig, LatentGuidance, the objectives, token selection through a Parser) lives in
the core, `t2ikit.diffusion.latent_guidance`; here the prompts are read with the pipeline's parser, by default
the Shapes World caption grammar (`t2ikit.world.parser`).

    t2ikit bench binding --n-prompts 20 --seeds 2 --json
    t2ikit bench binding --categories spatial --objective relation --json
"""

from __future__ import annotations

from dataclasses import asdict

import torch

import t2ikit.world.parser  # noqa: F401  registers the "shapes-world" parser
from t2ikit.analysis.decomposition import plain_generator
from t2ikit.analysis.paired import markdown_table, paired_compbench
from t2ikit.analysis.runner import _check_seeds
from t2ikit.diffusion import latent_guidance
from t2ikit.diffusion.latent_guidance import ExciteConfig  # re-exported until callers import it from the core
from t2ikit.pipeline import PLAIN
from t2ikit.text.parser import Parser, get_parser

BINDING_CATEGORIES = ("colour_binding", "shape_binding", "spatial")
DEFAULT_PARSER = "shapes-world"  # the prompts of a model folder that names no parser


def model_parser(pipe) -> Parser:
    """The parser a pipeline reads its prompts with: its own (`pipe.parser`, a Parser or a registered name), else
    the Shapes World caption grammar."""
    return get_parser(getattr(pipe, "parser", None) or DEFAULT_PARSER)


def sample_excite(pipe, prompts: list[str], seeds, steps: int | None = None, guidance: float | None = None,
                  sampler: str | None = None, config: ExciteConfig | None = None, words=None) -> torch.Tensor:
    """(N, 3, H, W) images: the plain seeded sampler (as `analysis.runner`) plus A&E latent updates.

    With `config.excite_steps == 0` or `step_size == 0` the result equals `runner.sample_prompts`.
    `words`: optional per-prompt lists of object words (default: the parser's object nouns).
    """
    prompts = list(prompts)
    seeds = _check_seeds(seeds, len(prompts))
    # the plain sampler: no model-default relation guidance or layout, prompts as written (the update reads them)
    spec = pipe.make_spec(prompts, "", steps, guidance, 0, 1, None, sampler, **PLAIN, weighting="none")
    with torch.no_grad():
        unique = list(dict.fromkeys(prompts))
        cond = pipe.encode_text(unique)[torch.tensor([unique.index(p) for p in prompts])]  # (N, T, D)
        uncond = pipe.encode_text([""]).expand(len(prompts), -1, -1) if spec.guidance != 1.0 else None
    update = latent_guidance.LatentGuidance(pipe.unet, pipe.tokenizer, model_parser(pipe), prompts, cond,
                                            config, words)
    return pipe.run(spec, progress=False, embeds=(cond, uncond), seeds=seeds, updates=[update]).images


def excite_generator(pipe, steps: int = 20, config: ExciteConfig | None = None, batch_size: int = 16):
    """(prompts, seeds) -> images with Attend-and-Excite, for CompBench / `paired_compbench`."""
    config = (config or ExciteConfig()).validate()

    def generate(prompts, seeds):
        out = []
        for s in range(0, len(prompts), batch_size):
            out += list(sample_excite(pipe, list(prompts[s:s + batch_size]), [int(x) for x in seeds[s:s + batch_size]],
                                      steps, config=config))
        return out

    generate.bench_name = f"attend-and-excite:{getattr(pipe, 'name', 'pipeline')}"
    return generate


def compare_binding(pipe, n_prompts: int = 20, seeds: int = 2, categories=BINDING_CATEGORIES, steps: int = 20,
                    config: ExciteConfig | None = None, split: str = "train") -> dict:
    """Paired CompBench comparison, plain sampler vs Attend-and-Excite, same prompts and seeds."""
    config = (config or ExciteConfig()).validate()
    result = paired_compbench(plain_generator(pipe, steps), excite_generator(pipe, steps, config), n_prompts, seeds,
                              tuple(categories), split=split, batch_size=16)
    result["config"].update({"steps": steps, "excite": asdict(config), "model": getattr(pipe, "name", None)})
    return result


def markdown(result: dict) -> str:
    c = result["config"]
    e = c["excite"]
    name = {"excite": "Attend-and-Excite", "relation": "Relation guidance", "both": "Attend-and-Excite + relation guidance"}
    return markdown_table(result, f"{name[e.get('objective', 'excite')]} ({c['split']} split, {e['excite_steps']} excited steps, step size {e['step_size']}, "
                                  f"{e['iterations']} iteration(s)) vs the plain sampler, {c['n_prompts']} prompts x "
                                  f"{c['seeds']} seeds per category, {c['steps']} steps ('weighted' = guided)")
