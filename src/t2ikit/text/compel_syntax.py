"""compel's prompt syntax and semantics (the `compel` package, damian0815/compel), written anew.

Syntax:

    word+  word++  word-  word--      the word's weight times 1.1 per + and 0.9 per - (no space before them)
    (some words)1.3  (words)+  "quoted words"--   a group's weight: a number, or a run of + or of -
    word.attend(1.3)  (words).attend(0.8)          the same, spelled out
    ((red)1.5 circle)0.8              nesting multiplies: red 1.2, circle 0.8
    ("a red circle", "a blue square").blend(0.7, 0.3)   a blend (the whole prompt); `no_normalize` as a
                                      last argument keeps the weights' sum
    \\( \\) \\"                          a literal parenthesis or quote (compel keeps other backslashes as text)

Reading follows compel's grammar: outside groups the prompt is split at whitespace and a piece that is
neither a weighted word nor a group is literal text (`foo(bar)` is text); inside a group, "," and "."
are pieces of their own and any other syntax character is an error. Where compel would read a malformed
group or quote as literal text (`a (red circle`) or build nothing (`()`), this raises PromptSyntaxError;
compel's `.and()`, `.swap()` and `withLora()` are errors too.

Semantics, those of compel's defaults (truncate at the context, DownweightMode.MASK, last hidden state):
adjacent pieces of equal weight merge into one fragment; each fragment is tokenized on its own and the
tokens are concatenated into one chunk (BOS + tokens + EOS + padding), cut at the context. With z the
encoding and z0 that of the empty prompt, row i becomes z0 + w_i (z_i - z0) where w_i != 1. Each fragment
of weight w < 1 is then removed softly: the prompt is encoded again with that fragment's tokens masked
out of the text encoder's attention (rows weighted the same way), and the result is the weighted mean of
the full embedding (weight 1) and each masked one (weight tan((1 - w) pi / 2)), so a fragment at 0.5 is
half-way to the prompt without it and one at 0 is gone. A blend is sum_k b_k E_k / sum_k b_k.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from decimal import Decimal

from t2ikit.text.prompt_syntax import ParsedPrompt, PromptSyntaxError, WeightedText
from t2ikit.text.recipe import Recipe, Row, blend_parts, chunk_row

PLUS_BASE = 1.1  # compel's attention_plus_base: "word+" multiplies by 1.1
MINUS_BASE = 0.9  # compel's attention_minus_base: "word-" multiplies by 0.9
MIN_DOWNWEIGHT = 1e-5  # compel clamps a fragment weight below 1 to this before tan((1 - w) pi / 2)
_SYNTAX = '()",.+-='  # compel's syntax characters
_WS = string.whitespace
_GROUP_NUMBER = re.compile(r"\d+\.\d*|\.\d+|\d+")  # a group's weight ("+" and "-" are read as runs first)
_BLEND_WEIGHT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)|-?\d+")
_OPERATOR = re.compile(r"\.(attend|swap|blend|and|add)\(")
_LORA = re.compile(r"(?:use|with)Lora\(")


@dataclass
class _Text:
    text: str  # with \( \) \" unescaped, as compel's Fragment
    start: int  # its span in the reader's string
    end: int


@dataclass
class _Weighted:
    weight: float
    children: list


def _unescape(text: str) -> str:
    return text.replace("\\(", "(").replace("\\)", ")").replace('\\"', '"')


class _Reader:
    """A recursive-descent reader of compel's grammar over one prompt."""

    def __init__(self, prompt: str):
        self.prompt = prompt
        # compel first writes a space after each comma followed by a non-space; `index` maps back
        after = {m.start() + 1 for m in re.finditer(r",(\S)", prompt)}
        chars, index = [], []
        for k, c in enumerate(prompt):
            if k in after:
                chars.append(" ")
                index.append(k)
            chars.append(c)
            index.append(k)
        index.append(len(prompt))
        self.s, self.index = "".join(chars), index

    def fail(self, message: str, k: int):
        raise PromptSyntaxError(message, self.prompt, self.index[min(k, len(self.s))])

    def skip_space(self, k: int, end: int) -> int:
        while k < end and self.s[k] in _WS:
            k += 1
        return k

    def word_end(self, k: int, end: int) -> int:
        """End of compel's `non_syntax_word` starting at k (k if there is none)."""
        s, j = self.s, k
        while j < end:
            c = s[j]
            if c == "\\" and j + 1 < end and s[j + 1] in _SYNTAX:
                j += 2
            elif c in "+-" and j + 1 < end and s[j + 1] not in _WS and s[j + 1] not in _SYNTAX:
                j += 1
            elif c not in _WS and c not in _SYNTAX:
                j += 1
            else:
                break
        return j

    def operator(self, k: int, end: int, numbers: bool) -> tuple[float, int] | None:
        """A weight written right after a target: a run of + or -, or (after a group) a number."""
        s = self.s
        if k < end and s[k] in "+-":
            j = k
            while j < end and s[j] == s[k]:
                j += 1
            return math.pow(PLUS_BASE if s[k] == "+" else MINUS_BASE, j - k), j
        if numbers:
            m = _GROUP_NUMBER.match(s, k, end)
            if m:
                return float(m.group()), m.end()
        return None

    def quoted(self, k: int, end: int) -> tuple[list, int]:
        s, j = self.s, k + 1
        while j < end and s[j] != '"':
            j += 2 if s[j] == "\\" and j + 1 < end and s[j + 1] == '"' else 1
        if j >= end:
            self.fail('\'"\' is never closed', k)
        if not s[k + 1:j].strip():
            self.fail("a quoted group holds no text", k)
        children, stop = self.items(k + 1, j, top=False)
        if stop != j:
            self.fail(f"{s[stop]!r} cannot stand inside a compel group", stop)
        return children, j + 1

    def group(self, k: int, end: int) -> tuple[list, int]:
        children, stop = self.items(k + 1, end, top=False)
        if stop >= end or self.s[stop] != ")":
            self.fail("'(' is never closed", k)
        if not children:
            self.fail("a group holds no text", k)
        return children, stop + 1

    def term(self, k: int, end: int, top: bool):
        """A target (quoted, group or word) with its weight, if any: (nodes, end) or None."""
        s = self.s
        if s[k] == '"':
            children, j = self.quoted(k, end)
        elif s[k] == "(":
            children, j = self.group(k, end)
        else:
            j = self.word_end(k, end)
            if j == k:
                return None
            children = [_Text(_unescape(s[k:j]), k, j)]
        is_group = s[k] in '"('
        m = _OPERATOR.match(s, j, end)
        if m:
            name = m.group(1)
            if name != "attend":
                what = "cross-attention control" if name == "swap" else "conjunction" if name != "blend" else ""
                self.fail(f"compel's .{name}() " + (f"({what}) is not supported" if what else
                                                   'must be the whole prompt: ("...", "...").blend(w1, w2)'), j)
            op = self.operator(self.skip_space(m.end(), end), end, numbers=True)
            close = self.skip_space(op[1], end) if op else m.end()
            if not op or close >= end or s[close] != ")":
                self.fail("malformed .attend(): expected .attend(NUMBER) or .attend(+)", m.end())
            return [_Weighted(op[0], children)], close + 1
        op = self.operator(j, end, numbers=is_group)
        if op:
            return [_Weighted(op[0], children)], op[1]
        if is_group or not top:
            return children, j
        return None  # outside groups a bare word belongs to a literal piece

    def items(self, k: int, end: int, top: bool) -> tuple[list, int]:
        s, nodes = self.s, []
        while True:
            k = self.skip_space(k, end)
            if k >= end:
                return nodes, k
            c = s[k]
            if c == ")":
                if top:
                    self.fail("')' closes no '('", k)
                return nodes, k
            if _LORA.match(s, k):
                self.fail("compel's withLora()/useLora() is not supported", k)
            found = self.term(k, end, top)
            if found:
                new, k = found
                nodes.extend(new)
            elif top:  # a literal piece: everything up to the next whitespace
                j = k
                while j < end and s[j] not in _WS:
                    j += 1
                nodes.append(_Text(_unescape(s[k:j]), k, j))
                k = j
            elif c in ",.":
                nodes.append(_Text(c, k, k + 1))
                k += 1
            else:
                self.fail(f"{c!r} cannot stand here inside a compel group (escape it or move it out)", k)

    def blend(self) -> ParsedPrompt | None:
        """The whole prompt as `(target, target, ...).blend(weights)`, or None if it is not a blend."""
        s, end = self.s, len(self.s)
        k = self.skip_space(0, end)
        if k >= end or s[k] != "(" or not re.search(r"\)\s*\.(blend|and|add)\(", s):
            return None
        if not re.search(r"\)\s*\.blend\(", s):
            self.fail("compel's .and() / .add() (conjunctions) are not supported", s.index("(", k))
        targets, k = [], k + 1
        while True:
            k = self.skip_space(k, end)
            if k < end and s[k] == '"':
                children, k = self.quoted(k, end)
            elif k < end and s[k] == "(":
                children, k = self.group(k, end)
            else:
                j = self.word_end(k, end)
                if j == k:
                    self.fail('a blend lists its prompts: ("...", "...").blend(w1, w2)', k)
                children, k = [_Text(_unescape(s[k:j]), k, j)], j
            targets.append(children)
            k = self.skip_space(k, end)
            if k < end and s[k] == ",":
                k += 1
                continue
            if k < end and s[k] == ")":
                break
            self.fail("expected ',' or ')' after a blended prompt", k)
        m = re.compile(r"\)\s*\.blend\s*\(([^)]*)\)\s*").match(s, k)
        if not m or m.end() != end:
            self.fail('expected ").blend(w1, w2, ...)" to end the prompt', k)
        args = [a.strip() for a in m.group(1).split(",")] if m.group(1).strip() else []
        normalize = not (args and args[-1] == "no_normalize")
        args = args if normalize else args[:-1]
        for a in args:
            if not _BLEND_WEIGHT.fullmatch(a):
                self.fail(f"malformed blend weight {a!r}", m.start(1))
        weights = tuple(float(a) for a in args) or (1.0,) * len(targets)
        if len(weights) != len(targets):
            self.fail(f"a blend of {len(targets)} prompts needs {len(targets)} weights, got {len(weights)}",
                      m.start(1))
        if normalize and sum(weights) == 0:
            self.fail("blend weights sum to 0", m.start(1))
        pieces = [self.flatten(t) for t in targets]
        return ParsedPrompt(tuple(self.plain(p) for p in pieces), weights, normalize,
                            tuple(_fuse(p) for p in pieces))

    def flatten(self, nodes: list, scale: float = 1.0, out: list | None = None) -> list[tuple[_Text, float]]:
        """[(text, weight)] in order; weights multiply from the outside in, as compel's flatten()."""
        out = [] if out is None else out
        for node in nodes:
            if isinstance(node, _Weighted):
                self.flatten(node.children, scale * node.weight, out)
            else:
                out.append((node, 1.0 * scale))
        return out

    def plain(self, pieces: list[tuple[_Text, float]]) -> WeightedText:
        """The pieces' text, a space between two where the prompt had whitespace or two words would merge."""
        text, weights, prev = "", [], None
        for node, w in pieces:
            if not node.text:
                continue
            if prev is not None:
                gap = self.s[prev[0].end:node.start]
                if any(c in _WS for c in gap) or (text[-1].isalnum() and node.text[0].isalnum()):
                    text += " "
                    weights.append(w if w == prev[1] else 1.0)
            text += node.text
            weights += [w] * len(node.text)
            prev = (node, w)
        return WeightedText(text, tuple(weights))

    def parse(self) -> ParsedPrompt:
        if not self.s.strip():
            return ParsedPrompt((WeightedText("", ()),), (1.0,), fragments=((("", 1.0),),))
        blend = self.blend()
        if blend is not None:
            return blend
        nodes, _ = self.items(0, len(self.s), top=True)
        pieces = self.flatten(nodes)
        return ParsedPrompt((self.plain(pieces),), (1.0,), fragments=(_fuse(pieces),))


def _fuse(pieces: list[tuple[_Text, float]]) -> tuple[tuple[str, float], ...]:
    """Adjacent pieces of equal weight joined by a space, as compel's fuse_fragments()."""
    out: list[tuple[str, float]] = []
    for node, w in pieces:
        if out and out[-1][1] == w:
            out[-1] = (out[-1][0] + " " + node.text, w)
        else:
            out.append((node.text, w))
    return tuple(out)


def parse_compel(prompt: str) -> ParsedPrompt:
    """Parse compel's syntax (module docstring): each part's plain text and its fused (text, weight) fragments."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    return _Reader(prompt).parse()


# ----------------------------------------------------------------------------------------------------
# Embeddings


def _part_rows(tokenizer, fragments) -> tuple[Row, list[float], list[tuple[Row, float]]]:
    """The full row, its per-position weights, and (masked row, lerp weight) of each fragment below 1."""
    m = tokenizer.model_max_length
    size = m - 2
    frag_ids = [tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"][:size] for t, _ in fragments]
    ids, ws = [], []
    for f, (_, w) in zip(frag_ids, fragments):
        ids += f
        ws += [float(w)] * len(f)
    ids, ws = ids[:size], ws[:size]
    full = chunk_row(tokenizer, ids)
    row_w = [1.0, *ws, 1.0] + [1.0] * (m - len(ws) - 2)
    masked, pos = [], 1  # pos: the row position of the next fragment (0 is BOS)
    for f, (_, w) in zip(frag_ids, fragments):
        if not f:
            continue
        if pos >= m - 1:
            break  # past the context
        start, end = pos, min(pos + len(f) - 1, m - 1)  # compel's range of a fragment cut by the context ends at EOS
        pos = end + 1
        if w < 1:
            mask = [1] * m  # compel's padding_attention_mask_value is 1
            mask[start:end + 1] = [0] * (end + 1 - start)
            lerp = math.tan((1.0 - max(MIN_DOWNWEIGHT, w)) * math.pi / 2)
            masked.append((Row(full.ids, tuple(mask), explicit=True), lerp))
    return full, row_w, masked


def compel_recipe(tokenizer, parsed: ParsedPrompt) -> Recipe:
    """The rows and combination of compel's embedding of a parsed prompt (module docstring)."""
    parts = [_part_rows(tokenizer, fragments) for fragments in parsed.fragments]
    rows = [r for full, _, masked in parts for r in [full, *(row for row, _ in masked)]]

    def combine(embeds, empty):
        import torch

        out, k = [], 0
        for full, row_w, masked in parts:
            group = embeds[k:k + 1 + len(masked)]  # (1 + masked, M, D)
            k += 1 + len(masked)
            if any(w != 1.0 for w in row_w):
                w = torch.tensor(row_w, dtype=torch.float32, device=group.device)[None, :, None]
                z0 = empty()
                group = torch.where(w == 1, group, z0 + (group - z0) * w)
            if masked:
                lerp = torch.tensor([1.0] + [x for _, x in masked], dtype=group.dtype, device=group.device)
                group = (group * (lerp / lerp.sum())[:, None, None]).sum(0, keepdim=True)
            out.append(group[0].to(embeds.dtype))
        return blend_parts(out, parsed.blend, parsed.normalize)

    return Recipe(rows, 1, combine)


# ----------------------------------------------------------------------------------------------------
# Writing compel's syntax (for edited texts)


def _number(w: float) -> str:
    text = repr(float(w))
    return format(Decimal(text), "f") if "e" in text else text


def _escape(text: str) -> str:
    return re.sub(r'([()"])', r"\\\1", text)


def _essence(part: WeightedText) -> tuple:
    """What tokenization sees: the non-space characters with their weights, and the words."""
    kept = [(c, w) for c, w in zip(part.text, part.weights) if not c.isspace()]
    return kept, re.findall(r"\w+", part.text)


def format_compel(part: WeightedText) -> str:
    """A compel prompt that reads back as `part` (up to whitespace between pieces); ValueError if none does."""
    out = []
    runs = part.runs()
    for k, (run, w) in enumerate(runs):
        if w == 1.0 or not run.strip():
            out.append(_escape(run))
            continue
        core = run.strip()
        lead, tail = run[:len(run) - len(run.lstrip())], run[len(run.rstrip()):]
        if not tail and k + 1 < len(runs):
            tail = " "  # so the next text cannot extend the number
        out.append(f"{lead}({_escape(core)}){_number(w)}{tail}")
    text = "".join(out)
    back = parse_compel(text)
    if len(back.parts) != 1 or _essence(back.parts[0]) != _essence(part):
        raise ValueError(f"cannot write {part.text!r} with its weights in compel's syntax")
    return text


__all__ = ["MINUS_BASE", "PLUS_BASE", "compel_recipe", "format_compel", "parse_compel"]
