"""`t2ikit parse`: what a prompt parser reads in prompts (objects, counts, attributes, relations, style)."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("parse", help="read prompts into objects, relations and style (the prompt parser)")
    p.add_argument("prompt", nargs="+", help="one or more prompts")
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt (one per line)")
    p.add_argument("--parser", default=None, metavar="NAME",
                   help="a registered parser (english, shapes-world); default: the --model folder's, else english")
    p.add_argument("--model", default=None, metavar="FOLDER",
                   help="a model folder: its tokenizer adds the token positions of every span (BOS is 0)")
    p.set_defaults(func=_parse)


def _tokenizer_and_parser(model: str | None, parser: str | None):
    """(fast tokenizer or None, parser name): a --model folder's tokenizer and, unless --parser, its parser."""
    if model is None:
        return None, parser or "english"
    from transformers import CLIPTokenizerFast

    from t2ikit.models.registry import resolve_model
    from t2ikit.pipeline import check_model_folder, default_parser_name, read_folder_config

    root = check_model_folder(resolve_model(model))
    config = read_folder_config(root)
    try:
        tokenizer = CLIPTokenizerFast.from_pretrained(root / "tokenizer", local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"model folder {root}: its tokenizer could not be loaded: {err}") from None
    return tokenizer, parser or default_parser_name(config)


def _parse(args) -> int:
    from t2ikit.text.parser import PromptParseError, get_parser

    tokenizer, name = _tokenizer_and_parser(args.model, args.parser)
    parser = get_parser(name)  # ValueError names the registered parsers
    results = []
    for prompt in args.prompt:
        try:
            results.append(parser.parse(prompt).to_json(tokenizer))
        except PromptParseError as err:
            raise ValueError(f"the {parser.name} parser cannot read {prompt!r}: {err}") from None
    for r in results:
        print(json.dumps(r) if args.json else _text(r))
    return 0


def _text(r: dict) -> str:
    lines = [r["prompt"]]
    for i, o in enumerate(r["objects"]):
        count = "?" if o["count"] is None else o["count"]
        attrs = f" [{', '.join(o['attributes'])}]" if o["attributes"] else ""
        lines.append(f"  object {i} (group {o['group']}): {o['text']!r}  noun {o['noun']!r} x{count}{attrs}")
    nouns = {}
    for o in r["objects"]:
        nouns.setdefault(o["group"], o["noun"])
    for rel in r["relations"]:
        lines.append(f"  relation: {nouns[rel['subject']]} {rel['relation']} {nouns[rel['object']]}")
    for s in r["style"]:
        lines.append(f"  style: {s['text']!r}")
    return "\n".join(lines)
