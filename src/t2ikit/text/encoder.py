"""The text encoder: a `transformers.CLIPTextModel` of a chosen size, and prompt -> embeddings."""

from __future__ import annotations

import torch


def build_text_encoder(
    hidden_size: int = 256,  # width of every token embedding the UNet cross-attends to
    layers: int = 4,  # transformer blocks
    heads: int = 4,  # attention heads; must divide hidden_size
    max_positions: int = 32,  # context length; must be >= the tokenizer's model_max_length
    vocab_size: int = 49408,  # len(tokenizer)
    intermediate_size: int | None = None,  # MLP width; 4 * hidden_size when None
    bos_token_id: int | None = None,  # tokenizer.bos_token_id (pooled output reads the EOS position)
    eos_token_id: int | None = None,  # tokenizer.eos_token_id
    pad_token_id: int | None = None,  # tokenizer.pad_token_id
):
    """A randomly initialised CLIPTextModel (causal mask, final layer norm) as SD uses it."""
    from transformers import CLIPTextConfig, CLIPTextModel

    if hidden_size % heads:
        raise ValueError(f"heads ({heads}) must divide hidden_size ({hidden_size})")
    ids = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max_positions,
        **{k: v for k, v in ids.items() if v is not None},
    )
    return CLIPTextModel(config)


def text_encoder_for(tokenizer, hidden_size: int = 256, layers: int = 4, heads: int = 4):
    """`build_text_encoder` sized to `tokenizer`: its vocabulary, context and special ids."""
    return build_text_encoder(
        hidden_size=hidden_size,
        layers=layers,
        heads=heads,
        max_positions=tokenizer.model_max_length,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """Per-token embeddings (B, T, C) of `prompts`, padded to the context and truncated like diffusers."""
    enc = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    device = text_encoder.device
    mask = enc.attention_mask.to(device) if getattr(text_encoder.config, "use_attention_mask", False) else None
    hidden = text_encoder(enc.input_ids.to(device), attention_mask=mask)[0]  # (B, T, C) last hidden state
    return hidden.to(text_encoder.dtype)
