"""Multi-modal conditioning and control: condition maps, adapters, N-condition guidance, regions.

- encoders.py   sketch / depth / mask / reference maps, checked (Shapes World triples: world/conditions.py)
- adapters.py   T2I-Adapter-style residual adapters, hierarchical (a modality per scale), save/load
- reference.py  IP-Adapter-style reference-image tokens through their own key/value projections (a hook)
- regions.py    region prompts: masked cross-attention or noise-space blending
- attributes.py change one object's colour, nothing else
- compose.py    adapters resolved and checked, scales, the regions' bootstrap: parts of one Conditioning

A request combines them in one `T2IPipeline.generate(prompt, sketch=..., regions=..., scales=...)`.
"""
