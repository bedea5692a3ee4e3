"""What parsing a prompt gives, in either syntax (AUTOMATIC1111's in `weighting`, compel's in
`compel_syntax`): the text with the syntax removed and each character's weight, the parts of a blend,
and the error a malformed prompt raises.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    breaks: tuple[int, ...] = ()  # indices of the characters of `text` (a space each) that stand for BREAK

    def runs(self) -> list[tuple[str, float]]:
        """[(text, weight)] runs of equal weight, in order."""
        out: list[tuple[str, float]] = []
        for ch, w in zip(self.text, self.weights):
            if out and out[-1][1] == w:
                out[-1] = (out[-1][0] + ch, w)
            else:
                out.append((ch, w))
        return out

    def segments(self) -> list[tuple[int, int]]:
        """[(start, end)] character ranges of the text between BREAKs (one range without BREAK)."""
        bounds = [-1, *self.breaks, len(self.text)]
        return [(a + 1, b) for a, b in zip(bounds, bounds[1:])]


@dataclass(frozen=True)
class ParsedPrompt:
    """One or more weighted texts and their blend weights (a single text has blend weight 1)."""

    parts: tuple[WeightedText, ...]
    blend: tuple[float, ...]
    normalize: bool = True  # blend: divide by sum(blend) (compel's `no_normalize` turns it off)
    fragments: tuple[tuple[tuple[str, float], ...], ...] | None = None  # compel: each part's (text, weight)

    @property
    def plain(self) -> str:
        """The first part's text: what an unweighted tool (the oracle, captions) reads."""
        return self.parts[0].text
