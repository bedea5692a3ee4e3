"""The training stream: Shapes World batches as a map-style Dataset indexed by global micro-step.

Item i is a whole batch, a pure function of (seed, i), so the stream is deterministic, resume-exact
(start at the step where a checkpoint stopped) and can be rendered by many DataLoader workers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from t2ikit.train.grounding import caption_token_groups
from t2ikit.world.dataset import make_batch


def _make_batch(seed: int, index: int, batch_size: int, resolution: int, split: str, **kwargs) -> dict:
    return make_batch(seed, index, batch_size, resolution=resolution, split=split, **kwargs)


def style_mixed_batch(seed: int, index: int, batch_size: int, resolution: int, split: str, style_share: float = 0.5,
                      make_batch=None, **kwargs) -> dict:
    """Like `make_batch`, but each scene is drawn from the style category with probability `style_share`
    (a draw that depends only on (seed, scene index), so a shard's one-scene batches agree with the whole
    batch). The training mix states a style for a quarter of its scenes, so gray and black backgrounds
    are rare; a VAE that must keep objects on every background sees them this way (functools.partial
    of this function is picklable, for DataLoader workers)."""
    make_batch = make_batch or _make_batch
    rgb, captions = [], []
    for j in range(batch_size):
        scene = index * batch_size + j
        style = np.random.default_rng([seed, scene, 0x57F1E]).random() < style_share
        part = make_batch(seed + 7 if style else seed, scene, 1, resolution, split,
                          **({"category": "style"} if style else {}), **kwargs)
        rgb.append(part["rgb"])
        captions.extend(part["captions"])
    return {"rgb": np.concatenate(rgb), "captions": captions}


class ShapesBatches(Dataset):
    """`dataset[i]` -> {"pixels": uint8 (B, 3, R, R), "input_ids": (B, T) or absent, "captions"}.

    Pixels travel as uint8 (a quarter of the shared memory of float32 across worker processes, as PNGs
    store them); `to_model_input` turns them into floats in [-1, 1] on the training device.
    """

    def __init__(
        self,
        seed: int,  # world seed; the stream of scenes is a function of it
        batch_size: int,  # scenes per item (one micro-batch)
        length: int,  # number of items (global micro-steps)
        resolution: int = 64,  # image side in pixels
        tokenizer=None,  # when given, captions are tokenized (padded to tokenizer.model_max_length)
        caption_dropout: float = 0.0,  # probability that a caption is replaced by "" (for CFG)
        split: str = "train",  # Shapes World split
        make_batch=None,  # override of t2ikit.world.dataset.make_batch (tests); must be picklable
        curriculum=None,  # t2ikit.train.curriculum.Curriculum: resolution and max objects per optimizer step
        items_per_step: int = 1,  # items per optimizer step (grad_accum): item i belongs to step i // items_per_step
        shard: tuple[int, int] = (0, 1),  # (rank, world): this process keeps scenes rank::world of each item
        grounding: bool = False,  # add "group_masks", "relations", "token_groups" (t2ikit.train.grounding); needs tokenizer
    ):
        self.seed, self.batch_size, self.length, self.resolution = seed, batch_size, length, resolution
        self.tokenizer, self.caption_dropout, self.split = tokenizer, caption_dropout, split
        self.make_batch = make_batch or _make_batch
        self.curriculum, self.items_per_step, self.shard = curriculum, items_per_step, shard
        self.grounding = grounding
        if grounding and tokenizer is None:
            raise ValueError("grounding targets need a tokenizer (they name token positions)")
        if batch_size % shard[1]:
            raise ValueError(f"the world size {shard[1]} does not divide the micro-batch of {batch_size} images")

    def _render(self, index: int) -> dict:
        resolution, kwargs = self.resolution, {}
        if self.curriculum is not None:
            step = index // self.items_per_step
            resolution = self.curriculum.resolution_at(step)
            if self.curriculum.max_objects_at(step) is not None:
                kwargs["max_objects"] = self.curriculum.max_objects_at(step)
            if self.curriculum.mix:
                kwargs["mix"] = dict(self.curriculum.mix)
        if self.grounding:
            kwargs["masks"] = True
        rank, world = self.shard
        if world == 1:
            return self.make_batch(self.seed, index, self.batch_size, resolution, self.split, **kwargs)
        # Scene j of item `index` is scene index * batch_size + j of the stream: render only this rank's.
        parts = [
            self.make_batch(self.seed, index * self.batch_size + j, 1, resolution, self.split, **kwargs)
            for j in range(rank, self.batch_size, world)
        ]
        joined = {"rgb": np.concatenate([p["rgb"] for p in parts]), "captions": [c for p in parts for c in p["captions"]]}
        if self.grounding:
            for key in ("group_masks", "relations"):
                joined[key] = np.concatenate([p[key] for p in parts])
        return joined

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        batch = self._render(index)
        rgb8 = np.rint(np.clip(batch["rgb"], 0.0, 1.0) * 255.0).astype(np.uint8)  # (B, H, W, 3)
        pixels = torch.from_numpy(rgb8).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W)
        item = {"pixels": pixels, "captions": list(batch["captions"])}
        if self.tokenizer is not None:
            # Dropout draws depend only on (seed, index): identical in any worker and after resume.
            rng = np.random.default_rng([self.seed, index, 0xC0F])
            drop = (rng.random(self.batch_size) < self.caption_dropout)[self.shard[0] :: self.shard[1]]
            captions = ["" if d else c for c, d in zip(item["captions"], drop)]
            item["input_ids"] = self.tokenizer(
                captions,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            if self.grounding:
                length = item["input_ids"].shape[1]
                item["token_groups"] = torch.from_numpy(np.stack([caption_token_groups(c, length) for c in captions]))
                item["group_masks"] = torch.from_numpy(batch["group_masks"])
                item["relations"] = torch.from_numpy(batch["relations"])  # a dropped caption grounds no group
        return item


def to_model_input(pixels: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 (B, 3, H, W) in [-1, 1] on `device`."""
    return pixels.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)


def make_loader(dataset: ShapesBatches, start: int, workers: int, prefetch: int, pin_memory: bool) -> DataLoader:
    """Items start, start+1, ... in order; each item is already a batch (batch_size=None)."""
    kwargs = {"num_workers": workers, "pin_memory": pin_memory}
    if workers > 0:
        kwargs.update(prefetch_factor=prefetch, persistent_workers=False)
    return DataLoader(dataset, batch_size=None, sampler=range(start, len(dataset)), **kwargs)
