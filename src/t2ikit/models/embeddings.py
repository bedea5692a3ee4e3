"""Textual-inversion embeddings a user has (Gal et al. 2022): new words whose input embeddings are learned
vectors, loaded from a .safetensors file into the tokenizer(s) and the text encoder(s).

Formats read: diffusers' `{"<token>": (D,) or (n, D)}`, AUTOMATIC1111's `{"emb_params": (n, D)}`, and
SDXL's `{"clip_l": (n, 768), "clip_g": (n, 1280)}` (one table per text encoder). An embedding of n vectors
becomes n tokens `name`, `name_1`, ..., `name_{n-1}`; the pipeline writes `name` in a prompt as the n of
them (`expand`), as diffusers does. The word is the file's token key (diffusers) or the file's stem.
"""

from __future__ import annotations

import os
import re

import torch

from t2ikit.models.lora import _read, check_safetensors


def _tables(state: dict, path, sdxl: bool) -> tuple[str | None, list[torch.Tensor]]:
    """(token named in the file or None, one (n, D) table per text encoder)."""
    if sdxl:
        if not {"clip_l", "clip_g"} <= set(state):
            raise ValueError(f"embedding {path}: an SDXL embedding holds 'clip_l' and 'clip_g' tables; "
                             f"found {sorted(state)}")
        return None, [state["clip_l"], state["clip_g"]]
    if "emb_params" in state:
        return None, [state["emb_params"]]
    if len(state) == 1:
        (token, table), = state.items()
        return token, [table]
    raise ValueError(f"embedding {path}: expected one token's vectors ('<token>' or 'emb_params'); found {sorted(state)}")


def load_embedding(pipe, path: str | os.PathLike, token: str | None = None) -> tuple[str, list[str]]:
    """Add the embedding in `path` to `pipe`; (the word to write in prompts, the tokens it stands for)."""
    path = check_safetensors(path, "embedding file")
    named, tables = _tables(_read(path, "embedding file"), path, pipe.is_sdxl)
    word = token or named or path.stem
    if not re.fullmatch(r"\S+", word):
        raise ValueError(f"embedding {path}: its word {word!r} must be one word without spaces")
    tables = [t[None] if t.ndim == 1 else t for t in tables]  # (n, D) each
    encoders = [pipe.text_encoder.text_encoder, pipe.text_encoder.text_encoder_2] if pipe.is_sdxl \
        else [pipe.text_encoder]
    tokenizers = [pipe.tokenizer, pipe.text_encoder.tokenizer_2] if pipe.is_sdxl else [pipe.tokenizer]
    n = tables[0].shape[0]
    for table, encoder in zip(tables, encoders):
        width = encoder.get_input_embeddings().weight.shape[1]
        if table.ndim != 2 or table.shape != (n, width):
            raise ValueError(f"embedding {path}: vectors of shape {tuple(table.shape)} do not fit a text encoder "
                             f"of width {width}")
    tokens = [word] + [f"{word}_{i}" for i in range(1, n)]
    taken = [t for t in tokens if t in pipe.tokenizer.get_vocab()]
    if taken:
        raise ValueError(f"embedding {path}: the word {taken[0]!r} is already a token of this tokenizer; "
                         f"pass another word")
    for tokenizer in tokenizers:
        tokenizer.add_tokens(tokens)
    ids = pipe.tokenizer.convert_tokens_to_ids(tokens)
    for table, encoder in zip(tables, encoders):
        encoder.resize_token_embeddings(len(pipe.tokenizer))
        weight = encoder.get_input_embeddings().weight
        with torch.no_grad():
            weight[ids] = table.to(weight.device, weight.dtype)
    return word, tokens


def expand(prompt: str, words: dict[str, list[str]]) -> str:
    """`prompt` with each multi-vector embedding word written as its tokens ("emb" -> "emb emb_1 emb_2")."""
    for word, tokens in words.items():
        if len(tokens) > 1:
            prompt = re.sub(rf"(?<![\w-]){re.escape(word)}(?![\w-])", " ".join(tokens), prompt)
    return prompt


__all__ = ["expand", "load_embedding"]
