"""``describe(path)``: what ``synthdx info`` prints, as a JSON-ready dict.

Keys (``None`` where they do not apply):

* ``path``, ``kind`` (``"volume"``, ``"slide"`` or ``"series_list"`` for a folder of
  several DICOM series when none was chosen), ``format`` (``dicom``, ``nifti``, ``svs``, ...);
* ``modality``: ``CT`` (values in HU), ``MR``, ``OT`` or ``histology``;
* ``shape``: volumes ``[z, y, x]`` (axial slices counted from inferior, 0-based, as
  ``--slice`` expects), slides ``[height, width]`` of level 0;
* ``spacing_mm``: volumes ``[z, y, x]`` in mm; slides ``null`` (see ``mpp``);
* ``orientation``: ``{"source": axcodes of the file, "canonical": "LPS"}`` (the array is
  stored (z, y, x) with x to patient Left, y to Posterior, z to Superior);
* ``intensity``: ``{"unit": "HU"|"raw"|"RGB", "min", "max", "mean"}``;
* ``labels``: segmentation label id -> name, for labels present;
* ``series``: every DICOM series found in a folder (``series_uid``, ``description``,
  ``modality``, ``n_files``);
* ``levels``: slide pyramid levels (``width``, ``height``, ``downsample``); ``mpp``:
  microns per pixel at level 0;
* ``warnings``: e.g. missing or duplicate DICOM slices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.dicom import scan_series
from core.io.load import IMAGE_SUFFIXES, case_layout, load_volume
from core.io.orient import CANONICAL_AXCODES

SLIDE_SUFFIXES = IMAGE_SUFFIXES


def describe(path: str | Path, *, series_uid: str | None = None) -> dict:
    """Describe a DICOM file/folder, NIfTI file, case folder or slide image.

    Args:
        path: the input.
        series_uid: the DICOM series to describe when a folder holds several.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    out: dict = {"path": str(path)} | dict.fromkeys(
        ["kind", "format", "modality", "shape", "spacing_mm", "orientation", "intensity", "labels",
         "series", "levels", "mpp", "warnings"]
    )
    if path.is_file() and path.suffix.lower() in SLIDE_SUFFIXES:
        return {**out, **_describe_slide(path)}
    if path.is_dir() and case_layout(path) is None:
        series = scan_series(path)
        if not series:
            raise InputError(f"{path}: no DICOM series, NIfTI case or image found in this folder")
        out["series"] = [s.as_dict() for s in series]
        if len(series) > 1 and series_uid is None:
            out.update(kind="series_list", format="dicom")
            out["warnings"] = [f"{len(series)} series: pass --series UID to describe one"]
            return out
    volume = load_volume(path, series_uid=series_uid)
    a = volume.array
    out.update(
        kind="volume",
        format=volume.meta.get("format"),
        modality=volume.modality,
        shape=list(volume.shape),
        spacing_mm=[round(s, 4) for s in volume.spacing],
        orientation={"source": volume.meta.get("source_axcodes"), "canonical": "".join(CANONICAL_AXCODES)},
        intensity={
            "unit": "HU" if volume.modality == "CT" else "raw",
            "min": float(a.min()),
            "max": float(a.max()),
            "mean": round(float(a.mean(dtype=np.float64)), 3),
        },
        labels={str(k): v for k, v in volume.labels.present().items()} if volume.labels else None,
        warnings=list(volume.meta.get("warnings", [])),
    )
    return out


def _describe_slide(path: Path) -> dict:
    from core.io.slide import open_slide

    with open_slide(path) as slide:
        thumb = slide.thumbnail(max_size=512)
        level0 = slide.levels[0]
        return {
            "kind": "slide",
            "format": path.suffix.lower().lstrip("."),
            "modality": "histology",
            "shape": [level0.height, level0.width],
            "intensity": {
                "unit": "RGB",
                "min": int(thumb.min()),
                "max": int(thumb.max()),
                "mean": round(float(thumb.mean()), 3),
                "from": "thumbnail",
            },
            "levels": [{"width": lv.width, "height": lv.height, "downsample": lv.downsample} for lv in slide.levels],
            "mpp": slide.mpp,
            "warnings": [],
        }
