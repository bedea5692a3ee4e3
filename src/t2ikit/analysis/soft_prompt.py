"""Soft prompts and their hard projections: textual inversion and PEZ on a frozen model (part 5).

Textual inversion (Gal et al. 2022): add one new token to the tokenizer and learn only its embedding
vector, by the diffusion loss of the frozen UNet on example images (here Shapes World renders of one
caption, which the world draws exactly). The same loss on target renders is the differentiable quality
score being maximised. PEZ (Wen et al. 2023, "Hard prompts made easy", Alg. 1): keep the continuous
vector, but run every forward pass with its nearest vocabulary embedding (cosine) and apply the gradient
to the continuous one (straight-through); the result is a real vocabulary word.

    python -m t2ikit.analysis.soft_prompt --caption "a purple triangle" --steps 300
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from t2ikit.analysis.runner import sample_prompts
from t2ikit.diffusion.schedules import training_scheduler
from t2ikit.models.registry import shipped_model_path
from t2ikit.pipeline import T2IPipeline
from t2ikit.text.tokenizer import WORDS_KEY, known_words
from t2ikit.train.losses import diffusion_loss
from t2ikit.world.caption import parse_caption
from t2ikit.world.oracle import score
from t2ikit.world.render import render_rgb
from t2ikit.world.scene import make_scene


@dataclass
class SoftPromptConfig:
    steps: int = 300  # optimiser steps
    batch_size: int = 4  # example images per step (drawn with replacement)
    lr: float = 5e-3  # Adam learning rate on the embedding vector
    init_word: str | None = None  # start from this vocabulary word's embedding; None = mean of the vocabulary
    project: bool = False  # PEZ: forward with the nearest vocabulary embedding, backward to the continuous one
    template: str = "a {}"  # the training prompt; {} is the learned token
    seed: int = 0  # draws timesteps and noise of every step

    def validate(self) -> SoftPromptConfig:
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.template.count("{}") != 1:
            raise ValueError(f"template must contain exactly one '{{}}' for the token, got {self.template!r}")
        return self


@dataclass
class SoftPromptResult:
    token: str  # the learned word(s), space-separated: what the template is formatted with
    token_ids: list[int]  # (K,) their ids
    vectors: torch.Tensor  # (K, D) the learned continuous embeddings
    projected_word: str  # their nearest vocabulary words (cosine); with project=True the words actually trained
    losses: list[float]  # training loss per step


# ---------------------------------------------------------------------------------------------------
# Example images and the loss
# ---------------------------------------------------------------------------------------------------


def example_images(caption: str, n: int, seed: int = 0, resolution: int = 64) -> torch.Tensor:
    """(n, 3, H, W) in [0, 1]: n exact Shapes World renders of `caption`, each a fresh layout."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"need at least one example image, got n={n!r}")
    spec = parse_caption(caption)
    rng = np.random.default_rng(seed)
    imgs = [render_rgb(make_scene(spec, rng, reference=False), resolution) for _ in range(n)]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def encode_images(pipe, images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, C, h, w) scaled latents (posterior mean)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"example images must be a non-empty (N, 3, H, W) tensor, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    z = pipe.vae.encode(images.to(pipe.device, pipe.dtype) * 2 - 1).latent_dist.mean
    shift = getattr(pipe.vae.config, "shift_factor", None) or 0.0
    return (z - shift) * pipe.vae.config.scaling_factor


def check_not_sdxl(pipe) -> None:
    """ValueError for SDXL: the diffusion loss here calls the UNet on text states alone, and an SDXL UNet also reads
    pooled text and size conditioning per row."""
    if getattr(pipe, "is_sdxl", False):
        raise ValueError("soft-prompt learning does not run on SDXL models yet (its diffusion loss calls the UNet "
                         "without SDXL's pooled text and size conditioning); use an SD 1.x/2.x model")


def diffusion_eval_loss(pipe, latents: torch.Tensor, cond: torch.Tensor, draws: int = 8, seed: int = 1234) -> float:
    """Mean diffusion loss of `cond` ((1, T, D)) on `latents` over `draws` fixed (timestep, noise) draws."""
    check_not_sdxl(pipe)
    sched = training_scheduler(pipe.scheduler_config)
    g = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        total = [diffusion_loss(pipe.unet, latents, cond.expand(len(latents), -1, -1), sched, g, 0.0).item()
                 for _ in range(draws)]
    return float(np.mean(total))


# ---------------------------------------------------------------------------------------------------
# The token: adding it, projecting it
# ---------------------------------------------------------------------------------------------------


class SoftTokenEmbedding(torch.nn.Module):
    """Wraps a token-embedding table: positions holding `token_ids[k]` get `vectors[k]` (or its projection)."""

    def __init__(self, base: torch.nn.Embedding, token_ids: list[int], vectors: torch.Tensor, vocab_ids: torch.Tensor,
                 project: bool = False):
        super().__init__()
        self.base = base
        self.token_ids = list(token_ids)
        self.vectors = torch.nn.Parameter(vectors.detach().clone().reshape(len(self.token_ids), -1))  # (K, D)
        self.register_buffer("vocab_ids", vocab_ids)  # (V,) the words a projection may choose
        self.project = project

    def nearest(self) -> list[int]:
        """For each vector, the vocabulary id whose embedding is nearest (cosine)."""
        table = F.normalize(self.base.weight[self.vocab_ids], dim=-1)  # (V, D)
        sims = F.normalize(self.vectors.detach(), dim=-1) @ table.T  # (K, V)
        return [int(i) for i in self.vocab_ids[sims.argmax(dim=1)]]

    def effective(self) -> torch.Tensor:
        if not self.project:
            return self.vectors
        hard = self.base.weight[self.nearest()]  # (K, D)
        return self.vectors + (hard - self.vectors).detach()  # PEZ: projected forward, continuous backward

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        e = self.base(input_ids)  # (B, T, D)
        eff = self.effective().to(e.dtype)
        for k, token_id in enumerate(self.token_ids):
            e = torch.where((input_ids == token_id).unsqueeze(-1), eff[k], e)
        return e


def _vocab_word_ids(tokenizer) -> torch.Tensor:
    """(V,) ids of the vocabulary words: no special tokens, no learned (added) tokens."""
    words = known_words(tokenizer)
    learned = set(tokenizer.get_added_vocab().values())  # tokens learned earlier are no vocabulary words
    specials = set(tokenizer.all_special_ids) | learned
    if words is not None:  # word-level tokenizer: one id per known word
        pieces = [tokenizer.tokenize(w) for w in words]
        ids = {tokenizer.convert_tokens_to_ids(p)[0] for p in pieces if len(p) == 1}
    else:
        ids = set(range(len(tokenizer)))
    return torch.tensor(sorted(ids - specials))


def check_new_token(tokenizer, token: str) -> None:
    """ValueError unless `token` is one lower-case word the tokenizer does not know yet."""
    if not isinstance(token, str) or not token.isalpha() or token != token.lower():
        raise ValueError(f"token must be one lower-case alphabetic word, got {token!r}")
    words = known_words(tokenizer)
    vocab = tokenizer.get_vocab()
    if (words is not None and token in words) or token in vocab or token + "</w>" in vocab:
        raise ValueError(f"token {token!r} clashes with a word the tokenizer already knows; choose a new word")


def add_token(pipe, token: str) -> int:
    """Add `token` as a new one-token word to the pipeline's tokenizer and text encoder; its id.

    ValueError if it is not a single lower-case word or clashes with a word the tokenizer already knows.
    """
    tok = pipe.tokenizer
    check_new_token(tok, token)
    tok.add_tokens([token])
    if known_words(tok) is not None:  # a word-level tokenizer: the token is now a known word (no warning)
        tok.init_kwargs[WORDS_KEY] = [*tok.init_kwargs[WORDS_KEY], token]
    pipe.text_encoder.resize_token_embeddings(len(tok), mean_resizing=False)  # the row is set by the caller
    ids = tok(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"token {token!r} does not encode to one id after adding it: {ids}")
    return ids[0]


def word_of(tokenizer, token_id: int) -> str:
    return tokenizer.convert_ids_to_tokens(token_id).removesuffix("</w>")


# ---------------------------------------------------------------------------------------------------
# Learning the vector
# ---------------------------------------------------------------------------------------------------


def learn_token(pipe, token: str, images: torch.Tensor, config: SoftPromptConfig | None = None,
                callback=None) -> SoftPromptResult:
    """Textual inversion (or PEZ with config.project): learn the embedding of `token` from example `images`.

    `token`: one new word, or several separated by spaces (a K-token soft prompt). `images`: (N, 3, H, W)
    in [0, 1], N >= 1. The words are added to `pipe` (tokenizer and text encoder, as diffusers'
    load_textual_inversion does) and, after training, their rows hold the learned vectors (PEZ: the
    projected ones), so `pipe.generate(config.template.format(token))` uses them. Only those rows train.
    """
    config = (config or SoftPromptConfig()).validate()
    check_not_sdxl(pipe)
    latents = encode_images(pipe, images)  # checks everything before any token is added
    words = token.split() if isinstance(token, str) else []
    if not words or len(set(words)) != len(words):
        raise ValueError(f"token must be one or more distinct new words, got {token!r}")
    for w in words:
        check_new_token(pipe.tokenizer, w)
    if config.init_word is not None:
        init_ids = pipe.tokenizer(config.init_word, add_special_tokens=False)["input_ids"]
        if len(init_ids) != 1 or init_ids[0] == pipe.tokenizer.unk_token_id:
            raise ValueError(f"init_word must be one known vocabulary token, got {config.init_word!r} -> {init_ids}")
    token_ids = [add_token(pipe, w) for w in words]
    te = pipe.text_encoder
    base = te.get_input_embeddings()
    init = _initial_vector(pipe, config, token_ids)
    soft = SoftTokenEmbedding(base, token_ids, init.expand(len(words), -1), _vocab_word_ids(pipe.tokenizer),
                              config.project)
    prompt = config.template.format(" ".join(words))
    ids = pipe.tokenizer([prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(pipe.device)
    sched = training_scheduler(pipe.scheduler_config)
    g = torch.Generator("cpu").manual_seed(config.seed)
    opt = torch.optim.Adam([soft.vectors], lr=config.lr)
    losses = []
    te.set_input_embeddings(soft)
    try:
        for step in range(config.steps):
            rows = torch.randint(0, len(latents), (config.batch_size,), generator=g)
            cond = te(ids)[0].expand(config.batch_size, -1, -1)  # (B, T, D)
            loss = diffusion_loss(pipe.unet, latents[rows], cond, sched, g, 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if callback is not None:
                callback(step, losses[-1])
    finally:
        te.set_input_embeddings(base)
    hard = soft.nearest()
    set_token_vector(pipe, token_ids, base.weight[hard].detach().clone() if config.project else soft.vectors.detach())
    nearest = " ".join(word_of(pipe.tokenizer, i) for i in hard)
    return SoftPromptResult(" ".join(words), token_ids, soft.vectors.detach().clone(), nearest, losses)


def set_token_vector(pipe, token_ids: list[int], vectors: torch.Tensor) -> None:
    """Write (K, D) `vectors` into the text encoder's embedding rows `token_ids`."""
    with torch.no_grad():
        pipe.text_encoder.get_input_embeddings().weight[token_ids] = vectors


# ---------------------------------------------------------------------------------------------------
# The worked example: before / soft / projected / PEZ
# ---------------------------------------------------------------------------------------------------


def evaluate_prompt(pipe, prompt: str, caption: str, latents: torch.Tensor, seeds: list[int], steps: int = 20) -> dict:
    """Held-out diffusion loss on `latents` and oracle accuracy against `caption`'s spec on `seeds`."""
    spec = parse_caption(caption)
    s = pipe.make_spec(prompt, None, steps, None, 0, 1, None, None)
    images = sample_prompts(pipe, [prompt] * len(seeds), seeds, s.steps, s.guidance, s.sampler)
    scores = [score(im, spec) for im in images]
    return {"prompt": prompt, "loss": diffusion_eval_loss(pipe, latents, pipe.encode_text([prompt])),
            "accuracy": float(np.mean([sc.all_passed for sc in scores])),
            "checks_passed": float(np.mean([sc.n_passed / len(sc.checks) for sc in scores]))}


def worked_example(pipe, caption: str, token: str = "zorb", config: SoftPromptConfig | None = None,
                   n_examples: int = 32, eval_seeds=tuple(range(200, 216)), steps: int = 20) -> dict:
    """Learn `token` (one or more new words) for `caption` softly and with PEZ; evaluate the prompt before,
    soft, projected to its nearest words, and the PEZ-trained words."""
    config = (config or SoftPromptConfig()).validate()
    train = example_images(caption, n_examples, seed=0)
    held = encode_images(pipe, example_images(caption, 16, seed=1))  # held-out layouts for the loss
    seeds = [int(s) for s in eval_seeds]
    prompt = config.template.format(token)
    rows = {"reference caption": evaluate_prompt(pipe, caption, caption, held, seeds, steps)}
    soft = learn_token(pipe, token, train, replace(config, project=False))
    init = _initial_vector(pipe, config, soft.token_ids).expand(len(soft.token_ids), -1)
    set_token_vector(pipe, soft.token_ids, init)
    rows["before (initial vector)"] = evaluate_prompt(pipe, prompt, caption, held, seeds, steps)
    set_token_vector(pipe, soft.token_ids, soft.vectors)
    rows["soft (textual inversion)"] = evaluate_prompt(pipe, prompt, caption, held, seeds, steps)
    rows[f"projected: nearest word(s) '{soft.projected_word}'"] = evaluate_prompt(
        pipe, config.template.format(soft.projected_word), caption, held, seeds, steps)
    pez = learn_token(pipe, " ".join(w + "pez" for w in token.split()), train, replace(config, project=True))
    rows[f"PEZ word(s) '{pez.projected_word}'"] = evaluate_prompt(
        pipe, config.template.format(pez.projected_word), caption, held, seeds, steps)
    return {"caption": caption, "token": token, "config": asdict(config), "n_examples": n_examples,
            "eval_seeds": seeds, "steps": steps, "final_train_loss": {"soft": soft.losses[-1], "pez": pez.losses[-1]},
            "rows": rows}


def _initial_vector(pipe, config: SoftPromptConfig, token_ids: list[int]) -> torch.Tensor:
    """(D,): the init word's embedding, or the mean vocabulary embedding."""
    base = pipe.text_encoder.get_input_embeddings()
    with torch.no_grad():
        if config.init_word is not None:
            return base.weight[pipe.tokenizer(config.init_word, add_special_tokens=False)["input_ids"][0]].clone()
        return base.weight[_vocab_word_ids(pipe.tokenizer)].mean(0)


def gain_survived(result: dict) -> dict:
    """Share of the soft prompt's loss gain (before - soft) that each projection keeps."""
    rows = result["rows"]
    before, soft = rows["before (initial vector)"]["loss"], rows["soft (textual inversion)"]["loss"]
    gain = before - soft
    return {name: (before - r["loss"]) / gain if gain else float("nan")
            for name, r in rows.items() if name.startswith(("projected", "PEZ"))}


def markdown(result: dict) -> str:
    lines = [f"target caption {result['caption']!r}, token {result['token']!r}, template "
             f"{result['config']['template']!r}, {result['config']['steps']} steps x batch "
             f"{result['config']['batch_size']}, {result['n_examples']} example renders; held-out loss on 16 other "
             f"layouts x 8 fixed draws; oracle on seeds {result['eval_seeds'][0]}..{result['eval_seeds'][-1]}", "",
             "| prompt variant | prompt | held-out diffusion loss | oracle all-checks | checks passed |",
             "|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | `{r['prompt']}` | {r['loss']:.4f} | {r['accuracy']:.3f} | {r['checks_passed']:.3f} |")
    kept = gain_survived(result)
    lines += ["", "share of the soft loss gain kept: " + ", ".join(f"{k}: {v:.2f}" for k, v in kept.items())]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m t2ikit.analysis.soft_prompt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--caption", default="a purple triangle")
    p.add_argument("--token", default="zorb", help="new word(s) to learn; several words, space-separated, "
                                                     "make a K-token prompt")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--init-word", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    config = SoftPromptConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, init_word=args.init_word,
                              seed=args.seed).validate()
    torch.set_num_threads(1)
    pipe = T2IPipeline.from_folder(args.model or shipped_model_path())
    result = worked_example(pipe, args.caption, args.token, config)
    result["gain_kept"] = gain_survived(result)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
