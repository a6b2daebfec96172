"""Inpaint one axial slice of a volume and write the results (what ``synthdx inpaint`` does).

Plain functions over ``CTInpaintPipeline`` so the CLI and the app share them:
``load_slice_mask`` reads a user's mask for slice ``k``, ``inpaint_slice`` runs the
pipeline and returns the edited volume, ``write_outputs`` writes the edited volume (same
format and geometry as the input), the mask, PNG previews and a provenance JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from core.errors import InputError
from core.io.volume import Volume
from core.pipelines.outputs import CTInpaintOutput

PREVIEW_WINDOW = (-160.0, 240.0)  # soft tissue, W 400 / L 40
OutputFormat = Literal["same", "nifti"]


def check_slice(volume: Volume, k: int) -> int:
    """``k`` as an axial slice index of ``volume`` (0 = most inferior), or InputError."""
    if volume.modality != "CT":
        raise InputError(
            f"the volume is {volume.modality}, not CT; the inpainting model works in Hounsfield units"
        )
    if not 0 <= k < volume.shape[0]:
        raise InputError(
            f"--slice {k} is outside 0..{volume.shape[0] - 1} (axial slices, inferior to superior, as `synthdx info` reports shape[0])"
        )
    return int(k)


def load_slice_mask(path: str | Path, volume: Volume, k: int) -> np.ndarray:
    """The repaint mask for slice ``k``: a NIfTI on the volume's grid (its slice ``k``), or a 2D PNG/NPY of the slice's shape.

    Returns:
        ``(rows, cols)`` bool (not yet validated: see ``core.masks.validate_mask``).
    """
    from core.io.labels import read_label_map
    from core.io.nifti import is_nifti
    from core.masks import as_mask

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such mask file")
    suffix = path.suffix.lower()
    if is_nifti(path):
        full = read_label_map(path, reference=volume).array > 0  # resampled onto the volume's grid
        if not full[k].any() and full.any():
            used = np.nonzero(full.any((1, 2)))[0]
            raise InputError(
                f"{path.name} is empty on slice {k}; it marks slices {used.min()}..{used.max()}: pick one of those with --slice"
            )
        return full[k]
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif suffix in (".png", ".tif", ".tiff", ".bmp"):
        from PIL import Image

        arr = np.asarray(Image.open(path))
    else:
        raise InputError(
            f"{path.name}: masks must be NIfTI (on the volume's grid), PNG or NPY (the slice's size)"
        )
    arr = as_mask(arr)
    if arr.ndim == 3 and arr.shape == volume.shape:
        arr = arr[k]
    return arr


def inpaint_slice(
    pipe, volume: Volume, k: int, mask: np.ndarray, **kwargs
) -> tuple[np.ndarray, CTInpaintOutput]:
    """Run ``pipe`` on slice ``k``; returns (edited volume ``(z, y, x)`` with sample 0 in slice k, pipeline output)."""
    out = pipe(volume.array[k], mask, **kwargs)
    edited = volume.array.copy()
    edited[k] = out.images[0]
    return edited, out


def write_outputs(
    volume: Volume,
    k: int,
    edited: np.ndarray,
    out: CTInpaintOutput,
    out_dir: str | Path,
    *,
    fmt: OutputFormat = "same",
    extra: dict | None = None,
) -> dict[str, str]:
    """Write the edited volume, mask, previews, sample arrays and ``provenance.json``; returns name -> path."""
    from core.io.write import write_mask_nifti, write_nifti_like, write_volume_like

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    if fmt == "nifti" and volume.meta.get("format") != "nifti":
        import nibabel as nib

        path = out_dir / "inpainted.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(edited.transpose(2, 1, 0)), volume.affine), str(path))
        files["volume"] = str(path)
    elif fmt == "nifti":
        files["volume"] = str(write_nifti_like(edited, volume.meta["source"], out_dir / "inpainted.nii.gz"))
    else:
        files["volume"] = str(write_volume_like(volume, edited, out_dir))
    mask3d = np.zeros(volume.shape, bool)
    mask3d[k] = out.mask
    files["mask"] = str(write_mask_nifti(mask3d, volume, out_dir / "mask.nii.gz"))
    files.update(save_previews(volume.array[k], out, out_dir))
    np.save(out_dir / "samples_hu.npy", out.images)  # (n, rows, cols) float32 HU, every sample's slice
    np.save(out_dir / "std_hu.npy", out.std)
    files["samples"], files["std"] = str(out_dir / "samples_hu.npy"), str(out_dir / "std_hu.npy")
    record = {
        **out.provenance,
        "input": {
            "path": str(volume.meta.get("source", "")),
            "format": volume.meta.get("format"),
            "shape_zyx": list(volume.shape),
            "spacing_zyx_mm": list(volume.spacing),
            "slice": k,
        },
        "std_max_hu": float(out.std.max()),
        "files": {name: Path(p).name for name, p in files.items()},
        **(extra or {}),
    }
    (out_dir / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    files["provenance"] = str(out_dir / "provenance.json")
    return files


def save_previews(before: np.ndarray, out: CTInpaintOutput, out_dir: Path) -> dict[str, str]:
    """PNG previews (soft-tissue window): before, after, after with the mask outline, std map, and a zoom on the crop."""
    from PIL import Image
    from scipy import ndimage

    from core.windowing import apply_window

    def gray(x):
        return np.repeat(
            apply_window(x, low=PREVIEW_WINDOW[0], high=PREVIEW_WINDOW[1])[..., None], 3, axis=-1
        )

    after = gray(out.images[0])
    outline = after.copy()
    edge = out.mask & ~ndimage.binary_erosion(out.mask)
    outline[edge] = (255, 60, 60)
    peak = float(out.std.max())
    s = out.std / peak if peak > 0 else np.zeros_like(out.std)
    hot = (
        np.stack([np.clip(3 * s, 0, 1), np.clip(3 * s - 1, 0, 1), np.clip(3 * s - 2, 0, 1)], -1) * 255
    ).astype(np.uint8)
    views = {"before": gray(before), "after": after, "outline": outline, "std": hot}
    files = {}
    for name, img in views.items():
        path = out_dir / f"preview_{name}.png"
        Image.fromarray(img).save(path)
        files[f"preview_{name}"] = str(path)
    # Zoom: the sampled crop of each view side by side, at least 256 px tall.
    b = out.crop_box
    r0, c0 = max(0, b.row0), max(0, b.col0)
    tiles = [v[r0 : b.row0 + b.size, c0 : b.col0 + b.size] for v in views.values()]
    zoom = max(1, 256 // max(1, tiles[0].shape[0]))
    strip = np.concatenate([np.kron(t, np.ones((zoom, zoom, 1), np.uint8)) for t in tiles], axis=1)
    Image.fromarray(strip).save(out_dir / "preview_zoom.png")
    files["preview_zoom"] = str(out_dir / "preview_zoom.png")
    return files
