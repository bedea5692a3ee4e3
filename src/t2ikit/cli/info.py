"""`t2ikit info IMAGE.png`: the generation parameters stored in a PNG, and the format they are stored in.

The format is AUTOMATIC1111's "parameters" tEXt chunk, which other tools (A1111, ComfyUI importers,
civitai) already read:

    a red circle above a blue square
    Negative prompt: green
    Steps: 20, Sampler: DPM++ 2M, CFG scale: 4.0, Seed: 3, Size: 64x64, Model: shapes-v6b, Relation guidance: 200.0
"""

from __future__ import annotations

import json
import re

PNG_KEY = "parameters"
NEGATIVE_PREFIX = "Negative prompt: "
# One "Key: value" pair of the last line; a value may be quoted when it contains a comma.
_PAIR = re.compile(r'\s*([\w][\w \-/+]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def format_parameters(prompt: str, negative_prompt: str | None, settings: dict) -> str:
    """The A1111 text: prompt, optional negative prompt line, then `Key: value, ...` (values as given)."""
    lines = [prompt]
    if negative_prompt:
        lines.append(NEGATIVE_PREFIX + negative_prompt)
    pairs = []
    for key, value in settings.items():
        value = str(value)
        if "," in value or "\n" in value or '"' in value:
            value = json.dumps(value)
        pairs.append(f"{key}: {value}")
    lines.append(", ".join(pairs))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict:
    """Inverse of `format_parameters`: {"prompt", "negative_prompt", "settings": {key: str}}."""
    lines = text.strip("\n").split("\n")
    settings: dict[str, str] = {}
    if len(lines) > 1 or (lines and _PAIR.fullmatch(lines[-1]) is None and ": " in lines[-1]):
        pairs = list(_PAIR.finditer(lines[-1]))
        if pairs and "Steps" in {m.group(1).strip() for m in pairs}:
            lines = lines[:-1]
            for m in pairs:
                value = m.group(2).strip()
                settings[m.group(1).strip()] = json.loads(value) if value.startswith('"') else parse_number(value)
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in lines:
        if line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX):]
        (negative_lines if in_negative else prompt_lines).append(line)
    return {
        "prompt": "\n".join(prompt_lines),
        "negative_prompt": "\n".join(negative_lines),
        "settings": settings,
    }


def parse_number(value: str):
    """"20" -> 20, "7.5" -> 7.5, anything else unchanged."""
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def read_parameters(path) -> str:
    """The raw "parameters" text of a PNG; ValueError if the file is not an image or has none."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            text = image.info.get(PNG_KEY)
    except FileNotFoundError:
        raise ValueError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path} is not a readable image: {err}") from None
    if text is None:
        raise ValueError(f"{path} carries no generation parameters (no {PNG_KEY!r} text chunk)")
    return text


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="generation parameters stored in a PNG")
    parser.add_argument("image", help="a PNG written by `t2ikit generate` (or AUTOMATIC1111)")
    parser.add_argument("--json", action="store_true", help="print them parsed, as JSON")
    parser.set_defaults(func=_info)


def _info(args) -> int:
    text = read_parameters(args.image)
    if args.json:
        print(json.dumps(parse_parameters(text), indent=2))
    else:
        print(text)
    return 0
