"""``synthdx generate``: an image from a label map with a label-conditioned model (ControlNet or base)."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  synthdx generate --model assets/models/ct-controlnet --condition seg.nii.gz --slice 60 --seed 0 --steps 25 --out out/
  synthdx generate --model assets/models/ct-controlnet --condition layout.png --samples 4 --scale 0.8 --out out/
  synthdx generate --model assets/models/ct-controlnet --list-classes

--condition: a NIfTI label map (3D with --slice, or one slice; names from a labels.json beside it, else values
are the model's class ids), a 2D .npy of class ids, a grey PNG of class ids, or a PNG coloured with the model's
palette (--list-classes; black = free: the model decides). NIfTI maps are resampled to the model's pixel size;
2D arrays and images are scaled to the model's resolution. For H&E models the condition is a tissue layout PNG.

writes to --out: condition.png / condition.npy (the class map used), result_<i>.png, preview.png
(condition | results), the result arrays (CT: result_hu.npy and result_hu.nii.gz, samples along the third axis,
in HU at the model's pixel size; RGB: result_<i>.png and result_rgb.npy) and provenance.json (model hashes,
seeds, steps, sampler, conditioning scale, condition hash).
"""


def register(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="generate an image from a label map with a ControlNet (CT slices, H&E tiles)",
        description="Generate images that follow a label map with a label-conditioned model folder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", required=True, metavar="DIR", help="model folder (controlnet/ + card, or a base folder)"
    )
    p.add_argument("--condition", metavar="PATH", help="label map: .nii/.nii.gz, .npy or .png (see below)")
    p.add_argument(
        "--slice", type=int, metavar="K", help="axial slice of a 3D NIfTI label map (0 = most inferior)"
    )
    p.add_argument("--out", metavar="DIR", help="output folder (created)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of sample 0; sample i uses seed + i (default %(default)s)"
    )
    p.add_argument("--steps", type=int, default=25, help="sampler steps, 10-50 (default %(default)s)")
    p.add_argument("--samples", type=int, default=1, help="number of samples (default %(default)s)")
    p.add_argument(
        "--scale", type=float, default=1.0, help="ControlNet conditioning scale, 0-4 (default %(default)s)"
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="classifier-free guidance scale (1 = off; default %(default)s)",
    )
    p.add_argument(
        "--sampler", choices=("dpmsolver++", "ddim"), default="dpmsolver++", help="default %(default)s"
    )
    p.add_argument("--prompt", help="text prompt for SD-family models (default: the model card's)")
    p.add_argument(
        "--list-classes", action="store_true", help="print the model's classes, ids and colours, then exit"
    )
    p.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import hashlib
    from pathlib import Path

    from core.errors import InputError
    from core.pipelines.label_condition import load_condition, palette
    from core.pipelines.label_models import read_label_model

    spec = read_label_model(args.model)  # checked before anything slow
    if args.list_classes:
        colours = palette(spec.classes)
        print("id  class  colour")
        print("0  free (the model decides)  #000000")
        for i, name in enumerate(spec.classes, start=1):
            print(f"{i}  {name}  #{''.join(f'{c:02x}' for c in colours[i])}")
        return 0
    if not args.condition or not args.out:
        raise InputError("give --condition PATH and --out DIR (or --list-classes)")
    if not spec.classes:
        raise InputError(
            f"{args.model}: the model card lists no classes, so a label map cannot be read for it"
        )
    if args.samples < 1:
        raise InputError(f"--samples must be >= 1, got {args.samples}")
    classes, info = load_condition(args.condition, class_names=spec.classes, rules=spec.class_rules, resolution=spec.resolution,
                                   pixel_mm=spec.card.get("pixel_mm"), slice_index=args.slice)  # fmt: skip
    from tqdm.auto import tqdm

    from core.pipelines.controlnet import ControlNetPipeline

    pipe = ControlNetPipeline.from_pretrained(spec.path, device=args.device)
    pipe.check_inputs(classes, args.steps, args.sampler, args.seed, args.samples, args.scale, args.guidance)  # before the bar
    bar = tqdm(total=args.steps, desc="generate", unit="step", leave=False)
    out = pipe(classes, num_inference_steps=args.steps, sampler=args.sampler, seed=args.seed, num_samples=args.samples,
               conditioning_scale=args.scale, guidance_scale=args.guidance, prompt=args.prompt,
               callback=lambda done, total: bar.update(done - bar.n))  # fmt: skip
    bar.close()
    files = write_outputs(out, spec, Path(args.out), extra={
        "command": "synthdx generate", "condition_file": info,
        "condition_file_sha256": hashlib.sha256(Path(args.condition).read_bytes()).hexdigest(),
    })  # fmt: skip
    for name in ("preview", "result", "provenance"):
        print(f"{name}: {files[name]}")
    return 0


def write_outputs(out, spec, folder, *, extra: dict) -> dict:
    """Write condition, results, previews and provenance for a ``LabelGenerationOutput``; returns name -> path."""
    import json

    import nibabel as nib
    import numpy as np
    from PIL import Image

    from core.pipelines.label_condition import render_classes

    folder.mkdir(parents=True, exist_ok=True)
    files = {"condition_png": folder / "condition.png", "condition": folder / "condition.npy"}
    cond_rgb = render_classes(out.condition, spec.classes)
    Image.fromarray(cond_rgb).save(files["condition_png"])
    np.save(files["condition"], out.condition)
    previews = [preview_rgb(img, spec) for img in out.images]
    for i, rgb in enumerate(previews):
        Image.fromarray(rgb).save(folder / f"result_{i}.png")
    grid = np.concatenate([cond_rgb, *previews], axis=1)
    scale = max(1, 256 // grid.shape[0])
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(
        folder / "preview.png"
    )
    files["preview"] = folder / "preview.png"
    if spec.hu_range:
        np.save(folder / "result_hu.npy", out.images.astype(np.float32))
        mm = float(spec.card.get("pixel_mm") or 1.0)
        # (n, rows, cols) -> NIfTI (x = cols, y = rows, z = sample), LPS voxel axes like our volumes
        nifti = np.ascontiguousarray(np.transpose(out.images, (2, 1, 0)).astype(np.float32))
        nib.save(nib.Nifti1Image(nifti, np.diag([-mm, -mm, mm, 1.0])), str(folder / "result_hu.nii.gz"))
        files["result"] = folder / "result_hu.nii.gz"
        files["result_npy"] = folder / "result_hu.npy"
    else:
        np.save(folder / "result_rgb.npy", out.images)
        files["result"] = folder / "result_0.png"
    files["provenance"] = folder / "provenance.json"
    files["provenance"].write_text(json.dumps({**out.provenance, **extra}, indent=2, default=str) + "\n")
    return {k: str(v) for k, v in files.items()}


def preview_rgb(image, spec):
    """A result as display RGB: CT in the soft-tissue window, RGB unchanged."""
    import numpy as np

    from core.windowing import apply_window

    if image.ndim == 3:
        return image
    return np.repeat(apply_window(image, low=-160.0, high=240.0)[..., None], 3, axis=-1)
