"""Before-step latent guidance: Attend-and-Excite and relation guidance, read from a prompt through a Parser.

Attend-and-Excite (Chefer et al. 2023): in the first steps of sampling, before each denoising step, the latent
takes gradient steps on L = max over objects of (1 - max over pixels of the object noun's smoothed
cross-attention map) (Sec. 3.2, Eq. 2), so that every object the prompt names gets a strong region of attention.

Relation guidance steps the latent on `t2ikit.attention.grounding.relation_loss` instead: for "A left of B",
where B's words attend must lie `relation_margin` (of the image side) to the right of where A's words attend,
every layer. "both" adds the two.

`layers="encoder"` reads the maps of the UNet's encoder only (down blocks and mid block): the guidance pass
stops after the mid block, and its backward runs through that part alone: cheaper, at the price of a different
objective (both measured in docs/FAST.md).

`shared=True` lets the guidance pass serve the step as well: the pass is the text condition's whole UNet pass
(under the generation's own attention hooks and adapter residuals), and the step's prediction reuses its output
instead of running the condition's rows again, so a guided step costs the unconditional row and a backward on top
of plain sampling. The prediction is the one of the latent before the step's last gradient step, not after it (a
step's lag; measured in docs/FAST.md). `JointGuidance` runs several such updates (relation guidance,
Attend-and-Excite, `t2ikit.control.boxes.BoxGuidance`) on one pass per gradient step: the latent steps on the sum of
their step-size-weighted losses.

Every update here is a `CapturedGuidance`: captures on the UNet's cross-attention, a loss read from them, a step
size and a number of gradient steps per sampling step; `CapturedGuidance.__call__` runs its passes.

Which tokens are an object, and which relations hold, come from a `t2ikit.text.parser.Parser` (its character
spans mapped to token positions by `t2ikit.text.spans`), so any parser and any tokenizer serve.
`LatentGuidance` is a `before_step` of `t2ikit.diffusion.loop.sample`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from t2ikit.attention.grounding import GroundingCapture, relation_loss
from t2ikit.attention.processor import AttentionController
from t2ikit.diffusion.conditioning import Conditioning
from t2ikit.diffusion.denoisers import unet_call
from t2ikit.text.parser import RELATION_AXES, Parser, PromptParseError, get_parser
from t2ikit.text.spans import token_positions, word_token_spans

OBJECTIVES = ("excite", "relation", "both")
LAYERS = ("all", "encoder")  # which cross-attention maps the objective reads (and how far the guidance pass runs)
PASSES = ("separate", "shared")  # the guidance pass beside the step's prediction, or serving it (shared=True)


@dataclass(frozen=True)
class ExciteConfig:
    excite_steps: int = 5  # sampling steps (from the first) whose latent is updated
    step_size: float = 20.0  # gradient step on the latent (A&E's scale factor), decayed by `_step_size`
    iterations: int = 2  # gradient steps per excited sampling step
    sigma: float = 0.5  # Gaussian smoothing of the attention maps (A&E: 3x3 kernel, sigma 0.5)
    objective: str = "excite"  # "excite" (A&E), "relation" (stated relations' attention centroids) or "both"
    relation_margin: float = 0.1  # the relation term's margin, in units of the image side
    layers: str = "all"  # "all" maps, or the "encoder"'s only (down and mid blocks: a cheaper, truncated pass)
    shared: bool = False  # the last guidance pass's prediction serves the step (module docstring); needs "all"

    def validate(self) -> ExciteConfig:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {self.objective!r}")
        if self.layers not in LAYERS:
            raise ValueError(f"layers must be one of {', '.join(LAYERS)}; got {self.layers!r}")
        if self.shared and self.layers != "all":
            raise ValueError("a shared guidance pass must run the whole UNet (layers='all'); the encoder's pass makes "
                             "no prediction to share")
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
        return decayed_step(self.step_size, i, self.excite_steps)


def decayed_step(size: float, i: int, steps: int) -> float:
    """Attend-and-Excite's step size at guided step i of `steps`: `size` decayed over the guided steps (their
    scale_range 1.0 -> 0.5, square-rooted)."""
    frac = i / max(steps - 1, 1)
    return size * (1.0 - 0.5 * frac) ** 0.5


# ---------------------------------------------------------------------------------------------------
# Token selection through a Parser
# ---------------------------------------------------------------------------------------------------


def _parse(parser: Parser | str | None, prompt: str, needed_by: str):
    """(parser, what it read); PromptParseError naming `needed_by` for a prompt the parser cannot read."""
    parser = get_parser(parser)
    if parser is None:
        raise ValueError(f"{needed_by} reads the prompt's objects with a Parser (t2ikit.text.parser); got parser=None")
    try:
        return parser, parser.parse(prompt)
    except PromptParseError as err:
        raise PromptParseError(f"{needed_by} needs a prompt the parser {parser.name!r} reads: {err}") from None


def object_positions(tokenizer, parser: Parser | str | None, prompt: str, words: list[str] | None = None
                     ) -> list[list[int]]:
    """Token positions (BOS is 0) of each object's noun in `prompt`, one list per object group in the parser's
    order (all its mentions together), or of each of the given `words` (then no parser is needed).

    ValueError if a given word is not in the prompt, if the parser finds no object, or if an object's noun lies
    past the tokenizer's context; PromptParseError (a ValueError) if the parser cannot read the prompt.
    """
    if words is not None:
        if not words:
            raise ValueError("words must name at least one object word of the prompt")
        return [token_positions(tokenizer, prompt, w) for w in words]  # ValueError names the prompt's words
    parser, structure = _parse(parser, prompt, "Attend-and-Excite without `words`")
    spans = word_token_spans(tokenizer, prompt)
    out = []
    for group in range(structure.groups):
        nouns = [o for o in structure.objects if o.group == group]
        inside = [s for s in spans for o in nouns if o.noun_start <= s.start and s.end <= o.noun_end]
        past = [s.word for s in inside if s.truncated]
        if past:
            raise ValueError(f"the object noun {past[0]!r} of {prompt!r} lies past the {tokenizer.model_max_length}-"
                             "token context: the model never sees it, so Attend-and-Excite cannot strengthen it")
        positions = sorted({p for s in inside for p in s.positions})
        if positions:
            out.append(positions)
    if not out:
        raise ValueError(f"the prompt {prompt!r} names no object noun the parser {parser.name!r} can find")
    return out


def relation_targets(tokenizer, parser: Parser | str | None, prompt: str, strict: bool = True,
                     max_relations: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """((T,) int64 group of each token position, -1 for none; (R, 4) int64 relation rows (subject, object, axis,
    sign) from `text.parser.RELATION_AXES`) of `prompt`, for `t2ikit.attention.grounding.relation_loss`.

    T is the tokenizer's context; every token of an object phrase joins the phrase's group, so any tokenizer works
    (a word-level one or CLIP's BPE). R is the number of image-plane relations (RELATION_AXES) the prompt states,
    or `max_relations` with -1 rows padding (a prompt stating more is a ValueError); a relation without an axis
    ("near", "in front of", "behind") is left unguided with a warning that names it. A prompt the parser cannot
    read is a PromptParseError (a ValueError), or with `strict=False` all pad, which leaves its image unguided.
    """
    if max_relations is not None and (not isinstance(max_relations, int) or max_relations < 0):
        raise ValueError(f"max_relations must be an int >= 0 or None, got {max_relations!r}")
    groups = torch.full((tokenizer.model_max_length,), -1, dtype=torch.int64)
    try:
        parser, structure = _parse(parser, prompt, "relation guidance")
    except PromptParseError:
        if strict:
            raise
        return groups, torch.full((max_relations or 0, 4), -1, dtype=torch.int64)
    guided = [r for r in structure.relations if r.relation in RELATION_AXES]
    unguided = [r for r in structure.relations if r.relation not in RELATION_AXES]
    if unguided:  # "near", "in front of", "behind": no image-plane axis to guide along
        warnings.warn(f"relation guidance guides {', '.join(RELATION_AXES)} only; in {prompt!r} it leaves "
                      + ", ".join(_describe(structure, r) for r in unguided) + " unguided"
                      + (f" and guides {', '.join(_describe(structure, r) for r in guided)}" if guided else ""))
    n = len(guided)
    if max_relations is not None and n > max_relations:
        raise ValueError(f"{prompt!r} states {n} relations; max_relations is {max_relations}")
    for word in word_token_spans(tokenizer, prompt):
        for phrase in structure.objects:
            if phrase.start <= word.start and word.end <= phrase.end:
                groups[[p for p in word.positions if p < len(groups)]] = phrase.group
    rows = torch.full((n if max_relations is None else max_relations, 4), -1, dtype=torch.int64)
    for k, r in enumerate(guided):
        rows[k] = torch.tensor([r.subject, r.object, *RELATION_AXES[r.relation]])
    return groups, rows


def _describe(structure, r) -> str:
    """"'a cat' near 'a dog'": a relation with its phrases' texts."""
    text = {}
    for o in structure.objects:
        text.setdefault(o.group, structure.prompt[o.start:o.end])
    return f"{text.get(r.subject, r.subject)!r} {r.relation} {text.get(r.object, r.object)!r}"


# ---------------------------------------------------------------------------------------------------
# Attend-and-Excite's objective
# ---------------------------------------------------------------------------------------------------


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, K, h, w) smoothed with a 3x3 Gaussian (A&E's smoothing), same size."""
    x = torch.arange(3, dtype=maps.dtype, device=maps.device) - 1
    k1 = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k2 = (k1[:, None] * k1[None]) / (k1.sum() ** 2)
    b, k, h, w = maps.shape
    out = F.conv2d(F.pad(maps.reshape(b * k, 1, h, w), (1, 1, 1, 1), mode="reflect"), k2[None, None])
    return out.reshape(b, k, h, w)


def excite_map(maps: list[tuple[tuple[int, int], torch.Tensor]], latent_hw: tuple[int, int]) -> torch.Tensor:
    """(B, h, w, T): the mean over layers of captured maps ((h, w), (B, 1, h*w, T)) at A&E's grid, one
    down-sampling below the latent (SD's 16x16 maps of a 64x64 latent), or at the finest grid there is."""
    if not maps:
        raise ValueError("the UNet ran no cross-attention: nothing to excite")
    want = (latent_hw[0] // 2, latent_hw[1] // 2)
    grids = {hw for hw, _ in maps}
    grid = want if want in grids else max(grids, key=lambda g: g[0] * g[1])
    return torch.stack([p.reshape(p.shape[0], *grid, p.shape[-1]) for hw, p in maps if hw == grid]).mean(0)


def excite_loss(maps: torch.Tensor, positions: list[list[list[int]]], lengths: list[int], sigma: float) -> torch.Tensor:
    """Sum over images of max over objects of (1 - max pixel of the object's attention), A&E Eq. 2.

    maps: (B, h, w, T) cross-attention; renormalised by a softmax over the prompt's own tokens, without
    BOS, EOS and padding (A&E Sec. 3.2, their `1:last_idx`). positions[b]: per object, its token positions
    (BOS is 0), none for an image left out; lengths[b]: the position of image b's EOS.
    """
    total = maps.new_zeros(())
    for i in range(maps.shape[0]):
        if not positions[i]:  # an image left unguided
            continue
        text = (maps[i, ..., 1:lengths[i]] * 100).softmax(dim=-1)  # (h, w, L - 1); A&E's x100 before softmax
        obj = torch.stack([text[..., [p - 1 for p in pos]].sum(-1) for pos in positions[i]])  # (K, h, w)
        obj = smooth(obj[None], sigma)[0]
        total = total + (1 - obj.flatten(1).max(dim=1).values).max()
    return total


# ---------------------------------------------------------------------------------------------------
# The before-step update
# ---------------------------------------------------------------------------------------------------


def _excite_positions(tokenizer, parser, prompt: str, words, strict: bool) -> list[list[int]]:
    """object_positions, or none (the image unguided) for a prompt the parser cannot read when not `strict`."""
    try:
        return object_positions(tokenizer, parser, prompt, words)
    except PromptParseError:
        if strict:
            raise
        return []


class CapturedGuidance:
    """A before-step latent update read from cross-attention (module docstring): in each sampling step `i`,
    `iterations_at(i)` gradient steps, each through one conditional UNet pass that fills `captures`, the latent
    moving by `-step_size(i)` times the gradient of `loss(latent_hw)`. A subclass gives those three; this class
    runs the passes (`__call__`) and shares them with the step (`share`).

    `layers="encoder"` stops the pass after the mid block (no prediction to share); `shared=True` lets `share`
    hand the last pass's prediction to the step's denoiser."""

    layers = "all"
    shared = False

    def __init__(self, unet, cond: torch.Tensor, captures: list, added: dict | None = None):
        self.unet, self.cond, self.captures = unet, cond, list(captures)
        self.added = added  # SDXL: the conditional rows' added_cond_kwargs (pooled text, time ids); else None
        self.controller = AttentionController(self.captures)
        self.controller.guided = False  # the guidance pass runs the conditional half only
        self.conditioning: Conditioning | None = None  # set by `share`

    def iterations_at(self, i: int) -> int:
        raise NotImplementedError

    def step_size(self, i: int) -> float:
        raise NotImplementedError

    def loss(self, latent_hw: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    def parts(self) -> list[CapturedGuidance]:
        """The updates whose losses this guidance steps on (itself; a JointGuidance's parts)."""
        return [self]

    def share(self, c: Conditioning) -> CapturedGuidance:
        """Let each guided step's prediction reuse this guidance's pass (module docstring): the pass then runs under
        `c`'s attention hooks and adapter residuals. ValueError, before any compute, where the step's prediction is
        not this guidance's text alone (several or masked conditions, attention regions, image tokens appended to
        the text) or a hook of `c` cannot run beside the captures."""
        if not self.shared:
            raise ValueError("share needs a guidance configured with shared=True")
        if len(c.conditions) != 1 or c.conditions[0].mask is not None or c.conditions[0].embeds is not self.cond:
            raise ValueError("a shared guidance pass serves one text condition whose states are the prompt's own: not "
                             "regions, composed prompts or a concat reference adapter (give shared=False there)")
        if c.controller is not None:  # the captures ride on the generation's hooks: refuse a clash now
            for capture in self.captures:
                c.controller.add(capture)
                c.controller.remove(capture)
        self.conditioning = c
        return self

    def __call__(self, i: int, t, latents: torch.Tensor, scheduler) -> torch.Tensor:
        parts = self.parts()
        counts = [p.iterations_at(i) for p in parts]
        if max(counts, default=0) == 0:
            return latents
        hw = tuple(latents.shape[-2:])
        c = self.conditioning
        outer = None if c is None else c.controller  # shared: the generation's hooks shape the prediction
        if outer is None:
            controller = self.controller
            controller.latent_hw = hw
            controller.install(self.unet)
        else:
            controller = outer
            for capture in self.captures:
                controller.add(capture)
            controller.guided, controller.blocks = False, (c.conditions[0].name,)
        controller.set_step(i, len(scheduler.timesteps), t)
        eps = None
        try:
            for k in range(max(counts)):
                on = [p for p, n in zip(parts, counts) if n > k]
                self._clear()
                x = latents.detach().requires_grad_(True)
                with torch.enable_grad():
                    eps = self._forward(scheduler.scale_model_input(x, t), t)
                    if len(on) == 1:  # (one update: its own step, as when it runs alone)
                        grad, = torch.autograd.grad(on[0].loss(hw), x)
                        latents = (x - on[0].step_size(i) * grad).detach()
                    else:
                        grad, = torch.autograd.grad(sum(p.step_size(i) * p.loss(hw) for p in on), x)
                        latents = (x - grad).detach()
            if c is not None and eps is not None:  # (no pass ran with iterations=0)
                c.shared = (i, eps.detach())
        finally:
            if outer is None:
                controller.uninstall()
            else:
                for capture in self.captures:
                    controller.remove(capture)
            self._clear()
        return latents

    def _forward(self, x: torch.Tensor, t) -> torch.Tensor | None:
        """One conditional UNet pass that fills the captures: whole (its prediction returned; with a shared pass,
        the step's adapter residuals added as the denoiser adds them), or (layers="encoder") up to the end of the mid
        block, where a forward hook stops it; the maps captured so far keep their graph."""
        residuals = None if self.conditioning is None else self.conditioning.residuals
        run = lambda: unet_call(self.unet, x, t, self.cond, residuals, self.added)  # noqa: E731
        if self.layers == "all":
            return run()
        handle = encoder_end(self.unet).register_forward_hook(_stop_forward)
        try:
            run()
        except _EncoderDone:
            pass
        finally:
            handle.remove()
        return None

    def _clear(self) -> None:
        for capture in self.captures:
            capture.clear()


class JointGuidance(CapturedGuidance):
    """Several latent updates on one pass per gradient step: at sampling step `i`, gradient step `k` runs one
    conditional UNet pass with every part's captures and steps the latent on the sum of `step_size(i) * loss` of
    the parts that take a k-th step there (parts with fewer steps drop out). All parts must guide the same text
    states with the whole UNet. With `shared=True` its last pass serves the step (`share`), as one update's does."""

    def __init__(self, parts: list[CapturedGuidance], shared: bool = False):
        if not parts:
            raise ValueError("JointGuidance needs at least one update to run")
        first = parts[0]
        for p in parts:
            if p.cond is not first.cond or p.unet is not first.unet or p.layers != "all":
                raise ValueError("a joint guidance pass serves updates of one UNet, one text condition and the whole "
                                 "UNet (layers='all')")
        super().__init__(first.unet, first.cond, [c for p in parts for c in p.captures], first.added)
        self._parts, self.shared = list(parts), shared

    def parts(self) -> list[CapturedGuidance]:
        return self._parts


class LatentGuidance(CapturedGuidance):
    """The latent updates of Attend-and-Excite and of relation guidance, as a `before_step` of
    `t2ikit.diffusion.loop.sample`: in the first `config.excite_steps` steps, `config.iterations` gradient steps
    on the objective, each through one conditional UNet pass with its cross-attention captured.

    unet: a diffusers UNet; tokenizer: the fast tokenizer `cond` was encoded with; parser: a
    `t2ikit.text.parser.Parser` or a registered name (None only for Attend-and-Excite with `words`);
    prompts: one per image; cond: (N, T, D) their embeddings; words: per prompt, the object words to excite
    (default: the parser's object nouns). `strict=False` leaves images whose prompt the parser cannot read
    unguided (by either objective) instead of raising (a model's default guidance on free text); `relate_rows`:
    per image, whether the relation objective guides it (default all; layout="many" leaves the images it boxed to
    the boxes). Each image's update depends on its own prompt and latent only: a batch equals its items.
    """

    def __init__(self, unet, tokenizer, parser: Parser | str | None, prompts: list[str], cond: torch.Tensor,
                 config: ExciteConfig | None = None, words: list[list[str]] | None = None, strict: bool = True,
                 added: dict | None = None, relate_rows: list[bool] | None = None):
        self.config = config = (config or ExciteConfig()).validate()
        self.layers, self.shared = config.layers, config.shared
        prompts = list(prompts)
        if cond.shape[0] != len(prompts):
            raise ValueError(f"cond must hold one embedding per prompt: {cond.shape[0]} for {len(prompts)} prompts")
        self.excite, self.relate = config.objective in ("excite", "both"), config.objective in ("relation", "both")
        if words is not None and not self.excite:
            raise ValueError("words choose the objects Attend-and-Excite strengthens; the relation objective takes "
                             "its words from the parser")
        if words is not None and len(words) != len(prompts):
            raise ValueError(f"words must give one list per prompt: {len(words)} lists for {len(prompts)} prompts")
        parser = get_parser(parser)
        if parser is None and (self.relate or words is None):
            raise ValueError(f"the {config.objective!r} objective reads each prompt's objects with a Parser "
                             "(t2ikit.text.parser); got parser=None" + ("" if self.relate else " and no words"))
        if self.excite:
            self.positions = [_excite_positions(tokenizer, parser, p, None if words is None else words[i], strict)
                              for i, p in enumerate(prompts)]
            self.lengths = [min(len(tokenizer(p)["input_ids"]), tokenizer.model_max_length) - 1 for p in prompts]
        if self.relate:
            targets = [relation_targets(tokenizer, parser, p, strict) for p in prompts]
            rows = torch.full((len(prompts), max([1] + [len(r) for _, r in targets]), 4), -1, dtype=torch.int64)
            if relate_rows is not None and len(relate_rows) != len(prompts):
                raise ValueError(f"relate_rows must give one flag per prompt: {len(relate_rows)} for {len(prompts)}")
            for k, (_, r) in enumerate(targets):
                if relate_rows is None or relate_rows[k]:
                    rows[k, :len(r)] = r
            self.token_groups = torch.stack([g for g, _ in targets]).to(cond.device)  # (N, T)
            self.relations = rows.to(cond.device)  # (N, R, 4)
        # one capture per objective, each with its own head-mean, so that "both" sums the two objectives'
        # gradients in a fixed order (bitwise the outputs recorded in tests/golden)
        self.excite_capture, self.relation_capture = GroundingCapture(), GroundingCapture()
        pairs = ((self.excite_capture, self.excite), (self.relation_capture, self.relate))
        super().__init__(unet, cond, [c for c, on in pairs if on], added)

    @property
    def active(self) -> bool:
        """False when nothing would move: no steps, zero step size, or (relation only) no stated relation."""
        c = self.config
        if c.excite_steps == 0 or c.step_size == 0:
            return False
        return (self.excite and any(self.positions)) or (self.relate and bool((self.relations[..., 0] >= 0).any()))

    def iterations_at(self, i: int) -> int:
        return self.config.iterations if i < self.config.excite_steps and self.active else 0

    def step_size(self, i: int) -> float:
        return self.config._step_size(i)

    def loss(self, latent_hw: tuple[int, int]) -> torch.Tensor:
        total = self.cond.new_zeros(())
        if self.excite:
            total = total + excite_loss(excite_map(self.excite_capture.maps, latent_hw), self.positions, self.lengths,
                                        self.config.sigma)
        if self.relate:  # summed over images, as excite_loss is: each image's step is its own
            total = total + relation_loss(self.relation_capture.maps, self.token_groups, self.relations,
                                          self.config.relation_margin, reduction="sum")
        return total

class _EncoderDone(Exception):
    """Raised by the hook at the encoder's end: the rest of the UNet is not needed."""


def _stop_forward(module, args, output) -> None:
    raise _EncoderDone


def encoder_end(unet) -> torch.nn.Module:
    """The module after which a UNet's encoder (down blocks, then the mid block) is done: its mid block, else
    its last down block. ValueError for a model without diffusers' down_blocks."""
    mid = getattr(unet, "mid_block", None)
    if mid is not None:
        return mid
    blocks = getattr(unet, "down_blocks", None)
    if not blocks:
        raise ValueError(f"layers='encoder' needs a UNet with down blocks (diffusers' UNet2DConditionModel); got "
                         f"{type(unet).__name__}")
    return blocks[-1]


__all__ = ["CapturedGuidance", "ExciteConfig", "decayed_step", "JointGuidance", "LAYERS", "LatentGuidance", "OBJECTIVES", "PASSES", "encoder_end", "excite_loss", "excite_map",
           "object_positions", "relation_targets", "smooth"]
