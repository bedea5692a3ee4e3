"""t2ikit: a text-to-image diffusion toolkit, measured on Shapes World."""

# The composition root: Shapes World's implementations of the core's interfaces register themselves here
# (its caption grammar as the "shapes-world" Parser, its scene support and edit preset). Both are light.
from t2ikit.text import instructions as _english  # noqa: F401  (the "english" Parser and its InstructionReader)
from t2ikit.world import edit_support as _edit_support  # noqa: F401
from t2ikit.world import parser as _parser  # noqa: F401

__version__ = "0.1.0"
