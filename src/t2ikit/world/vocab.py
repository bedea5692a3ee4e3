"""The closed vocabulary of Shapes World: colours, shapes, sizes, relations, styles and their words.

Every other part of the world (sampling, rendering, captions, the oracle) reads its names from here, so
adding a colour or a shape is a change to this file alone.
"""

from __future__ import annotations

# Object colours, RGB in [0, 1]. Chosen so that no colour lies on the blend line between another colour
# and a background (white, black, gray): blurred edges, which are such blends, never read as another
# colour. (Pink is (1, .4, .75), not a tint of red; brown is absent because it is a dark orange.)
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "orange": (1.0, 0.55, 0.0),
    "yellow": (1.0, 0.9, 0.0),
    "green": (0.0, 0.7, 0.0),
    "cyan": (0.0, 0.85, 0.9),
    "blue": (0.0, 0.2, 1.0),
    "purple": (0.55, 0.0, 0.85),
    "pink": (1.0, 0.4, 0.75),
}

BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "gray": (0.5, 0.5, 0.5),
}
DEFAULT_BACKGROUND = "white"

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
PLURAL_SHAPES: dict[str, str] = {s: s + "s" for s in SHAPES}

# Object extent (bounding-box side) in pixels at the reference resolution; scaled for other sizes.
REFERENCE_RESOLUTION = 64
SIZES: dict[str, tuple[int, int]] = {"small": (10, 12), "large": (18, 22)}
SIZE_THRESHOLD = 15.0  # extent (px at 64) between the small and large ranges, used by the oracle

FILLS: tuple[str, ...] = ("filled", "outlined")
DEFAULT_FILL = "filled"
OUTLINE_WIDTH = 3  # px at the reference resolution

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

MAX_OBJECTS = 4
NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}

# Colour-shape pairs that never appear in the training split: every colour once, every shape twice.
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    {
        ("red", "triangle"),
        ("orange", "circle"),
        ("yellow", "square"),
        ("green", "diamond"),
        ("cyan", "triangle"),
        ("blue", "circle"),
        ("purple", "square"),
        ("pink", "diamond"),
    }
)

# Synonyms the caption grammar writes and the parser reads, each mapped to its canonical name.
SIZE_WORDS: dict[str, str] = {"small": "small", "little": "small", "large": "large", "big": "large"}
BACKGROUND_WORDS: dict[str, str] = {"white": "white", "black": "black", "gray": "gray", "grey": "gray"}
RELATION_PHRASES: dict[str, str] = {
    "to the left of": "left of",
    "on the left of": "left of",
    "left of": "left of",
    "to the right of": "right of",
    "on the right of": "right of",
    "right of": "right of",
    "above": "above",
    "over": "above",
    "below": "below",
    "under": "below",
    "beneath": "below",
}
FILL_WORDS: dict[str, str] = {"filled": "filled", "solid": "filled", "outlined": "outlined"}
FILL_PHRASES: dict[str, str] = {
    "drawn in outline": "outlined",
    "as outlines": "outlined",
    "outlined": "outlined",
    "as solid shapes": "filled",
    "filled in": "filled",
    "solid": "filled",
}
BACKGROUND_PHRASES: tuple[str, ...] = ("on a {} background", "against a {} background", "with a {} background")

# Synonyms the parser reads but the grammar never writes: what users type. The training captions and the
# model's word vocabulary (`caption_words`) leave them out, so a model trained on captions meets them as
# unknown words; the parser maps them to the canonical names all the same.
READ_SIZE_WORDS: dict[str, str] = {"tiny": "small", "huge": "large", "giant": "large", "enormous": "large"}
READ_RELATION_PHRASES: dict[str, str] = {
    "to the left side of": "left of",
    "on the left side of": "left of",
    "to the right side of": "right of",
    "on the right side of": "right of",
    "on top of": "above",
    "on the top of": "above",
    "atop": "above",
    "underneath": "below",
}

# Words that are not names but hold captions together.
FUNCTION_WORDS: tuple[str, ...] = (
    "a", "an", "the", "and", "of", "to", "on", "in", "as", "with", "against", "which", "that", "is",
    "are", "there", "drawn", "background", "shapes", "outline", "outlines", "left", "right",
)


def caption_words() -> list[str]:
    """Every word a Shapes World caption can contain, sorted; the tokenizer's word vocabulary."""
    words: set[str] = set(FUNCTION_WORDS)
    words.update(COLOURS, SHAPES, PLURAL_SHAPES.values(), SIZE_WORDS, BACKGROUND_WORDS, FILL_WORDS)
    words.update(NUMBER_WORDS.values())
    for phrase in list(RELATION_PHRASES) + list(FILL_PHRASES) + list(BACKGROUND_PHRASES):
        words.update(w for w in phrase.replace("{}", "").split() if w)
    return sorted(words)
