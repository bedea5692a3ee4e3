"""Attend-and-Excite (Chefer et al. 2023): a training-free binding fix at sampling time (part 6).

In the first steps of sampling, before each denoising step, the latent takes gradient steps on
L = max over object words of (1 - max over pixels of the word's smoothed cross-attention map)
(Sec. 3.2, Eq. 2), so that every object the prompt names gets a strong region of attention and none is
neglected. The object words come from the caption parser (`world.caption.decompose`: each object span's
shape noun) and `text.spans`, never from hand-picked indices.

`objective="relation"` steps the latent on the relation term of `t2ikit.train.grounding` instead (the
centroid-energy form of training-free layout guidance: Chen et al. 2023, "Training-Free Layout Control with
Cross-Attention Guidance"; Epstein et al. 2023, "Diffusion Self-Guidance"): for "A left of B", where B's words
attend must lie `relation_margin` (of the image side) to the right of where A's words attend, every layer.
"both" adds the two.

    t2ikit bench binding --n-prompts 20 --seeds 2 --json
    t2ikit bench binding --categories spatial --objective relation --json
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from t2ikit.attention.processor import AttentionHook

BINDING_CATEGORIES = ("colour_binding", "shape_binding", "spatial")
OBJECTIVES = ("excite", "relation", "both")


@dataclass(frozen=True)
class ExciteConfig:
    excite_steps: int = 5  # sampling steps (from the first) whose latent is updated
    step_size: float = 20.0  # gradient step on the latent (A&E's scale factor), decayed by `_step_size`
    iterations: int = 2  # gradient steps per excited sampling step
    sigma: float = 0.5  # Gaussian smoothing of the attention maps (A&E: 3x3 kernel, sigma 0.5)
    objective: str = "excite"  # "excite" (A&E), "relation" (stated relations' attention centroids) or "both"
    relation_margin: float = 0.1  # the relation term's margin, in units of the image side

    def validate(self) -> ExciteConfig:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {self.objective!r}")
        if not 0 <= self.relation_margin < 1:
            raise ValueError(f"relation_margin must be in [0, 1), got {self.relation_margin!r}")
        for name in ("excite_steps", "iterations"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if not self.step_size >= 0:
            raise ValueError(f"step_size must be >= 0, got {self.step_size!r}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma!r}")
        return self

    def _step_size(self, i: int) -> float:
        # A&E decays the step size over the excited steps (their scale_range 1.0 -> 0.5, square-rooted)
        frac = i / max(self.excite_steps - 1, 1)
        return self.step_size * (1.0 - 0.5 * frac) ** 0.5


class GradAttentionMaps(AttentionHook):
    """Keeps cross-attention probabilities *with* their graph (AttentionStore detaches), per query grid."""

    needs_probs = True
    name = "excite-maps"

    def __init__(self):
        self.maps: dict[tuple[int, int], list[torch.Tensor]] = {}  # grid -> [(B, h, w, Nk) mean over heads]

    def applies(self, ctx) -> bool:
        return ctx.cross

    def on_probs(self, ctx, probs):
        b, _, nq, nk = probs.shape
        self.maps.setdefault(ctx.query_hw, []).append(probs.mean(dim=1).reshape(b, *ctx.query_hw, nk))
        return probs

    def mean_map(self, latent_hw: tuple[int, int]) -> torch.Tensor:
        """(B, h, w, Nk): the mean over layers at A&E's grid, one down-sampling below the latent (SD's 16x16
        maps of a 64x64 latent), or at the finest grid there is when the UNet has none there."""
        if not self.maps:
            raise ValueError("the UNet ran no cross-attention: nothing to excite")
        want = (latent_hw[0] // 2, latent_hw[1] // 2)
        grid = want if want in self.maps else max(self.maps, key=lambda g: g[0] * g[1])
        return torch.stack(self.maps[grid]).mean(0)


def object_words(tokenizer, prompt: str, words: list[str] | None = None) -> list[list[int]]:
    """Token positions of each object noun of `prompt` (from the caption parser), or of the given `words`.

    ValueError if a given word is not in the prompt, or if the prompt names no object.
    """
    from t2ikit.text.spans import token_positions, word_token_spans
    from t2ikit.world import vocab
    from t2ikit.world.caption import decompose

    if words is not None:
        if not words:
            raise ValueError("words must name at least one object word of the prompt")
        return [token_positions(tokenizer, prompt, w) for w in words]  # ValueError names the prompt's words
    nouns = set(vocab.SHAPES) | set(vocab.PLURAL_SHAPES.values())
    spans = word_token_spans(tokenizer, prompt)
    out = []
    for obj in decompose(prompt).objects:
        pos = [p for s in spans if obj.start <= s.start and s.end <= obj.end and s.word.lower() in nouns
               for p in s.positions]
        if pos:
            out.append(pos)
    if not out:
        raise ValueError(f"the prompt {prompt!r} names no object noun the parser can find")
    return out


def relation_targets(tokenizer, prompt: str, strict: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """((T,) int64 group of each token position, -1 for none; (R, 4) relation rows (subject, object, axis,
    sign), -1 rows pad; all pad when the prompt states none, which leaves its image unguided) of a world
    caption, for `t2ikit.train.grounding.relation_loss`. Token positions come from `text.spans`, so any
    tokenizer works (a word-level one or CLIP's BPE). A prompt the caption parser cannot read is a ValueError,
    or with `strict=False` all pad (unguided)."""
    from t2ikit.text.spans import word_token_spans
    from t2ikit.world.caption import CaptionError, decompose, parse_caption
    from t2ikit.world.scene import MAX_RELATIONS, relation_rows

    groups = torch.full((tokenizer.model_max_length,), -1, dtype=torch.int64)
    try:
        spec, objects = parse_caption(prompt), decompose(prompt).objects
    except CaptionError as err:
        if strict:
            raise ValueError(f"relation guidance needs a prompt the caption parser reads: {err}") from None
        return groups, torch.full((MAX_RELATIONS, 4), -1, dtype=torch.int64)
    for word in word_token_spans(tokenizer, prompt):
        for span in objects:
            if span.start <= word.start and word.end <= span.end and len(span.ref) == 1:
                groups[[p for p in word.positions if p < len(groups)]] = span.ref[0]
    return groups, torch.from_numpy(relation_rows(spec))


def _gaussian(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, K, h, w) smoothed with a 3x3 Gaussian (A&E's smoothing), same size."""
    x = torch.arange(3, dtype=maps.dtype, device=maps.device) - 1
    k1 = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k2 = (k1[:, None] * k1[None]) / (k1.sum() ** 2)
    b, k, h, w = maps.shape
    out = F.conv2d(F.pad(maps.reshape(b * k, 1, h, w), (1, 1, 1, 1), mode="reflect"), k2[None, None])
    return out.reshape(b, k, h, w)


def excite_loss(maps: torch.Tensor, positions: list[list[list[int]]], lengths: list[int], sigma: float) -> torch.Tensor:
    """Sum over images of max over objects of (1 - max pixel of the object's attention), A&E Eq. 2.

    maps: (B, h, w, Nk) cross-attention; renormalised by a softmax over the prompt's own tokens, without
    BOS, EOS and padding (A&E Sec. 3.2, their `1:last_idx`). positions[b]: per object, its token positions
    (BOS is 0); lengths[b]: the position of image b's EOS.
    """
    total = maps.new_zeros(())
    for i in range(maps.shape[0]):
        text = (maps[i, ..., 1:lengths[i]] * 100).softmax(dim=-1)  # (h, w, L - 1); A&E's x100 before softmax
        obj = torch.stack([text[..., [p - 1 for p in pos]].sum(-1) for pos in positions[i]])  # (K, h, w)
        obj = _gaussian(obj[None], sigma)[0]
        total = total + (1 - obj.flatten(1).max(dim=1).values).max()
    return total


class LatentGuidance:
    """The latent updates of Attend-and-Excite and of relation guidance, as a `before_step` of
    `t2ikit.diffusion.loop.sample`: in the first `config.excite_steps` steps, `config.iterations` gradient steps
    on the objective, each through one conditional UNet pass with its cross-attention captured.

    prompts: one per image; cond: (N, T, D) their embeddings. `strict=False` leaves images whose prompt the
    caption parser cannot read unguided instead of raising (a model's default guidance on free text).
    Each image's update depends on its own prompt and latent only: a batch equals its items.
    """

    def __init__(self, pipe, prompts: list[str], cond: torch.Tensor, config: ExciteConfig | None = None,
                 words=None, strict: bool = True):
        self.unet, self.cond = pipe.unet, cond
        self.config = config = (config or ExciteConfig()).validate()
        prompts = list(prompts)
        self.excite, self.relate = config.objective in ("excite", "both"), config.objective in ("relation", "both")
        if words is not None and not self.excite:
            raise ValueError("words choose the objects Attend-and-Excite strengthens; the relation objective takes "
                             "its words from the caption parser")
        if words is not None and len(words) != len(prompts):
            raise ValueError(f"words must give one list per prompt: {len(words)} lists for {len(prompts)} prompts")
        if self.excite:
            self.positions = [object_words(pipe.tokenizer, p, None if words is None else words[i])
                              for i, p in enumerate(prompts)]
            self.lengths = [min(len(pipe.tokenizer(p)["input_ids"]), pipe.tokenizer.model_max_length) - 1
                            for p in prompts]
        if self.relate:
            targets = [relation_targets(pipe.tokenizer, p, strict) for p in prompts]
            self.token_groups = torch.stack([g for g, _ in targets]).to(cond.device)
            self.relations = torch.stack([r for _, r in targets]).to(cond.device)
        from t2ikit.attention.processor import AttentionController
        from t2ikit.train.grounding import GroundingCapture

        self.maps, self.capture = GradAttentionMaps(), GroundingCapture()
        hooks = [h for h, on in ((self.maps, self.excite), (self.capture, self.relate)) if on]
        self.controller = AttentionController(hooks)
        self.controller.guided = False  # the guidance pass runs the conditional half only

    @property
    def active(self) -> bool:
        """False when nothing would move: no steps, zero step size, or (relation only) no stated relation."""
        c = self.config
        if c.excite_steps == 0 or c.step_size == 0:
            return False
        return self.excite or bool((self.relations[..., 0] >= 0).any())

    def loss(self, latent_hw: tuple[int, int]) -> torch.Tensor:
        from t2ikit.train.grounding import relation_loss

        total = self.cond.new_zeros(())
        if self.excite:
            total = total + excite_loss(self.maps.mean_map(latent_hw), self.positions, self.lengths, self.config.sigma)
        if self.relate:  # summed over images, as excite_loss is: each image's step is its own
            total = total + relation_loss(self.capture.maps, self.token_groups, self.relations,
                                          self.config.relation_margin, reduction="sum")
        return total

    def __call__(self, i: int, t, latents: torch.Tensor, scheduler) -> torch.Tensor:
        if i >= self.config.excite_steps or not self.active:
            return latents
        hw = tuple(latents.shape[-2:])
        self.controller.latent_hw = hw
        self.controller.install(self.unet)
        self.controller.set_step(i, len(scheduler.timesteps), t)
        try:
            for _ in range(self.config.iterations):
                self.maps.maps.clear()
                self.capture.clear()
                x = latents.detach().requires_grad_(True)
                with torch.enable_grad():
                    self.unet(scheduler.scale_model_input(x, t), t, encoder_hidden_states=self.cond, return_dict=False)
                    grad, = torch.autograd.grad(self.loss(hw), x)
                latents = (x - self.config._step_size(i) * grad).detach()
        finally:
            self.controller.uninstall()
            self.maps.maps.clear()
            self.capture.clear()
        return latents


def sample_excite(pipe, prompts: list[str], seeds, steps: int | None = None, guidance: float | None = None,
                  sampler: str | None = None, config: ExciteConfig | None = None, words=None) -> torch.Tensor:
    """(N, 3, H, W) images: the plain seeded sampler (as `analysis.runner`) plus A&E latent updates.

    With `config.excite_steps == 0` or `step_size == 0` the result equals `runner.sample_prompts`.
    `words`: optional per-prompt lists of object words (default: the parser's object nouns).
    """
    from t2ikit.analysis.runner import _check_seeds
    from t2ikit.diffusion.loop import initial_noise, sample
    from t2ikit.diffusion.samplers import make_scheduler

    prompts = list(prompts)
    seeds = _check_seeds(seeds, len(prompts))
    spec = pipe.make_spec(prompts, None, steps, guidance, 0, 1, None, sampler)
    h, w = spec.size[0] // pipe.vae_scale_factor, spec.size[1] // pipe.vae_scale_factor
    with torch.no_grad():
        unique = list(dict.fromkeys(prompts))
        cond = pipe.encode_text(unique)[torch.tensor([unique.index(p) for p in prompts])]  # (N, T, D)
        uncond = pipe.encode_text([""]).expand(len(prompts), -1, -1)
    update = LatentGuidance(pipe, prompts, cond, config, words)
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    noise = initial_noise((len(prompts), pipe.unet.config.in_channels, h, w), gens, pipe.device, pipe.dtype)
    scheduler = make_scheduler(spec.sampler, pipe.scheduler_config)
    latents = sample(pipe.unet, scheduler, noise, cond, uncond, spec.steps, spec.guidance, gens, progress=False,
                     before_step=update)
    return pipe.decode(latents)


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
    from dataclasses import asdict

    from t2ikit.analysis.decomposition import plain_generator
    from t2ikit.analysis.paired import paired_compbench

    config = (config or ExciteConfig()).validate()
    result = paired_compbench(plain_generator(pipe, steps), excite_generator(pipe, steps, config), n_prompts, seeds,
                              tuple(categories), split=split, batch_size=16)
    result["config"].update({"steps": steps, "excite": asdict(config), "model": getattr(pipe, "name", None)})
    return result


def markdown(result: dict) -> str:
    from t2ikit.analysis.paired import markdown_table

    c = result["config"]
    e = c["excite"]
    name = {"excite": "Attend-and-Excite", "relation": "Relation guidance", "both": "Attend-and-Excite + relation guidance"}
    return markdown_table(result, f"{name[e.get('objective', 'excite')]} ({c['split']} split, {e['excite_steps']} excited steps, step size {e['step_size']}, "
                                  f"{e['iterations']} iteration(s)) vs the plain sampler, {c['n_prompts']} prompts x "
                                  f"{c['seeds']} seeds per category, {c['steps']} steps ('weighted' = guided)")
