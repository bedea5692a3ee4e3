"""How to edit (`EditOptions`, validated before any compute), named option sets, and what an edit returns.

Imports no torch at module level: a world registers its presets (`register_preset`) when `t2ikit` is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

from t2ikit.edit.support import SceneSupport, get_scene_support
from t2ikit.text.weighting import MODES as WEIGHTING_MODES

if TYPE_CHECKING:
    import torch

    from t2ikit.diffusion.inversion import Inversion

METHODS = ("swap", "p2p", "blend")
MASKS = ("auto", "attention", "detect")  # automatic masks; anything else given is a user mask
MASK_SAMPLES = 8  # DiffEdit: noise draws averaged per mask
MASK_STRENGTH = 0.5  # DiffEdit: noise level (fraction of the schedule) at which predictions are compared
MASK_THRESHOLD = 0.5  # DiffEdit: fraction of the normalised difference above which a latent pixel is edited
MASK_DILATE = 1  # latent pixels the automatic mask is grown by: a thresholded mask clips the object's edge
ATTENTION_THRESHOLD = 0.5  # attention mask: fraction of the min-max normalised map above which a pixel is edited
BLEND_STRENGTH = 0.8  # blend: fraction of the schedule re-noised (SDEdit's t0)
BOX_PAD = 2  # px the detector's object boxes are grown by when mask_snap does not say


class EditWarning(UserWarning):
    """An edit that may not do what was asked: e.g. the source prompt does not describe the image."""


# Named option sets per kind of edit: {preset: {kind: EditOptions fields}}. A world registers the best
# measured settings for its images (Shapes World: world/edit_support.py); `edit_kind` of the world
# tells which kind an edit is.
PRESETS: dict[str, dict[str, dict]] = {}
EDIT_KINDS = ("object", "size", "relation")


def register_preset(name: str, kinds: dict[str, dict]) -> None:
    """Make `EditOptions.preset(name, kind)` give the fields `kinds[kind]` (one dict per kind of EDIT_KINDS)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a preset's name must be a non-empty str; got {name!r}")
    if set(kinds) != set(EDIT_KINDS):
        raise ValueError(f"preset {name!r} must give the options of every kind ({', '.join(EDIT_KINDS)}); "
                         f"got {', '.join(kinds)}")
    PRESETS[name] = {kind: dict(fields) for kind, fields in kinds.items()}


@dataclass
class EditOptions:
    """How to edit; validated by `check` before any compute."""

    method: str = "p2p"  # "swap" | "p2p" | "blend"
    mode: str = "auto"  # p2p alignment: "replace" | "refine" | "reweight" | "auto" (replace if it can, else refine)
    cross_steps: int | float | None = None  # p2p: steps (int) or fraction (float) with cross-attention injected; None: 0.8
    self_steps: int | float | None = None  # p2p: steps or fraction with self-attention injected; None: 0.4
    reweight: dict[str, float] | None = None  # p2p: {target word: factor} for attention re-weighting
    mask: object = None  # None (whole image), "auto" (DiffEdit), "attention", "detect" or a mask (path, array, tensor; nonzero = edit)
    steps: int = 20  # DDIM steps of inversion and editing
    guidance: float = 1.0  # CFG scale of the edit; > 1 uses `uncond` inversion (blend: uncond is its negative)
    uncond: str | None = None  # swap/p2p: how guidance > 1 stays on the inverted trajectory (inversion.py; None:
    #   "negative-prompt"); blend: its CFG negative, "none" = the empty prompt (None: this), "negative-prompt" = the
    #   source prompt (with local_prompt the source phrase), which overshoots: from "red" to "orange" it draws yellow
    strength: float = BLEND_STRENGTH  # blend: fraction of the schedule re-noised (1: from x_T)
    start: str = "inverted"  # blend: the masked region starts from the inverted latent or the image freshly noised ("noise")
    sketch: float = 0.0  # blend: scale of the shipped sketch adapter holding the source's outlines (0: off)
    target_outline: bool = False  # blend + sketch: the sketch holds the target's outline (scene support) in the object's box
    shape_mask: float = 0.0  # blend: scale of the shipped class-mask adapter holding the target's silhouette there (0: off)
    local_prompt: bool = False  # blend: sample under the edited object's phrase alone (uncond "negative-prompt": its source phrase the negative)
    mask_snap: int | None = None  # snap the mask to the image's objects, their boxes grown by this many px (None: off)
    attention_threshold: float = ATTENTION_THRESHOLD
    mask_samples: int = MASK_SAMPLES
    mask_strength: float = MASK_STRENGTH
    mask_threshold: float = MASK_THRESHOLD
    mask_dilate: int = MASK_DILATE  # latent pixels the automatic mask is grown by (0: DiffEdit as published)
    seed: int = 0  # of DiffEdit's noise draws and blend's start="noise"; item b of a batch uses seed + b
    weighting: str = "a1111"  # prompt weighting syntax of the source and target prompts (t2ikit.text.weighting)
    support: str | SceneSupport | None = None  # scene support (t2ikit.edit.support) for instructions, mask="detect", target_outline,
    #   shape_mask, local_prompt and relation moves; None: the registered one (Shapes World's), if only one is

    @property
    def box_pad(self) -> int:
        """Pixels the detector's object boxes are grown by (mask="detect", outlines, moves): mask_snap, else BOX_PAD."""
        return self.mask_snap if self.mask_snap is not None else BOX_PAD

    @classmethod
    def preset(cls, name: str, kind: str = "object", **overrides) -> EditOptions:
        """The options of a named preset (PRESETS) for a kind of edit (EDIT_KINDS); keyword arguments override
        the preset's fields."""
        if name not in PRESETS:
            raise ValueError(f"unknown edit preset {name!r}; presets: {', '.join(PRESETS) or 'none registered'}")
        if kind not in EDIT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(EDIT_KINDS)}; got {kind!r}")
        fields = dict(PRESETS[name][kind])
        return cls(**{**fields, **overrides}).check()

    def settings(self) -> dict:
        """The options as a PNG records them: "Steps", "CFG scale", "Edit method" and every field that differs
        from its default (a user mask given as an array is recorded by its kind only)."""
        out = {"Steps": self.steps, "CFG scale": self.guidance, "Edit method": self.method}
        defaults = EditOptions()
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("steps", "guidance", "method") or value == getattr(defaults, f.name):
                continue
            if not isinstance(value, (str, int, float, bool, dict, type(None))):
                value = f"<{type(value).__name__}>"
            elif isinstance(value, dict):
                value = " ".join(f"{k}={v:g}" for k, v in value.items())
            out["Edit " + f.name.replace("_", " ")] = value
        return out

    def check(self) -> EditOptions:
        from t2ikit.attention.p2p import MODES
        from t2ikit.diffusion.inversion import UNCOND_MODES, check_guidance

        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.mode not in MODES + ("auto",):
            raise ValueError(f"mode must be one of {', '.join(MODES + ('auto',))}; got {self.mode!r}")
        if self.uncond is None:  # the method's default (see the field)
            return replace(self, uncond="none" if self.method == "blend" else "negative-prompt").check()
        if self.uncond not in UNCOND_MODES:
            raise ValueError(f"uncond must be one of {', '.join(UNCOND_MODES)} (or None: the method's default); "
                             f"got {self.uncond!r}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"steps must be an int >= 1; got {self.steps!r}")
        check_guidance(self.guidance)
        if isinstance(self.mask, str) and self.mask not in MASKS and not self.mask.strip():
            raise ValueError(f"mask must be None, one of {', '.join(MASKS)} or a mask image")
        if self.method == "blend":
            from t2ikit.edit.blend import STARTS, start_level

            start_level(self.steps, self.strength)
            if self.start not in STARTS:
                raise ValueError(f"start must be one of {', '.join(STARTS)}; got {self.start!r}")
            if self.uncond == "null-text":
                raise ValueError("blend takes uncond 'negative-prompt' (the source prompt as the negative) or "
                                 "'none' (the empty prompt); null-text inversion is for swap and p2p")
            if self.mode != "auto":
                raise ValueError("mode is a Prompt-to-Prompt option; use method='p2p'")
        elif self.strength != BLEND_STRENGTH or self.start != "inverted" or self.sketch or self.target_outline \
                or self.shape_mask or self.local_prompt:
            raise ValueError("strength, start, sketch, target_outline, shape_mask and local_prompt are blend options; "
                             "use method='blend'")
        for name in ("sketch", "shape_mask"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e3):
                raise ValueError(f"{name} must be an adapter scale >= 0 (0: off); got {v!r}")
        for name in ("target_outline", "local_prompt"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False; got {getattr(self, name)!r}")
        if self.target_outline and not self.sketch:
            raise ValueError("target_outline draws the target's outline into the sketch condition; give sketch > 0")
        if (self.target_outline or self.shape_mask) and self.mask is None:
            raise ValueError("target_outline and shape_mask draw the target in the edited object's box, which is "
                             "found inside the mask; give a mask ('detect', 'auto', 'attention' or a mask image)")
        if self.mask_snap is not None and not (isinstance(self.mask_snap, int) and self.mask_snap >= 0):
            raise ValueError(f"mask_snap must be None or an int >= 0 (px); got {self.mask_snap!r}")
        if not 0.0 < self.attention_threshold < 1.0:
            raise ValueError(f"attention_threshold must be in (0, 1); got {self.attention_threshold!r}")
        if not (isinstance(self.mask_samples, int) and self.mask_samples >= 1):
            raise ValueError(f"mask_samples must be an int >= 1; got {self.mask_samples!r}")
        if not 0.0 < self.mask_strength < 1.0:
            raise ValueError(f"mask_strength must be in (0, 1); got {self.mask_strength!r}")
        if not (isinstance(self.mask_dilate, int) and self.mask_dilate >= 0):
            raise ValueError(f"mask_dilate must be an int >= 0; got {self.mask_dilate!r}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1); got {self.mask_threshold!r}")
        if not (self.support is None or isinstance(self.support, (str, SceneSupport))):
            raise TypeError(f"support must be None, a SceneSupport or the name of a registered one; got {self.support!r}")
        get_scene_support(self.support)  # an unknown name is refused here
        if self.weighting not in WEIGHTING_MODES:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTING_MODES)}; got {self.weighting!r}")
        return self


@dataclass
class EditResult:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]: the edited images
    source_prompts: list[str]
    target_prompts: list[str]
    inversion: Inversion
    mask: torch.Tensor | None = None  # (B, 1, H, W) pixel mask that was edited (None: whole image)
    warnings: list[str] = field(default_factory=list)

    def pil(self) -> list:
        from t2ikit.pipeline import to_pil

        return to_pil(self.images)


__all__ = ["ATTENTION_THRESHOLD", "BLEND_STRENGTH", "BOX_PAD", "EDIT_KINDS", "EditOptions", "EditResult", "EditWarning",
           "MASKS", "MASK_DILATE", "MASK_SAMPLES", "MASK_STRENGTH", "MASK_THRESHOLD", "METHODS", "PRESETS",
           "register_preset"]
