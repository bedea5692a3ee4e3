"""Checkpoints that lose nothing: safetensors for every tensor, JSON for the rest, written atomically.

A checkpoint is a folder `ckpt-<order>-<stage>-<step>/` holding `tensors.safetensors` (weights, EMA,
optimizer moments, RNG states), `state.json` (stage, step, optimizer hyper-parameters, scalars) and
`config.json` (the resolved run config). It is written into a temporary folder, fsynced, then renamed
into place, so a folder with the final name is always complete; older checkpoints are deleted only after
a newer one is complete. No pickle is ever read or written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load, save

from t2ikit.train.distributed import full_tensor, shard_like

FORMAT = "t2ikit-checkpoint-1"
TENSORS, STATE, CONFIG = "tensors.safetensors", "state.json", "config.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


def checkpoint_name(order: int, stage: str, step: int) -> str:
    return f"ckpt-{order}-{stage}-{step:09d}"  # sorts in training order


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("ckpt-"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    root: str | Path,  # folder that holds every checkpoint of a run
    name: str,  # checkpoint_name(...)
    tensors: dict[str, torch.Tensor],  # everything that is a tensor
    state: dict,  # everything else; must be JSON-serialisable
    config_json: str,  # the resolved run config
    keep: int,  # complete checkpoints to keep after this one is in place
) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    blob = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})
    _write(tmp / TENSORS, blob)
    _write(tmp / STATE, json.dumps({"format": FORMAT, **state}, indent=1).encode())
    _write(tmp / CONFIG, config_json.encode())
    _fsync_dir(tmp)
    if final.exists():  # same step saved again (e.g. end of a resumed stage): swap, never leave a gap
        old = root / f".old-{name}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    _fsync_dir(root)
    for stale in list_checkpoints(root)[:-keep]:
        shutil.rmtree(stale)
    for leftover in root.glob(".tmp-*"):  # from a run killed mid-write
        if leftover != tmp:
            shutil.rmtree(leftover, ignore_errors=True)
    return final


def resolve_checkpoint(root: str | Path, which: str) -> Path:
    """`which` = "latest" (newest complete checkpoint under root) or a checkpoint folder path."""
    if which == "latest":
        found = list_checkpoints(root)
        if not found:
            raise ValueError(f"--resume: no checkpoint to resume from in {str(root)!r}")
        return found[-1]
    path = Path(which)
    if path.suffix in PICKLE_SUFFIXES:
        raise ValueError(f"refusing pickle checkpoint {which!r}: t2ikit reads only safetensors + JSON folders")
    if not path.is_dir():
        raise ValueError(f"checkpoint {which!r} does not exist or is not a checkpoint folder")
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, str]:
    """(tensors, state, config_json) of a checkpoint folder; any damage raises ValueError naming the file."""
    path = Path(path)
    pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES] if path.is_dir() else []
    if pickles:
        raise ValueError(f"refusing checkpoint {str(path)!r}: it holds pickle files {pickles}; t2ikit never unpickles")
    for name in (TENSORS, STATE, CONFIG):
        if not (path / name).is_file():
            raise ValueError(f"checkpoint {str(path)!r} is incomplete: {name} is missing")
    try:
        state = json.loads((path / STATE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint file {str(path / STATE)!r} is corrupt: {err}") from None
    if state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {str(path)!r} has format {state.get('format')!r}, expected {FORMAT!r}")
    try:
        tensors = load((path / TENSORS).read_bytes())
    except Exception as err:  # safetensors raises its own error types for truncated/garbled files
        raise ValueError(f"checkpoint file {str(path / TENSORS)!r} is corrupt: {err}") from None
    return tensors, state, (path / CONFIG).read_text()


# ----------------------------------------------------------------------------------------------------
# Optimizer and RNG state <-> (tensors, JSON)
# ----------------------------------------------------------------------------------------------------


def optimizer_to_flat(opt: torch.optim.Optimizer, prefix: str = "optim.") -> tuple[dict, dict]:
    """Whole tensors keyed by parameter index; FSDP-sharded moments are gathered (a collective: every rank calls it)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    # Sorted: after a resume the state's order is the loaded file's, which differs between processes, and every
    # rank must gather the same tensor at the same time.
    for idx in sorted(sd["state"]):
        entry = sd["state"][idx]
        for key in sorted(entry):
            value = entry[key]
            if torch.is_tensor(value):
                tensors[f"{prefix}{idx}.{key}"] = full_tensor(value)
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict, meta: dict, prefix: str = "optim.") -> None:
    """Inverse of optimizer_to_flat; whole moments of an FSDP-sharded parameter are cut like the parameter."""
    params = [p for g in opt.param_groups for p in g["params"]]  # the indices of opt.state_dict()
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith(prefix):
            idx, key = name[len(prefix) :].split(".", 1)
            state.setdefault(int(idx), {})[key] = shard_like(value, params[int(idx)]) if int(idx) < len(params) else value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_to_flat() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def rng_from_flat(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
