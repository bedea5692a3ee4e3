"""Helpers of the report's tests: configs/mini.toml cut to test sizes, and untrained condition adapters for a tiny
model (the report's Q7 loads the shipped model's trained ones)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path


def toml_text(cfg: dict) -> str:
    """A TOML file of one level of tables (what the train configs are), values written as JSON literals."""
    lines = []
    for table, values in cfg.items():
        lines.append(f"[{table}]")
        for k, v in values.items():
            lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def tiny_mini_protocol(tmp_path: Path, monkeypatch) -> Path:
    """configs/mini.toml cut to test sizes (the smallest UNet, batch 4, a few VAE steps, short sampling) in place
    of the protocol's config while the test runs; a root folder for mini runs."""
    from t2ikit.report import mini

    cfg = tomllib.loads(mini.CONFIG.read_text())
    cfg["model"]["size"] = "mini-xs"
    cfg["unet_train"].update(batch_size=4, steps=2, warmup_steps=1)
    cfg["vae_train"].update(batch_size=4, calibration_batches=1)
    cfg["checkpoint"]["every"] = 1
    path = tmp_path / "mini-test.toml"
    path.write_text(toml_text(cfg))
    monkeypatch.setattr(mini, "CONFIG", path)
    monkeypatch.setattr(mini, "VAE_STEPS", 2)
    monkeypatch.setattr(mini, "EVAL_STEPS", 2)
    return tmp_path / "root"


def tiny_adapters(pipe) -> dict:
    """{condition: adapter} sized to `pipe`'s UNet with random (not zero-initialised) weights, so that each one
    changes the image: a stand-in for q7_modalities.load_adapters on a tiny model."""
    import torch

    from t2ikit.control.adapters import ConditionAdapter, adapter_config_for
    from t2ikit.control.encoders import CONDITIONS
    from t2ikit.control.reference import ReferenceAdapter, ReferenceConfig

    out = {}
    for name in CONDITIONS:
        torch.manual_seed(len(name))
        if name == "reference":
            config = ReferenceConfig(token_dim=pipe.unet.config.cross_attention_dim, gated=False)
            a = ReferenceAdapter(pipe.unet, config)
        else:
            a = ConditionAdapter(adapter_config_for(pipe.unet, pipe.vae_scale_factor, name, CONDITIONS[name]))
        for p in a.parameters():  # zero-initialised outputs would make an untrained adapter a no-op
            torch.nn.init.normal_(p, std=0.1)
        out[name] = a.eval()
    return out
