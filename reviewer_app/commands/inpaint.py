"""``synthdx inpaint``: repaint a masked region of one CT slice with a trained model."""

from __future__ import annotations

import argparse

EPILOG = """\
example:
  synthdx inpaint --model assets/models/ct-inpaint --volume ct.nii.gz --slice 40 --mask lesion.nii.gz \\
      --seed 0 --steps 25 --samples 4 --out out/

writes to --out: the edited volume (NIfTI: inpainted.nii.gz with the input's header and orientation;
DICOM: inpainted_dicom/ with new Series/SOP UIDs, ImageType DERIVED, marked SYNTHETIC), mask.nii.gz,
preview_{before,after,outline,std,zoom}.png (soft-tissue window), samples_hu.npy / std_hu.npy, provenance.json.
With several samples the volume holds sample 0; all samples are in samples_hu.npy.
"""


def register(sub) -> None:
    from core.pipelines.ct_inpaint import SAMPLERS  # numpy and core only; torch loads when a command runs

    p = sub.add_parser(
        "inpaint",
        help="repaint a masked region of a CT slice (lesion or tissue) with a diffusion model",
        description="Inpaint the masked region of axial slice --slice of a CT volume.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="DIR",
        help="model folder (unet/, scheduler/, model_card.json); repeat for an ensemble",
        action="append",
    )
    p.add_argument(
        "--volume",
        required=True,
        metavar="PATH",
        help="CT volume: NIfTI, DICOM folder/file, case folder or .zip",
    )
    p.add_argument("--series", metavar="UID", help="DICOM series when the folder holds several")
    p.add_argument(
        "--slice",
        required=True,
        type=int,
        metavar="K",
        help="axial slice, 0-based from inferior to superior (as `synthdx info` counts shape[0])",
    )
    p.add_argument(
        "--mask",
        required=True,
        metavar="PATH",
        help="NIfTI mask on the volume's grid (slice K is used) or a 2D PNG/NPY of the slice's size",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of sample 0; sample i uses seed + i (default %(default)s)"
    )
    p.add_argument("--steps", type=int, default=25, help="sampler steps, 10-50 (default %(default)s)")
    p.add_argument(
        "--samples",
        type=int,
        default=1,
        help="number of samples; > 1 also gives a std map (default %(default)s)",
    )
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="dpmsolver++",
        help="default %(default)s",
    )
    p.add_argument(
        "--content",
        choices=("lesion", "tissue"),
        help="what to paint (content-conditioned models; default lesion)",
    )
    p.add_argument(
        "--jump-length", type=int, default=5, help="repaint: steps between jumps back (default %(default)s)"
    )
    p.add_argument(
        "--jump-n-sample", type=int, default=2, help="repaint: resamplings per jump (default %(default)s)"
    )
    p.add_argument(
        "--blend-px",
        type=float,
        default=2.0,
        help="edge blend width inside the mask, pixels (default %(default)s)",
    )
    p.add_argument(
        "--min-context",
        type=int,
        default=4,
        metavar="PX",
        help="pixels the mask must keep from the slice border (default %(default)s)",
    )
    p.add_argument(
        "--format",
        choices=("same", "nifti"),
        default="same",
        help="edited volume format: as the input (default) or NIfTI",
    )
    p.add_argument(
        "--device", default="cpu", help="torch device (cpu, cuda, cuda:1 ...; default %(default)s)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from core.io.load import load_volume
    from core.masks import validate_mask
    from core.pipelines.ct_inpaint import CTInpaintPipeline
    from core.pipelines.inpaint_volume import check_slice, inpaint_slice, load_slice_mask, write_outputs
    from core.pipelines.loading import read_model_folder

    for m in args.model:  # check the model folders before the (slower) volume
        read_model_folder(m)
    volume = load_volume(args.volume, series_uid=args.series)
    k = check_slice(volume, args.slice)
    mask = validate_mask(
        load_slice_mask(args.mask, volume, k), image_shape=volume.shape[1:], min_context_px=args.min_context
    )
    pipe = CTInpaintPipeline.from_pretrained(args.model, device=args.device)
    bar = tqdm(total=None, desc="inpaint", unit="unet", leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    edited, out = inpaint_slice(
        pipe, volume, k, mask, num_inference_steps=args.steps, sampler=args.sampler, seed=args.seed, num_samples=args.samples,
        content=args.content, jump_length=args.jump_length, jump_n_sample=args.jump_n_sample, blend_px=args.blend_px,
        min_context_px=args.min_context, callback=progress,
    )  # fmt: skip
    bar.close()
    files = write_outputs(
        volume,
        k,
        edited,
        out,
        args.out,
        fmt=args.format,
        extra={"command": "synthdx inpaint", "mask_file": str(args.mask)},
    )
    for name in ("volume", "mask", "preview_zoom", "provenance"):
        print(f"{name}: {files[name]}")
    return 0
