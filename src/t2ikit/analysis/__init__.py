"""Prompt analysis: attribution maps (attribution), sensitivity, interactions, information and prompt
length (sensitivity), decomposition with timestep weighting (decomposition), and the seeded batched
runner they share (runner). Prompt weighting syntax lives in `t2ikit.text.weighting`."""
