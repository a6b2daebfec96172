"""``synthdx slide``: a synthetic H&E slide of any size from a tissue layout (tiled latent diffusion)."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  synthdx slide --layout layout.png --size 4096x4096 --tile 256 --overlap 64 --seed 0 --out out/slide
  synthdx slide --layout-from ../shared/data/histo/cmu-1-small-region.svs --region 0,0,2048,2048 --size 2048x2048 --out out/cmu

--layout takes a .npy of tissue classes (0 background, 1 eosinophilic, 2 cellular, 3 nuclei-dense) or a
picture drawn in the layout colours (white, pink #ec78a0, violet #9650c8, dark blue #281e78); it is
stretched to the output size (one class per 32 px). --layout-from derives the layout from a real H&E
slide or image (core.tissue) instead.

writes to --out: slide.ome.tif (pyramidal tiled OME-TIFF, opens in QuPath / napari / `synthdx info`),
thumbnail.png, layout.png, provenance.json (model, layout hash, options, seed, timings).
"""


def register(sub) -> None:
    p = sub.add_parser(
        "slide",
        help="generate a synthetic H&E slide of any size from a tissue layout",
        description="Generate an H&E image following a tissue layout with overlapping windows fused at "
        "every denoising step, and write it as a pyramidal OME-TIFF.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--layout", metavar="PATH", help="layout: .npy class ids or a PNG in the layout colours")
    src.add_argument(
        "--layout-from", metavar="SLIDE", help="derive the layout from a real H&E slide or image"
    )
    p.add_argument("--region", metavar="X,Y,W,H", help="with --layout-from: region of level 0 (default: all)")
    p.add_argument("--model", metavar="DIR", help="tiled H&E model folder (default: the shipped he-tiles)")
    p.add_argument(
        "--size", required=True, metavar="WxH", help="output size in pixels, multiples of 32 (e.g. 4096x4096)"
    )
    p.add_argument("--tile", type=int, default=256, help="window side in pixels (default %(default)s)")
    p.add_argument(
        "--overlap",
        type=int,
        default=64,
        help="window overlap in pixels; 0 = naive tiling (default %(default)s)",
    )
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default %(default)s)")
    p.add_argument("--style", help="stain style of the model card (default: its first; see `--style list`)")
    p.add_argument(
        "--compression", choices=("jpeg", "zlib"), default="jpeg", help="TIFF tiles (default %(default)s)"
    )
    p.add_argument(
        "--window-batch", type=int, default=8, help="windows per network call (default %(default)s)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.set_defaults(func=run)


def parse_size(text: str) -> tuple[int, int]:
    """``"4096x2048"`` -> (width, height)."""
    from core.errors import InputError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {text!r}: write WIDTHxHEIGHT in pixels, e.g. 4096x4096") from None
    return w, h


def parse_region(text: str | None) -> tuple[int, int, int, int] | None:
    from core.errors import InputError

    if text is None:
        return None
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--region {text!r}: write X,Y,WIDTH,HEIGHT in level-0 pixels") from None
    if w < 1 or h < 1:
        raise InputError(f"--region {text!r}: width and height must be >= 1")
    return x, y, w, h


def default_model():
    from core.settings import shipped_models

    return shipped_models() / "he-tiles"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm.auto import tqdm

    from core.errors import InputError
    from core.pipelines.histo_tiled import HistoTiledPipeline
    from core.pipelines.label_models import read_label_model
    from core.tissue import layout_from_slide, read_layout

    width, height = parse_size(args.size)
    region = parse_region(args.region)
    if region is not None and not args.layout_from:
        raise InputError("--region goes with --layout-from SLIDE")
    model_dir = Path(args.model) if args.model else default_model()
    read_label_model(model_dir)  # a bad folder fails before the layout is read
    if args.layout:
        layout = read_layout(args.layout)
    else:
        from core.io.slide import open_slide

        with open_slide(args.layout_from) as slide:
            layout = layout_from_slide(slide, region=region)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    pipe = HistoTiledPipeline.from_pretrained(model_dir)
    if args.style == "list":
        print("styles:", ", ".join(pipe.styles))
        return 0
    bars: dict[str, tqdm] = {}

    def progress(done: int, total: int, stage: str) -> None:
        bar = bars.setdefault(stage, tqdm(total=total, desc=stage, unit="window", leave=False))
        bar.update(done - bar.n)

    out = pipe(
        layout,
        height=height,
        width=width,
        tile_size=args.tile,
        overlap=args.overlap,
        num_inference_steps=args.steps,
        seed=args.seed,
        style=args.style,
        output_dir=args.out,
        compression=args.compression,
        window_batch=args.window_batch,
        progress=progress,
    )
    for bar in bars.values():
        bar.close()
    for name, path in out.files.items():
        print(f"{name}: {path}")
    t = out.provenance["time_s"]["total"]
    print(f"{width}x{height} px in {t:.0f} s ({t / (width * height / 1e6):.1f} s per megapixel)")
    return 0
