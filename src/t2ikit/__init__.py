"""t2ikit: a text-to-image diffusion toolkit, measured on Shapes World.

    from t2ikit import T2IPipeline
    pipe = T2IPipeline.from_folder(t2ikit.shipped_model_path())
    image = pipe.generate("a red circle above a blue square", seed=3)[0]

The public names below are imported when first used, so `import t2ikit` stays light (no torch, no diffusers).
"""

import importlib

# The composition root: Shapes World's implementations of the core's interfaces register themselves here
# (its caption grammar as the "shapes-world" Parser, its scene support and edit preset). Both are light.
from t2ikit.text import instructions as _english  # noqa: F401  (the "english" Parser and its InstructionReader)
from t2ikit.world import edit_support as _edit_support  # noqa: F401
from t2ikit.world import parser as _parser  # noqa: F401

# public name -> the module that defines it
_PUBLIC = {
    # generation
    "T2IPipeline": "t2ikit.pipeline",
    "GenerationSpec": "t2ikit.pipeline",
    "Generation": "t2ikit.pipeline",
    # the sampling core
    "Conditioning": "t2ikit.diffusion.conditioning",
    "sample": "t2ikit.diffusion.loop",
    "SAMPLERS": "t2ikit.diffusion.samplers",
    "make_scheduler": "t2ikit.diffusion.samplers",
    # prompt structure (the Parser interface and its registry)
    "Parser": "t2ikit.text.parser",
    "PromptStructure": "t2ikit.text.parser",
    "register_parser": "t2ikit.text.parser",
    "get_parser": "t2ikit.text.parser",
    # editing and inversion (the edit() function: t2ikit.edit.edit; `t2ikit.edit` is its package)
    "EditOptions": "t2ikit.edit",
    "EditResult": "t2ikit.edit",
    "SceneSupport": "t2ikit.edit.support",
    "register_scene_support": "t2ikit.edit.support",
    "invert": "t2ikit.diffusion.inversion",
    # model folders
    "known_models": "t2ikit.models.registry",
    "resolve_model": "t2ikit.models.registry",
    "shipped_model_path": "t2ikit.models.registry",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("t2ikit")
        except PackageNotFoundError:  # a source tree that was never installed
            value = "0+unknown"
    elif name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    else:
        raise AttributeError(f"module 't2ikit' has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
