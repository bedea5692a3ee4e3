"""Does prompt weighting help? CompBench subset, plain prompt vs the same prompt with chosen word kinds
weighted, same noise per item.

    python -m t2ikit.analysis.weighting_bench --weight 1.5 --words colour,relation
"""

from __future__ import annotations

import argparse
import json
import re

from t2ikit.analysis.paired import markdown_table, paired_compbench
from t2ikit.models.registry import shipped_model_path
from t2ikit.text.weighting import encode_weighted
from t2ikit.world import vocab

WORD_KINDS = {
    "colour": set(vocab.COLOURS),
    "shape": set(vocab.SHAPES) | set(vocab.PLURAL_SHAPES.values()),
    "relation": {"left", "right", "above", "below", "over", "under", "beneath"},
    "size": set(vocab.SIZE_WORDS),
}
_WORD = re.compile(r"[A-Za-z]+")


def emphasize(prompt: str, kinds, weight: float) -> str:
    """`prompt` with every word of the given kinds wrapped as `(word:weight)`; other text escaped."""
    unknown = set(kinds) - set(WORD_KINDS)
    if unknown or not kinds:
        raise ValueError(f"unknown word kinds {sorted(unknown) or '(none)'}; allowed: {', '.join(WORD_KINDS)}")
    words = set().union(*(WORD_KINDS[k] for k in kinds))
    escaped = re.sub(r"([\\():])", r"\\\1", prompt)
    return _WORD.sub(lambda m: f"({m.group()}:{weight:g})" if m.group().lower() in words else m.group(), escaped)


def weighted_generator(pipe, kinds, weight: float, steps: int = 20, mode: str = "a1111"):
    """A CompBench generator (prompts, seeds) -> images with `kinds` of words weighted; image i seeded seeds[i]."""
    from t2ikit.analysis.runner import sample_embeds

    def generate(prompts, seeds):
        spec = pipe.make_spec(list(prompts), None, steps, None, 0, 1, None, None)
        cond = encode_weighted(pipe.tokenizer, pipe.text_encoder, [emphasize(p, kinds, weight) for p in prompts], mode)
        return list(sample_embeds(pipe, cond, [int(s) for s in seeds], spec.steps, spec.guidance, spec.sampler,
                                  batch_size=len(prompts), prompts=list(prompts)))

    return generate


def main(argv=None) -> int:
    import torch

    from t2ikit.analysis.decomposition import plain_generator
    from t2ikit.pipeline import T2IPipeline

    p = argparse.ArgumentParser(prog="python -m t2ikit.analysis.weighting_bench", description=__doc__)
    p.add_argument("--model", default=None)
    p.add_argument("--weight", type=float, default=1.5)
    p.add_argument("--words", default="colour,relation", help=f"comma-separated kinds: {', '.join(WORD_KINDS)}")
    p.add_argument("--mode", default="a1111", choices=["a1111", "multiply"])
    p.add_argument("--n-prompts", type=int, default=20)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--categories", default="colour_binding,spatial,complex")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    kinds = args.words.split(",")
    emphasize("a red circle", kinds, args.weight)  # checks kinds before loading anything
    if not args.weight >= 0:
        raise ValueError(f"--weight must be >= 0, got {args.weight}")
    torch.set_num_threads(1)
    pipe = T2IPipeline.from_folder(args.model or shipped_model_path())
    result = paired_compbench(plain_generator(pipe, args.steps),
                              weighted_generator(pipe, kinds, args.weight, args.steps, args.mode),
                              args.n_prompts, args.seeds, tuple(args.categories.split(",")))
    result["config"].update({"weight": args.weight, "words": kinds, "mode": args.mode, "steps": args.steps})
    print(json.dumps(result, indent=2) if args.json else markdown_table(
        result, f"{args.words} words at weight {args.weight} ({args.mode}) vs plain prompt, {args.n_prompts} prompts x "
                f"{args.seeds} seeds per category, {args.steps} steps"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
