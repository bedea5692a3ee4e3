"""Where a model runs and in what precision: `--device auto|cpu|cuda|mps`, `--dtype fp32|fp16|bf16`.

"auto" picks CUDA when a CUDA device is present, else Apple's MPS, else the CPU. Without a dtype, CUDA and
MPS run in fp16 (as SD is usually run there: half the memory, the tensor cores) and the CPU in fp32 (fp16
matmuls are slow and lossy on CPUs). Noise is drawn on the CPU whatever the device (t2ikit.pipeline), so a
seed names the same image on every device up to the precision's rounding.
"""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for `device` ("auto", "cpu", "cuda", "cuda:1", "mps" or a torch.device); ValueError
    when it is not available here."""
    if isinstance(device, torch.device):
        return device
    name = str(device)
    kind = name.split(":")[0]
    if kind not in DEVICES or (kind != "cuda" and ":" in name):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N); got {device!r}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if torch.backends.mps.is_available() else torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device (torch {torch.__version__}); "
                         "use --device cpu or auto")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' asked for, but torch sees no Apple MPS device; use --device cpu or auto")
    return torch.device(name)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The torch dtype for `dtype` ("fp32", "fp16", "bf16", a torch.dtype, or None: fp16 on CUDA/MPS, fp32 on CPU)."""
    if dtype is None:
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


__all__ = ["DEVICES", "DTYPES", "dtype_name", "resolve_device", "resolve_dtype"]
