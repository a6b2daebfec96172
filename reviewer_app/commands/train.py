"""``synthdx train inpaint``: train the CT inpainting model (thin wrapper over ``core.training.train_inpaint.train``)."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  synthdx train inpaint --data ../shared/data/ct/ibsi_sts --holdout STS_019 --out runs/sts --steps 2000
  synthdx train inpaint --config core/training/recipes/ct_inpaint_demo.json --data-root ../shared/data --out runs/demo
  accelerate launch -m core.training.train_inpaint runs/demo/config.json      # several GPUs

--data takes a volume with a mask/label map beside it (CT_image + CT_mask, example_ct + example_seg),
a TotalSegmentator/KiTS case folder, a folder of such cases, or a manifest JSON
({"sources": [{"image", "labels", "name", "licence", "attribution", "lesion_labels"}]}).
Rerunning with the same --out resumes from the newest checkpoint; to extend a finished run with a new
schedule, give its config and the new settings, e.g.
  synthdx train inpaint --config runs/demo/config.json --steps 42000 --lr 1e-4 \\
      --lr-schedule constant --lr-decay-steps 6000
(the old config is kept in runs/demo/config_history.json and the model card's earlier_phases).
"""


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model on your own data (inpaint, label-diffusion, controlnet, sd-finetune)"
    )
    tasks = p.add_subparsers(dest="task", metavar="TASK", required=True)
    t = tasks.add_parser(
        "inpaint",
        help="train the mask-conditioned CT inpainting UNet",
        description="Train (or resume) the CT inpainting model on CPU, one GPU or several (accelerate).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument(
        "--config",
        metavar="JSON",
        help="a TrainConfig JSON (e.g. a recipe or a run's config.json); flags override it",
    )
    t.add_argument(
        "--data", metavar="PATH", action="append", default=[], help="training data (repeatable; see below)"
    )
    t.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder that relative data paths in --config and manifests are relative to",
    )
    t.add_argument(
        "--holdout",
        metavar="NAMES",
        help="comma-separated source names never trained on (used for validation)",
    )
    t.add_argument(
        "--mask-mix",
        metavar="KIND=W,...",
        help="mask kinds and weights, e.g. lesion=1,blob=0.5 (kinds: lesion, lesion_box, organ, box, ellipse, blob, brush, transplant)",
    )
    t.add_argument(
        "--shapes",
        metavar="PATH",
        action="append",
        default=[],
        help="label maps whose tumours are transplanted as masks (e.g. KiTS case folders)",
    )
    t.add_argument(
        "--licence", default="unknown", help="licence of the --data images, written to the model card"
    )
    t.add_argument(
        "--attribution", default="", help="credit line for the --data images, written to the model card"
    )
    t.add_argument("--out", metavar="DIR", help="run folder (created; resumed when it holds checkpoints)")
    t.add_argument("--steps", type=int, help="training steps (default 20000)")
    t.add_argument("--batch-size", type=int, help="crops per step and process (default 8)")
    t.add_argument("--lr", type=float, help="peak learning rate (default 2e-4)")
    t.add_argument(
        "--lr-schedule",
        choices=("cosine", "constant"),
        help="after the warm-up: cosine decay over --steps (default) or constant",
    )
    t.add_argument(
        "--lr-decay-steps",
        type=int,
        metavar="N",
        help="constant schedule only: the last N steps ramp the rate down to a tenth (to extend a run: "
        "--config RUN/config.json --steps MORE --lr-decay-steps N)",
    )
    t.add_argument("--seed", type=int, help="seed of weights, data order and noise (default 0)")
    t.add_argument("--resolution", type=int, help="model input side in pixels (default 64)")
    t.add_argument(
        "--hu-range",
        metavar="NAME|LOW,HIGH",
        help="model HU window: wide (default, -1000..1000), soft_tissue, lung, or LOW,HIGH",
    )
    t.add_argument(
        "--loss-region",
        choices=("mask", "crop"),
        help="average the loss over the mask (default) or the whole crop",
    )
    t.add_argument("--threads", type=int, help="torch CPU threads (0 = all; use 1-2 on a shared machine)")
    t.add_argument("--sample-every", type=int, help="steps between sample grids")
    t.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    t.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="GPU mixed precision")
    t.add_argument("--workers", type=int, help="DataLoader worker processes (default 0)")
    t.add_argument("--name", help="model name written to the card")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    t.set_defaults(func=run)
    from reviewer_app.commands.train_label import register_tasks  # label-diffusion, controlnet, sd-finetune

    register_tasks(tasks)


def config_from_args(args: argparse.Namespace):
    """The ``TrainConfig`` the flags describe (``--config`` first, then flags on top)."""
    from dataclasses import replace
    from pathlib import Path

    from core.errors import InputError
    from core.normalization import NAMED_RANGES
    from core.training.config import TrainConfig, load_config
    from core.training.data import discover_sources

    cfg = load_config(args.config) if args.config else TrainConfig()
    root = Path(args.data_root) if args.data_root else None

    def rooted(p: str | None) -> str | None:
        return None if p is None or root is None or Path(p).is_absolute() else str(root / p)

    if root is not None:
        sources = tuple(replace(s, image=rooted(s.image), labels=rooted(s.labels)) for s in cfg.data.sources)
        cfg = replace(cfg, data=replace(cfg.data, sources=sources))
    found = [
        s
        for path in args.data
        for s in discover_sources(path, root=root, licence=args.licence, attribution=args.attribution)
    ]
    data = cfg.data
    if found:
        data = replace(data, sources=data.sources + tuple(found))
    if args.holdout:
        data = replace(data, holdout=tuple(n.strip() for n in args.holdout.split(",") if n.strip()))
        unknown = sorted(set(data.holdout) - {s.name for s in data.sources})
        if unknown:
            raise InputError(
                f"--holdout names {unknown} match no data source; sources are {[s.name for s in data.sources]}"
            )
    if args.mask_mix:
        try:
            mix = tuple(
                (k.strip(), float(w)) for k, w in (item.split("=") for item in args.mask_mix.split(","))
            )
        except ValueError:
            raise InputError(
                f"--mask-mix {args.mask_mix!r}: write KIND=WEIGHT pairs separated by commas, e.g. lesion=1,blob=0.5"
            ) from None
        data = replace(data, mask_mix=mix)
    if args.shapes:
        data = replace(data, shape_library=tuple(args.shapes))
    if args.hu_range:
        if args.hu_range in NAMED_RANGES:
            data = replace(data, hu_range=NAMED_RANGES[args.hu_range])
        else:
            try:
                low, high = (float(v) for v in args.hu_range.split(","))
            except ValueError:
                raise InputError(
                    f"--hu-range {args.hu_range!r}: give one of {list(NAMED_RANGES)} or LOW,HIGH in HU"
                ) from None
            data = replace(data, hu_range=(low, high))
    model = cfg.model if args.resolution is None else replace(cfg.model, resolution=args.resolution)
    overrides = {
        "out_dir": args.out, "steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr,
        "lr_schedule": args.lr_schedule, "lr_decay_steps": args.lr_decay_steps, "seed": args.seed,
        "loss_region": args.loss_region, "num_threads": args.threads, "sample_every": args.sample_every,
        "checkpoint_every": args.checkpoint_every, "mixed_precision": args.mixed_precision,
        "dataloader_workers": args.workers, "model_name": args.name,
    }  # fmt: skip
    cfg = replace(cfg, model=model, data=data, **{k: v for k, v in overrides.items() if v is not None})
    if not args.out and not args.config:
        raise InputError("give --out DIR (the run folder)")
    return cfg


def run(args: argparse.Namespace) -> int:
    from core.training.train_inpaint import train

    model_dir = train(config_from_args(args), progress=not args.no_progress)
    print(f"model written to {model_dir}")
    return 0
