"""Multi-modal conditioning and control: condition maps, adapters, N-condition guidance, regions, consistency.

- encoders.py   sketch / depth / mask / reference maps, checked; Shapes World triples
- adapters.py   T2I-Adapter-style residual adapters, hierarchical (a modality per scale), save/load
- reference.py  IP-Adapter-style reference-image tokens through their own key/value projections (a hook)
- guidance.py   composed and nested guidance over N conditions (scales, step ranges, masks, priorities)
- regions.py    region prompts: masked cross-attention or noise-space blending
- attributes.py change one object's colour, nothing else
- consistency.py per-condition consistency metrics and the weighted L_consistency
- generate.py   `generate_controlled(pipe, prompt, sketch=..., regions=..., scales=...)`
"""
