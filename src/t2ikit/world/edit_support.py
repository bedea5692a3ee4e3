"""Shapes World's scene support for the edit (`t2ikit.edit.support`), registered as "shapes-world", and its preset.

What each part does lives in its own module, imported when first used (this one is imported with `t2ikit`
and stays light): instructions (`world.instructions`), the edited object, the detector's mask and the
oracle's reading (`world.edit_objects`), the target's outline and silhouette (`world.outlines`) and
relation moves (`world.moves`).

The "shapes-world" preset: the best measured settings per kind of edit (docs/results/edit.md sections 8-9):
blend at guidance 5 in the detector's box of the edited object (snapped 2 px), the shipped class-mask
adapter holding its silhouette, the object's own phrase as the prompt; a size change or a relation edit
(which moves an object) is drawn from fresh noise. Needs a Shapes World image and the shipped model.
"""

from __future__ import annotations

from t2ikit.edit.options import register_preset
from t2ikit.edit.support import TargetConditions, register_scene_support
from t2ikit.world import vocab
from t2ikit.world.instructions import ShapesWorldInstructions, write_group


class ShapesWorldSupport:
    """The SceneSupport of Shapes World images: its caption grammar, detector, oracle and renderer."""

    name = "shapes-world"
    colour_words = frozenset(vocab.COLOURS)

    def __init__(self):
        self.instructions = ShapesWorldInstructions()

    def describe(self, image) -> str | None:
        from t2ikit.world.edit_objects import describe_image
        from t2ikit.world.oracle import MIN_RESOLUTION

        if not image.shape[-1] == image.shape[-2] >= MIN_RESOLUTION:
            return None
        return describe_image(image.permute(1, 2, 0).numpy())

    def source_mismatches(self, images, prompts: list[str]) -> list[str]:
        from t2ikit.world.edit_objects import source_mismatches

        return source_mismatches(images, prompts)

    def edited_object(self, source: str, target: str) -> str:
        from t2ikit.world.edit_objects import edited_group

        g = edited_group(source, target)
        return f"{g.colour} {g.shape}"

    def detect(self, images, sources: list[str], targets: list[str], pad: int):
        from t2ikit.world.edit_objects import detect_mask, edited_group

        return detect_mask(images, [edited_group(s, t) for s, t in zip(sources, targets)], pad)

    def local_prompts(self, source: str, target: str) -> tuple[str, str]:
        from t2ikit.world.edit_objects import edited_groups

        before, after = edited_groups(source, target)
        return write_group(before), write_group(after)

    def target_conditions(self, images, pixel_mask, sources: list[str], targets: list[str],
                          pad: int) -> TargetConditions:
        from t2ikit.world.outlines import target_conditions

        return target_conditions(images, pixel_mask, sources, targets, pad)

    def relation_move(self, source: str, target: str):
        from t2ikit.world.moves import relation_move

        return relation_move(source, target)

    def plan_move(self, image, move):
        from t2ikit.world.moves import plan_move

        return plan_move(image, move)

    def placement_conditions(self, images, placements: list, pad: int) -> TargetConditions:
        from t2ikit.world.moves import placement_conditions

        return placement_conditions(images, placements, pad)


def edit_kind(source: str, target: str) -> str:
    """"relation" when the target restates the source's objects in a new relation, "size" when it changes the
    edited object's size, else "object" (colour, shape: anything the preset treats alike; EDIT_KINDS)."""
    from t2ikit.world.edit_objects import edited_groups
    from t2ikit.world.moves import relation_move

    if relation_move(source, target) is not None:
        return "relation"
    try:
        before, after = edited_groups(source, target)
    except ValueError:
        return "object"
    return "size" if after.size is not None and after.size != before.size else "object"


_OBJECT = dict(method="blend", guidance=5.0, mask="detect", mask_snap=2, shape_mask=1.0, local_prompt=True,
               support="shapes-world")
_FRESH = {**_OBJECT, "strength": 1.0, "start": "noise"}

register_scene_support("shapes-world", ShapesWorldSupport)
register_preset("shapes-world", {"object": _OBJECT, "size": _FRESH, "relation": _FRESH})

__all__ = ["ShapesWorldSupport", "edit_kind"]
