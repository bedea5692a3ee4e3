"""Scene support: what an edit needs to know about the objects in an image, beyond the prompts' words.

The core edit (prompt swap, Prompt-to-Prompt, blend with DiffEdit / attention / user masks) needs only
prompts and a model. Some options need a world that knows its objects: reading an instruction, finding
the edited object with a detector (mask="detect"), drawing the target's outline and silhouette in its box
(target_outline, shape_mask), the edited object's phrase alone (local_prompt), moving an object for a
relation edit. A world implements `SceneSupport` and registers it under a name with
`register_scene_support`, as a prompt parser registers itself (`t2ikit.text.parser`); Shapes World's is
`world/edit_support.py`, registered when `t2ikit` is imported.

Objects are the support's own (opaque to the core): the core passes back what the support gave it.
This module imports no torch, so a world can register at import without loading a model library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

from t2ikit.text.parser import InstructionReader

if TYPE_CHECKING:
    import torch


@dataclass
class TargetConditions:
    """Per image: the sketch and class-mask conditions holding the target object, and the grown edit mask."""

    sketch: torch.Tensor | None  # (B, 1, H, W): the image's outlines outside `mask`, the target's outline inside
    #   (None for a relation edit's placement: the blend makes its sketch as usual)
    classes: torch.Tensor  # (B, K, H, W): the target's silhouette in its shape's channel, 0 elsewhere
    mask: torch.Tensor  # (B, 1, H, W): the edit mask grown to hold the target's box (+ pad px)
    missing: list[int]  # images whose mask holds no object: no target drawn, their conditions are the image's
    prompts: list[str] | None = None  # relation edits: the placed object's phrase, what the mask is drawn under


@runtime_checkable
class SceneSupport(Protocol):
    """A world's knowledge of its objects, for the edit options that need it (see the module docstring).

    Images are (B, 3, H, W) tensors in [0, 1] (one image: (3, H, W)); masks (B, 1, H, W) in {0, 1}.
    Methods that read an edit raise ValueError (a sentence) when the prompts do not ask for what they need.
    """

    name: str
    instructions: InstructionReader  # edit instructions -> (source, target) prompts
    colour_words: frozenset[str]  # words that change only an object's colour: such an edit keeps every outline

    def describe(self, image) -> str | None:
        """A source prompt saying what is in `image` (3, H, W), or None when it cannot tell."""

    def source_mismatches(self, images, prompts: list[str]) -> list[str]:
        """Sentences naming where an image disagrees with its source prompt ([] when all agree or cannot tell)."""

    def edited_object(self, source: str, target: str) -> str:
        """The name ("red circle") of the one object of `source` that `target` changes; ValueError if not one."""

    def detect(self, images, sources: list[str], targets: list[str], pad: int) -> tuple[object, list[int]]:
        """(B, 1, H, W) boxes (grown by `pad` px) of the edited objects the detector finds in each image, and
        the indices of the images where it finds none (their mask is empty)."""

    def local_prompts(self, source: str, target: str) -> tuple[str, str]:
        """The edited object's phrase alone, before and after the edit ("a red circle", "a red triangle")."""

    def target_conditions(self, images, pixel_mask, sources: list[str], targets: list[str],
                          pad: int) -> TargetConditions:
        """The target object drawn in the box of the edited object found inside `pixel_mask`."""

    def relation_move(self, source: str, target: str) -> object | None:
        """The move a relation edit asks for (its str() names both objects), or None for any other edit."""

    def plan_move(self, image, move) -> list | None:
        """The placements that make `move` hold in `image` (3, H, W); None when its objects are not found."""

    def placement_conditions(self, images, placements: list, pad: int) -> TargetConditions:
        """Per image, one placement drawn: its mask, class map and the placed object's phrase as the prompt."""


_SUPPORTS: dict[str, Callable[[], SceneSupport]] = {}


def register_scene_support(name: str, factory: Callable[[], SceneSupport]) -> None:
    """Make `get_scene_support(name)` build a support with `factory()` (implementations call this at import)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a scene support's name must be a non-empty str; got {name!r}")
    _SUPPORTS[name] = factory


def scene_support_names() -> list[str]:
    return sorted(_SUPPORTS)


def get_scene_support(name: str | SceneSupport | None = None) -> SceneSupport | None:
    """The registered support `name` (a SceneSupport passes through); None: the only registered one, or
    None when none or several are registered. ValueError for an unknown name."""
    if isinstance(name, SceneSupport):
        return name
    if name is None:
        return _SUPPORTS[next(iter(_SUPPORTS))]() if len(_SUPPORTS) == 1 else None
    if name not in _SUPPORTS:
        raise ValueError(f"unknown scene support {name!r}; registered: {', '.join(scene_support_names()) or 'none'}")
    return _SUPPORTS[name]()


__all__ = ["SceneSupport", "TargetConditions", "get_scene_support", "register_scene_support", "scene_support_names"]
