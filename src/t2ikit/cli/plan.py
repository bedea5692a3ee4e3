"""`t2ikit plan`: predicted step time and memory per device of every parallel layout, and the best one."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan", help="parallel layout and predicted step time",
        description="Price data, ZeRO/FSDP, tensor, pipeline and 3D layouts with the analytic cost model of "
                    "t2ikit.scaling.parallel: step time = (computation + communication) / efficiency.")
    parser.add_argument("--model-size", required=True,
                        help="a named size of t2ikit.models.sizes (xs, s, m, l) or a raw parameter count (860e6)")
    parser.add_argument("--devices", type=int, required=True, help="number of devices N")
    parser.add_argument("--device-flops", type=float, required=True, help="FLOP/s one device sustains (e.g. 300e12)")
    parser.add_argument("--memory", type=float, required=True, help="memory per device in bytes (e.g. 80e9)")
    parser.add_argument("--bandwidth", type=float, required=True,
                        help="collective bandwidth per device in bytes/s (e.g. 100e9)")
    parser.add_argument("--global-batch", type=int, default=None,
                        help="samples per step (default: devices x micro-batch)")
    parser.add_argument("--micro-batch", type=int, default=1, help="samples per forward/backward on one replica")
    parser.add_argument("--flops-per-sample", type=float, default=None,
                        help="training FLOP per sample (default for a named size: 3 x its forward FLOPs; "
                             "required with a raw parameter count)")
    parser.add_argument("--efficiency", type=float, default=1.0,
                        help="fraction of device FLOP/s and bandwidth the step reaches, in (0, 1]")
    parser.add_argument("--precision", default="mixed", choices=["mixed", "fp32"],
                        help="mixed: 16-bit weights/grads/activations + fp32 Adam master (ZeRO's 2+2+12 bytes)")
    parser.add_argument("--resolution", type=int, default=64, help="image resolution of a named size (VAE f4)")
    parser.add_argument("--layers", type=int, default=24, help="transformer layers of a raw-count model")
    parser.add_argument("--hidden", type=int, default=None,
                        help="hidden width of a raw-count model (default sqrt(params / (12 layers)))")
    parser.add_argument("--seq", type=int, default=1024, help="tokens per sample of a raw-count model")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(func=_plan)


def parse_model(text: str) -> tuple[str | None, float | None]:
    """(size name, None) for a named size, (None, params) for a raw count; ValueError otherwise."""
    from t2ikit.models.sizes import MODEL_SIZES  # a table; the heavy builders are imported lazily

    if text in MODEL_SIZES:
        return text, None
    try:
        params = float(text)
    except ValueError:
        raise ValueError(f"--model-size {text!r} is neither a named size ({', '.join(MODEL_SIZES)}) "
                         "nor a parameter count such as 860e6") from None
    if not params > 0:
        raise ValueError(f"--model-size parameter count must be positive, got {text}")
    return None, params


def _plan(args) -> int:
    import json

    from t2ikit.scaling.parallel import Hardware, plan, spec_from_numbers, spec_from_size, validate

    global_batch = args.global_batch if args.global_batch is not None else args.devices * args.micro_batch
    hw = Hardware(devices=args.devices, device_flops=args.device_flops, memory_bytes=args.memory,
                  bandwidth_bytes=args.bandwidth, efficiency=args.efficiency)
    validate(hw, global_batch, args.micro_batch)  # all bad input is reported before the model is traced
    if args.flops_per_sample is not None and not args.flops_per_sample > 0:
        raise ValueError(f"--flops-per-sample must be positive, got {args.flops_per_sample}")
    size, params = parse_model(args.model_size)
    if size is None and args.flops_per_sample is None:
        raise ValueError("--flops-per-sample is required with a raw parameter count (training FLOP per sample, "
                         "about 3 x the forward FLOPs)")
    if size is not None:
        spec = spec_from_size(size, resolution=args.resolution, flops_per_sample=args.flops_per_sample)
    else:
        spec = spec_from_numbers(params, args.flops_per_sample, layers=args.layers, hidden=args.hidden, seq=args.seq)
    result = plan(spec, hw, global_batch, args.micro_batch, args.precision)
    if args.json:
        print(json.dumps({"model": spec.__dict__, "hardware": hw.__dict__, "global_batch": global_batch,
                          "micro_batch": args.micro_batch, "precision": args.precision, **result.to_dict()},
                         indent=2))
        return 0
    print(f"model {spec.name}: {spec.params:,} params, {spec.flops_per_sample:.3g} training FLOP/sample, "
          f"{spec.layers} transformer layers")
    print(f"{args.devices} devices x {args.device_flops:.3g} FLOP/s, {args.memory / 2**30:.1f} GiB, "
          f"{args.bandwidth:.3g} bytes/s; global batch {global_batch}, micro-batch {args.micro_batch}, "
          f"{args.precision} precision, efficiency {args.efficiency}")
    header = f"{'layout':<22}{'step s':>11}{'compute':>10}{'tp comm':>10}{'pp comm':>10}{'bubble':>10}" \
             f"{'dp comm':>10}{'mem GiB':>10}  fits"
    print(header)
    for r in result.rows:
        if "time" not in r:
            print(f"{r['layout']:<22}{'-':>11}{'':>60}  no: {r['reason']}")
            continue
        t = r["time"]
        print(f"{r['layout']:<22}{r['step_seconds']:>11.4g}{t['compute']:>10.3g}{t['tensor_comm']:>10.3g}"
              f"{t['pipeline_comm']:>10.3g}{t['bubble']:>10.3g}{t['data_comm']:>10.3g}"
              f"{r['memory']['total'] / 2**30:>10.3g}  {'yes' if r['fits'] else 'no: ' + r['reason']}")
    if result.best is None:
        print("no layout fits: add devices, shard more (ZeRO-3), or lower the micro-batch")
        return 1
    print(f"best: {result.best['layout']} ({result.best['step_seconds']:.4g} s/step, "
          f"{result.best['memory']['total'] / 2**30:.3g} GiB/device)")
    return 0
