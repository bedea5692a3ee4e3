"""What `t2ikit bench fusion` gives every fusion strategy (`Budget`) and which strategies it compares by
default. Torch-free, so that `t2ikit --help` can show these defaults without loading the benchmark.
"""

from __future__ import annotations

import dataclasses

DEFAULT_STRATEGIES = ("sequential", "parallel", "interleaved", "gated", "hierarchical:16=sequential,8=gated,4=parallel")


@dataclasses.dataclass
class Budget:
    """What every strategy gets; the same for all of them."""

    steps: int = 200  # optimizer steps per strategy
    batch_size: int = 16  # images per step
    lr: float = 1e-3  # AdamW peak learning rate (linear warmup over 10%, cosine to 10%)
    size: str = "s"  # UNet size (models.sizes); its cross-attention width is the shipped text encoder's
    seed: int = 0  # model init, data stream, noise draws
    snr_gamma: float = 5.0  # min-SNR weighting, as the trainer
    caption_dropout: float = 0.1  # empty captions for classifier-free guidance, as the trainer
    n_prompts: int = 2  # CompBench prompts per category
    seeds: int = 1  # CompBench images per prompt
    sample_steps: int = 10  # sampler steps for CompBench images
    guidance: float = 4.0  # CFG scale for CompBench images
    image_size: int | None = None  # CompBench image side; None: the base model's (the oracle needs >= 32)
    timing_rounds: int = 20  # after training: rounds of one train step + one sampling call per strategy,
    # interleaved across strategies so load from other processes hits all of them alike
