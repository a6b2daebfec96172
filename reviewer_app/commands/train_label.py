"""``synthdx train label-diffusion | controlnet | sd-finetune``: thin wrappers over the label-conditioned trainings.

Registered by ``reviewer_app.commands.train`` next to ``train inpaint``.
"""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  synthdx train label-diffusion --config core/training/recipes/ct_label_diffusion_demo.json --data-root ../shared/data --out runs/ct-label
  synthdx train controlnet --base runs/ct-label/model_step_000300 --config core/training/recipes/ct_controlnet_demo.json \\
      --data-root ../shared/data --out runs/cn-barely --regime "barely trained base"
  synthdx train controlnet --base runs/ct-label/model --config core/training/recipes/ct_controlnet_demo.json \\
      --data-root ../shared/data --out runs/cn-domain --regime "domain-trained base"
  synthdx train controlnet --base /models/sd15 --pairs data/he_pairs --prompt "H&E stained tissue" --out runs/cn-sd
  synthdx train sd-finetune --base /models/sd15 --pairs data/he_pairs --prompt "H&E stained tissue" --lora-rank 8 --out runs/sd-he

--data takes CT volumes with label maps (as `synthdx train inpaint`); --pairs a folder with classes.json,
images/<name>.png|.npy and labels/<name>.png (class ids, 0 = free). Rerunning with the same --out resumes.
Base folders are local paths only (unet/, scheduler/, condition_embedding/ or text_encoder/ + tokenizer/, vae/).
"""


def _common(t) -> None:
    t.add_argument(
        "--config", metavar="JSON", help="a config JSON (a recipe or a run's config.json); flags override it"
    )
    t.add_argument(
        "--data", metavar="PATH", action="append", default=[], help="CT volumes with label maps (repeatable)"
    )
    t.add_argument(
        "--pairs",
        metavar="DIR",
        action="append",
        default=[],
        help="pairs folder: classes.json, images/, labels/ (repeatable)",
    )
    t.add_argument(
        "--data-root", metavar="DIR", help="folder that relative data paths in --config are relative to"
    )
    t.add_argument("--holdout", metavar="NAMES", help="comma-separated source names never trained on")
    t.add_argument(
        "--licence", default="unknown", help="licence of the --data/--pairs images, for the model card"
    )
    t.add_argument("--attribution", default="", help="credit line for the --data images, for the model card")
    t.add_argument("--out", metavar="DIR", help="run folder (created; resumed when it holds checkpoints)")
    t.add_argument("--steps", type=int, help="training steps")
    t.add_argument("--batch-size", type=int, help="examples per step and process")
    t.add_argument("--lr", type=float, help="peak learning rate")
    t.add_argument("--seed", type=int, help="seed of weights, data order and noise")
    t.add_argument("--threads", type=int, help="torch CPU threads (0 = all; 1-2 on a shared machine)")
    t.add_argument("--sample-every", type=int, help="steps between sample grids")
    t.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (each exports the model)")
    t.add_argument(
        "--snapshot-steps", metavar="N,...", help="extra model exports at these steps (model_step_NNNNNN/)"
    )
    t.add_argument("--name", help="model name written to the card")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def register_tasks(tasks) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    t = tasks.add_parser(
        "label-diffusion",
        help="train the CT label-diffusion base (class-presence tokens)",
        description="Train (or resume) the CT base model for ControlNets.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _common(t)
    t.set_defaults(func=run_label_diffusion)
    c = tasks.add_parser(
        "controlnet",
        help="train a ControlNet on a label map on top of a base model folder",
        description="Train (or resume) a ControlNet on a frozen base (ours or an SD-family folder).",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _common(c)
    c.add_argument("--base", metavar="DIR", help="the base model folder (local path)")
    c.add_argument("--regime", help="how the base was trained, for the card (e.g. 'barely trained base')")
    c.add_argument("--prompt", help="text prompt for SD-family bases")
    c.set_defaults(func=run_controlnet)
    f = tasks.add_parser(
        "sd-finetune",
        help="fine-tune local SD-family weights (LoRA or full) on your images",
        description="Fine-tune the UNet of an SD 1.5/2.1-style folder on disk.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _common(f)
    f.add_argument(
        "--base",
        metavar="DIR",
        help="the SD-family folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/)",
    )
    f.add_argument("--prompt", help="text prompt for every image")
    f.add_argument("--lora-rank", type=int, help="LoRA rank (default 8); 0 = full fine-tune of the UNet")
    f.add_argument("--resolution", type=int, help="training resolution in pixels (default: the base's)")
    f.set_defaults(func=run_sd_finetune)


def _data(args, data):
    """``LabelDataConfig`` from ``--config`` data plus --data / --pairs / --holdout / --data-root."""
    from dataclasses import replace
    from pathlib import Path

    from core.errors import InputError
    from core.training.data import discover_sources
    from core.training.label_data import read_pairs_classes

    root = Path(args.data_root) if args.data_root else None
    if root is not None:
        rooted = lambda p: p if p is None or Path(p).is_absolute() else str(root / p)
        data = replace(data, sources=tuple(replace(s, image=rooted(s.image), labels=rooted(s.labels)) for s in data.sources),
                       pairs=tuple(rooted(p) for p in data.pairs))  # fmt: skip
    found = tuple(
        s
        for path in args.data
        for s in discover_sources(path, root=root, licence=args.licence, attribution=args.attribution)
    )
    data = replace(data, sources=data.sources + found, pairs=data.pairs + tuple(args.pairs))
    if args.pairs:
        classes = [tuple(read_pairs_classes(p)["classes"]) for p in data.pairs]
        if len(set(classes)) != 1:
            raise InputError(f"the pairs folders list different classes: {sorted(set(classes))}")
        data = replace(data, classes=classes[0], class_rules=tuple((c, (c,)) for c in classes[0]))
    if args.holdout:
        data = replace(data, holdout=tuple(n.strip() for n in args.holdout.split(",") if n.strip()))
        names = {s.name for s in data.sources} | {Path(p).name for p in data.pairs}
        unknown = sorted(set(data.holdout) - names)
        if unknown:
            raise InputError(f"--holdout names {unknown} match no data source; sources are {sorted(names)}")
    return data


def _config(args, cls, extra: dict):
    from dataclasses import replace

    from core.errors import InputError
    from core.training.label_config import load

    cfg = load(cls, args.config) if args.config else cls()
    snapshots = tuple(int(s) for s in args.snapshot_steps.split(",")) if args.snapshot_steps else None
    overrides = {
        "out_dir": args.out, "steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr, "seed": args.seed,
        "num_threads": args.threads, "sample_every": args.sample_every, "checkpoint_every": args.checkpoint_every,
        "snapshot_steps": snapshots, "model_name": args.name, **extra,
    }  # fmt: skip
    if not args.out and not args.config:
        raise InputError("give --out DIR (the run folder)")
    return replace(cfg, data=_data(args, cfg.data), **{k: v for k, v in overrides.items() if v is not None})


def run_label_diffusion(args: argparse.Namespace) -> int:
    from core.training.label_config import LabelDiffusionConfig
    from core.training.train_label_diffusion import train

    print(f"model written to {train(_config(args, LabelDiffusionConfig, {}), progress=not args.no_progress)}")
    return 0


def run_controlnet(args: argparse.Namespace) -> int:
    from core.training.label_config import ControlNetConfig
    from core.training.train_controlnet import train

    cfg = _config(args, ControlNetConfig, {"base": args.base, "regime": args.regime, "prompt": args.prompt})
    print(f"model written to {train(cfg, progress=not args.no_progress)}")
    return 0


def run_sd_finetune(args: argparse.Namespace) -> int:
    from core.training.sd_local import FinetuneConfig, finetune

    extra = {
        "base": args.base,
        "prompt": args.prompt,
        "lora_rank": args.lora_rank,
        "resolution": args.resolution,
    }
    print(f"model written to {finetune(_config(args, FinetuneConfig, extra), progress=not args.no_progress)}")
    return 0
