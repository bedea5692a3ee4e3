"""Prompt weighting: AUTOMATIC1111's `(word:1.3)` syntax and compel's `word+`, for prompts and negatives.

Modes (`MODES`; `DEFAULT_WEIGHTING` is "a1111"):

    "a1111"     AUTOMATIC1111's syntax (below); rows scaled by their weights, then the chunk's mean restored
    "multiply"  AUTOMATIC1111's syntax; rows scaled by their weights only (A1111's "No norm" emphasis)
    "compel"    compel's syntax and semantics (`t2ikit.text.compel_syntax`): equals `compel.Compel(...)(prompt)`
    "none"      no syntax: the text is read literally, exactly as `encode_prompts` encodes it

AUTOMATIC1111 syntax ("a1111" and "multiply"):

    (text:1.3)        the words of `text` get weight 1.3
    (text)            weight x 1.1 (BARE_PARENS_WEIGHT)
    [text]            weight / 1.1 (SQUARE_BRACKETS_WEIGHT)
    ((red:2) circle:1.5)   nesting multiplies: red 3.0, circle 1.5
    \\( \\) \\[ \\] \\: \\\\   a literal bracket, colon or backslash (a backslash before anything else is dropped)
    BREAK             (upper case, a word of its own) ends the current chunk, padded, and starts a new one;
                      \\BREAK is the word
    ("a red circle", "a blue square").blend(0.7, 0.3)   a blend of prompts (each may carry weights)

A `:` outside parentheses is text. A1111's per-step prompt editing `[a:b:0.5]` and alternation `[a|b]`
are errors here (this module makes one embedding per prompt, not one per step), and so are unbalanced
brackets, a bad or empty weight and an empty group: `PromptSyntaxError`, which prints the prompt with a
caret under the offending character.

Semantics. The text with the syntax removed is tokenized as a whole (weights do not change what the text
encoder reads; a weight boundary inside a word or token is an error) and each token gets the weight of
its characters (A1111 tokenizes each run of equal weight on its own: the same tokens unless a weight
boundary falls inside a run of punctuation). With a BPE tokenizer (a real CLIP one), the tokens are cut into chunks of
model_max_length - 2 = 75 as AUTOMATIC1111 does (a full chunk moves the text after its last comma, if
within COMMA_BACKTRACK tokens, to the next one; BREAK ends a chunk); each chunk is encoded on its own as
BOS + tokens + EOS + padding and the chunks are concatenated along the token axis (T = 77 k). The
word-level tokenizer of the shipped model (`build_tokenizer`) has one context: longer prompts are cut
there (`check_weighted_prompt` warns and names the dropped words) and BREAK is an error. Then each token's
embedding row e_i (the last hidden state the UNet cross-attends to) is scaled by its weight w_i:

    "multiply":  e_i <- w_i * e_i
    "a1111":     e_i <- w_i * e_i, then every row of the chunk times mean(e) / mean(e')   (A1111's
                 `EmphasisOriginal` restores the mean after scaling; here per prompt and chunk, so a batch
                 equals its items)

Since the UNet's cross-attention key and value projections are linear, scaling e_i scales both the
token's key (how strongly image tokens attend to it) and its value (what it contributes). A blend is the
weighted mean sum_k b_k E_k / sum_k b_k of its parts' embeddings. `encode_prompt_pair` pads prompts and
negatives with fewer chunks by chunks of the empty prompt, as A1111 does, so all share one T.
"""

from __future__ import annotations

import math
import re
import warnings

from t2ikit.text.check import PromptWarning, check_prompt
from t2ikit.text.compel_syntax import compel_recipe, format_compel, parse_compel
from t2ikit.text.prompt_syntax import ParsedPrompt, PromptSyntaxError, WeightedText
from t2ikit.text.recipe import Recipe, Row, blend_parts, chunk_row
from t2ikit.text.spans import _WORD
from t2ikit.text.tokenizer import known_words

BARE_PARENS_WEIGHT = 1.1  # AUTOMATIC1111: "(word)" multiplies the weight by 1.1
SQUARE_BRACKETS_WEIGHT = 1 / 1.1  # AUTOMATIC1111: "[word]" divides it by 1.1
COMMA_BACKTRACK = 20  # AUTOMATIC1111's default `comma_padding_backtrack`, in tokens
MODES = ("a1111", "multiply", "compel", "none")
DEFAULT_WEIGHTING = "a1111"
ROW_MODES = ("a1111", "multiply")  # the modes of A1111's syntax: rows scaled by weight (`apply_token_weights`)
_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*")


# ----------------------------------------------------------------------------------------------------
# Parsing AUTOMATIC1111's syntax


def _check_weight(value: float, prompt: str, pos: int, what: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise PromptSyntaxError(f"{what} must be a finite number >= 0, got {value}", prompt, pos)
    return value


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _parse_weighted(prompt: str, offset: int = 0, full: str | None = None) -> WeightedText:
    """Parse one prompt of the A1111 syntax; positions in errors are offset into `full`."""
    full = prompt if full is None else full

    def fail(message: str, i: int):
        raise PromptSyntaxError(message, full, offset + i)

    chars: list[str] = []
    weights: list[float] = []
    breaks: list[int] = []
    stack: list[tuple[str, int, int]] = []  # (bracket, index into chars where its group starts, its position)
    i, n = 0, len(prompt)
    while i < n:
        c = prompt[i]
        if c == "\\":
            if i + 1 == n:
                fail("a backslash at the end escapes nothing", i)
            chars.append(prompt[i + 1])
            weights.append(1.0)
            i += 2
            continue
        if (c == "B" and prompt.startswith("BREAK", i) and (i == 0 or not _is_word_char(prompt[i - 1]))
                and (i + 5 == n or not _is_word_char(prompt[i + 5]))):
            floor = max([start for _, start, _ in stack] + [breaks[-1] + 1 if breaks else 0])
            while len(chars) > floor and chars[-1].isspace():  # A1111 drops the whitespace around BREAK
                chars.pop()
                weights.pop()
            breaks.append(len(chars))
            chars.append(" ")
            weights.append(1.0)
            i += 5
            while i < n and prompt[i].isspace():
                i += 1
            continue
        if c in "([":
            stack.append((c, len(chars), i))
            i += 1
            continue
        inner = stack[-1][0] if stack else None
        if inner == "[" and c in ":|":
            fail(f"'{c}' inside [...] is A1111's per-step prompt editing ([a:b:when]) or alternation ([a|b]), "
                 f"which one embedding per prompt cannot express; escape it as '\\{c}'", i)
        if c in ")]" or (c == ":" and inner == "("):
            opener = "(" if c in "):" else "["
            if inner is None:
                fail(f"'{c}' closes no '{opener}'", i)
            if inner != opener:
                fail(f"'{c}' cannot close the '{inner}' at character {offset + stack[-1][2]}", i)
            _, start, open_pos = stack.pop()
            if c == ":":
                m = _NUMBER.match(prompt, i + 1)
                end = m.end() if m else i + 1
                if not m or end >= n or prompt[end] != ")":
                    fail("malformed weight: expected '(text:NUMBER)'", i + 1)
                weight = _check_weight(float(m.group(1)), full, offset + i + 1, "a weight")
                i = end + 1
            else:
                weight = BARE_PARENS_WEIGHT if c == ")" else SQUARE_BRACKETS_WEIGHT
                i += 1
            if not "".join(chars[start:]).strip():
                fail("a weight group holds no text", open_pos)
            for k in range(start, len(chars)):
                weights[k] *= weight
            continue
        chars.append(c)
        weights.append(1.0)
        i += 1
    if stack:
        fail(f"'{stack[-1][0]}' is never closed", stack[-1][2])
    return WeightedText("".join(chars), tuple(weights), tuple(breaks))


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
    """Parse the A1111 syntax (module docstring); PromptSyntaxError points at a malformed character."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    blend = _parse_blend(prompt)
    if blend is not None:
        return blend
    return ParsedPrompt((_parse_weighted(prompt),), (1.0,))


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown weighting mode {mode!r}; allowed: {', '.join(MODES)}")
    return mode


def parse_prompt(prompt: str, mode: str = DEFAULT_WEIGHTING) -> ParsedPrompt:
    """`prompt` read with the syntax of `mode` (module docstring)."""
    _check_mode(mode)
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if mode == "none":
        return ParsedPrompt((WeightedText(prompt, (1.0,) * len(prompt)),), (1.0,))
    if mode == "compel":
        return parse_compel(prompt)
    return parse_weighted(prompt)


def plain_text(prompt: str, mode: str = DEFAULT_WEIGHTING) -> str:
    """The text of `prompt` with the syntax of `mode` removed: what the oracle and the parsers read.

    BREAK becomes a space; of a blend, the first prompt's text.
    """
    return parse_prompt(prompt, mode).plain


def check_weighting(prompts: list[str], mode: str = DEFAULT_WEIGHTING) -> list[ParsedPrompt]:
    """Parse every prompt with the syntax of `mode`, before any compute; PromptSyntaxError on the first bad one."""
    _check_mode(mode)
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise TypeError(f"prompts must be a list of str, got {type(prompts).__name__}")
    return [parse_prompt(p, mode) for p in prompts]


# ----------------------------------------------------------------------------------------------------
# Token weights and chunks


def encodes_in_chunks(tokenizer, mode: str = DEFAULT_WEIGHTING) -> bool:
    """True if `mode` encodes long prompts in chunks on this tokenizer (A1111 syntax on a BPE tokenizer).

    The word-level tokenizer of `build_tokenizer` has one context (its model never saw another chunk);
    compel truncates, as compel does by default; "none" truncates, as `encode_prompts` does.
    """
    return mode in ROW_MODES and known_words(tokenizer) is None


def _check_word_weights(tokenizer, part: WeightedText) -> None:
    """ValueError if a weight boundary splits a word, or a weight can have no effect (see `token_weights`)."""
    vocab = known_words(tokenizer)
    weighted_word = False
    for m in _WORD.finditer(part.text):
        ws = set(part.weights[m.start():m.end()])
        if len(ws) > 1:
            raise ValueError(f"a weight boundary splits the word {m.group()!r} of {part.text!r}; weight whole words")
        if ws.pop() != 1.0:
            weighted_word = True
            if vocab is not None and m.group().lower() not in vocab:
                raise ValueError(f"weighted word {m.group()!r} is not in the model's vocabulary; it cannot be "
                                 "weighted")
    if not weighted_word and any(w != 1.0 and not c.isspace() for c, w in zip(part.text, part.weights)):
        raise ValueError(f"a weight in {part.text!r} names no word (only punctuation)")


def _segment_tokens(tokenizer, part: WeightedText, start: int, end: int) -> tuple[list[int], list[float]]:
    """Token ids of part.text[start:end] (no BOS/EOS, not truncated) and each token's weight."""
    text, weights = part.text[start:end], part.weights[start:end]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    token_weights = []
    for s, e in enc["offset_mapping"]:
        ws = set(weights[s:e]) or {1.0}
        if len(ws) > 1:
            raise ValueError(f"a weight boundary splits the token {text[s:e]!r} of {part.text!r}; weight whole "
                             "tokens")
        token_weights.append(ws.pop())
    return list(enc["input_ids"]), token_weights


def _a1111_chunks(tokenizer, segments: list[tuple[list[int], list[float]]]) -> list[tuple[list[int], list[float]]]:
    """AUTOMATIC1111's chunking (`sd_hijack_clip.tokenize_line`): (ids, weights) of each chunk, no BOS/EOS."""
    size = tokenizer.model_max_length - 2
    comma = tokenizer.get_vocab().get(",</w>")
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    ws: list[float] = []
    last_comma = -1
    for k, (seg_ids, seg_ws) in enumerate(segments):
        if k:  # BREAK: end the chunk, even an empty one (as A1111)
            chunks.append((ids, ws))
            ids, ws, last_comma = [], [], -1
        for t, w in zip(seg_ids, seg_ws):
            if t == comma:
                last_comma = len(ids)
            elif len(ids) == size and last_comma != -1 and len(ids) - last_comma <= COMMA_BACKTRACK:
                cut = last_comma + 1  # the text after the last comma moves to the next chunk
                chunks.append((ids[:cut], ws[:cut]))
                ids, ws, last_comma = ids[cut:], ws[cut:], -1
            if len(ids) == size:
                chunks.append((ids, ws))
                ids, ws, last_comma = [], [], -1
            ids.append(t)
            ws.append(w)
    if ids or not chunks:
        chunks.append((ids, ws))
    return chunks


def _a1111_part_chunks(tokenizer, part: WeightedText, chunked: bool) -> list[tuple[list[int], list[float]]]:
    _check_word_weights(tokenizer, part)
    segments = [_segment_tokens(tokenizer, part, a, b) for a, b in part.segments()]
    if chunked:
        return _a1111_chunks(tokenizer, segments)
    if len(segments) > 1:
        raise ValueError(f"BREAK starts a new chunk of tokens, but this tokenizer (a word-level vocabulary, "
                         f"{tokenizer.model_max_length}-token context) encodes one chunk; remove BREAK from "
                         f"{part.text!r}")
    size = tokenizer.model_max_length - 2
    return [(segments[0][0][:size], segments[0][1][:size])]


def token_weights(tokenizer, part: WeightedText) -> list[float]:
    """One weight per encoded position of the first chunk (model_max_length): each token's weight, 1 elsewhere.

    ValueError if a weight boundary splits a word or token, a weighted word is unknown to a word-level
    vocabulary, or a weight names only punctuation.
    """
    _, ws = _a1111_part_chunks(tokenizer, part, encodes_in_chunks(tokenizer))[0]
    return [1.0, *ws, 1.0] + [1.0] * (tokenizer.model_max_length - len(ws) - 2)


def apply_token_weights(embeds, weights, mode: str = "a1111"):
    """(T, D) or (B, T, D) embeddings with row i scaled by weights[i] (see module docstring for `mode`)."""
    import torch

    if mode not in ROW_MODES:
        raise ValueError(f"unknown weighting mode {mode!r} for scaling rows; allowed: {', '.join(ROW_MODES)}")
    w = torch.as_tensor(weights, dtype=embeds.dtype, device=embeds.device)
    if w.shape[-1] != embeds.shape[-2]:
        raise ValueError(f"{w.shape[-1]} weights for {embeds.shape[-2]} token rows")
    scaled = embeds * w[..., :, None]
    if mode == "a1111":
        before = embeds.mean(dim=(-2, -1), keepdim=True)
        after = scaled.mean(dim=(-2, -1), keepdim=True)
        scaled = scaled * (before / after)
    return scaled


# ----------------------------------------------------------------------------------------------------
# Encoding: each prompt is a recipe of text-encoder rows (one per chunk, more for compel's downweights)


def _pad_chunks(embeds, chunks: int, empty):
    """(k M, D) -> (chunks M, D): append chunks of the empty prompt (A1111's and compel's padding)."""
    import torch

    m = empty().shape[0]
    missing = chunks - embeds.shape[0] // m
    return embeds if missing <= 0 else torch.cat([embeds, empty().repeat(missing, 1)])


def _plain_recipe(tokenizer, text: str) -> Recipe:
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"][:tokenizer.model_max_length - 2]
    return Recipe([chunk_row(tokenizer, ids)], 1, lambda embeds, empty: embeds[0])


def _a1111_recipe(tokenizer, parsed: ParsedPrompt, mode: str) -> Recipe:
    chunked = encodes_in_chunks(tokenizer, mode)
    parts = [_a1111_part_chunks(tokenizer, part, chunked) for part in parsed.parts]
    rows = [chunk_row(tokenizer, ids) for chunks in parts for ids, _ in chunks]
    n_chunks = max(len(chunks) for chunks in parts)

    def combine(embeds, empty):
        import torch

        out, k = [], 0
        for chunks in parts:
            pieces = []
            for ids, ws in chunks:
                e = embeds[k]  # (M, D)
                k += 1
                if any(w != 1.0 for w in ws):
                    row_w = [1.0, *ws, 1.0] + [1.0] * (e.shape[0] - len(ws) - 2)
                    e = apply_token_weights(e, row_w, mode)
                pieces.append(e)
            out.append(_pad_chunks(torch.cat(pieces) if len(pieces) > 1 else pieces[0], n_chunks, empty))
        return blend_parts(out, parsed.blend, parsed.normalize)

    return Recipe(rows, n_chunks, combine)


def make_recipe(tokenizer, parsed: ParsedPrompt, mode: str, text: str) -> Recipe:
    """The rows and the combination that make the embedding of a parsed prompt (tokenizer checks, no compute)."""
    if mode == "none":
        return _plain_recipe(tokenizer, text)
    if mode == "compel":
        return compel_recipe(tokenizer, parsed)
    return _a1111_recipe(tokenizer, parsed, mode)


def encode_rows(text_encoder, rows: list[Row]):
    """(len(rows), M, D) last hidden states; rows without an explicit mask run as one `encode_prompts` batch."""
    import torch

    use_mask = getattr(text_encoder.config, "use_attention_mask", False)
    device = text_encoder.device
    out = [None] * len(rows)
    with torch.no_grad():
        for explicit in (False, True):
            idx = [k for k, r in enumerate(rows) if r.explicit == explicit]
            if not idx:
                continue
            ids = torch.tensor([rows[k].ids for k in idx], dtype=torch.long)
            mask = torch.tensor([rows[k].mask for k in idx], dtype=torch.long).to(device) \
                if explicit or use_mask else None
            hidden = text_encoder(ids.to(device), attention_mask=mask)[0].to(text_encoder.dtype)  # (R, M, D)
            for j, k in enumerate(idx):
                out[k] = hidden[j]
    return torch.stack(out)


def _as_prompt_list(prompts, name: str) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{name} must be a str or a non-empty list of str, got {prompts!r}")
    return list(prompts)


def encode_prompt_pair(tokenizer, text_encoder, prompts: list[str], negatives: list[str] | None,
                       mode: str = "a1111"):
    """(cond (N, T, D), uncond (N, T, D) or None when `negatives` is None, plain text of each prompt).

    Every prompt and negative is read with the syntax of `mode` (module docstring) and checked before any
    compute. Each distinct text is encoded once: the prompts' rows in one batch, then the negatives' not
    already encoded, so unweighted one-chunk prompts equal `encode_prompts(tokenizer, text_encoder,
    prompts)` bitwise. Prompts and negatives with fewer chunks than the longest are padded with chunks
    of the empty prompt, so cond and uncond share T.
    """
    import torch

    prompts = _as_prompt_list(prompts, "prompts")
    if negatives is not None:
        negatives = _as_prompt_list(negatives, "negatives")
        if len(negatives) != len(prompts):
            raise ValueError(f"negatives has {len(negatives)} entries for {len(prompts)} prompts")
    texts = list(dict.fromkeys(prompts + (negatives or [])))
    parsed = dict(zip(texts, check_weighting(texts, mode)))
    recipes = {t: make_recipe(tokenizer, parsed[t], mode, t) for t in texts}  # tokenizer checks, before compute

    empty_cache = []

    def empty():  # (M, D): the empty prompt's chunk, encoded once and only if needed
        if not empty_cache:
            empty_cache.append(encode_rows(text_encoder, [chunk_row(tokenizer, [])])[0])
        return empty_cache[0]

    embeds: dict[str, torch.Tensor] = {}
    for side in (prompts, negatives or []):
        todo = [t for t in dict.fromkeys(side) if t not in embeds]
        if not todo:
            continue
        rows = [r for t in todo for r in recipes[t].rows]
        hidden = encode_rows(text_encoder, rows)  # (R, M, D)
        k = 0
        for t in todo:
            n = len(recipes[t].rows)
            embeds[t] = recipes[t].combine(hidden[k:k + n], empty)
            k += n
    chunks = max(recipes[t].chunks for t in texts)
    cond = torch.stack([_pad_chunks(embeds[p], chunks, empty) for p in prompts])
    uncond = None if negatives is None else torch.stack([_pad_chunks(embeds[p], chunks, empty) for p in negatives])
    return cond, uncond, [parsed[p].plain for p in prompts]


def encode_weighted(tokenizer, text_encoder, prompts: str | list[str], mode: str = "a1111"):
    """(B, T, D) embeddings of weighted prompts (`encode_prompt_pair` without negatives)."""
    return encode_prompt_pair(tokenizer, text_encoder, _as_prompt_list(prompts, "prompts"), None, mode)[0]


def check_token_aligned(tokenizer, prompt: str, mode: str, what: str = "this") -> str:
    """The plain text of `prompt` if its weighted embedding has the plain text's token layout, else ValueError.

    Token-aligned techniques (Prompt-to-Prompt's word alignment, attention masks of edited words) read
    token positions off the plain text; a weighted prompt keeps them when it is one chunk, one text (no
    blend, no BREAK) and its fragments tokenize as the whole text does.
    """
    parsed = parse_prompt(prompt, mode)
    recipe = make_recipe(tokenizer, parsed, mode, prompt)
    if len(parsed.parts) > 1 or recipe.chunks > 1:
        raise ValueError(f"{what} reads each prompt as one {tokenizer.model_max_length}-token text: {prompt!r} is "
                         f"{'a blend' if len(parsed.parts) > 1 else 'several chunks (BREAK or past the context)'}")
    plain = parsed.plain
    ids = tokenizer(plain, add_special_tokens=True, truncation=True, verbose=False)["input_ids"]
    if tuple(recipe.rows[0].ids[:len(ids)]) != tuple(ids):
        raise ValueError(f"{what} aligns the tokens of the plain text {plain!r}, and the weighting of {prompt!r} "
                         "tokenizes it differently; put spaces around the weighted words")
    return plain


def check_weighted_prompt(tokenizer, prompt: str, mode: str = DEFAULT_WEIGHTING, warn: bool = True):
    """`check_prompt` of the plain text of `prompt`: empty, unknown words, and the words past the context
    where `mode` cuts there (not where it encodes in chunks). Each problem a PromptWarning if `warn`."""
    check = check_prompt(tokenizer, plain_text(prompt, mode), warn=False)
    if encodes_in_chunks(tokenizer, mode) and check.dropped_words:
        dropped = f"these words are dropped: {' '.join(check.dropped_words)!r}"
        check.messages = [m for m in check.messages if not m.endswith(dropped)]
        check.dropped_words = []
    if warn:
        for message in check.messages:
            warnings.warn(message, PromptWarning, stacklevel=2)
    return check


# ----------------------------------------------------------------------------------------------------
# Editing the text of a weighted prompt (analyses drop and substitute words, weights kept)


def _escape_a1111(text: str) -> str:
    out = re.sub(r"([\\()\[\]:])", r"\\\1", text)
    return re.sub(r"(?<!\w)BREAK(?!\w)", r"\\BREAK", out)  # the word BREAK, not a chunk break


def _format_a1111(part: WeightedText) -> str:
    out, k = [], 0
    breaks = set(part.breaks)
    while k < len(part.text):
        if k in breaks:
            out.append(" BREAK ")
            k += 1
            continue
        j = k
        while j < len(part.text) and j not in breaks and part.weights[j] == part.weights[k]:
            j += 1
        run, w = part.text[k:j], part.weights[k]
        if w == 1.0 or not run.strip():
            out.append(_escape_a1111(run))
        else:
            core = run.strip()
            lead = run[:len(run) - len(run.lstrip())]
            tail = run[len(run.rstrip()):]
            out.append(f"{lead}({_escape_a1111(core)}:{w!r}){tail}")
        k = j
    return "".join(out)


def edit_prompt(prompt: str, mode: str, edits: list[tuple[int, int, str]], collapse_spaces: bool = False) -> str:
    """`prompt` (syntax of `mode`) with its plain text edited, the other characters' weights kept.

    `edits`: (start, end, replacement) character ranges of `plain_text(prompt, mode)`, not overlapping; a
    replacement takes the weight of the first character it replaces. `collapse_spaces`: whitespace runs
    become one space and the ends are stripped (as `analysis.sensitivity.drop_words`). A weighted run left
    with no word loses its weight (a weight on punctuation alone is an error). ValueError for a blend.
    """
    parsed = parse_prompt(prompt, mode)
    if len(parsed.parts) > 1:
        raise ValueError(f"cannot edit the words of a blend: {prompt!r}")
    part = parsed.parts[0]
    chars = list(part.text)
    weights = list(part.weights)
    is_break = [False] * len(chars)
    for b in part.breaks:
        is_break[b] = True
    for start, end, new in sorted(edits, reverse=True):
        if not 0 <= start <= end <= len(chars):
            raise ValueError(f"edit ({start}, {end}) is outside the text {part.text!r}")
        w = weights[start] if start < end else 1.0
        chars[start:end] = list(new)
        weights[start:end] = [w] * len(new)
        is_break[start:end] = [False] * len(new)
    if collapse_spaces:
        keep = []
        for k, c in enumerate(chars):
            if c.isspace() and keep and chars[keep[-1]].isspace():
                is_break[keep[-1]] = is_break[keep[-1]] or is_break[k]
                continue
            keep.append(k)
        while keep and chars[keep[0]].isspace() and not is_break[keep[0]]:
            keep.pop(0)
        while keep and chars[keep[-1]].isspace() and not is_break[keep[-1]]:
            keep.pop()
        chars = [" " if chars[k].isspace() else chars[k] for k in keep]
        weights = [weights[k] for k in keep]
        is_break = [is_break[k] for k in keep]
    if mode == "none":
        return "".join(chars)
    text = "".join(chars)
    weights = list(weights)
    k = 0
    while k < len(text):  # a weighted run without a word keeps no weight
        j = k
        while j < len(text) and weights[j] == weights[k]:
            j += 1
        if weights[k] != 1.0 and not _WORD.search(text[k:j]):
            weights[k:j] = [1.0] * (j - k)
        k = j
    edited = WeightedText(text, tuple(weights), tuple(k for k, b in enumerate(is_break) if b))
    if mode == "compel":
        return format_compel(edited)
    out = _format_a1111(edited)
    back = parse_weighted(out).parts[0]  # must read back as the edited text (a space's weight does not matter)
    if (back.text, back.breaks) != (edited.text, edited.breaks) or any(
            a != b for c, a, b in zip(edited.text, edited.weights, back.weights) if not c.isspace()):
        raise ValueError(f"cannot write the edited text of {prompt!r} back in A1111 syntax")
    return out


__all__ = ["check_token_aligned", 
    "BARE_PARENS_WEIGHT",
    "COMMA_BACKTRACK",
    "DEFAULT_WEIGHTING",
    "MODES",
    "ParsedPrompt",
    "PromptSyntaxError",
    "Recipe",
    "Row",
    "SQUARE_BRACKETS_WEIGHT",
    "WeightedText",
    "apply_token_weights",
    "check_weighted_prompt",
    "check_weighting",
    "edit_prompt",
    "encode_prompt_pair",
    "encode_weighted",
    "encodes_in_chunks",
    "parse_prompt",
    "parse_weighted",
    "plain_text",
    "token_weights",
]
