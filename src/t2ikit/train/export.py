"""Export trained components as an ordinary diffusers StableDiffusionPipeline folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler

from t2ikit.train.config import DiffusionConfig


def sampling_scheduler(d: DiffusionConfig):
    """DPM-Solver++ (Lu et al. 2022) on the training schedule: the shipped default sampler."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=d.num_train_timesteps,
        beta_schedule=d.beta_schedule,
        beta_start=d.beta_start,
        beta_end=d.beta_end,
        prediction_type=d.prediction_type,
        timestep_spacing="trailing",  # the first step starts at the noisiest training timestep
        steps_offset=1,
    )


def build_pipeline(vae, text_encoder, tokenizer, unet, diffusion: DiffusionConfig):
    from diffusers import StableDiffusionPipeline  # loads transformers' pipelines: only when exporting

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sampling_scheduler(diffusion),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _load_as_float32(config_path: Path) -> None:
    """fp16 weights on disk, float32 in the config: transformers loads a text encoder in its config's dtype
    while diffusers loads its models in float32, so without this a plain from_pretrained mixes dtypes."""
    config = json.loads(config_path.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def export_pipeline(pipeline, out_dir: str | Path, fp16: bool = False) -> Path:
    """save_pretrained(safetensors) into a temporary folder, then rename over out_dir (atomic)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    if fp16:
        pipeline = pipeline.to(torch.float16)
    pipeline.save_pretrained(tmp, safe_serialization=True)
    if fp16:
        _load_as_float32(tmp / "text_encoder" / "config.json")
    if out_dir.exists():
        old = out_dir.parent / f".old-{out_dir.name}-{os.getpid()}"
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old)
    else:
        os.rename(tmp, out_dir)
    return out_dir
