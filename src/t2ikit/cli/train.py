"""`t2ikit train`: train the VAE, then the text encoder + UNet, from a TOML config; resume; export."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model (VAE, then text encoder + UNet), a condition adapter or a reward fine-tune from a TOML "
        "config; resume; export",
        description="Train a text-to-image model on Shapes World from a TOML run config. Data-parallel: "
        "torchrun --nproc-per-node N -m t2ikit train --config ... (DDP, or FSDP with run.parallel = \"fsdp\"; the global batch is split over ranks).",
    )
    p.add_argument("--config", help="TOML run config, e.g. configs/tiny.toml")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        help="continue from the newest checkpoint in OUT/checkpoints, or from the given checkpoint folder",
    )
    p.add_argument("--out", default=None, help="run folder (overrides run.out)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="overrides run.device")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (overrides run.workers)")
    p.add_argument(
        "--time-limit", type=float, default=None, metavar="MIN",
        help="checkpoint, export and stop after MIN minutes (overrides run.time_limit_min); --resume continues",
    )
    p.add_argument(
        "--stop-at", type=int, default=None, metavar="STEP",
        help="checkpoint, export and stop after UNet step STEP, the lr schedule unchanged (overrides run.stop_at); "
             "--resume from that checkpoint continues",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar (overrides run.progress)")
    p.add_argument(
        "--export-only",
        metavar="DIR",
        default=None,
        help="do not train: export the newest checkpoint (or --resume CKPT) as a diffusers folder to DIR",
    )
    p.add_argument("--fp16", action="store_true", help="export weights in float16 (overrides export.fp16)")
    p.add_argument("--sizes", action="store_true", help="print the named model sizes (params, GFLOPs/step) and exit")
    p.add_argument("--json", action="store_true", help="with --sizes: print JSON")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    if args.sizes:
        from t2ikit.models.sizes import size_report

        rows = size_report()
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            print(f"{'size':<5}{'unet params':>13}{'text params':>13}{'latent':>12}{'GFLOPs/step':>13}")
            for r in rows:
                latent = "x".join(map(str, r["latent_shape"]))
                print(
                    f"{r['size']:<5}{r['unet_params']:>13,}{r['text_params_approx']:>13,}{latent:>12}"
                    f"{r['gflops_per_step']:>13.3f}"
                )
        return 0
    if not args.config:
        raise ValueError("--config is required (a TOML run config, e.g. configs/tiny.toml)")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")

    from t2ikit.train.adapter import is_adapter_config

    if is_adapter_config(args.config):
        return _adapter(args)
    from t2ikit.train.reward import is_reward_config

    if is_reward_config(args.config):
        return _reward(args)

    from t2ikit.train.config import load_config
    from t2ikit.train.trainer import Trainer

    cfg = load_config(args.config)
    if args.workers is not None:
        cfg.run.workers = args.workers
    if args.time_limit is not None:
        if args.time_limit < 0:
            raise ValueError(f"--time-limit must be >= 0 minutes, got {args.time_limit}")
        cfg.run.time_limit_min = args.time_limit
    if args.stop_at is not None:
        cfg.run.stop_at = args.stop_at
        cfg.validate(check_paths=False)
    if args.quiet:
        cfg.run.progress = False
    if args.fp16:
        cfg.export.fp16 = True
    from t2ikit.train.distributed import exit_process, shutdown

    ok = False
    try:
        trainer = Trainer(cfg, out=args.out, device=args.device)
        if args.export_only:
            from t2ikit.train.checkpoint import resolve_checkpoint

            trainer.load(resolve_checkpoint(trainer.checkpoint_dir, args.resume or "latest"))
            print(trainer.export(args.export_only))
        else:
            path = trainer.run(resume=args.resume)
            if path is not None:
                print(path)
            if trainer.dist.is_main:
                from t2ikit.train.plots import plot_run

                for plot in plot_run(trainer.out):
                    print(f"wrote {plot}", file=sys.stderr)
        ok = True
        return 0
    finally:
        # Under torchrun: leave the process group, and after a successful run end the rank without the
        # interpreter's finalization, which gloo's threads can abort (see distributed.exit_process).
        if shutdown() and ok:
            exit_process(0)


def _adapter(args: argparse.Namespace) -> int:
    """An `[adapter]` config: train a condition adapter on a frozen base model (t2ikit.train.adapter)."""
    from t2ikit.train.adapter import load_adapter_config, run

    unsupported = [flag for flag, value in (("--device", args.device not in (None, "cpu", "auto")),
                                            ("--workers", args.workers is not None),
                                            ("--time-limit", args.time_limit is not None),
                                            ("--stop-at", args.stop_at is not None)) if value]
    if unsupported:
        raise ValueError(f"{args.config} is an adapter run config; {', '.join(unsupported)} apply only to model "
                         "runs (adapter runs train on the CPU and write the adapter folder themselves)")
    config = load_adapter_config(args.config, {"out": args.out})
    if args.export_only:
        from t2ikit.train.adapter import export_adapter

        print(export_adapter(config.out, args.export_only, fp16=args.fp16))
        return 0
    print(run(config, resume=args.resume, progress=not args.quiet))
    return 0


def _reward(args: argparse.Namespace) -> int:
    """A `[reward]` config: policy-gradient fine-tuning of a model's UNet with the oracle (t2ikit.train.reward)."""
    from t2ikit.train.reward import RewardTrainer, load_reward_config

    unsupported = [flag for flag, value in (("--device", args.device not in (None, "cpu", "auto")),
                                            ("--workers", args.workers is not None)) if value]
    if unsupported:
        raise ValueError(f"{args.config} is a reward run config; {', '.join(unsupported)} apply only to model runs "
                         "(reward runs sample and train on the CPU in one process)")
    if args.time_limit is not None and args.time_limit < 0:
        raise ValueError(f"--time-limit must be >= 0 minutes, got {args.time_limit}")
    config = load_reward_config(args.config, {"out": args.out, "time_limit_min": args.time_limit,
                                              "stop_at": args.stop_at, "progress": False if args.quiet else None,
                                              "export_fp16": True if args.fp16 else None})
    trainer = RewardTrainer(config)
    if args.export_only:
        from t2ikit.train.checkpoint import resolve_checkpoint

        trainer.load(resolve_checkpoint(trainer.checkpoint_dir, args.resume or "latest"))
        print(trainer.export(args.export_only))
        return 0
    print(trainer.run(resume=args.resume))
    return 0
