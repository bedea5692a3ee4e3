"""t2ikit: a text-to-image diffusion toolkit, measured on Shapes World."""

__version__ = "0.1.0"
