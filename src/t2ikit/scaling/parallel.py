"""Parallelism cost model: predicted step time and memory per device for DP, ZeRO/FSDP, TP, PP and 3D layouts.

Pure functions of a model description (`ModelSpec`), the hardware (`Hardware`) and the batch. Units are SI
and explicit in every name: FLOP, FLOP/s, bytes, bytes/s, seconds. The model is the usual analytic one:

    step time = (computation + communication) / efficiency

with no overlap of communication and computation (an upper bound on what overlap can hide). Sources:
- GPipe, Huang et al. 2019: micro-batching and the pipeline bubble.
- Megatron-LM, Shoeybi et al. 2019 and Narayanan et al. 2021 ("Efficient Large-Scale Language Model
  Training on GPU Clusters Using Megatron-LM"): tensor parallelism, 1F1B pipeline schedule, 3D layouts.
- ZeRO, Rajbhandari et al. 2020: memory of mixed-precision Adam and of the three sharding stages, and
  their communication volume. FSDP (PyTorch, Zhao et al. 2023) FULL_SHARD is ZeRO-3.
- Ring all-reduce, Patarasuk & Yuan 2009: the bandwidth term every paper above uses.
- Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"): activation
  memory of a transformer layer, for models given as raw numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

# ----------------------------------------------------------------------------------------------------
# Descriptions: model, precision, hardware, layout
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """What the cost model needs to know about a model; all counts are per training sample."""

    name: str  # a named size ("m") or "<params> params"
    params: int  # trainable parameters
    flops_per_sample: float  # training FLOP per sample (default 3 x forward: backward ~ 2 x forward)
    layers: int  # transformer layers: Megatron all-reduces per layer; pipeline stages split these
    tp_elems_per_sample: float  # sum over layers of seq * hidden: TP all-reduces 4 x this per sample
    boundary_elems_per_sample: float  # activation elements sent between pipeline stages
    activation_elems_per_sample: float  # activation elements kept for backward, all layers, one sample


@dataclass(frozen=True)
class Precision:
    """Bytes per parameter of each training state, and per activation element."""

    weight_bytes: float  # the weights the forward pass reads
    grad_bytes: float  # the gradients the backward pass writes and data parallelism all-reduces
    optimizer_bytes: float  # Adam: fp32 master copy (mixed precision only) + first and second moments
    activation_bytes: float  # one activation element


# ZeRO, Rajbhandari et al. 2020, Sec. 3.1: mixed-precision Adam keeps 2 + 2 + K bytes per parameter with
# K = 12 (fp32 master weights, momentum, variance). In plain fp32 there is no master copy: K = 8.
PRECISIONS: dict[str, Precision] = {
    "mixed": Precision(weight_bytes=2, grad_bytes=2, optimizer_bytes=12, activation_bytes=2),
    "fp32": Precision(weight_bytes=4, grad_bytes=4, optimizer_bytes=8, activation_bytes=4),
}


@dataclass(frozen=True)
class Hardware:
    devices: int  # number of devices N
    device_flops: float  # FLOP/s one device sustains on dense matmuls
    memory_bytes: float  # memory per device, bytes
    bandwidth_bytes: float  # collective bandwidth per device (bus bandwidth of a ring), bytes/s
    efficiency: float = 1.0  # fraction of (device_flops, bandwidth) the training step reaches; in (0, 1]


@dataclass(frozen=True)
class Layout:
    """data x tensor x pipeline = devices; `zero` shards the data-parallel replicas' states (0 = none)."""

    data: int
    tensor: int
    pipeline: int
    zero: int = 0  # ZeRO stage: 1 optimizer states, 2 + gradients, 3 (= FSDP FULL_SHARD) + weights

    @property
    def name(self) -> str:
        d, t, p = self.data, self.tensor, self.pipeline
        if t == 1 and p == 1:
            return {0: "dp", 1: "zero1", 2: "zero2", 3: "zero3/fsdp"}[self.zero] if d > 1 else "single"
        if d == 1 and p == 1:
            return "tp"
        if d == 1 and t == 1:
            return "pp"
        return f"3d(d{d},t{t},p{p})" + (f"+zero{self.zero}" if self.zero else "")


# ----------------------------------------------------------------------------------------------------
# Collectives and the pipeline bubble
# ----------------------------------------------------------------------------------------------------


def ring_allreduce_seconds(nbytes: float, n: int, bandwidth_bytes: float) -> float:
    """All-reduce of `nbytes` over `n` ranks: 2 (n-1)/n * bytes / bandwidth (ring; Patarasuk & Yuan 2009)."""
    return 2.0 * (n - 1) / n * nbytes / bandwidth_bytes if n > 1 else 0.0


def ring_allgather_seconds(nbytes: float, n: int, bandwidth_bytes: float) -> float:
    """All-gather (or reduce-scatter) of a buffer of `nbytes` in total: (n-1)/n * bytes / bandwidth."""
    return (n - 1) / n * nbytes / bandwidth_bytes if n > 1 else 0.0


def bubble_fraction(stages: int, micro_batches: int) -> float:
    """Idle fraction of a pipeline step: (p-1) / (m+p-1) (GPipe; Narayanan et al. 2021, Sec. 2.2.1)."""
    return (stages - 1) / (micro_batches + stages - 1)


# ----------------------------------------------------------------------------------------------------
# Memory per device
# ----------------------------------------------------------------------------------------------------


def memory_per_device(spec: ModelSpec, layout: Layout, precision: Precision, micro_batch: int,
                      micro_batches: int) -> dict[str, float]:
    """Bytes per device: weights, gradients, optimizer states, activations, and their total."""
    d, t, p = layout.data, layout.tensor, layout.pipeline
    shard = spec.params / (t * p)  # parameters one device holds before ZeRO: Megatron splits layers by t, stages by p
    # ZeRO, Rajbhandari et al. 2020, Sec. 5 / Fig. 1: stage 1 shards optimizer states over the d replicas,
    # stage 2 also gradients, stage 3 also weights.
    opt_div = d if layout.zero >= 1 else 1
    grad_div = d if layout.zero >= 2 else 1
    weight_div = d if layout.zero >= 3 else 1
    # Activations of one micro-batch, sharded by t (Megatron with sequence parallelism, Korthikanti et al.
    # 2022, Sec. 4.2.2). Under the 1F1B schedule a stage holds min(p, m) micro-batches in flight, each over
    # its L/p layers (Narayanan et al. 2021, Sec. 2.2.1); without a pipeline, one micro-batch at a time.
    in_flight = min(p, micro_batches)
    activations = spec.activation_elems_per_sample * micro_batch * precision.activation_bytes * in_flight / (p * t)
    out = {
        "weights": shard * precision.weight_bytes / weight_div,
        "gradients": shard * precision.grad_bytes / grad_div,
        "optimizer": shard * precision.optimizer_bytes / opt_div,
        "activations": activations,
    }
    out["total"] = sum(out.values())
    return out


# ----------------------------------------------------------------------------------------------------
# Step time
# ----------------------------------------------------------------------------------------------------


def step_seconds(spec: ModelSpec, layout: Layout, hw: Hardware, precision: Precision, global_batch: int,
                 micro_batch: int) -> dict[str, float]:
    """Seconds of one optimizer step, by part; `total` = (computation + communication) / efficiency."""
    d, t, p = layout.data, layout.tensor, layout.pipeline
    m = global_batch // (d * micro_batch)  # micro-batches per replica per step (gradient accumulation)
    bw = hw.bandwidth_bytes
    # Per micro-batch on one pipeline stage: its share of the FLOPs ...
    compute_mb = micro_batch * spec.flops_per_sample / (t * p) / hw.device_flops
    # ... Megatron tensor parallelism: 2 all-reduces in the forward and 2 in the backward of every
    # transformer layer, each of the (micro_batch, seq, hidden) activation (Shoeybi et al. 2019, Sec. 3;
    # Narayanan et al. 2021, Sec. 3.2), over the t ranks of the layer ...
    tp_bytes_mb = micro_batch * spec.tp_elems_per_sample / p * precision.activation_bytes
    tp_mb = 4 * ring_allreduce_seconds(tp_bytes_mb, t, bw) if t > 1 else 0.0
    # ... and point-to-point: each stage sends its output activation forward and receives its gradient
    # backward, split over the t ranks by the scatter/gather optimisation (Narayanan et al. 2021, Sec. 4.1).
    p2p_mb = 2 * micro_batch * spec.boundary_elems_per_sample * precision.activation_bytes / t / bw if p > 1 else 0.0
    per_mb = compute_mb + tp_mb + p2p_mb
    # The pipeline runs m micro-batches in m + p - 1 slots; (p-1) of them are the bubble (GPipe).
    bubble = (p - 1) * per_mb
    # Data parallelism on each device's shard of the gradients (and of the weights for ZeRO-3).
    shard = spec.params / (t * p)
    if layout.zero <= 2:
        # Plain DP: ring all-reduce of the gradients. ZeRO-1/2: reduce-scatter of the gradients and
        # all-gather of the updated weights: the same volume as DP (Rajbhandari et al. 2020, Sec. 7.2.1).
        # ZeRO-2 keeps only its gradient shard, so it reduce-scatters after every micro-batch.
        scatters = m if layout.zero == 2 else 1
        dp = (ring_allreduce_seconds(shard * precision.grad_bytes, d, bw) if layout.zero == 0 else
              ring_allgather_seconds(shard * (scatters * precision.grad_bytes + precision.weight_bytes), d, bw))
    else:
        # ZeRO-3 / FSDP: all-gather the weights in the forward and again in the backward, reduce-scatter the
        # gradients: 1.5 x the DP volume (Rajbhandari et al. 2020, Sec. 7.2.2). With gradient accumulation
        # FSDP gathers again for every micro-batch (no_sync keeps the gradients whole, not the weights).
        dp = ring_allgather_seconds(shard * (2 * m * precision.weight_bytes + precision.grad_bytes), d, bw)
    parts = {
        "compute": m * compute_mb,
        "tensor_comm": m * tp_mb,
        "pipeline_comm": m * p2p_mb,
        "bubble": bubble,
        "data_comm": dp,
    }
    parts["total"] = sum(parts.values()) / hw.efficiency
    parts["bubble_fraction"] = bubble_fraction(p, m)
    parts["micro_batches"] = m
    return parts


# ----------------------------------------------------------------------------------------------------
# Layouts and the plan
# ----------------------------------------------------------------------------------------------------


def enumerate_layouts(devices: int) -> list[Layout]:
    """Every factorisation data x tensor x pipeline = devices; ZeRO 1-3 for pure DP, ZeRO-1 with 3D."""
    layouts = []
    for t in _divisors(devices):
        for p in _divisors(devices // t):
            d = devices // (t * p)
            layouts.append(Layout(d, t, p, 0))
            if d > 1:
                # ZeRO-2/3 do not compose with pipeline parallelism in DeepSpeed; ZeRO-1 does (Megatron-DeepSpeed).
                stages = (1, 2, 3) if t == p == 1 else (1,)
                layouts += [Layout(d, t, p, z) for z in stages]
    return layouts


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


@dataclass
class Plan:
    rows: list[dict] = field(default_factory=list)  # one per layout: layout, time, memory, fits, reason
    best: dict | None = None  # the fastest row that fits; None when nothing fits

    def to_dict(self) -> dict:
        return {"rows": self.rows, "best": self.best}


def validate(hw: Hardware, global_batch: int, micro_batch: int) -> None:
    """Raise ValueError, naming the argument, for input the cost model cannot price."""
    if not isinstance(hw.devices, int) or hw.devices < 1:
        raise ValueError(f"devices must be an integer >= 1, got {hw.devices!r}")
    for name, value in [("device_flops (FLOP/s)", hw.device_flops), ("memory (bytes)", hw.memory_bytes),
                        ("bandwidth (bytes/s)", hw.bandwidth_bytes)]:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if not (0 < hw.efficiency <= 1):
        raise ValueError(f"efficiency must be in (0, 1], got {hw.efficiency!r}")
    if global_batch < 1 or micro_batch < 1:
        raise ValueError(f"global batch and micro-batch must be >= 1, got {global_batch} and {micro_batch}")
    if global_batch % hw.devices:
        raise ValueError(f"global batch {global_batch} is not divisible by the world size {hw.devices}; "
                         f"use a multiple of {hw.devices}")
    if micro_batch > global_batch:
        raise ValueError(f"micro-batch {micro_batch} is larger than the global batch {global_batch}")


def plan(spec: ModelSpec, hw: Hardware, global_batch: int, micro_batch: int = 1,
         precision: str | Precision = "mixed") -> Plan:
    """Price every layout of `hw.devices`; the best is the fastest that fits (ties: least memory)."""
    validate(hw, global_batch, micro_batch)
    if isinstance(precision, str):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
        precision = PRECISIONS[precision]
    result = Plan()
    for layout in enumerate_layouts(hw.devices):
        row = {"layout": layout.name, **asdict(layout)}
        per_replica = global_batch // layout.data
        if per_replica % micro_batch:
            row.update(fits=False,
                       reason=f"batch per replica {per_replica} is not a multiple of micro-batch {micro_batch}")
        elif layout.pipeline > spec.layers:
            row.update(fits=False, reason=f"{layout.pipeline} stages but only {spec.layers} layers")
        else:
            time = step_seconds(spec, layout, hw, precision, global_batch, micro_batch)
            mem = memory_per_device(spec, layout, precision, micro_batch, int(time["micro_batches"]))
            fits = mem["total"] <= hw.memory_bytes
            row.update(step_seconds=time["total"], time=time, memory=mem, fits=fits,
                       reason="" if fits else f"needs {mem['total'] / 2**30:.2f} GiB per device")
        result.rows.append(row)
    fitting = [r for r in result.rows if r["fits"]]
    if fitting:
        result.best = min(fitting, key=lambda r: (r["step_seconds"], r["memory"]["total"]))
    return result


# ----------------------------------------------------------------------------------------------------
# Model descriptions: from raw numbers, or from a named UNet size
# ----------------------------------------------------------------------------------------------------


def spec_from_numbers(params: float, flops_per_sample: float, layers: int = 24, hidden: int | None = None,
                      seq: int = 1024, name: str | None = None) -> ModelSpec:
    """A transformer-like model given by its size. `hidden` defaults to sqrt(params / (12 layers)), the
    width of a stack of layers with 12 h^2 parameters each (4 h^2 attention + 8 h^2 MLP)."""
    if not (params > 0 and math.isfinite(params)):
        raise ValueError(f"params must be a positive number, got {params!r}")
    if not (flops_per_sample > 0 and math.isfinite(flops_per_sample)):
        raise ValueError(f"flops_per_sample must be a positive number, got {flops_per_sample!r}")
    if layers < 1 or seq < 1 or (hidden is not None and hidden < 1):
        raise ValueError(f"layers, hidden and seq must be >= 1, got {layers}, {hidden}, {seq}")
    h = hidden or max(1, round(math.sqrt(params / (12 * layers))))
    heads = max(1, h // 64)
    # Korthikanti et al. 2022, Eq. 2: s b h (34 + 5 a s / h) bytes per layer in 16-bit, i.e. 17 + 2.5 a s / h
    # two-byte elements per token and channel.
    act = layers * seq * h * (17 + 2.5 * heads * seq / h)
    return ModelSpec(name=name or f"{params:.3g} params", params=int(params), flops_per_sample=float(flops_per_sample),
                     layers=layers, tp_elems_per_sample=layers * seq * h, boundary_elems_per_sample=seq * h,
                     activation_elems_per_sample=act)


def spec_from_size(size: str, resolution: int = 64, vae: str = "f4", text_tokens: int = 16,
                   flops_per_sample: float | None = None) -> ModelSpec:
    """A named UNet size of t2ikit.models.sizes, measured on the meta device (no memory, no compute).

    Parameters are counted; forward FLOPs, the transformer blocks' (tokens, channels) and the activations
    saved for backward are traced from one forward at batch 1. The meta device also makes the flop
    counter see attention (the fused CPU kernel is not counted). Training FLOPs = 3 x forward.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from t2ikit.models.sizes import MODEL_SIZES, build_unet, vae_size

    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; known sizes: {', '.join(MODEL_SIZES)}")
    v = vae_size(vae)
    side = resolution // v.factor
    with torch.device("meta"):
        unet = build_unet(size, latent_channels=v.latent_channels, sample_size=side)
    params = sum(p.numel() for p in unet.parameters())
    blocks: list[tuple[int, int]] = []  # (tokens, channels) entering each transformer layer

    def record(_module, inputs):
        blocks.append(tuple(inputs[0].shape[1:3]))  # (B, HW, C)

    resnets: list[int] = []  # output elements of each ResNet block

    def record_resnet(_module, _inputs, output):
        resnets.append(output[0].numel())  # (B=1, C, H, W)

    hooks = [m.register_forward_pre_hook(record) for m in unet.modules()
             if m.__class__.__name__ == "BasicTransformerBlock"]
    hooks += [m.register_forward_hook(record_resnet) for m in unet.modules()
              if m.__class__.__name__ == "ResnetBlock2D"]
    param_ids = {id(p) for p in unet.parameters()}
    saved = [0]

    def pack(x):
        base = x if x._base is None else x._base
        if id(base) not in param_ids:  # weights are counted as weights, not activations
            saved[0] += x.numel()
        return x

    x = torch.zeros(1, v.latent_channels, side, side, device="meta")
    cond = torch.zeros(1, text_tokens, unet.config.cross_attention_dim, device="meta")
    with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        unet(x, torch.tensor([500], device="meta"), encoder_hidden_states=cond)
    for h in hooks:
        h.remove()
    forward = counter.get_total_flops()
    return ModelSpec(
        name=size, params=params,
        flops_per_sample=float(flops_per_sample or 3 * forward),  # backward ~ 2 x forward (Kaplan et al. 2020)
        # Megatron's column/row split applied to a ResNet block's two convs costs one all-reduce forward and
        # one backward (half a transformer layer's four); the transformer layers cost four each.
        layers=len(blocks), tp_elems_per_sample=float(sum(s * c for s, c in blocks) + 0.5 * sum(resnets)),
        boundary_elems_per_sample=float(max(s * c for s, c in blocks)),
        activation_elems_per_sample=float(saved[0]),
    )
