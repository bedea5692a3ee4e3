"""Prompt weighting syntax: `(word:1.3)`, `(a red circle:0.8)`, nesting, escapes, and blends.

Syntax (AUTOMATIC1111's, plus compel's blend):

    (text:1.3)        the words of `text` get weight 1.3
    (text)            weight 1.1 (AUTOMATIC1111's bare parentheses)
    ((red:2) circle:1.5)   nesting multiplies: red 3.0, circle 1.5
    \\( \\) \\: \\\\      literal parenthesis, colon, backslash
    ("a red circle", "a blue square").blend(0.7, 0.3)   a blend of prompts (each may carry weights)

Semantics. The text with the syntax removed is encoded once, exactly as an unweighted prompt (weights do
not change what the text encoder reads). Then each token's embedding row e_i (the last hidden state the
UNet cross-attends to) is scaled by its word's weight w_i:

    mode "multiply":  e_i <- w_i * e_i
    mode "a1111":     e_i <- w_i * e_i, then every row times mean(e) / mean(e')   (AUTOMATIC1111's
                      `sd_hijack` restores the mean of the whole (T, D) tensor after scaling)

Since the UNet's cross-attention key and value projections are linear, scaling e_i scales both the
token's key (how strongly image tokens attend to it) and its value (what it contributes). compel differs:
it multiplies upweighted tokens the same way, but *downweights* (w < 1) by blending towards the
embedding of the prompt encoded with the fragment masked out of the text encoder's attention, rather
than by shrinking the rows; that mode is not implemented here. A blend is the weighted mean
sum_k b_k E_k / sum_k b_k of the parts' (T, D) embeddings (compel's `.blend` with normalisation).

Errors are `PromptSyntaxError` (a ValueError) that print the prompt with a caret under the character.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

BARE_PARENS_WEIGHT = 1.1  # AUTOMATIC1111: "(word)" means weight 1.1
MODES = ("a1111", "multiply")
_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*")


class PromptSyntaxError(ValueError):
    """A malformed weighted prompt; `position` is the offending character's index."""

    def __init__(self, message: str, prompt: str, position: int):
        self.prompt, self.position = prompt, position
        super().__init__(f"{message} at character {position}:\n  {prompt}\n  {' ' * position}^")


@dataclass(frozen=True)
class WeightedText:
    """A prompt with the syntax removed and each of its characters' weight."""

    text: str
    weights: tuple[float, ...]  # one per character of `text`

    def runs(self) -> list[tuple[str, float]]:
        """[(text, weight)] runs of equal weight, in order."""
        out: list[tuple[str, float]] = []
        for ch, w in zip(self.text, self.weights):
            if out and out[-1][1] == w:
                out[-1] = (out[-1][0] + ch, w)
            else:
                out.append((ch, w))
        return out


@dataclass(frozen=True)
class ParsedPrompt:
    """One or more weighted texts and their blend weights (a single text has blend weight 1)."""

    parts: tuple[WeightedText, ...]
    blend: tuple[float, ...]

    @property
    def plain(self) -> str:
        """The first part's text: what an unweighted tool (the oracle, captions) reads."""
        return self.parts[0].text


# ----------------------------------------------------------------------------------------------------
# Parsing


def _check_weight(value: float, prompt: str, pos: int, what: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise PromptSyntaxError(f"{what} must be a finite number >= 0, got {value}", prompt, pos)
    return value


def _parse_weighted(prompt: str, offset: int = 0, full: str | None = None) -> WeightedText:
    """Parse one prompt of the (text:w) syntax; positions in errors are offset into `full`."""
    full = prompt if full is None else full
    chars: list[str] = []
    weights: list[float] = []
    stack: list[tuple[int, int]] = []  # (index into chars where the group starts, position of its "(")
    i = 0
    n = len(prompt)
    while i < n:
        c = prompt[i]
        if c == "\\":
            if i + 1 == n:
                raise PromptSyntaxError("a backslash at the end escapes nothing", full, offset + i)
            chars.append(prompt[i + 1])
            weights.append(1.0)
            i += 2
            continue
        if c == "(":
            stack.append((len(chars), offset + i))
            i += 1
            continue
        if c == ")" or (c == ":" and stack):
            if not stack:
                raise PromptSyntaxError("')' closes no '('", full, offset + i)
            start, open_pos = stack.pop()
            if c == ":":
                m = _NUMBER.match(prompt, i + 1)
                end = m.end() if m else i + 1
                if not m or end >= n or prompt[end] != ")":
                    raise PromptSyntaxError("malformed weight: expected '(text:NUMBER)'", full, offset + i + 1)
                weight = _check_weight(float(m.group(1)), full, offset + i + 1, "a weight")
                i = end + 1
            else:
                weight = BARE_PARENS_WEIGHT
                i += 1
            if not "".join(chars[start:]).strip():
                raise PromptSyntaxError("a weight group holds no text", full, open_pos)
            for k in range(start, len(chars)):
                weights[k] *= weight
            continue
        chars.append(c)
        weights.append(1.0)
        i += 1
    if stack:
        raise PromptSyntaxError("'(' is never closed", full, stack[-1][1])
    return WeightedText("".join(chars), tuple(weights))


def _parse_blend(prompt: str) -> ParsedPrompt | None:
    """`("p1", "p2", ...).blend(w1, w2, ...)`, or None if `prompt` is not a blend."""
    s = prompt.rstrip()
    lead = len(prompt) - len(prompt.lstrip())
    if not (s.lstrip().startswith('("') and s.endswith(")") and ").blend(" in s):
        return None
    i = lead + 1
    texts: list[tuple[str, int]] = []
    while True:
        while i < len(s) and s[i] == " ":
            i += 1
        if i >= len(s) or s[i] != '"':
            raise PromptSyntaxError('a blend lists quoted prompts: ("...", "...").blend(w1, w2)', prompt, i)
        j, buf = i + 1, []
        while j < len(s) and s[j] != '"':
            if s[j] == "\\" and j + 1 < len(s) and s[j + 1] == '"':
                buf.append('"')
                j += 2
                continue
            buf.append(s[j])
            j += 1
        if j >= len(s):
            raise PromptSyntaxError("unterminated quoted prompt in a blend", prompt, i)
        texts.append(("".join(buf), i + 1))
        i = j + 1
        while i < len(s) and s[i] == " ":
            i += 1
        if i < len(s) and s[i] == ",":
            i += 1
            continue
        break
    if not s.startswith(").blend(", i):
        raise PromptSyntaxError("expected ').blend(w1, w2, ...)' after the quoted prompts", prompt, i)
    i += len(").blend(")
    body_end = len(s) - 1
    blend = []
    for piece in s[i:body_end].split(","):
        m = _NUMBER.fullmatch(piece)
        if not m:
            raise PromptSyntaxError("malformed blend weight", prompt, i)
        blend.append(_check_weight(float(m.group(1)), prompt, i, "a blend weight"))
        i += len(piece) + 1
    if len(blend) != len(texts):
        raise PromptSyntaxError(f"a blend of {len(texts)} prompts needs {len(texts)} weights, got {len(blend)}",
                                prompt, len(s) - 1)
    if sum(blend) <= 0:
        raise PromptSyntaxError("blend weights sum to 0", prompt, len(s) - 1)
    parts = tuple(_parse_weighted(t, offset=pos, full=prompt) for t, pos in texts)
    return ParsedPrompt(parts, tuple(blend))


def parse_weighted(prompt: str) -> ParsedPrompt:
    """Parse the weighting syntax (module docstring); PromptSyntaxError points at a malformed character."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    blend = _parse_blend(prompt)
    if blend is not None:
        return blend
    return ParsedPrompt((_parse_weighted(prompt),), (1.0,))


# ----------------------------------------------------------------------------------------------------
# Token weights and embeddings


def token_weights(tokenizer, part: WeightedText) -> list[float]:
    """One weight per encoded position (model_max_length): each word's weight on its tokens, 1 elsewhere.

    ValueError if a weight boundary splits a word, or a weighted word is unknown to a word-level
    vocabulary or past the context (the model would never see the weight).
    """
    from t2ikit.text.spans import word_token_spans
    from t2ikit.text.tokenizer import known_words

    vocab = known_words(tokenizer)
    weights = [1.0] * tokenizer.model_max_length
    spans = word_token_spans(tokenizer, part.text)
    covered = set()
    for s in spans:
        ws = set(part.weights[s.start:s.end])
        if len(ws) > 1:
            raise ValueError(f"a weight boundary splits the word {s.word!r} of {part.text!r}; weight whole words")
        w = ws.pop()
        covered.update(range(s.start, s.end))
        if w == 1.0:
            continue
        if vocab is not None and s.word.lower() not in vocab:
            raise ValueError(f"weighted word {s.word!r} is not in the model's vocabulary; it cannot be weighted")
        if s.truncated:
            raise ValueError(f"weighted word {s.word!r} lies past the {tokenizer.model_max_length}-token context")
        for p in s.positions:
            weights[p] = w
    stray = [k for k, w in enumerate(part.weights) if w != 1.0 and k not in covered and not part.text[k].isspace()]
    if stray and not any(part.weights[s.start] != 1.0 for s in spans):
        raise ValueError(f"a weight in {part.text!r} names no word (only punctuation)")
    return weights


def apply_token_weights(embeds, weights, mode: str = "a1111"):
    """(T, D) or (B, T, D) embeddings with row i scaled by weights[i] (see module docstring for `mode`)."""
    import torch

    if mode not in MODES:
        raise ValueError(f"unknown weighting mode {mode!r}; allowed: {', '.join(MODES)}")
    w = torch.as_tensor(weights, dtype=embeds.dtype, device=embeds.device)
    if w.shape[-1] != embeds.shape[-2]:
        raise ValueError(f"{w.shape[-1]} weights for {embeds.shape[-2]} token rows")
    scaled = embeds * w[..., :, None]
    if mode == "a1111":
        before = embeds.mean(dim=(-2, -1), keepdim=True)
        after = scaled.mean(dim=(-2, -1), keepdim=True)
        scaled = scaled * (before / after)
    return scaled


def encode_weighted(tokenizer, text_encoder, prompts: str | list[str], mode: str = "a1111"):
    """(B, T, D) embeddings of weighted prompts (module docstring): parse all first, then encode."""
    import torch

    from t2ikit.text.encoder import encode_prompts

    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError(f"prompts must be a str or a non-empty list of str, got {prompts!r}")
    if mode not in MODES:
        raise ValueError(f"unknown weighting mode {mode!r}; allowed: {', '.join(MODES)}")
    parsed = [parse_weighted(p) for p in prompts]
    weights = [[token_weights(tokenizer, part) for part in pp.parts] for pp in parsed]  # all checks first
    out = []
    for pp, ws in zip(parsed, weights):
        embeds = encode_prompts(tokenizer, text_encoder, [part.text for part in pp.parts])  # (K, T, D)
        rows = torch.stack([apply_token_weights(e, w, mode) for e, w in zip(embeds, ws)])
        b = torch.tensor(pp.blend, dtype=rows.dtype, device=rows.device)
        out.append((rows * b[:, None, None]).sum(0) / b.sum())
    return torch.stack(out)


def generate_weighted(pipe, prompt: str | list[str], negative_prompt: str = "", seed: int = 0, n: int = 1,
                      steps: int | None = None, guidance: float | None = None, sampler: str | None = None,
                      mode: str = "a1111", hooks=None, decode: bool = True):
    """Images (N, 3, H, W) of weighted prompts on a T2IPipeline, seeded like `pipe.generate` (image k: seed+k)."""
    from t2ikit.analysis.runner import sample_embeds

    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    spec = pipe.make_spec([parse_weighted(p).plain or " " for p in prompts], None, steps, guidance, seed, n,
                          None, sampler)
    cond = encode_weighted(pipe.tokenizer, pipe.text_encoder, prompts, mode)  # (P, T, D)
    cond = cond.repeat_interleave(n, dim=0)
    return sample_embeds(pipe, cond, [seed + k for k in range(len(cond))], spec.steps, spec.guidance,
                         spec.sampler, negative_prompt=negative_prompt, hooks=hooks, decode=decode)


__all__ = [
    "MODES",
    "ParsedPrompt",
    "PromptSyntaxError",
    "WeightedText",
    "apply_token_weights",
    "encode_weighted",
    "generate_weighted",
    "parse_weighted",
    "token_weights",
]
