"""Stable Diffusion XL's text side: two CLIP text encoders read as one, and the UNet's added conditioning.

SDXL (Podell et al. 2023) cross-attends to both encoders' penultimate hidden states side by side
((N, T, 768 + 1280) for the released model) and adds to the timestep embedding the second encoder's
pooled, projected text embedding and six "micro-conditioning" numbers, Sec. 2.2: the original size, the
crop's top-left corner and the target size. `DualTextEncoder` makes the pair look like one text encoder
to everything in text/ (tokenizers, weighting, chunks), so every technique encodes SDXL prompts as it
encodes SD's; `added_conditioning` builds the UNet's `added_cond_kwargs` a `Condition` carries. Defaults
follow diffusers' StableDiffusionXLPipeline: original = target = the generated size, crop (0, 0).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

XL_PIPELINE = "StableDiffusionXLPipeline"  # model_index.json `_class_name` of an SDXL folder


def is_sdxl_index(index: dict) -> bool:
    """True for an SDXL folder's model_index.json (its class, or a second text encoder)."""
    return index.get("_class_name") == XL_PIPELINE or "text_encoder_2" in index


class DualTextEncoder(torch.nn.Module):
    """SDXL's two text encoders as one module with a CLIPTextModel's call: `encoder(ids)[0]` is (B, T, D1 + D2).

    Both encoders read the same token ids (SDXL's two tokenizers share one vocabulary); the second
    tokenizer pads with its own pad token, so the ids after the first end-of-text token are replaced by it.
    """

    def __init__(self, text_encoder, text_encoder_2, tokenizer, tokenizer_2):
        super().__init__()
        if tokenizer.get_vocab() != tokenizer_2.get_vocab():
            raise ValueError("SDXL's two tokenizers must share one vocabulary (the token ids feed both encoders); "
                             "tokenizer/ and tokenizer_2/ differ")
        self.text_encoder, self.text_encoder_2, self.tokenizer_2 = text_encoder, text_encoder_2, tokenizer_2
        self.eos_id, self.pad_id_2 = tokenizer.eos_token_id, tokenizer_2.pad_token_id
        self.config = SimpleNamespace(  # what text/ reads of a text encoder's config
            use_attention_mask=False,
            max_position_embeddings=min(text_encoder.config.max_position_embeddings,
                                        text_encoder_2.config.max_position_embeddings),
            hidden_size=text_encoder.config.hidden_size + text_encoder_2.config.hidden_size,
        )

    @property
    def device(self) -> torch.device:
        return self.text_encoder.device

    @property
    def dtype(self) -> torch.dtype:
        return self.text_encoder.dtype

    def second_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids for the second encoder: every position after the first end-of-text is its pad token."""
        after_eos = (ids == self.eos_id).int().cumsum(1) - (ids == self.eos_id).int() > 0  # (B, T)
        return ids.masked_fill(after_eos, self.pad_id_2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        kw = {"attention_mask": attention_mask, "output_hidden_states": True}
        first = self.text_encoder(input_ids, **kw).hidden_states[-2]  # (B, T, D1), penultimate layer
        second = self.text_encoder_2(self.second_ids(input_ids), **kw).hidden_states[-2]  # (B, T, D2)
        return (torch.cat([first, second], dim=-1),)

    @torch.no_grad()
    def pooled(self, prompts: list[str]) -> torch.Tensor:
        """(B, P) the second encoder's projected end-of-text embedding of each plain prompt (truncated)."""
        tok = self.tokenizer_2
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        return self.text_encoder_2(ids.to(self.device)).text_embeds


def time_ids(size: tuple[int, int], count: int, dtype, device) -> torch.Tensor:
    """(count, 6) micro-conditioning: original size, crop top-left, target size (SDXL Sec. 2.2), all (H, W)."""
    h, w = size
    return torch.tensor([[h, w, 0, 0, h, w]] * count, dtype=dtype, device=device)


def added_conditioning(encoder: DualTextEncoder, prompts: list[str], size: tuple[int, int], dtype,
                       zero: bool = False) -> dict:
    """The UNet's added_cond_kwargs for one image per prompt at `size` (H, W); `zero`: the pooled text is
    zeros (diffusers' `force_zeros_for_empty_prompt` for an unconditional branch without a negative prompt)."""
    if zero:
        pooled = torch.zeros(len(prompts), encoder.text_encoder_2.config.projection_dim, dtype=dtype,
                             device=encoder.device)
    else:
        pooled = encoder.pooled(prompts).to(dtype)  # (N, P)
    return {"text_embeds": pooled, "time_ids": time_ids(size, len(prompts), dtype, pooled.device)}


__all__ = ["DualTextEncoder", "XL_PIPELINE", "added_conditioning", "is_sdxl_index", "time_ids"]
