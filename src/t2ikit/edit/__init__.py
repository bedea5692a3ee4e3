"""Editing real images by text: invert, then regenerate under the target prompt (`edit`).

    options   EditOptions (validated before any compute), EditResult, named presets
    run       edit(): prompt swap, Prompt-to-Prompt, blend; masks that keep the rest exactly
    masks     user, DiffEdit and attention masks
    blend     SDEdit + Blended Latent Diffusion, adapter residuals
    outlines  objects, outlines and snapped masks read from the image itself
    changes   the words an edit changes
    support   the SceneSupport interface a world implements for instructions, detector masks, target
              outlines and relation moves

The support and options modules import no torch; the rest is loaded when first asked for, so a world can
register its support and presets when `t2ikit` is imported.
"""

from t2ikit.edit.options import EDIT_KINDS, PRESETS, EditOptions, EditResult, EditWarning, register_preset
from t2ikit.edit.support import (
    SceneSupport,
    TargetConditions,
    get_scene_support,
    register_scene_support,
    scene_support_names,
)


def __getattr__(name):  # edit() imports torch and diffusers; load it only when asked for
    if name == "edit":
        from t2ikit.edit.run import edit

        return edit
    raise AttributeError(f"module 't2ikit.edit' has no attribute {name!r}")


__all__ = ["EDIT_KINDS", "EditOptions", "EditResult", "EditWarning", "PRESETS", "SceneSupport", "TargetConditions",
           "edit", "get_scene_support", "register_preset", "register_scene_support", "scene_support_names"]
