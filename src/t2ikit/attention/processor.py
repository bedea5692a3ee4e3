"""One attention processor per layer, running an ordered stack of hooks.

diffusers gives each attention layer one processor slot, so techniques that each install their own
processor (IP-Adapter, Prompt-to-Prompt, Attend-and-Excite) overwrite one another. Here one
`HookedAttnProcessor` sits in every slot and asks the hooks of a shared `AttentionController` to act at
three points of the computation:

    on_qkv(ctx, q, k, v)   -> q, k, v      (B, heads, N, d): extra tokens, token selection
    on_probs(ctx, probs)   -> probs        (B, heads, Nq, Nk): capture, reweighting, masks, injection
    on_output(ctx, out)    -> out          (B, Nq, heads*d), before the output projection

When no active hook needs the probabilities, the processor takes the fused
`scaled_dot_product_attention` path, exactly as diffusers' `AttnProcessor2_0` does.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AttentionContext:
    """Where and when an attention call happens."""

    layer: str  # the processor's name in the UNet, e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor"
    cross: bool  # cross-attention (keys from the text) or self-attention
    step: int  # sampling step index (0-based), -1 outside sampling
    num_steps: int  # steps of the current sampling run, 0 outside sampling
    timestep: float | None  # the scheduler's timestep of this step
    query_tokens: int  # Nq, image tokens (h * w)
    latent_hw: tuple[int, int] | None  # (h, w) of the latent the UNet was called on, if known
    guided: bool = False  # the batch is [uncond; cond] (classifier-free guidance): cond is the second half
    blocks: tuple[str, ...] | None = None  # the batch's row blocks in order: "uncond" and condition names (None: unknown)

    @property
    def query_hw(self) -> tuple[int, int]:
        """(h, w) of the image-token grid of this layer."""
        if self.latent_hw is None:
            side = int(round(math.sqrt(self.query_tokens)))
            return side, self.query_tokens // side
        h, w = self.latent_hw
        factor = math.sqrt(h * w / self.query_tokens)
        return int(round(h / factor)), int(round(w / factor))


class AttentionHook:
    """Base class: override what you need. A hook that reads or changes probabilities sets needs_probs."""

    needs_probs = False
    name = "hook"

    def applies(self, ctx: AttentionContext) -> bool:
        return True

    def on_qkv(self, ctx, query, key, value):
        return query, key, value

    def on_probs(self, ctx, probs):
        return probs

    def on_output(self, ctx, out):
        return out

    def incompatible_with(self, other: AttentionHook) -> str | None:
        """A sentence saying why this hook cannot run together with `other`, or None."""
        return None


_ATTENTION_MODULES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attention_modules(unet: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Processor name (a key of diffusers' `unet.attn_processors`) -> its attention module, found once per model.

    diffusers' `attn_processors` / `set_attn_processor` walk every submodule on each call, and guidance installs
    hooks on every guided step, so the walk is done once and the slots are set directly (`Attention.set_processor`,
    the call `set_attn_processor` makes for each layer).
    """
    root = getattr(unet, "_orig_mod", unet)  # a torch.compile'd model: its modules are the original's
    modules = _ATTENTION_MODULES.get(root)
    if modules is None:
        if not hasattr(root, "attn_processors") or not hasattr(root, "set_attn_processor"):
            raise TypeError(f"install needs a diffusers model with attention processors, got {type(unet).__name__}")
        modules = {name: root.get_submodule(name.removesuffix(".processor")) for name in root.attn_processors}
        _ATTENTION_MODULES[root] = modules
    return modules


class AttentionController:
    """The hooks, the sampling clock they read, and installation into a UNet."""

    def __init__(self, hooks: list[AttentionHook] | None = None):
        self.hooks: list[AttentionHook] = []
        self.step, self.num_steps, self.timestep = -1, 0, None
        self.latent_hw: tuple[int, int] | None = None
        self.guided = False  # set by the sampling loop: batch = [uncond; cond]
        self.blocks: tuple[str, ...] | None = None  # set by the denoiser: "uncond" and the active conditions' names
        self._installed: list[tuple[torch.nn.Module, dict]] = []
        for hook in hooks or []:
            self.add(hook)

    # -- hooks --
    def add(self, hook: AttentionHook) -> AttentionHook:
        if not isinstance(hook, AttentionHook):
            raise TypeError(f"hooks must be AttentionHook instances, got {type(hook).__name__}")
        for other in self.hooks:
            why = hook.incompatible_with(other) or other.incompatible_with(hook)
            if why:
                raise ValueError(f"cannot combine hook {hook.name!r} with {other.name!r}: {why}")
        self.hooks.append(hook)
        return hook

    def remove(self, hook: AttentionHook) -> None:
        self.hooks.remove(hook)

    # -- clock, set by the sampling loop --
    def set_step(self, step: int, num_steps: int, timestep=None) -> None:
        self.step, self.num_steps = step, num_steps
        self.timestep = None if timestep is None else float(timestep)

    def reset_clock(self) -> None:
        self.step, self.num_steps, self.timestep = -1, 0, None

    # -- installation --
    def install(self, unet: torch.nn.Module) -> AttentionController:
        """Put a hooked processor in every attention slot of `unet` (a diffusers model); undo with uninstall."""
        modules = attention_modules(unet)
        previous = {name: module.processor for name, module in modules.items()}
        for name, module in modules.items():
            module.set_processor(HookedAttnProcessor(name, self))
        self._installed.append((modules, previous))
        return self

    def uninstall(self) -> None:
        while self._installed:
            modules, previous = self._installed.pop()
            for name, module in modules.items():
                module.set_processor(previous[name])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.uninstall()
        self.reset_clock()


class HookedAttnProcessor:
    """diffusers attention processor that runs the controller's hooks (see module docstring)."""

    def __init__(self, name: str, controller: AttentionController):
        self.name = name
        self.controller = controller
        self.cross = ".attn2." in name or name.startswith("attn2")

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, query_tokens, _ = hidden_states.shape
        context_tokens = query_tokens if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context_tokens, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, Nq, d)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, Nk, d)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        c = self.controller
        hooks = c.hooks
        if hooks:
            ctx = AttentionContext(self.name, self.cross, c.step, c.num_steps, c.timestep, query_tokens, c.latent_hw,
                                   c.guided, c.blocks)
            hooks = [h for h in hooks if h.applies(ctx)]
        if not hooks:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0)
        else:
            for h in hooks:
                query, key, value = h.on_qkv(ctx, query, key, value)
            if any(h.needs_probs for h in hooks):
                scores = torch.matmul(query, key.transpose(-1, -2)) * attn.scale  # (B, heads, Nq, Nk)
                if attention_mask is not None:
                    scores = scores + attention_mask
                probs = scores.softmax(dim=-1)
                for h in hooks:
                    probs = h.on_probs(ctx, probs)
                out = torch.matmul(probs.to(value.dtype), value)
            else:
                out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)  # (B, Nq, C)
        for h in hooks:
            out = h.on_output(ctx, out)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor
